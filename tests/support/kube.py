"""A contract API server and a real client connected to it, for Kubernetes-backed tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from sidecar.kube.api import KubeApi
from sidecar.kube.client import connect
from tests.kubeapi import ContractApiServer

NAMESPACE = "promgate"


@contextlib.asynccontextmanager
async def contract_api(tmp_path: Path) -> AsyncIterator[tuple[ContractApiServer, KubeApi]]:
    """A running contract server and a client of it through the kubeconfig it writes."""
    async with ContractApiServer() as server:
        port = server.url.rsplit(":", 1)[1]  # one file per server: a test may start several
        kubeconfig = server.write_kubeconfig(tmp_path / f"kubeconfig-{port}", namespace=NAMESPACE)
        api = await connect(kubeconfig)
        try:
            yield server, api
        finally:
            await api.close()
