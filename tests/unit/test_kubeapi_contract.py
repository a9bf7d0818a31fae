"""The contract API server answers as a real Kubernetes API server does, for the parts of the
contract promgate relies on; the Kubernetes code's tests are only as good as this."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sidecar.kube.api import (
    CONFIGMAP,
    DEPLOYMENT,
    HTTPROUTE,
    LEASE,
    POD,
    PROMOTION,
    SERVICE,
    Kind,
)
from tests.kubeapi import ApiError, ContractApiServer
from tests.kubeapi.validation import structural
from tests.support.kube import contract_server
from tests.support.processes import REPO_ROOT, wait_until

NS = "shop"
DIGEST = "sha256:" + "a" * 64
OTHER_DIGEST = "sha256:" + "b" * 64
SERVICEMONITOR = Kind("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor")
PROMETHEUSRULE = Kind("monitoring.coreos.com", "v1", "prometheusrules", "PrometheusRule")


def deployment(
    name: str = "web", image: str = f"shop/web@{DIGEST}", replicas: int = 2
) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


def httproute(weight: int = 10) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "parentRefs": [{"name": "gateway"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": "web", "port": 80, "weight": 100 - weight},
                        {"name": "web-canary", "port": 80, "weight": weight},
                    ]
                }
            ],
        },
    }


def promotion(name: str = "p-1") -> dict[str, Any]:
    return {
        "apiVersion": "promgate.dev/v1alpha1",
        "kind": "Promotion",
        "metadata": {"name": name, "namespace": NS, "labels": {"promgate.dev/service": "web"}},
        "spec": {"stage": "production", "manifest": {"service": "web", "version": "1.2.0"}},
    }


def configmap(name: str = "state", size: int = 10) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NS},
        "data": {"blob": "x" * size},
    }


def service(name: str = "web") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
    }


def lease(holder: str = "a") -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "promgate", "namespace": NS},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15},
    }


def servicemonitor() -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "endpoints": [{"port": "http"}]},
    }


def prometheusrule() -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"groups": [{"name": "web", "rules": [{"alert": "Down", "expr": "up == 0"}]}]},
    }


@pytest.fixture
async def server() -> AsyncIterator[ContractApiServer]:
    async with contract_server(rollout_delay_s=0.05) as api:
        yield api


@pytest.fixture
async def http(server: ContractApiServer) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {server.token}"}
    async with aiohttp.ClientSession(server.url, headers=headers) as session:
        yield session


async def call(
    http: aiohttp.ClientSession, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, Any]]:
    async with http.request(method, path, json=body) as response:
        return response.status, await response.json()


async def created(http: aiohttp.ClientSession, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
    status, answer = await call(http, "POST", kind.path(NS), body)
    assert status == 201, answer
    return answer


async def test_requests_without_the_token_are_refused(server: ContractApiServer) -> None:
    """No token or a wrong one gets 401 Unauthorized; /version is open, as on a cluster."""
    async with aiohttp.ClientSession(server.url) as anonymous:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            async with anonymous.get(DEPLOYMENT.path(NS), headers=headers) as response:
                assert response.status == 401
                body = await response.json()
                assert (body["kind"], body["reason"], body["code"]) == (
                    "Status",
                    "Unauthorized",
                    401,
                )
        async with anonymous.get("/version") as response:
            assert (await response.json())["gitVersion"] == "v1.30.0"


async def test_create_sets_server_fields_and_a_taken_name_is_already_exists(
    http: aiohttp.ClientSession,
) -> None:
    """A create gets uid, creationTimestamp, generation 1 and a resourceVersion; a second
    create of the name is 409 AlreadyExists."""
    first = await created(http, CONFIGMAP, configmap())
    assert {"uid", "creationTimestamp", "resourceVersion"} <= set(first["metadata"])
    assert first["metadata"]["generation"] == 1
    status, body = await call(http, "POST", CONFIGMAP.path(NS), configmap())
    assert (status, body["reason"]) == (409, "AlreadyExists")
    assert body["message"] == 'configmaps "state" already exists'


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        (DEPLOYMENT, 'deployments.apps "gone" not found'),
        (CONFIGMAP, 'configmaps "gone" not found'),
        (PROMOTION, 'promotions.promgate.dev "gone" not found'),
    ],
)
async def test_missing_objects_are_404_status_bodies(
    http: aiohttp.ClientSession, kind: Kind, message: str
) -> None:
    """GET, PUT and DELETE of a missing object answer 404 NotFound naming it."""
    for method, body in (("GET", None), ("DELETE", None)):
        status, answer = await call(http, method, kind.path(NS, "gone"), body)
        assert (status, answer["reason"], answer["message"]) == (404, "NotFound", message)


async def test_unknown_resources_are_404(http: aiohttp.ClientSession) -> None:
    """A type the server does not serve is 404, like an uninstalled CRD."""
    status, body = await call(http, "GET", "/apis/example.com/v1/namespaces/shop/widgets")
    assert (status, body["reason"]) == (404, "NotFound")


async def test_replace_needs_the_current_resource_version(http: aiohttp.ClientSession) -> None:
    """A PUT with a stale resourceVersion is 409 Conflict, one without is 422, the current
    one moves it; a PUT that changes nothing keeps it."""
    stored = await created(http, CONFIGMAP, configmap())
    path = CONFIGMAP.path(NS, "state")
    changed = stored | {"data": {"blob": "new"}}
    status, fresh = await call(http, "PUT", path, changed)
    assert status == 200
    assert int(fresh["metadata"]["resourceVersion"]) > int(stored["metadata"]["resourceVersion"])
    status, body = await call(http, "PUT", path, changed)
    assert (status, body["reason"]) == (409, "Conflict")
    assert "the object has been modified" in body["message"]
    unversioned = fresh | {"metadata": {"name": "state", "namespace": NS}}
    status, body = await call(http, "PUT", path, unversioned)
    assert (status, body["reason"]) == (422, "Invalid")
    assert "metadata.resourceVersion" in body["message"]
    status, same = await call(http, "PUT", path, fresh)
    assert same["metadata"]["resourceVersion"] == fresh["metadata"]["resourceVersion"]


async def test_replace_must_name_the_object_of_the_url(http: aiohttp.ClientSession) -> None:
    """A body naming another object is 400 BadRequest."""
    stored = await created(http, CONFIGMAP, configmap())
    status, body = await call(http, "PUT", CONFIGMAP.path(NS, "other"), stored)
    assert (status, body["reason"]) == (400, "BadRequest")


async def test_generation_counts_spec_changes_only(
    http: aiohttp.ClientSession, server: ContractApiServer
) -> None:
    """A spec change bumps generation; a label change and a status write do not."""
    await created(http, DEPLOYMENT, deployment(replicas=0))
    stored = await _rolled_out(server, "web", 1)
    path = DEPLOYMENT.path(NS, "web")
    stored["metadata"]["labels"]["team"] = "shop"
    status, relabelled = await call(http, "PUT", path, stored)
    assert (status, relabelled["metadata"]["generation"]) == (200, 1)
    relabelled["spec"]["replicas"] = 1
    _, scaled = await call(http, "PUT", path, relabelled)
    assert scaled["metadata"]["generation"] == 2
    promoted = await created(http, PROMOTION, promotion())
    promoted["status"] = {"phase": "promoted"}
    _, status_written = await call(http, "PUT", PROMOTION.path(NS, "p-1", "status"), promoted)
    assert status_written["metadata"]["generation"] == 1


async def test_status_subresource_rules(http: aiohttp.ClientSession) -> None:
    """A create drops a custom resource's status, a main PUT keeps the stored status, a
    /status PUT changes only status; both need the current resourceVersion."""
    stored = await created(http, PROMOTION, promotion() | {"status": {"phase": "promoted"}})
    assert "status" not in stored
    path = PROMOTION.path(NS, "p-1")
    stored["status"] = {"phase": "progressing", "step": 1}
    stored["spec"]["stage"] = "staging"
    status, with_status = await call(http, "PUT", f"{path}/status", stored)
    assert status == 200
    assert with_status["status"] == {"phase": "progressing", "step": 1}
    assert with_status["spec"]["stage"] == "production"
    with_status["status"] = {"phase": "aborted"}
    with_status["spec"]["stage"] = "staging"
    status, main = await call(http, "PUT", path, with_status)
    assert (status, main["spec"]["stage"]) == (200, "staging")
    assert main["status"] == {"phase": "progressing", "step": 1}
    status, body = await call(http, "PUT", f"{path}/status", with_status)
    assert (status, body["reason"]) == (409, "Conflict")


async def test_kinds_without_a_status_subresource_have_no_status_path(
    http: aiohttp.ClientSession,
) -> None:
    """/status of a ConfigMap does not exist."""
    stored = await created(http, CONFIGMAP, configmap())
    status, _ = await call(http, "PUT", CONFIGMAP.path(NS, "state", "status"), stored)
    assert status == 404


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        (DEPLOYMENT, deployment()),
        (SERVICE, service()),
        (CONFIGMAP, configmap()),
        (LEASE, lease()),
        (HTTPROUTE, httproute()),
        (PROMOTION, promotion()),
        (SERVICEMONITOR, servicemonitor()),
        (PROMETHEUSRULE, prometheusrule()),
    ],
)
async def test_valid_objects_of_each_kind_are_accepted(
    http: aiohttp.ClientSession, kind: Kind, body: dict[str, Any]
) -> None:
    """A well-formed object of every served kind is stored."""
    assert (await created(http, kind, body))["metadata"]["resourceVersion"]


def _edit(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``body`` with the dotted ``path`` (list indexes as numbers) set to ``value``."""
    node: Any = body
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    for part in parents:
        node = node[part]
    node[last] = value
    return body


@pytest.mark.parametrize(
    ("kind", "body", "field", "words"),
    [
        (
            DEPLOYMENT,
            deployment(image="shop/web:1.2.0"),
            "spec.template.spec.containers[0].image",
            "pin images by digest",
        ),
        (DEPLOYMENT, _edit(deployment(), "spec.replicass", 2), "spec.replicass", "unknown field"),
        (DEPLOYMENT, _edit(deployment(), "spec.replicas", "two"), "spec.replicas", "Invalid value"),
        (SERVICE, service("Web_1"), "metadata.name", "RFC 1123"),
        (
            HTTPROUTE,
            _edit(httproute(), "spec.rules.0.backendRefs.0.weight", 2_000_000),
            "spec.rules[0].backendRefs[0].weight",
            "maximum",
        ),
        (
            HTTPROUTE,
            _edit(httproute(), "spec.rules.0.weights", 1),
            "spec.rules[0].weights",
            "unknown",
        ),
        (PROMOTION, _edit(promotion(), "spec.stage", ""), "spec.stage", "Invalid value"),
        (
            PROMOTION,
            _edit(promotion(), "metadata.labels", {"promgate.dev/service": "-x"}),
            "metadata.labels",
            "label value",
        ),
        (
            SERVICEMONITOR,
            _edit(servicemonitor(), "spec.endpoints", "http"),
            "spec.endpoints",
            "array",
        ),
        (
            PROMETHEUSRULE,
            _edit(prometheusrule(), "spec.groups.0.rules.0.expr", []),
            "spec.groups[0].rules[0].expr",
            "Invalid",
        ),
        (
            CONFIGMAP,
            configmap(size=(1 << 20) + 1),
            "[]",
            "Too long: must have at most 1048576 bytes",
        ),
    ],
)
async def test_invalid_objects_are_422_naming_the_field(
    http: aiohttp.ClientSession, kind: Kind, body: dict[str, Any], field: str, words: str
) -> None:
    """Each kind's validation refuses what a real server would, with the field in the message."""
    status, answer = await call(http, "POST", kind.path(NS), body)
    assert (status, answer["reason"]) == (422, "Invalid"), answer
    assert f" is invalid: {field}: " in answer["message"]
    assert words in answer["message"]


async def test_nullable_fields_accept_null(http: aiohttp.ClientSession) -> None:
    """A CRD field marked nullable takes null; one that is not refuses it."""
    stored = await created(http, PROMOTION, promotion())
    gate = {"name": "errors", "result": "no_data", "value": None, "baseline": None}
    stored["status"] = {"phase": "progressing", "gates": [gate]}
    status, answer = await call(http, "PUT", PROMOTION.path(NS, "p-1", "status"), stored)
    assert status == 200, answer
    answer["status"]["phase"] = None
    status, refused = await call(http, "PUT", PROMOTION.path(NS, "p-1", "status"), answer)
    assert (status, refused["reason"]) == (422, "Invalid")


async def test_seed_validates_like_a_write(server: ContractApiServer) -> None:
    """A seeded object goes through the same checks, and is not logged as a write."""
    with pytest.raises(ApiError, match="pin images by digest"):
        server.seed(deployment(image="shop/web:latest"))
    server.seed(configmap())
    assert server.object(CONFIGMAP, NS, "state") is not None
    assert server.writes == []


async def test_bodies_over_3_mib_are_413(http: aiohttp.ClientSession) -> None:
    """The request size limit answers 413 before anything is parsed."""
    status, body = await call(http, "POST", CONFIGMAP.path(NS), configmap(size=3 << 20))
    assert (status, body["reason"]) == (413, "RequestEntityTooLarge")


async def test_label_selector_lists(http: aiohttp.ClientSession) -> None:
    """labelSelector filters by every equality form; built-in list items carry no kind."""
    for name, labels in (("a", {"tier": "web", "env": "prod"}), ("b", {"tier": "web"}), ("c", {})):
        await created(
            http, CONFIGMAP, configmap(name) | {"metadata": {"name": name, "labels": labels}}
        )
    cases = {
        "": ["a", "b", "c"],
        "tier=web": ["a", "b"],
        "tier==web,env=prod": ["a"],
        "env!=prod": ["b", "c"],
        "env": ["a"],
        "!env": ["b", "c"],
    }
    for selector, names in cases.items():
        status, listing = await call(http, "GET", f"{CONFIGMAP.path(NS)}?labelSelector={selector}")
        assert status == 200
        assert [item["metadata"]["name"] for item in listing["items"]] == names, selector
        assert listing["kind"] == "ConfigMapList"
        assert all("kind" not in item for item in listing["items"])
        assert int(listing["metadata"]["resourceVersion"]) >= 3


async def test_delete_preconditions(http: aiohttp.ClientSession) -> None:
    """DELETE with a stale preconditions.resourceVersion is 409; the current one deletes."""
    stored = await created(http, LEASE, lease())
    path = LEASE.path(NS, "promgate")
    stale = {"preconditions": {"resourceVersion": "0"}}
    status, body = await call(http, "DELETE", path, stale)
    assert (status, body["reason"]) == (409, "Conflict")
    assert "Precondition failed" in body["message"]
    current = {"preconditions": {"resourceVersion": stored["metadata"]["resourceVersion"]}}
    status, body = await call(http, "DELETE", path, current)
    assert (status, body["status"]) == (200, "Success")
    assert (await call(http, "GET", path))[0] == 404


async def test_leases_are_taken_over_only_at_the_version_read(http: aiohttp.ClientSession) -> None:
    """Two replicas racing for one Lease with the same read: exactly one write lands."""
    stored = await created(http, LEASE, lease("a"))
    path = LEASE.path(NS, "promgate")
    bids = [
        _edit(dict(stored, spec=dict(stored["spec"])), "spec.holderIdentity", who)
        for who in ("b", "c")
    ]
    results = await asyncio.gather(*(call(http, "PUT", path, bid) for bid in bids))
    assert sorted(status for status, _ in results) == [200, 409]
    holder = (await call(http, "GET", path))[1]["spec"]["holderIdentity"]
    assert holder == next(
        body["spec"]["holderIdentity"] for status, body in results if status == 200
    )


async def test_fault_hook_fails_the_next_matching_requests(
    http: aiohttp.ClientSession, server: ContractApiServer
) -> None:
    """fail() answers the next matching requests with the status and changes nothing."""
    server.fail("POST", r"/configmaps$", status=503, times=2)
    for _ in range(2):
        status, body = await call(http, "POST", CONFIGMAP.path(NS), configmap())
        assert (status, body["reason"]) == (503, "ServiceUnavailable")
    assert server.objects(CONFIGMAP, NS) == []
    await created(http, CONFIGMAP, configmap())
    assert [w.method for w in server.writes_of(CONFIGMAP)] == ["POST"]


async def test_write_log(http: aiohttp.ClientSession, server: ContractApiServer) -> None:
    """Every accepted write is logged with what the client sent; refusals are not."""
    stored = await created(http, PROMOTION, promotion())
    stored["status"] = {"phase": "pending"}
    await call(http, "PUT", PROMOTION.path(NS, "p-1", "status"), stored)
    await call(http, "PUT", PROMOTION.path(NS, "p-1", "status"), stored)
    await call(http, "DELETE", PROMOTION.path(NS, "p-1"))
    writes = server.writes_of(PROMOTION, "p-1")
    assert [(w.method, w.subresource) for w in writes] == [
        ("POST", ""),
        ("PUT", "status"),
        ("DELETE", ""),
    ]
    assert writes[1].body["status"] == {"phase": "pending"}
    assert writes[0].at <= writes[1].at <= writes[2].at
    assert server.writes_of(DEPLOYMENT) == []


async def _rolled_out(server: ContractApiServer, name: str, generation: int) -> dict[str, Any]:
    async def observed() -> bool:
        found = server.object(DEPLOYMENT, NS, name)
        return found is not None and found["status"].get("observedGeneration") == generation

    await wait_until(observed, 5, what=f"deployment {name} generation {generation} observed")
    found = server.object(DEPLOYMENT, NS, name)
    assert found is not None
    return found


def _pods(server: ContractApiServer, template_hash: str | None = None) -> list[dict[str, Any]]:
    return [
        pod
        for pod in server.objects(POD, NS)
        if template_hash is None or pod["metadata"]["labels"]["pod-template-hash"] == template_hash
    ]


def _condition(deployment: dict[str, Any], kind: str) -> tuple[str, str]:
    found = next(c for c in deployment["status"]["conditions"] if c["type"] == kind)
    return found["status"], found["reason"]


async def test_a_ready_rollout(http: aiohttp.ClientSession, server: ContractApiServer) -> None:
    """A new Deployment becomes ready: counts equal replicas, Available, NewReplicaSetAvailable,
    and its Pods run under the template labels plus pod-template-hash."""
    await created(http, DEPLOYMENT, deployment(replicas=3))
    ready = await _rolled_out(server, "web", 1)
    status = ready["status"]
    assert [
        status[k] for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")
    ] == [3] * 4
    assert _condition(ready, "Available") == ("True", "MinimumReplicasAvailable")
    assert _condition(ready, "Progressing") == ("True", "NewReplicaSetAvailable")
    status, pods = await call(http, "GET", f"{POD.path(NS)}?labelSelector=app=web")
    assert len(pods["items"]) == 3
    for pod in pods["items"]:
        template_hash = pod["metadata"]["labels"]["pod-template-hash"]
        assert pod["metadata"]["name"].startswith(f"web-{template_hash}-")
        assert pod["status"]["phase"] == "Running"


@pytest.mark.parametrize(
    ("behaviour", "phase", "reason_of"),
    [
        (
            "ImagePullBackOff",
            "Pending",
            lambda pod: pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
        ),
        (
            "CrashLoopBackOff",
            "Running",
            lambda pod: pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
        ),
        ("Unschedulable", "Pending", lambda pod: pod["status"]["conditions"][0]["reason"]),
        ("never", "Pending", lambda pod: pod["status"].get("containerStatuses", "no reason")),
    ],
)
async def test_a_failing_rollout_shows_the_reason_on_its_pods(
    http: aiohttp.ClientSession,
    server: ContractApiServer,
    behaviour: str,
    phase: str,
    reason_of: Any,
) -> None:
    """An update to a failing image: observedGeneration catches up, updatedReplicas counts the
    new Pods, the old ready Pods stay available, Progressing ReplicaSetUpdated, and the new
    Pods show why, as the kubelet reports it."""
    await created(http, DEPLOYMENT, deployment(replicas=2))
    ready = await _rolled_out(server, "web", 1)
    old_hash = _pods(server)[0]["metadata"]["labels"]["pod-template-hash"]
    server.rollout("shop/broken", behaviour)
    _edit(ready, "spec.template.spec.containers.0.image", f"shop/broken@{OTHER_DIGEST}")
    assert (await call(http, "PUT", DEPLOYMENT.path(NS, "web"), ready))[0] == 200
    failing = await _rolled_out(server, "web", 2)
    status = failing["status"]
    assert (status["updatedReplicas"], status["readyReplicas"], status["availableReplicas"]) == (
        2,
        2,
        2,
    )
    assert status["unavailableReplicas"] == 2
    assert _condition(failing, "Progressing") == ("True", "ReplicaSetUpdated")
    new = [p for p in _pods(server) if p["metadata"]["labels"]["pod-template-hash"] != old_hash]
    assert len(new) == 2 and len(_pods(server, old_hash)) == 2
    for pod in new:
        assert pod["status"]["phase"] == phase
        expected = behaviour if behaviour != "never" else "no reason"
        assert reason_of(pod) == expected
    if behaviour == "CrashLoopBackOff":
        assert new[0]["status"]["containerStatuses"][0]["restartCount"] > 0
    if behaviour == "Unschedulable":
        assert (
            new[0]["status"]["conditions"][0]["message"]
            == "0/3 nodes are available: 3 Insufficient cpu."
        )


async def test_a_stuck_rollout_exceeds_its_progress_deadline(
    http: aiohttp.ClientSession, server: ContractApiServer
) -> None:
    """Past spec.progressDeadlineSeconds, Progressing turns False ProgressDeadlineExceeded."""
    server.rollout("shop/web", "ImagePullBackOff")
    await created(
        http, DEPLOYMENT, _edit(deployment(replicas=1), "spec.progressDeadlineSeconds", 2)
    )
    stuck = await _rolled_out(server, "web", 1)
    assert _condition(stuck, "Progressing") == ("True", "ReplicaSetUpdated")
    assert _condition(stuck, "Available") == ("False", "MinimumReplicasUnavailable")
    assert "readyReplicas" not in stuck["status"]

    async def exceeded() -> bool:
        found = server.object(DEPLOYMENT, NS, "web")
        return (
            found is not None and _condition(found, "Progressing")[1] == "ProgressDeadlineExceeded"
        )

    await wait_until(exceeded, 5, what="the progress deadline")
    found = server.object(DEPLOYMENT, NS, "web")
    assert found is not None and _condition(found, "Progressing")[0] == "False"


async def test_zero_replicas_is_ready_with_no_pods(
    http: aiohttp.ClientSession, server: ContractApiServer
) -> None:
    """Scaled to zero: ready, no counts (zeros are left out, as the API leaves them), no Pods."""
    await created(http, DEPLOYMENT, deployment(replicas=2))
    ready = await _rolled_out(server, "web", 1)
    ready["spec"]["replicas"] = 0
    await call(http, "PUT", DEPLOYMENT.path(NS, "web"), ready)
    scaled = await _rolled_out(server, "web", 2)
    assert scaled["status"].get("replicas", 0) == scaled["status"].get("readyReplicas", 0) == 0
    assert _condition(scaled, "Progressing") == ("True", "NewReplicaSetAvailable")
    assert _pods(server) == []


async def test_deleting_a_deployment_removes_its_pods(
    http: aiohttp.ClientSession, server: ContractApiServer
) -> None:
    """Garbage collection: the Deployment's Pods go with it."""
    await created(http, DEPLOYMENT, deployment(replicas=2))
    await _rolled_out(server, "web", 1)
    assert len(_pods(server)) == 2
    assert (await call(http, "DELETE", DEPLOYMENT.path(NS, "web")))[0] == 200
    assert _pods(server) == []


async def test_the_standalone_server(tmp_path: Path) -> None:
    """python -m tests.kubeapi prints its URL, serves with the kubeconfig's token, and stops
    on SIGTERM."""
    kubeconfig = tmp_path / "kubeconfig"
    process = await asyncio.create_subprocess_exec(
        *(
            sys.executable,
            "-m",
            "tests.kubeapi",
            "--kubeconfig",
            str(kubeconfig),
            "--namespace",
            NS,
        ),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        url = (await asyncio.wait_for(process.stdout.readline(), 20)).decode().strip()
        assert url.startswith("http://127.0.0.1:")
        assert f"server: {url}" in kubeconfig.read_text()
        async with aiohttp.ClientSession(url) as session, session.get("/version") as response:
            assert (await response.json())["minor"] == "30"
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 10) == 0


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "number", "nullable": True}, {"type": ["number", "null"]}),
        (
            {"type": "object", "properties": {"a": {"type": "string"}}},
            {
                "type": "object",
                "properties": {"a": {"type": "string"}},
                "additionalProperties": False,
            },
        ),
        (
            {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {}},
            {"type": "object", "properties": {}},
        ),
        (
            {
                "type": "array",
                "items": {"type": "integer", "nullable": True},
                "x-kubernetes-list-type": "set",
            },
            {"type": "array", "items": {"type": ["integer", "null"]}},
        ),
        (
            {
                "x-kubernetes-int-or-string": True,
                "anyOf": [{"type": "integer"}, {"type": "string"}],
            },
            {"anyOf": [{"type": "integer"}, {"type": "string"}]},
        ),
    ],
)
def test_crd_schemas_become_plain_json_schema(
    schema: dict[str, Any], expected: dict[str, Any]
) -> None:
    """nullable becomes a null type, declared objects refuse unknown fields unless they
    preserve them, and Kubernetes extension keys are dropped."""
    assert structural(schema) == expected
