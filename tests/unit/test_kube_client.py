"""The real Kubernetes client against the contract API server: every KubeApi method, every
error mapping, and credentials kept out of every message."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from sidecar.errors import KubeConflictError, KubeError, KubeInvalidError, KubeNotFoundError
from sidecar.kube import client as kube_client
from sidecar.kube.api import CONFIGMAP, DEPLOYMENT, LEASE, PROMOTION, KubeApi
from sidecar.kube.client import connect, default_namespace
from sidecar.settings import Settings
from tests.kubeapi import ContractApiServer
from tests.support.kube import contract_server
from tests.support.processes import free_port, serve_app

NS = "shop"
DIGEST = "sha256:" + "c" * 64


def configmap(name: str = "state", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NS, "labels": labels or {}},
        "data": {"k": "v"},
    }


def promotion(name: str = "p-1") -> dict[str, Any]:
    return {
        "apiVersion": "promgate.dev/v1alpha1",
        "kind": "Promotion",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"stage": "production", "manifest": {"service": "web"}},
    }


def deployment(image: str) -> dict[str, Any]:
    labels = {"app": "web"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


@pytest.fixture
async def server() -> AsyncIterator[ContractApiServer]:
    async with contract_server(rollout_delay_s=0.05) as api:
        yield api


@pytest.fixture
async def kube(server: ContractApiServer, tmp_path: Path) -> AsyncIterator[KubeApi]:
    api = await connect(server.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS))
    yield api
    await api.close()


async def test_crud_round_trip(kube: KubeApi, server: ContractApiServer) -> None:
    """create, get, replace, replace_status, list and delete act on the server's objects."""
    created = await kube.create(PROMOTION, NS, promotion())
    assert created["metadata"]["resourceVersion"]
    assert await kube.get(PROMOTION, NS, "p-1") == created
    created["spec"]["backend"] = "blue"
    replaced = await kube.replace(PROMOTION, NS, created)
    assert replaced["metadata"]["generation"] == 2
    replaced["status"] = {"phase": "progressing"}
    with_status = await kube.replace_status(PROMOTION, NS, replaced)
    assert with_status["status"] == {"phase": "progressing"}
    assert [p["metadata"]["name"] for p in await kube.list(PROMOTION, NS)] == ["p-1"]
    await kube.delete(PROMOTION, NS, "p-1")
    assert server.object(PROMOTION, NS, "p-1") is None
    assert [(w.method, w.subresource) for w in server.writes_of(PROMOTION)] == [
        ("POST", ""),
        ("PUT", ""),
        ("PUT", "status"),
        ("DELETE", ""),
    ]


async def test_list_filters_by_labels_and_types_items(kube: KubeApi) -> None:
    """Only objects carrying every given label come back, each with apiVersion and kind (a
    built-in list leaves them out), so an item can be written back as it is."""
    await kube.create(CONFIGMAP, NS, configmap("a", {"promgate.dev/service": "web", "x": "1"}))
    await kube.create(CONFIGMAP, NS, configmap("b", {"promgate.dev/service": "web"}))
    await kube.create(CONFIGMAP, NS, configmap("c", {"promgate.dev/service": "api"}))
    items = await kube.list(CONFIGMAP, NS, labels={"promgate.dev/service": "web"})
    assert [i["metadata"]["name"] for i in items] == ["a", "b"]
    assert {(i["apiVersion"], i["kind"]) for i in items} == {("v1", "ConfigMap")}
    both = await kube.list(CONFIGMAP, NS, labels={"promgate.dev/service": "web", "x": "1"})
    assert [i["metadata"]["name"] for i in both] == ["a"]
    items[1]["data"] = {"k": "w"}
    assert (await kube.replace(CONFIGMAP, NS, items[1]))["data"] == {"k": "w"}


async def test_error_mapping(kube: KubeApi, server: ContractApiServer) -> None:
    """404, 409 (both reasons) and 422 become their KubeError subclasses with the server's
    status, reason and message."""
    with pytest.raises(KubeNotFoundError) as missing:
        await kube.get(CONFIGMAP, NS, "gone")
    assert (missing.value.status, missing.value.reason) == (404, "NotFound")
    assert 'configmaps "gone" not found' in str(missing.value)
    stored = await kube.create(CONFIGMAP, NS, configmap())
    with pytest.raises(KubeConflictError) as taken:
        await kube.create(CONFIGMAP, NS, configmap())
    assert (taken.value.status, taken.value.reason) == (409, "AlreadyExists")
    await kube.replace(CONFIGMAP, NS, stored | {"data": {"k": "changed"}})
    with pytest.raises(KubeConflictError) as moved:
        await kube.replace(CONFIGMAP, NS, stored | {"data": {"k": "lost"}})
    assert moved.value.reason == "Conflict"
    with pytest.raises(KubeInvalidError) as invalid:
        await kube.create(DEPLOYMENT, NS, deployment("shop/web:1.0"))
    assert invalid.value.status == 422
    assert "spec.template.spec.containers[0].image" in str(invalid.value)
    assert "pin images by digest" in str(invalid.value)


@pytest.mark.parametrize(
    ("status", "reason", "words"),
    [
        (500, "InternalError", "answered 500"),
        (503, "ServiceUnavailable", "answered 503"),
        (403, "Forbidden", "RBAC"),
        (429, "TooManyRequests", "answered 429"),
    ],
)
async def test_other_answers_are_plain_kube_errors(
    kube: KubeApi, server: ContractApiServer, status: int, reason: str, words: str
) -> None:
    """Any other refusal is a KubeError with its status and reason, never a subclass."""
    server.fail("GET", r"/leases/promgate$", status=status)
    with pytest.raises(KubeError) as failed:
        await kube.get(LEASE, NS, "promgate")
    assert type(failed.value) is KubeError
    assert (failed.value.status, failed.value.reason) == (status, reason)
    assert words in str(failed.value)


async def test_delete_preconditions(kube: KubeApi, server: ContractApiServer) -> None:
    """delete with a stale resource_version is a conflict and keeps the object; with the
    current one it deletes; a missing object is not found."""
    stored = await kube.create(CONFIGMAP, NS, configmap())
    with pytest.raises(KubeConflictError):
        await kube.delete(
            CONFIGMAP, NS, "state", resource_version="1" + stored["metadata"]["resourceVersion"]
        )
    assert server.object(CONFIGMAP, NS, "state") is not None
    await kube.delete(
        CONFIGMAP, NS, "state", resource_version=stored["metadata"]["resourceVersion"]
    )
    assert server.object(CONFIGMAP, NS, "state") is None
    with pytest.raises(KubeNotFoundError):
        await kube.delete(CONFIGMAP, NS, "state")


async def test_concurrent_replaces_of_one_version(kube: KubeApi, server: ContractApiServer) -> None:
    """20 concurrent replaces from the same read: exactly one lands, the rest conflict."""
    stored = await kube.create(CONFIGMAP, NS, configmap())
    bodies = [stored | {"data": {"k": f"writer-{i}"}} for i in range(20)]
    results = await asyncio.gather(
        *(kube.replace(CONFIGMAP, NS, body) for body in bodies), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, dict)]
    assert len(winners) == 1
    assert all(isinstance(r, KubeConflictError) for r in results if not isinstance(r, dict))
    assert server.object(CONFIGMAP, NS, "state")["data"] == winners[0]["data"]  # type: ignore[index]


async def test_a_wrong_token_is_401_without_the_token(
    server: ContractApiServer, tmp_path: Path
) -> None:
    """A kubeconfig with a wrong token: 401 with a hint; neither token appears."""
    path = server.write_kubeconfig(tmp_path / "kubeconfig")
    config = yaml.safe_load(path.read_text())
    wrong = "wrong-" + server.token[::-1]
    config["users"][0]["user"]["token"] = wrong
    path.write_text(yaml.safe_dump(config))
    api = await connect(path)
    try:
        with pytest.raises(KubeError) as refused:
            await api.list(CONFIGMAP, NS)
    finally:
        await api.close()
    assert (refused.value.status, refused.value.reason) == (401, "Unauthorized")
    assert "credentials" in str(refused.value)
    assert wrong not in str(refused.value) and server.token not in str(refused.value)


async def test_token_never_appears_in_an_error(kube: KubeApi, server: ContractApiServer) -> None:
    """Even when the path and the server's message quote the token, the error masks it."""
    with pytest.raises(KubeNotFoundError) as missing:
        await kube.get(CONFIGMAP, NS, server.token)
    assert server.token not in str(missing.value)
    assert "<redacted>" in str(missing.value)


async def test_a_server_that_is_down(tmp_path: Path, server: ContractApiServer) -> None:
    """Nothing listening: KubeError status 0 naming the address, without the token."""
    path = server.write_kubeconfig(tmp_path / "kubeconfig")
    port = free_port()
    path.write_text(path.read_text().replace(server.url, f"http://127.0.0.1:{port}"))
    api = await connect(path)
    try:
        with pytest.raises(KubeError) as down:
            await api.get(CONFIGMAP, NS, "state")
    finally:
        await api.close()
    assert down.value.status == 0
    assert f"cannot reach the Kubernetes API at http://127.0.0.1:{port}" in str(down.value)
    assert server.token not in str(down.value)


async def test_a_server_that_never_answers_times_out(
    tmp_path: Path, server: ContractApiServer
) -> None:
    """A request is bounded by timeout_s: a hung server is KubeError status 0."""
    hung = asyncio.Event()

    async def never(_: web.Request) -> web.Response:
        await hung.wait()
        return web.Response()

    app = web.Application()
    app.router.add_get("/{path:.*}", never)
    runner, url = await serve_app(app)
    path = server.write_kubeconfig(tmp_path / "kubeconfig")
    path.write_text(path.read_text().replace(server.url, url))
    api = await connect(path, timeout_s=0.3)
    try:
        with pytest.raises(KubeError) as slow:
            await asyncio.wait_for(api.get(CONFIGMAP, NS, "state"), 5)
        assert slow.value.status == 0
        assert f"cannot reach the Kubernetes API at {url}" in str(slow.value)
    finally:
        hung.set()
        await api.close()
        await runner.cleanup()


async def test_an_unreadable_kubeconfig(tmp_path: Path) -> None:
    """A missing or malformed kubeconfig is a KubeError that says what to set."""
    for content in (None, "clusters: [}"):
        path = tmp_path / "kubeconfig"
        if content is not None:
            path.write_text(content)
        with pytest.raises(KubeError, match="PROMGATE_KUBECONFIG"):
            await connect(path)


def _service_account(directory: Path, token: str, namespace: str) -> Path:
    directory.mkdir()
    (directory / "token").write_text(token)
    (directory / "namespace").write_text(namespace)
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=kubernetes",
            "-keyout",
            str(directory / "ca.key"),
            "-out",
            str(directory / "ca.crt"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return directory


async def test_in_cluster_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a Pod (KUBERNETES_SERVICE_HOST set, no kubeconfig): the service account's token and
    CA, HTTPS to the service address, and the Pod's namespace."""
    token = "sa-token-" + "q" * 20
    monkeypatch.setattr(
        kube_client, "SERVICE_ACCOUNT_DIR", _service_account(tmp_path / "sa", token, "team-a")
    )
    port = free_port()
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(port))
    assert default_namespace() == "team-a"
    api = await connect()
    try:
        with pytest.raises(KubeError) as down:
            await api.get(CONFIGMAP, "team-a", "state")
    finally:
        await api.close()
    assert f"cannot reach the Kubernetes API at https://127.0.0.1:{port}" in str(down.value)
    assert token not in str(down.value)


def test_default_namespace_from_the_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of a cluster: the chosen context's namespace, else default."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    path = tmp_path / "kubeconfig"
    contexts = [
        {"name": "one", "context": {"cluster": "c", "user": "u", "namespace": "shop"}},
        {"name": "two", "context": {"cluster": "c", "user": "u"}},
    ]
    config = {
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": contexts,
        "current-context": "one",
    }
    path.write_text(yaml.safe_dump(config))
    assert default_namespace(path) == "shop"
    assert default_namespace(path, context="two") == "default"
    assert default_namespace(tmp_path / "absent") == "default"


def test_settings_name_the_kubeconfig_and_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    """PROMGATE_KUBECONFIG and PROMGATE_KUBE_NAMESPACE reach the settings; unset, both are None."""
    assert (Settings().kubeconfig, Settings().kube_namespace) == (None, None)
    monkeypatch.setenv("PROMGATE_KUBECONFIG", "/etc/promgate/kubeconfig")
    monkeypatch.setenv("PROMGATE_KUBE_NAMESPACE", "shop")
    assert (Settings().kubeconfig, Settings().kube_namespace) == (
        Path("/etc/promgate/kubeconfig"),
        "shop",
    )
