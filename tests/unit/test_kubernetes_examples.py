"""The Kubernetes example (examples/kubernetes/): what a user applies must be what the API
server and the chart accept, and its names must agree with the RBAC the values grant."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from sidecar.domain.manifest import ReleaseManifest
from tests.support.k8s_schemas import KUBERNETES, assert_valid

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "kubernetes"
CHART = REPO / "helm" / "promgate"
RELEASE_NAMESPACE = "promgate"  # the namespace values.yaml's instructions install into
PINNED = "@sha256:"


def _documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((EXAMPLE / name).read_text()) if doc]


def _by_kind(documents: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    kinds: dict[str, list[dict[str, Any]]] = {}
    for doc in documents:
        kinds.setdefault(doc["kind"], []).append(doc)
    return kinds


def _values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((EXAMPLE / "values.yaml").read_text())
    return values


@pytest.mark.parametrize("name", ["workload.yaml", "promotion.yaml"])
def test_every_example_object_is_valid(name: str) -> None:
    """Built-ins strictly against 1.30, HTTPRoute against Gateway API, Promotion its CRD."""
    for doc in _documents(name):
        assert_valid(doc, name)


def test_a_broken_route_is_refused() -> None:
    """The route check can fail: a weight over the Gateway API's bound is reported."""
    route = copy.deepcopy(_by_kind(_documents("workload.yaml"))["HTTPRoute"][0])
    route["spec"]["rules"][0]["backendRefs"][0]["weight"] = 2_000_000
    with pytest.raises(AssertionError, match="weight"):
        assert_valid(route, "broken")


def test_workload_is_pinned_and_routed_stable_first() -> None:
    kinds = _by_kind(_documents("workload.yaml"))
    (deployment,) = kinds["Deployment"]
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        assert PINNED in container["image"], f"{container['name']}: pin the image by digest"
    pods = deployment["spec"]["template"]["metadata"]["labels"]
    services = {s["metadata"]["name"]: s["spec"]["selector"] for s in kinds["Service"]}
    assert services["checkout"].items() <= pods.items(), "the stable Service selects the pods"
    assert not services["checkout-canary"].items() <= pods.items(), "the candidate's does not"
    (route,) = kinds["HTTPRoute"]
    weights = {ref["name"]: ref["weight"] for ref in route["spec"]["rules"][0]["backendRefs"]}
    assert weights == {"checkout": 100, "checkout-canary": 0}
    for rule in route["spec"]["rules"]:
        for ref in rule["backendRefs"]:
            assert ref["name"] in services, f"backendRef {ref['name']} is not a Service here"


def test_values_grant_what_the_workload_needs() -> None:
    values = _values()
    names = values["kubernetes"]["resourceNames"]
    kinds = _by_kind(_documents("workload.yaml"))
    for doc in _documents("workload.yaml"):
        assert doc["metadata"]["namespace"] in values["kubernetes"]["targetNamespaces"]
    assert {d["metadata"]["name"] for d in kinds["Deployment"]} <= set(names["deployments"])
    assert {s["metadata"]["name"] for s in kinds["Service"]} <= set(names["services"])
    assert {r["metadata"]["name"] for r in kinds["HTTPRoute"]} <= set(names["httpRoutes"])


def test_values_install_cleanly() -> None:
    values = _values()
    with helm_python.Chart.load(CHART) as chart:
        chart.validate_schema(values)
        rendered = chart.render(values, name="promgate", namespace=RELEASE_NAMESPACE)
    documents = [
        doc
        for path, text in rendered.items()
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    for doc in documents:
        assert_valid(doc, "examples/kubernetes/values.yaml")
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    assert PINNED in deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    roles = {
        (d["metadata"]["namespace"], d["metadata"]["name"])
        for d in documents
        if d["kind"] == "Role"
    }
    assert ("shop", "promgate-workloads") in roles
    report = helm_python.lint(CHART, values, strict=True, kube_version=f"v{KUBERNETES}")
    assert report["errors"] == [] and report["messages"] == [], report


def test_promotion_resource_carries_a_valid_manifest() -> None:
    (promotion,) = _documents("promotion.yaml")
    assert promotion["metadata"]["namespace"] == RELEASE_NAMESPACE
    manifest = ReleaseManifest.from_data(promotion["spec"]["manifest"], source="promotion.yaml")
    assert PINNED in str(manifest.artifact)
    (deployment,) = _by_kind(_documents("workload.yaml"))["Deployment"]
    assert manifest.service == deployment["metadata"]["name"]
