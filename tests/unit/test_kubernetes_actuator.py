"""The Kubernetes actuator against the contract API server, through the real client.

Every object the actuator writes is validated by the server (kubernetes-validate strict for
built-in kinds, the Gateway API CRD schema for HTTPRoutes) and a pod template with a tag
instead of a digest is refused, so each test also checks that nothing invalid is written.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.sdk.trace import TracerProvider

from sidecar.actuators.base import Backend, TrafficState
from sidecar.actuators.factory import ActuatorSettings, build_actuator
from sidecar.actuators.kubernetes import KubernetesActuator, StageTarget, stage_targets
from sidecar.analysis.prometheus import NullMetricsSource
from sidecar.domain.kubernetes import KubernetesTarget
from sidecar.domain.policy import parse_policy
from sidecar.domain.promotion import Phase
from sidecar.engine.clock import SystemClock
from sidecar.engine.context import EngineContext
from sidecar.engine.controller import Controller
from sidecar.errors import CandidateNotReadyError, SettingsError
from sidecar.kube.api import DEPLOYMENT, HTTPROUTE, SERVICE, KubeApi, Object
from sidecar.kube.client import connect
from sidecar.ledger.memory import MemoryLedger
from sidecar.local.processes import wait_until
from sidecar.telemetry.metrics import PrometheusRecorder
from tests.kubeapi import ContractApiServer
from tests.support.manifests import manifest

NS = "shop"
REPO = "ghcr.io/acme/checkout"
STABLE_HEX, CANDIDATE_HEX = "a" * 64, "b" * 64
STABLE_IMAGE, CANDIDATE_IMAGE = f"{REPO}@sha256:{STABLE_HEX}", f"{REPO}@sha256:{CANDIDATE_HEX}"
PROXY_IMAGE = "ghcr.io/acme/proxy@sha256:" + "c" * 64
READY_TIMEOUT = "1s"


def deployment() -> Object:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "checkout", "namespace": NS, "labels": {"app": "checkout"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "checkout"}},
            "template": {
                "metadata": {"labels": {"app": "checkout"}},
                "spec": {
                    "containers": [
                        {"name": "app", "image": STABLE_IMAGE, "ports": [{"containerPort": 8080}]},
                        {"name": "proxy", "image": PROXY_IMAGE},
                    ]
                },
            },
        },
    }


def service(name: str = "checkout") -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "selector": {"app": "checkout"},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
        },
    }


def route() -> Object:
    """A route whose rule 1 is promgate's; rule 0 and the rest belong to someone else."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "checkout", "namespace": NS},
        "spec": {
            "parentRefs": [{"name": "edge"}],
            "hostnames": ["shop.example"],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/static"}}],
                    "backendRefs": [{"name": "assets", "port": 80}],
                },
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/checkout"}}],
                    "filters": [
                        {
                            "type": "RequestHeaderModifier",
                            "requestHeaderModifier": {"set": [{"name": "x-shop", "value": "1"}]},
                        }
                    ],
                    "backendRefs": [{"name": "checkout", "port": 80, "weight": 100}],
                },
            ],
        },
    }


ROUTER = {"httpRoute": {"name": "checkout", "rule": 1, "stableService": "checkout"}}
SELECTOR = {"service": {"name": "checkout"}}


def target(router: Mapping[str, Any], strategy: str) -> dict[str, StageTarget]:
    spec = {"deployment": "checkout", "container": "app", "readyTimeout": READY_TIMEOUT}
    return {
        "production": StageTarget(
            KubernetesTarget.model_validate({**spec, "router": router}), strategy
        )
    }


def side(
    hex_char: str, weight: int, role: Any, slot: str, retain_until: float | None = None
) -> Backend:
    digest = "sha256:" + hex_char * 64
    return Backend(
        digest=digest,
        upstream="",
        weight=weight,
        role=role,
        backend=slot,
        retain_until=retain_until,
        image=f"{REPO}@{digest}",
        version=f"1.{ord(hex_char) - ord('a')}.0",
    )


def state(sequence: int, *backends: Backend, preview: Backend | None = None) -> TrafficState:
    return TrafficState("p-2", sequence, "checkout", "production", tuple(backends), preview)


def canary(sequence: int, candidate_weight: int) -> TrafficState:
    return state(
        sequence,
        side("a", 100 - candidate_weight, "stable", "blue"),
        side("b", candidate_weight, "candidate", "green"),
    )


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[ContractApiServer, KubeApi]]:
    """The contract server seeded with a stable Deployment, its Service and a route."""
    async with ContractApiServer(rollout_delay_s=0.05) as server:
        for obj in (deployment(), service(), route()):
            server.seed(obj)
        api = await connect(server.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS))
        try:
            yield server, api
        finally:
            await api.close()


def actuator(api: KubeApi, router: Mapping[str, Any], strategy: str) -> KubernetesActuator:
    return KubernetesActuator(api, target(router, strategy), NS, SystemClock(), poll_s=0.02)


def stored(server: ContractApiServer, kind: Any, name: str) -> Object:
    found = server.object(kind, NS, name)
    assert found is not None, f"{kind.kind} {name} does not exist"
    return found


def weights(server: ContractApiServer, rule: int = 1) -> dict[str, int]:
    refs = stored(server, HTTPROUTE, "checkout")["spec"]["rules"][rule]["backendRefs"]
    return {r["name"]: r.get("weight", 1) for r in refs}


def replicas(server: ContractApiServer, name: str) -> int:
    return int(stored(server, DEPLOYMENT, name)["spec"].get("replicas", 1))


def image(server: ContractApiServer, name: str) -> str:
    containers = stored(server, DEPLOYMENT, name)["spec"]["template"]["spec"]["containers"]
    return str(next(c["image"] for c in containers if c["name"] == "app"))


def spec_of(obj: Object) -> Any:
    return obj["spec"]


def order(server: ContractApiServer) -> list[tuple[str, str]]:
    """The accepted writes as (plural, name), in order."""
    return [(w.plural, w.name) for w in server.writes if w.plural in ("deployments", "httproutes")]


def assert_no_tag_written(server: ContractApiServer) -> None:
    """Every pod template promgate wrote runs images by digest only."""
    for write in server.writes_of(DEPLOYMENT):
        for container in write.body["spec"]["template"]["spec"]["containers"]:
            assert "@sha256:" in container["image"]
            assert ":" not in container["image"].split("@")[0].rsplit("/", 1)[-1]


async def test_canary_steps_set_the_named_rules_weights_and_nothing_else(
    cluster: tuple[ContractApiServer, KubeApi],
) -> None:
    """Each step weights the stable and candidate Services on rule 1; the rest of the route,
    rule 0 included, is what its owner wrote. The candidate runs by digest in its own
    Deployment behind its own Service, and the stable Service does not select its pods."""
    server, api = cluster
    before = stored(server, HTTPROUTE, "checkout")
    kubernetes = actuator(api, ROUTER, "canary")
    await kubernetes.apply(canary(1, 10))
    assert weights(server) == {"checkout": 90, "checkout-canary": 10}
    await kubernetes.apply(canary(2, 50))
    after = stored(server, HTTPROUTE, "checkout")
    assert weights(server) == {"checkout": 50, "checkout-canary": 50}
    expected = copy.deepcopy(spec_of(before))
    expected["rules"][1]["backendRefs"] = [
        {"group": "", "kind": "Service", "name": "checkout", "port": 80, "weight": 50},
        {"group": "", "kind": "Service", "name": "checkout-canary", "port": 80, "weight": 50},
    ]
    assert _without_defaults(spec_of(after)) == _without_defaults(expected)

    candidate = stored(server, DEPLOYMENT, "checkout-candidate")
    assert image(server, "checkout-candidate") == CANDIDATE_IMAGE
    pods = candidate["spec"]["template"]["metadata"]
    assert pods["labels"]["app"] == "checkout-candidate"
    assert pods["labels"]["promgate.dev/digest"] == CANDIDATE_HEX[:63]
    assert pods["annotations"]["promgate.dev/promotion"] == "p-2"
    canary_service = stored(server, SERVICE, "checkout-canary")
    assert canary_service["spec"]["selector"] == candidate["spec"]["selector"]["matchLabels"]
    assert stored(server, SERVICE, "checkout")["spec"]["selector"] == {"app": "checkout"}
    assert image(server, "checkout") == STABLE_IMAGE
    assert_no_tag_written(server)


def _without_defaults(spec: Any) -> Any:
    """A route spec without the fields the API server defaults (group, kind)."""
    spec = copy.deepcopy(spec)
    for rule in spec["rules"]:
        for ref in rule.get("backendRefs") or []:
            ref.pop("group", None)
            ref.pop("kind", None)
        for match in rule.get("matches") or []:
            match.get("path", {}).pop("type", None)
    return spec


async def test_a_repeated_state_writes_nothing(cluster: tuple[ContractApiServer, KubeApi]) -> None:
    """Applying the same split again (a retry, a new leader) costs no write at all."""
    server, api = cluster
    kubernetes = actuator(api, ROUTER, "canary")
    await kubernetes.apply(canary(1, 10))
    writes = len(server.writes)
    await kubernetes.apply(canary(1, 10))
    await actuator(api, ROUTER, "canary").apply(canary(2, 10))  # same weights, fresh actuator
    assert len(server.writes) == writes
    assert len(server.writes_of(HTTPROUTE)) == 1


async def test_a_conflicting_route_write_is_read_again_and_retried(
    cluster: tuple[ContractApiServer, KubeApi],
) -> None:
    """A 409 on the route's PUT re-reads it and writes once more, on the fresh version."""
    server, api = cluster
    server.fail("PUT", r"/httproutes/checkout$", status=409)
    await actuator(api, ROUTER, "canary").apply(canary(1, 25))
    assert weights(server) == {"checkout": 75, "checkout-canary": 25}
    assert len(server.writes_of(HTTPROUTE)) == 1


async def test_promotion_rolls_the_stable_deployment_before_traffic_returns_to_it(
    cluster: tuple[ContractApiServer, KubeApi],
) -> None:
    """On promotion the stable Deployment takes the digest first, the route goes back to
    the stable Service once it is ready, and only then is the candidate scaled to zero."""
    server, api = cluster
    kubernetes = actuator(api, ROUTER, "canary")
    await kubernetes.apply(canary(1, 50))
    start = len(order(server))
    await kubernetes.apply(state(2, side("b", 100, "candidate", "green")))
    assert order(server)[start:] == [
        ("deployments", "checkout"),
        ("httproutes", "checkout"),
        ("deployments", "checkout-candidate"),
    ]
    assert image(server, "checkout") == CANDIDATE_IMAGE
    assert weights(server) == {"checkout": 100, "checkout-canary": 0}
    assert replicas(server, "checkout-candidate") == 0
    route_write = server.writes_of(HTTPROUTE)[-1]
    stable_write = [w for w in server.writes_of(DEPLOYMENT, "checkout")][-1]
    assert route_write.at - stable_write.at >= 0.05  # the rollout's delay passed in between
    assert_no_tag_written(server)


async def test_a_stable_deployment_that_does_not_take_the_digest_keeps_traffic_where_it_is(
    cluster: tuple[ContractApiServer, KubeApi],
) -> None:
    """If the stable Deployment never becomes ready on the new digest, its template is put
    back and the route is not touched."""
    server, api = cluster
    kubernetes = actuator(api, ROUTER, "canary")
    await kubernetes.apply(canary(1, 50))
    server.rollout(CANDIDATE_HEX, "never")
    routes = len(server.writes_of(HTTPROUTE))
    with pytest.raises(CandidateNotReadyError):
        await kubernetes.apply(state(2, side("b", 100, "candidate", "green")))
    assert len(server.writes_of(HTTPROUTE)) == routes
    assert image(server, "checkout") == STABLE_IMAGE


async def test_rollback_moves_traffic_first_then_scales_the_candidate_down(
    cluster: tuple[ContractApiServer, KubeApi],
) -> None:
    """Back to stable: the route goes to 100/0 before anything else is written."""
    server, api = cluster
    kubernetes = actuator(api, ROUTER, "canary")
    await kubernetes.apply(canary(1, 50))
    start = len(order(server))
    await kubernetes.apply(state(2, side("a", 100, "stable", "blue")))
    assert order(server)[start:] == [
        ("httproutes", "checkout"),
        ("deployments", "checkout-candidate"),
    ]
    assert weights(server) == {"checkout": 100, "checkout-canary": 0}
    assert replicas(server, "checkout-candidate") == 0
    assert image(server, "checkout") == STABLE_IMAGE


async def test_rollback_restores_a_stable_digest_that_had_moved_on(
    cluster: tuple[ContractApiServer, KubeApi],
) -> None:
    """A stable Deployment found on another digest is rolled back to the state's stable
    one after traffic is back on it."""
    server, api = cluster
    moved = deployment()
    moved["spec"]["template"]["spec"]["containers"][0]["image"] = CANDIDATE_IMAGE
    server.seed(moved)
    await actuator(api, ROUTER, "canary").apply(state(1, side("a", 100, "stable", "blue")))
    assert image(server, "checkout") == STABLE_IMAGE
    assert [w.name for w in server.writes_of(DEPLOYMENT)] == ["checkout"]


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        ("ImagePullBackOff", "ImagePullBackOff"),
        ("CrashLoopBackOff", "CrashLoopBackOff"),
        ("Unschedulable", "Unschedulable: 0/3 nodes are available: 3 Insufficient cpu."),
        ("never", f"not ready within {READY_TIMEOUT[:-1]}s: 0 of 2 replicas ready"),
    ],
)
async def test_a_candidate_that_never_becomes_ready_gets_no_traffic_and_is_scaled_down(
    cluster: tuple[ContractApiServer, KubeApi], behaviour: str, reason: str
) -> None:
    """Past readyTimeout the error carries the reason the Pods give; the candidate is at
    zero replicas and the route was never written."""
    server, api = cluster
    server.rollout(CANDIDATE_HEX, behaviour)
    kubernetes = actuator(api, ROUTER, "canary")
    started = time.monotonic()
    with pytest.raises(CandidateNotReadyError) as caught:
        await kubernetes.apply(canary(1, 10))
    assert 1.0 <= time.monotonic() - started < 5.0
    assert reason in caught.value.reason
    assert caught.value.permanent
    assert replicas(server, "checkout-candidate") == 0
    assert server.writes_of(HTTPROUTE) == []
    assert weights(server) == {"checkout": 100}
    started = time.monotonic()
    with pytest.raises(CandidateNotReadyError):  # the same state fails again at once
        await kubernetes.apply(canary(1, 10))
    assert time.monotonic() - started < 0.5


def blue_green(sequence: int, phase: str, retain_until: float | None = None) -> TrafficState:
    """blue runs 1.0 (stable), green the candidate 1.1."""
    if phase == "preview":
        return state(
            sequence,
            side("a", 100, "stable", "blue"),
            preview=side("b", 0, "candidate", "green"),
        )
    if phase == "switched":
        return state(sequence, side("b", 100, "candidate", "green"), side("a", 0, "stable", "blue"))
    return state(
        sequence,
        side("b", 100, "candidate", "green"),
        side("a", 0, "stable", "blue", retain_until=retain_until),
    )


async def test_blue_green_on_an_httproute_previews_switches_and_retires_the_old_slot(
    cluster: tuple[ContractApiServer, KubeApi],
) -> None:
    """Slots run in checkout-blue/-green behind their own Services; the preview rule sends
    X-Promgate-Preview to green until the switch; the old slot keeps its digest until
    retain_until, then is scaled to zero."""
    server, api = cluster
    kubernetes = actuator(api, ROUTER, "blue_green")
    try:
        await kubernetes.apply(blue_green(1, "preview"))
        rules = stored(server, HTTPROUTE, "checkout")["spec"]["rules"]
        assert [r.get("name") for r in rules] == ["promgate-preview", None, None]
        assert rules[0]["backendRefs"][0]["name"] == "checkout-green"
        assert {h["name"]: h["value"] for h in rules[0]["matches"][0]["headers"]} == {
            "X-Promgate-Preview": "1"
        }
        assert weights(server, rule=2) == {"checkout": 0, "checkout-blue": 100}
        assert image(server, "checkout-blue") == STABLE_IMAGE
        assert image(server, "checkout-green") == CANDIDATE_IMAGE
        green = stored(server, SERVICE, "checkout-green")["spec"]["selector"]
        assert green == {"app": "checkout", "promgate.dev/slot": "green"}

        await kubernetes.apply(blue_green(2, "switched"))
        rules = stored(server, HTTPROUTE, "checkout")["spec"]["rules"]
        assert [r.get("name") for r in rules] == [None, None]
        assert weights(server) == {"checkout": 0, "checkout-blue": 0, "checkout-green": 100}
        assert replicas(server, "checkout-blue") == 2  # kept for a switch-back

        await kubernetes.apply(blue_green(3, "promoted", retain_until=time.time() + 0.5))
        assert replicas(server, "checkout-blue") == 2
        assert image(server, "checkout-blue") == STABLE_IMAGE

        async def retired() -> bool:
            return replicas(server, "checkout-blue") == 0

        await wait_until(retired, 5, what="the old slot scaled to zero", interval_s=0.05)
        assert replicas(server, "checkout-green") == 2
        assert_no_tag_written(server)
    finally:
        await kubernetes.close()


async def test_blue_green_rollback_on_an_httproute_takes_the_candidate_slot_out(
    cluster: tuple[ContractApiServer, KubeApi],
) -> None:
    """After a switch, going back lists only the stable slot: green drops to 0 first, then
    its Deployment is scaled to zero."""
    server, api = cluster
    kubernetes = actuator(api, ROUTER, "blue_green")
    await kubernetes.apply(blue_green(1, "switched"))
    start = len(order(server))
    await kubernetes.apply(state(2, side("a", 100, "stable", "blue")))
    assert weights(server) == {"checkout": 0, "checkout-blue": 100, "checkout-green": 0}
    assert order(server)[start:] == [
        ("httproutes", "checkout"),
        ("deployments", "checkout-green"),
    ]
    assert replicas(server, "checkout-green") == 0


async def test_blue_green_on_a_service_selector_switches_the_live_slot(
    cluster: tuple[ContractApiServer, KubeApi],
) -> None:
    """The preview Service selects the candidate's slot; the stable Service's selector moves
    from blue to green at the switch, and the route is never touched."""
    server, api = cluster
    kubernetes = actuator(api, SELECTOR, "blue_green")
    await kubernetes.apply(blue_green(1, "preview"))
    preview = stored(server, SERVICE, "checkout-preview")
    assert preview["spec"]["selector"] == {"app": "checkout", "promgate.dev/slot": "green"}
    assert preview["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": 8080}]
    live = stored(server, SERVICE, "checkout")["spec"]["selector"]
    assert live == {"app": "checkout", "promgate.dev/slot": "blue"}
    await kubernetes.apply(blue_green(2, "switched"))
    live = stored(server, SERVICE, "checkout")["spec"]["selector"]
    assert live == {"app": "checkout", "promgate.dev/slot": "green"}
    assert server.writes_of(HTTPROUTE) == []


async def test_a_blue_green_candidate_that_never_becomes_ready_leaves_the_router_alone(
    cluster: tuple[ContractApiServer, KubeApi],
) -> None:
    """A preview slot that does not come up is scaled down; no selector moves to it."""
    server, api = cluster
    server.rollout(CANDIDATE_HEX, "CrashLoopBackOff")
    with pytest.raises(CandidateNotReadyError, match="CrashLoopBackOff"):
        await actuator(api, SELECTOR, "blue_green").apply(blue_green(1, "preview"))
    assert replicas(server, "checkout-green") == 0
    assert server.object(SERVICE, NS, "checkout-preview") is None
    assert stored(server, SERVICE, "checkout")["spec"]["selector"] == {"app": "checkout"}


async def test_check_names_a_stage_without_a_target(
    cluster: tuple[ContractApiServer, KubeApi],
) -> None:
    """A stage the policy gives no Kubernetes target is refused before admission."""
    _, api = cluster
    problems = actuator(api, ROUTER, "canary").check(
        TrafficState("p", 1, "checkout", "qa", (side("b", 100, "candidate", "green"),))
    )
    assert [p.path for p in problems] == ["stage"]
    assert "no kubernetes target" in problems[0].message
    bad_slot = state(1, side("b", 100, "candidate", "Green_1"))
    problems = actuator(api, ROUTER, "blue_green").check(bad_slot)
    assert {p.path for p in problems} == {"backends[0].backend"}


POLICY = f"""
apiVersion: promgate/v1
kind: PromotionPolicy
metadata: {{name: k8s}}
version: "1"
analysis: {{interval: 100ms, noDataTimeout: 30s}}
stages:
  - name: production
    kubernetes:
      namespace: {NS}
      deployment: checkout
      container: app
      readyTimeout: {READY_TIMEOUT}
      router: {{httpRoute: {{name: checkout, rule: 1, stableService: checkout}}}}
    strategy: {{canary: {{steps: [20, 50], stepDuration: 5s}}}}
"""


async def test_a_promotion_whose_candidate_never_becomes_ready_ends_not_ready(
    cluster: tuple[ContractApiServer, KubeApi],
) -> None:
    """The engine ends the promotion in not_ready with Kubernetes' reason, and no route
    write ever gave the candidate traffic."""
    server, api = cluster
    policy = parse_policy(yaml.safe_load(POLICY))
    kubernetes = KubernetesActuator(api, stage_targets(policy), NS, SystemClock(), poll_s=0.02)
    ledger = MemoryLedger()
    controller = Controller(
        EngineContext(
            policy=policy,
            ledger=ledger,
            actuator=kubernetes,
            source=NullMetricsSource(),
            recorder=PrometheusRecorder(),
            tracer=TracerProvider().get_tracer("test"),
            clock=SystemClock(),
            kube_namespace=NS,
        )
    )
    await controller.start()
    try:
        first = manifest(service="checkout", digest_char="a", version="1.0.0", tag="1.0.0")
        first["artifact"] = f"{REPO}:1.0.0@sha256:{STABLE_HEX}"
        stable = await controller.create(first, "production")
        assert (await asyncio.wait_for(controller.wait_finished(stable.id), 10)).phase is (
            Phase.PROMOTED
        )
        server.rollout(CANDIDATE_HEX, "ImagePullBackOff")
        second = manifest(service="checkout", digest_char="b", version="1.1.0", tag="1.1.0")
        second["artifact"] = f"{REPO}:1.1.0@sha256:{CANDIDATE_HEX}"
        candidate = await controller.create(second, "production")
        done = await asyncio.wait_for(controller.wait_finished(candidate.id), 15)
    finally:
        await controller.stop()
        await kubernetes.close()
    assert done.phase is Phase.NOT_READY
    assert done.reason.startswith("candidate never became ready: ImagePullBackOff")
    for write in server.writes_of(HTTPROUTE):
        refs = write.body["spec"]["rules"][1]["backendRefs"]
        assert all(r.get("weight", 1) == 0 for r in refs if r["name"] != "checkout")
    assert weights(server) == {"checkout": 100}
    assert replicas(server, "checkout-candidate") == 0
    assert image(server, "checkout") == STABLE_IMAGE


async def test_the_factory_builds_the_kubernetes_actuator_only_with_an_api(
    cluster: tuple[ContractApiServer, KubeApi],
) -> None:
    """``actuator: kubernetes`` needs an API client; without one the error says how to get it."""
    _, api = cluster
    settings = ActuatorSettings(kind="kubernetes", kube_targets=target(ROUTER, "canary"))
    assert isinstance(build_actuator(settings, kube=api), KubernetesActuator)
    with pytest.raises(SettingsError, match="needs a Kubernetes API client"):
        build_actuator(settings)
