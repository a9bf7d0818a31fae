"""Validation of Kubernetes objects offline: built-in kinds and the published CRDs.

Built-in kinds go through kubernetes-validate (Kubernetes' own OpenAPI schemas, strict, so
an unknown field fails). Custom resources are checked with jsonschema against the
``openAPIV3Schema`` of their CustomResourceDefinition, loaded and converted the way the
contract API server does it (:mod:`tests.kubeapi.validation`, so an unknown field fails
too): the published ones in ``../shared/k8s-schemas`` (gateway-api, prometheus-operator)
and promgate's own in the chart's ``crds/``; CEL rules (``x-kubernetes-validations``) are
not evaluated. The contract server's extra rules (images pinned by digest, name checks)
are not applied: the chart's default image is a tag. CI always
has ``../shared``; elsewhere the tests that need it skip and say why.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from tests.kubeapi.resources import PROMGATE_CRDS_DIR, crd_resources
from tests.kubeapi.resources import SCHEMAS_DIR as SHARED_SCHEMAS
from tests.kubeapi.validation import KUBERNETES_VERSION as KUBERNETES
from tests.kubeapi.validation import crd_validator

OWN_CRDS = {("promgate.dev", "Promotion"): PROMGATE_CRDS_DIR / "promotions.promgate.dev.yaml"}
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


def _crd_validator(group: str, kind: str, version: str) -> jsonschema.protocols.Validator:
    path = OWN_CRDS.get((group, kind)) or shared_schemas() / PUBLISHED_CRDS[(group, kind)]
    (served,) = [r for r in crd_resources(path) if (r.kind.kind, r.kind.version) == (kind, version)]
    return crd_validator(served)


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
