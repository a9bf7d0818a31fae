"""Validation of Kubernetes objects offline: built-in kinds and the published CRDs.

Built-in kinds go through kubernetes-validate (Kubernetes' own OpenAPI schemas, strict, so
an unknown field fails). Custom resources are checked with jsonschema against the
``openAPIV3Schema`` of their CustomResourceDefinition: the published ones in
``../shared/k8s-schemas`` (gateway-api, prometheus-operator) and promgate's own in the
chart's ``crds/``; CEL rules (``x-kubernetes-validations``) are not evaluated. CI always
has ``../shared``; elsewhere the tests that need it skip and say why.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KUBERNETES = "1.30.0"
SHARED_SCHEMAS = REPO.parent / "shared" / "k8s-schemas"
OWN_CRDS = {("promgate.dev", "Promotion"): REPO / "helm/promgate/crds/promotions.promgate.dev.yaml"}
PUBLISHED_CRDS = {
    ("gateway.networking.k8s.io", "HTTPRoute"): "gateway-api-v1.6.1-httproutes.yaml",
    ("monitoring.coreos.com", "ServiceMonitor"): "prometheus-operator-v0.93.0-servicemonitors.yaml",
    ("monitoring.coreos.com", "PrometheusRule"): "prometheus-operator-v0.93.0-prometheusrules.yaml",
}


def shared_schemas() -> Path:
    """``../shared/k8s-schemas``; skips the test when it is absent, fails in CI."""
    if not SHARED_SCHEMAS.is_dir():
        why = (
            f"{SHARED_SCHEMAS} is missing: the published CRDs (HTTPRoute, ServiceMonitor, "
            "PrometheusRule) live in ../shared beside the checkout"
        )
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return SHARED_SCHEMAS


@functools.cache
def _crd_validator(group: str, kind: str, version: str) -> jsonschema.protocols.Validator:
    path = OWN_CRDS.get((group, kind)) or shared_schemas() / PUBLISHED_CRDS[(group, kind)]
    crd = yaml.safe_load(path.read_text())
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return jsonschema.Draft4Validator(served["schema"]["openAPIV3Schema"])


def problems(doc: dict[str, Any]) -> list[str]:
    """What a real API server would refuse in ``doc`` (empty when it is valid)."""
    group, _, version = doc["apiVersion"].rpartition("/")
    if (group, doc["kind"]) in PUBLISHED_CRDS.keys() | OWN_CRDS.keys():
        validator = _crd_validator(group, doc["kind"], version)
        return [
            f"{'.'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
            for error in validator.iter_errors(doc)
        ]
    try:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [str(exc)]
    return []


def assert_valid(doc: dict[str, Any], where: str) -> None:
    """Fail naming the object and every problem the API server would report."""
    found = problems(doc)
    name = doc.get("metadata", {}).get("name", "?")
    assert found == [], f"{where}: {doc['kind']} {name}:\n  " + "\n  ".join(found)
