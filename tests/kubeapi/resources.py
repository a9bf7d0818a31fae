"""The resource types the contract server serves: built-in kinds and the published CRDs.

A custom resource's schema comes from its CustomResourceDefinition file, unchanged, so an
object promgate writes is checked against what a real cluster would have installed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sidecar.kube.api import CONFIGMAP, DEPLOYMENT, EVENT, LEASE, POD, SERVICE, Kind

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMAS_DIR = REPO_ROOT.parent / "shared" / "k8s-schemas"
"""The published gateway-api and prometheus-operator CRDs (``../shared`` beside the checkout)."""
PROMGATE_CRDS_DIR = REPO_ROOT / "helm" / "promgate" / "crds"


class MissingSchemasError(FileNotFoundError):
    """The published CRD files are not beside the checkout."""


@dataclass(frozen=True)
class Resource:
    """One served resource type and the rules that differ between types."""

    kind: Kind
    status_subresource: bool
    """Whether ``/status`` exists, and so whether main writes keep the stored status."""
    schema: dict[str, Any] | None = field(default=None, compare=False)
    """The CRD's ``openAPIV3Schema``; ``None`` for a built-in kind (kubernetes-validate)."""

    @property
    def qualified(self) -> str:
        """``plural.group`` as the API server names the resource in messages."""
        return f"{self.kind.plural}.{self.kind.group}" if self.kind.group else self.kind.plural

    @property
    def qualified_kind(self) -> str:
        """``Kind.group``, the way Invalid messages name the object's type."""
        return f"{self.kind.kind}.{self.kind.group}" if self.kind.group else self.kind.kind


BUILTINS = (
    Resource(DEPLOYMENT, status_subresource=True),
    Resource(SERVICE, status_subresource=True),
    Resource(POD, status_subresource=True),
    Resource(CONFIGMAP, status_subresource=False),
    Resource(EVENT, status_subresource=False),
    Resource(LEASE, status_subresource=False),
)


@functools.cache
def crd_resources(path: Path) -> tuple[Resource, ...]:
    """Every served version of every CustomResourceDefinition in the YAML file ``path``
    (parsed once per process: the published files are large)."""
    return tuple(_served_versions(path))


def _served_versions(path: Path) -> Iterator[Resource]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for document in yaml.load_all(path.read_text(), Loader=loader):
        if not document or document.get("kind") != "CustomResourceDefinition":
            continue
        spec = document["spec"]
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            kind = Kind(
                spec["group"], version["name"], spec["names"]["plural"], spec["names"]["kind"]
            )
            yield Resource(
                kind,
                status_subresource="status" in (version.get("subresources") or {}),
                schema=version["schema"]["openAPIV3Schema"],
            )


class Registry:
    """Resource types by URL: ``(group, version, plural)``."""

    def __init__(self, resources: Iterable[Resource]) -> None:
        self._by_path = {(r.kind.group, r.kind.version, r.kind.plural): r for r in resources}

    @classmethod
    def default(cls, schemas_dir: Path = SCHEMAS_DIR) -> Registry:
        """The built-ins, the published CRDs in ``schemas_dir`` and promgate's own CRDs."""
        published = sorted(schemas_dir.glob("*.yaml")) if schemas_dir.is_dir() else []
        if not published:
            raise MissingSchemasError(
                f"no published CRDs in {schemas_dir}: the contract API server validates "
                "HTTPRoute, ServiceMonitor and PrometheusRule against them; put shared/k8s-schemas "
                "beside the checkout"
            )
        files = [*published, *sorted(PROMGATE_CRDS_DIR.glob("*.yaml"))]
        return cls([*BUILTINS, *(r for f in files for r in crd_resources(f))])

    def find(self, group: str, version: str, plural: str) -> Resource | None:
        """The served type at that URL, if any."""
        return self._by_path.get((group, version, plural))

    def by_type(self, api_version: str, kind: str) -> Resource:
        """The served type of objects with this ``apiVersion`` and ``kind``."""
        for resource in self._by_path.values():
            if resource.kind.api_version == api_version and resource.kind.kind == kind:
                return resource
        raise KeyError(f"the contract API server does not serve {kind} in {api_version}")

    def of(self, kind: Kind) -> Resource:
        """The served type of ``kind``; ``KeyError`` for a kind the server does not serve."""
        return self._by_path[(kind.group, kind.version, kind.plural)]

    def __iter__(self) -> Iterator[Resource]:
        return iter(self._by_path.values())
