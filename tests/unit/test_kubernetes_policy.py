"""A stage's Kubernetes target in the policy, the names it gives each side, and the query
placeholders rendered from them: all pure, so table-tested."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from sidecar.analysis.queries import kubernetes_identity, render
from sidecar.cli import cli
from sidecar.domain.artifact import ArtifactRef
from sidecar.domain.kubernetes import KubernetesTarget, side_names
from sidecar.domain.policy import parse_policy
from sidecar.domain.promotion import Promotion
from sidecar.engine.runner import identities
from sidecar.errors import PolicyError, QueryError

EXAMPLES = Path(__file__).parents[2] / "examples"
ROUTE = {"httpRoute": {"name": "checkout", "stableService": "checkout"}}
SERVICE = {"service": {"name": "checkout"}}
CANARY = {"canary": {"steps": [10, 50], "stepDuration": "1m"}}
BLUE_GREEN = {"blueGreen": {"preview": "1m", "postPromotion": "1m"}}


def document(kubernetes: Any, strategy: Any = CANARY, query: str = "") -> dict[str, Any]:
    stage: dict[str, Any] = {"name": "production", "strategy": strategy}
    if kubernetes is not None:
        stage["kubernetes"] = kubernetes
    if query:
        stage["gates"] = {"slo": [{"name": "q", "query": query, "max": 1}]}
    return {
        "apiVersion": "promgate/v1",
        "kind": "PromotionPolicy",
        "metadata": {"name": "shop"},
        "version": "1",
        "stages": [stage],
    }


def problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(data, "policy.yaml")
    return [(p.path, p.message) for p in caught.value.problems]


@pytest.mark.parametrize(
    "example", sorted(EXAMPLES.rglob("*policy.yaml")), ids=lambda p: str(p.relative_to(EXAMPLES))
)
def test_every_example_policy_passes_policy_check(example: Path) -> None:
    """``promgate policy check`` accepts every policy the examples ship."""
    result = CliRunner().invoke(cli, ["policy", "check", str(example)])
    assert result.exit_code == 0, result.output


def test_the_kubernetes_example_routes_production_by_httproute_and_staging_by_selector() -> None:
    """The Kubernetes example: a canary on an HTTPRoute, blue-green on a Service selector."""
    policy = parse_policy(yaml.safe_load((EXAMPLES / "kubernetes" / "policy.yaml").read_text()))
    staging, production = policy.stage("staging"), policy.stage("production")
    assert staging.strategy.kind == "blue_green" and production.strategy.kind == "canary"
    assert staging.kubernetes is not None and staging.kubernetes.router.service is not None
    assert production.kubernetes is not None
    assert production.kubernetes.router.http_route is not None


def test_a_full_target_parses_with_its_defaults() -> None:
    """Aliases in camelCase, durations as text, and the documented defaults."""
    policy = parse_policy(
        document({"deployment": "checkout", "readyTimeout": "2m", "router": ROUTE})
    )
    target = policy.stages[0].kubernetes
    assert target is not None
    assert (target.namespace, target.container, target.ready_timeout) == (None, None, 120.0)
    route = target.router.http_route
    assert route is not None and (route.rule, route.canary_service) == (0, "checkout-canary")


@pytest.mark.parametrize(
    ("kubernetes", "strategy", "expected"),
    [
        pytest.param({"deployment": "checkout", "router": {}}, CANARY,
                     [("stages[0].kubernetes.router", "set exactly one of httpRoute or service")],
                     id="no-router"),
        pytest.param({"deployment": "checkout", "router": {**ROUTE, **SERVICE}}, BLUE_GREEN,
                     [("stages[0].kubernetes.router", "set exactly one of httpRoute or service")],
                     id="two-routers"),
        pytest.param({"deployment": "checkout", "router": SERVICE}, CANARY,
                     [("stages[0].kubernetes.router.service", "the service router switches all "
                       "traffic at once, so it cannot weight a canary")],
                     id="service-router-with-canary"),
        pytest.param({"deployment": "Checkout", "router": ROUTE}, CANARY,
                     [("stages[0].kubernetes.deployment", "name 'Checkout' is not a DNS-1123 "
                       "label (lowercase letters, digits and '-')")],
                     id="deployment-not-dns"),
        pytest.param({"deployment": "c", "namespace": "shop_eu", "router": ROUTE}, CANARY,
                     [("stages[0].kubernetes.namespace", "name 'shop_eu' is not a DNS-1123 "
                       "label (lowercase letters, digits and '-')")],
                     id="namespace-not-dns"),
        pytest.param({"deployment": "c" * 60, "router": ROUTE}, CANARY,
                     [("stages[0].kubernetes.deployment", f"the derived name '{'c' * 60}-"
                       "candidate' is 70 characters long; Kubernetes allows 63")],
                     id="candidate-name-too-long"),
        pytest.param({"deployment": "c", "router": {"httpRoute": {"name": "r",
                      "stableService": "s" * 60}}}, BLUE_GREEN,
                     [("stages[0].kubernetes.router.httpRoute.stableService",
                       f"the derived name '{'s' * 60}-green' is 66 characters long; "
                       "Kubernetes allows 63")],
                     id="slot-service-too-long"),
        pytest.param({"deployment": "c", "router": ROUTE, "readyTimeout": "soon"}, CANARY,
                     [("stages[0].kubernetes.readyTimeout", "'soon' is not a duration; write "
                       "it like 30s, 500ms, 2m or 1h")],
                     id="bad-timeout"),
        pytest.param({"deployment": "c", "router": ROUTE, "replicas": 2}, CANARY,
                     [("stages[0].kubernetes.replicas", "unknown field")], id="unknown-field"),
    ],
)  # fmt: skip
def test_target_problems_name_their_field(
    kubernetes: dict[str, Any], strategy: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    """Every problem of a target is reported at its field path."""
    assert problems(document(kubernetes, strategy)) == expected


def test_kubernetes_placeholders_are_refused_in_a_stage_without_a_target() -> None:
    """``$pod`` means nothing without a Kubernetes target: the check says where and why."""
    found = problems(document(None, query='sum(up{pod=~"$pod"})'))
    assert found == [
        (
            "stages[0].gates.slo[0].query",
            "$pod is a Kubernetes placeholder, and stage 'production' has no kubernetes target",
        )
    ]


def test_kubernetes_placeholders_must_stand_in_quotes_like_the_others() -> None:
    """A Kubernetes value is escaped like any other, so it too must be inside quotes."""
    found = problems(document({"deployment": "c", "router": ROUTE}, query="sum($workload)"))
    assert [path for path, _ in found] == ["stages[0].gates.slo[0].query"]
    assert "$workload is outside any string" in found[0][1]


def target(kubernetes: dict[str, Any]) -> KubernetesTarget:
    return KubernetesTarget.model_validate({"deployment": "checkout", **kubernetes})


CANARY_ROUTE = {"router": {"httpRoute": {"name": "r", "stableService": "checkout",
                                         "candidateService": "checkout-next"}}}  # fmt: skip
BG_ROUTE = {"router": {"httpRoute": {"name": "r", "stableService": "web"}}}
BG_SERVICE = {"router": {"service": {"name": "checkout"}}, "namespace": "shop"}


@pytest.mark.parametrize(
    ("kubernetes", "strategy", "role", "backend", "expected"),
    [
        pytest.param(CANARY_ROUTE, "canary", "candidate", "green",
                     ("default", "checkout-candidate", "checkout-candidate-[a-z0-9]+-[a-z0-9]+",
                      "checkout-next"), id="canary-candidate"),
        pytest.param(CANARY_ROUTE, "canary", "stable", "blue",
                     ("default", "checkout", "checkout-[a-z0-9]+-[a-z0-9]+", "checkout"),
                     id="canary-stable"),
        pytest.param(BG_ROUTE, "blue_green", "candidate", "green",
                     ("default", "checkout-green", "checkout-green-[a-z0-9]+-[a-z0-9]+",
                      "web-green"), id="blue-green-route-candidate"),
        pytest.param(BG_ROUTE, "blue_green", "stable", "blue",
                     ("default", "checkout-blue", "checkout-blue-[a-z0-9]+-[a-z0-9]+",
                      "web-blue"), id="blue-green-route-stable"),
        pytest.param(BG_SERVICE, "blue_green", "candidate", "green",
                     ("shop", "checkout-green", "checkout-green-[a-z0-9]+-[a-z0-9]+",
                      "checkout-preview"), id="blue-green-selector-candidate-is-the-preview"),
        pytest.param(BG_SERVICE, "blue_green", "stable", "blue",
                     ("shop", "checkout-blue", "checkout-blue-[a-z0-9]+-[a-z0-9]+", "checkout"),
                     id="blue-green-selector-stable-is-the-live-service"),
    ],
)  # fmt: skip
def test_kubernetes_identity_of_each_side(
    kubernetes: dict[str, Any],
    strategy: str,
    role: Any,
    backend: str,
    expected: tuple[str, str, str, str],
) -> None:
    """Each side's namespace, Deployment, pod regex and Service, as the actuator names them."""
    values = kubernetes_identity(target(kubernetes), strategy, role, backend, "default")
    assert (values["namespace"], values["workload"], values["pod"], values["k8sService"]) == (
        expected
    )
    names = side_names(target(kubernetes), strategy, role, backend)
    assert (names.workload, names.service) == expected[1::2]


def test_no_target_gives_no_kubernetes_values_and_rendering_refuses_them() -> None:
    """Without a target there is nothing to fill in, and render says which value is missing."""
    assert kubernetes_identity(None, "canary", "candidate", "blue", "default") == {}
    with pytest.raises(QueryError, match=r"placeholder \$pod .* has no value here"):
        render('up{pod=~"$pod"}', {"service": "checkout"})


def test_a_pod_regex_renders_inside_the_quotes() -> None:
    """The pod regex lands as a regex matcher's value, escaped for PromQL."""
    values = kubernetes_identity(target(CANARY_ROUTE), "canary", "candidate", "b", "shop")
    rendered = render('sum(x{namespace="$namespace", pod=~"$pod"})', values)
    assert rendered == 'sum(x{namespace="shop", pod=~"checkout-candidate-[a-z0-9]+-[a-z0-9]+"})'


def test_the_engine_renders_both_sides_with_the_stages_target() -> None:
    """The runner's identities carry each side's Kubernetes values beside the release's."""
    policy = parse_policy(
        document({"deployment": "checkout", "namespace": "shop", "router": ROUTE})
    )
    promotion = Promotion(
        id="p-1",
        service="checkout",
        stage="production",
        artifact=ArtifactRef("ghcr.io/acme/checkout", "sha256:" + "b" * 64),
        version="1.1.0",
        policy_version="1",
        strategy="canary",
        candidate_upstream="",
        manifest={},
        created_at=1.0,
        baseline=ArtifactRef("ghcr.io/acme/checkout", "sha256:" + "a" * 64),
        candidate_backend="green",
        baseline_backend="blue",
    )
    candidate, baseline = identities(promotion, policy.stages[0].kubernetes, "default")
    assert baseline is not None
    assert (candidate["workload"], candidate["k8sService"], candidate["namespace"]) == (
        "checkout-candidate",
        "checkout-canary",
        "shop",
    )
    assert (baseline["workload"], baseline["k8sService"], baseline["version"]) == (
        "checkout",
        "checkout",
        "",
    )
    assert "workload" not in identities(promotion)[0]
