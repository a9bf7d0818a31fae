"""A contract API server and a real client connected to it, for Kubernetes-backed tests."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sidecar.kube.api import KubeApi
from sidecar.kube.client import connect
from tests.kubeapi import ContractApiServer, MissingSchemasError

NAMESPACE = "promgate"


@contextlib.asynccontextmanager
async def contract_server(**options: Any) -> AsyncIterator[ContractApiServer]:
    """A running contract server; without the published schemas beside the checkout the
    test skips and says why, except under CI (``CI`` set), where it fails."""
    try:
        server = ContractApiServer(**options)
    except MissingSchemasError as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(error))
    async with server:
        yield server


@contextlib.asynccontextmanager
async def contract_api(tmp_path: Path) -> AsyncIterator[tuple[ContractApiServer, KubeApi]]:
    """A running contract server and a client of it through the kubeconfig it writes."""
    async with contract_server() as server:
        port = server.url.rsplit(":", 1)[1]  # one file per server: a test may start several
        kubeconfig = server.write_kubeconfig(tmp_path / f"kubeconfig-{port}", namespace=NAMESPACE)
        api = await connect(kubeconfig)
        try:
            yield server, api
        finally:
            await api.close()
