"""The Kubernetes API seam: the kinds promgate reads and writes, and the Protocol over them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Object = dict[str, Any]
"""A Kubernetes object as the API serves it (``apiVersion``, ``kind``, ``metadata``, ...)."""


@dataclass(frozen=True)
class Kind:
    """A namespaced resource type: where its objects live in the API."""

    group: str
    """API group; ``""`` for the core group (``/api/v1``)."""
    version: str
    plural: str
    """The resource name in URLs (``deployments``)."""
    kind: str
    """The ``kind`` field of its objects (``Deployment``)."""

    @property
    def api_version(self) -> str:
        """The ``apiVersion`` field of its objects."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str, name: str = "", subresource: str = "") -> str:
        """The URL path of the collection in ``namespace``, or of one object in it."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        path = f"{base}/namespaces/{namespace}/{self.plural}"
        if name:
            path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
        return path


DEPLOYMENT = Kind("apps", "v1", "deployments", "Deployment")
SERVICE = Kind("", "v1", "services", "Service")
POD = Kind("", "v1", "pods", "Pod")
CONFIGMAP = Kind("", "v1", "configmaps", "ConfigMap")
EVENT = Kind("", "v1", "events", "Event")
LEASE = Kind("coordination.k8s.io", "v1", "leases", "Lease")
HTTPROUTE = Kind("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
PROMOTION = Kind("promgate.dev", "v1alpha1", "promotions", "Promotion")


class KubeApi(Protocol):
    """Namespaced CRUD over JSON objects. Raises only ``KubeError`` and its subclasses:
    ``KubeNotFoundError`` (404), ``KubeConflictError`` (409: resourceVersion moved or name
    taken), ``KubeInvalidError`` (422), plain ``KubeError`` for anything else (5xx,
    401/403, no answer)."""

    async def get(self, kind: Kind, namespace: str, name: str) -> Object:
        """The object, or ``KubeNotFoundError``."""

    async def list(
        self, kind: Kind, namespace: str, *, labels: Mapping[str, str] | None = None
    ) -> Sequence[Object]:
        """Every object of ``kind`` in ``namespace`` whose labels equal ``labels``."""

    async def create(self, kind: Kind, namespace: str, body: Object) -> Object:
        """Create ``body``; the stored object (with its resourceVersion). A taken name is a
        ``KubeConflictError`` with reason ``AlreadyExists``."""

    async def replace(self, kind: Kind, namespace: str, body: Object) -> Object:
        """Replace the object ``body`` names (PUT). ``body.metadata.resourceVersion`` must be
        the one read: if the object moved since, ``KubeConflictError``. On a kind with a
        status subresource, ``status`` in ``body`` is ignored."""

    async def replace_status(self, kind: Kind, namespace: str, body: Object) -> Object:
        """Replace only ``status`` of the object ``body`` names (PUT ``/status``), under the
        same resourceVersion rule; everything but ``status`` in ``body`` is ignored."""

    async def delete(
        self, kind: Kind, namespace: str, name: str, *, resource_version: str | None = None
    ) -> None:
        """Delete the object; with ``resource_version``, only if it has not moved since
        (``KubeConflictError`` otherwise). ``KubeNotFoundError`` if it does not exist."""

    async def close(self) -> None:
        """Release the connection pool."""
