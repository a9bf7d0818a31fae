"""Objects as the API server keeps them: one global resourceVersion counter, uid, creation
time, generation, and the status subresource split.

``generation`` counts changes to anything but ``metadata`` and ``status``; a write that
changes nothing keeps the resourceVersion, as on a real server.
"""

from __future__ import annotations

import copy
import secrets
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sidecar.kube.api import Object
from tests.kubeapi.errors import ApiError, already_exists, conflict, invalid, not_found
from tests.kubeapi.resources import Resource

SERVER_FIELDS = ("uid", "resourceVersion", "generation", "creationTimestamp")
MODIFIED = (
    "the object has been modified; please apply your changes to the latest version and try again"
)

Validate = Callable[[Resource, Object], None]


class Store:
    """Namespaced objects of every served type; every write validates the object it stores."""

    def __init__(self, validate: Validate) -> None:
        self._validate = validate
        self._objects: dict[tuple[Resource, str], dict[str, Object]] = {}
        self._counter = 0

    @property
    def resource_version(self) -> str:
        """The latest resourceVersion handed out (a list's ``metadata.resourceVersion``)."""
        return str(self._counter)

    def find(self, resource: Resource, namespace: str, name: str) -> Object | None:
        """A copy of the object, or ``None``."""
        found = self._bucket(resource, namespace).get(name)
        return copy.deepcopy(found) if found is not None else None

    def get(self, resource: Resource, namespace: str, name: str) -> Object:
        """A copy of the object; ``ApiError`` 404 if there is none."""
        found = self.find(resource, namespace, name)
        if found is None:
            raise not_found(resource, name)
        return found

    def list(
        self, resource: Resource, namespace: str, selects: Callable[[Mapping[str, str]], bool]
    ) -> list[Object]:
        """Copies of the objects whose labels ``selects`` accepts, by name."""
        bucket = self._bucket(resource, namespace)
        return [
            copy.deepcopy(bucket[name])
            for name in sorted(bucket)
            if selects(bucket[name]["metadata"].get("labels") or {})
        ]

    def create(self, resource: Resource, namespace: str, body: Object) -> Object:
        """Store a new object (POST): server fields set, status dropped on a status kind."""
        obj = _admitted(resource, namespace, body)
        metadata = obj["metadata"]
        if metadata.get("resourceVersion"):
            raise ApiError(
                500,
                "Internal error occurred: "
                "resourceVersion should not be set on objects to be created",
            )
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = metadata["generateName"] + secrets.token_hex(3)[:5]
        name = metadata.get("name", "")
        if name in self._bucket(resource, namespace):
            raise already_exists(resource, name)
        if resource.status_subresource:  # a custom resource starts with none, a built-in empty
            obj.pop("status", None)
            if resource.schema is None:
                obj["status"] = {}
        metadata |= {
            "uid": str(uuid.uuid4()),
            "creationTimestamp": timestamp(),
            "generation": 1,
        }
        return self._store(resource, namespace, obj)

    def replace(
        self, resource: Resource, namespace: str, name: str, body: Object, *, status: bool = False
    ) -> Object:
        """Replace the object (PUT), or only its status (PUT ``/status``), if
        ``body.metadata.resourceVersion`` is the stored one."""
        obj = _admitted(resource, namespace, body, name)
        stored = self.get(resource, namespace, name)
        sent = obj["metadata"].get("resourceVersion")
        if not sent:
            raise invalid(
                resource,
                name,
                "metadata.resourceVersion",
                "Invalid value: 0x0: must be specified for an update",
            )
        if sent != stored["metadata"]["resourceVersion"]:
            raise conflict(resource, name, MODIFIED)
        if status:
            merged = copy.deepcopy(stored)
            merged["status"] = obj.get("status", {})
        else:
            merged = obj
            if resource.status_subresource:
                merged.pop("status", None)
                if "status" in stored:
                    merged["status"] = stored["status"]
        return self._update(resource, namespace, stored, merged)

    def overwrite(self, resource: Resource, namespace: str, body: Object) -> Object:
        """Create or replace regardless of resourceVersion (a test's seed); a status in
        ``body`` is kept, none keeps the stored one."""
        obj = _admitted(resource, namespace, body)
        obj["metadata"].pop("resourceVersion", None)
        stored = self.find(resource, namespace, obj["metadata"].get("name", ""))
        if stored is None:
            status = obj.get("status")
            created = self.create(resource, namespace, obj)
            if status is None:
                return created
            return self.set_status(resource, namespace, created["metadata"]["name"], status)
        if "status" not in obj and "status" in stored:
            obj["status"] = stored["status"]
        return self._update(resource, namespace, stored, obj)

    def set_status(
        self, resource: Resource, namespace: str, name: str, status: dict[str, Any]
    ) -> Object:
        """Replace the status unconditionally (what a controller's write does here)."""
        stored = self.get(resource, namespace, name)
        merged = copy.deepcopy(stored)
        merged["status"] = status
        return self._update(resource, namespace, stored, merged)

    def delete(
        self, resource: Resource, namespace: str, name: str, *, resource_version: str | None = None
    ) -> Object:
        """Remove the object, only if it is still at ``resource_version`` when given."""
        stored = self.get(resource, namespace, name)
        current = stored["metadata"]["resourceVersion"]
        if resource_version is not None and resource_version != current:
            raise conflict(
                resource,
                name,
                f"Precondition failed: ResourceVersion in precondition: {resource_version}, "
                f"ResourceVersion in object meta: {current}",
            )
        del self._bucket(resource, namespace)[name]
        return stored

    def _update(self, resource: Resource, namespace: str, stored: Object, merged: Object) -> Object:
        kept = stored["metadata"]
        merged["metadata"] |= {key: kept[key] for key in SERVER_FIELDS if key in kept}
        if merged == stored:
            return copy.deepcopy(stored)
        if _spec_of(merged) != _spec_of(stored):
            merged["metadata"]["generation"] = kept.get("generation", 1) + 1
        return self._store(resource, namespace, merged)

    def _store(self, resource: Resource, namespace: str, obj: Object) -> Object:
        self._validate(resource, obj)
        self._counter += 1
        obj["metadata"]["resourceVersion"] = str(self._counter)
        self._bucket(resource, namespace)[obj["metadata"]["name"]] = obj
        return copy.deepcopy(obj)

    def _bucket(self, resource: Resource, namespace: str) -> dict[str, Object]:
        return self._objects.setdefault((resource, namespace), {})


def _admitted(resource: Resource, namespace: str, body: Object, name: str | None = None) -> Object:
    """A copy of ``body`` with type and namespace filled in from the URL; refuses a body
    that names another type, namespace or object."""
    if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
        raise ApiError(400, "the body must be a JSON object with an object metadata")
    obj = copy.deepcopy(body)
    kind = resource.kind
    for field, expected in (("apiVersion", kind.api_version), ("kind", kind.kind)):
        if obj.setdefault(field, expected) != expected:
            raise ApiError(
                400, f"the body's {field} {obj[field]!r} is not {expected!r}, as the URL says"
            )
    metadata = obj.setdefault("metadata", {})
    if metadata.setdefault("namespace", namespace) != namespace:
        raise ApiError(
            400,
            "the namespace of the provided object does not match the namespace sent on the request",
        )
    if name is not None and metadata.get("name") != name:
        raise ApiError(
            400,
            f"the name of the object ({metadata.get('name')}) "
            f"does not match the name on the URL ({name})",
        )
    return obj


def _spec_of(obj: Object) -> Object:
    return {key: value for key, value in obj.items() if key not in ("metadata", "status")}


def timestamp() -> str:
    """Now, as the API server writes times."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
