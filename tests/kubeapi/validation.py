"""What the contract server refuses with 422 Invalid, on every write (HTTP and seed).

Built-in kinds are checked by kubernetes-validate against Kubernetes 1.30's own schemas in
strict mode (an unknown field is refused); custom resources by jsonschema against their CRD's
``openAPIV3Schema``, where an unknown field is refused too (a real server would prune it, so a
write that relies on one loses data there). CEL rules (``x-kubernetes-validations``) are not
evaluated. Beyond the real API: pod template images must be pinned by digest, since promgate
only ever writes ``repository@sha256:...``.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

import jsonschema
import kubernetes_validate
from jsonschema.exceptions import ValidationError, best_match

from sidecar.kube.api import CONFIGMAP, DEPLOYMENT, POD, SERVICE, Object
from tests.kubeapi.errors import invalid
from tests.kubeapi.resources import Resource

KUBERNETES_VERSION = "1.30.0"
MAX_CONFIGMAP_BYTES = 1 << 20
"""data plus binaryData, as the real API limits a ConfigMap (and a Secret)."""

PINNED_IMAGE = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_SUBDOMAIN = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


class Validator:
    """Checks a whole object as it would be stored; raises ``ApiError`` 422 naming the field."""

    def check(self, resource: Resource, obj: Object) -> None:
        """Refuse ``obj`` if the real API server (or the digest rule) would."""
        name = obj.get("metadata", {}).get("name", "")
        for field, detail in self._problems(resource, obj):
            raise invalid(resource, name, field, detail)

    def _problems(self, resource: Resource, obj: Object) -> Iterator[tuple[str, str]]:
        yield from _metadata_problems(resource, obj.get("metadata") or {})
        error = self._schema_error(resource, obj)
        if error is not None:
            yield _describe(error)
        if resource.kind == DEPLOYMENT:
            yield from _unpinned(
                obj.get("spec", {}).get("template", {}).get("spec", {}), "spec.template.spec"
            )
        if resource.kind == POD:
            yield from _unpinned(obj.get("spec", {}), "spec")
        if resource.kind == CONFIGMAP and _configmap_bytes(obj) > MAX_CONFIGMAP_BYTES:
            yield "[]", f"Too long: must have at most {MAX_CONFIGMAP_BYTES} bytes"

    def _schema_error(self, resource: Resource, obj: Object) -> ValidationError | None:
        if resource.schema is None:
            try:
                kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            except ValidationError as error:
                return error
            return None
        return best_match(crd_validator(resource).iter_errors(obj))


@functools.cache
def crd_validator(resource: Resource) -> jsonschema.protocols.Validator:
    """The jsonschema validator of a custom resource's CRD schema, built once per process."""
    return jsonschema.Draft4Validator(structural(resource.schema))


def structural(node: Any, *, preserve_unknown: bool = False) -> Any:
    """A CRD's OpenAPI v3 schema as plain JSON Schema: ``nullable`` becomes a ``null`` type,
    and an object with declared properties refuses any other (unless it preserves unknown
    fields)."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: structural(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = structural(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [structural(sub) for sub in value]
        elif not key.startswith("x-kubernetes-") and key != "nullable":
            out[key] = value
    if node.get("nullable") and "type" in node:
        out["type"] = [node["type"], "null"]
    keeps_unknown = preserve_unknown or node.get("x-kubernetes-preserve-unknown-fields", False)
    if node.get("type") == "object" and "properties" in node and not keeps_unknown:
        out.setdefault("additionalProperties", False)
    return out


def _describe(error: ValidationError) -> tuple[str, str]:
    """The field path and the message, the way the API server words them."""
    field = _path(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        declared = error.schema.get("properties", {})
        unknown = sorted(set(error.instance) - set(declared))
        if unknown:
            where = _join(field, unknown[0])
            return where, f'unknown field "{where}"'
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [key for key in error.validator_value if key not in error.instance]
        if missing:
            return _join(field, missing[0]), "Required value"
    shown = json.dumps(error.instance, default=str)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return field or "<root>", f"Invalid value: {shown}: {error.message.splitlines()[0][:200]}"


def _path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _join(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def _metadata_problems(resource: Resource, metadata: dict[str, Any]) -> Iterator[tuple[str, str]]:
    name = metadata.get("name", "")
    name_rule = DNS_1035_LABEL if resource.kind == SERVICE else DNS_SUBDOMAIN
    limit = 63 if resource.kind == SERVICE else 253
    if not name:
        yield "metadata.name", "Required value: name or generateName is required"
    elif len(name) > limit or not name_rule.match(name):
        yield (
            "metadata.name",
            (
                f'Invalid value: "{name}": a lowercase RFC 1123 name must consist of lower case '
                f"alphanumeric characters, '-' or '.', at most {limit} characters"
            ),
        )
    for key, value in (metadata.get("labels") or {}).items():
        if not _label_key_ok(key):
            yield "metadata.labels", f'Invalid value: "{key}": not a valid label key'
        elif not isinstance(value, str) or (
            value and not (len(value) <= 63 and LABEL_NAME.match(value))
        ):
            yield (
                "metadata.labels",
                (
                    f'Invalid value: "{value}": a valid label value must be 63 characters or less, '
                    "empty, or begin and end with an alphanumeric character"
                ),
            )


def _label_key_ok(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(LABEL_NAME.match(name))


def _unpinned(pod_spec: dict[str, Any], where: str) -> Iterator[tuple[str, str]]:
    for group in ("initContainers", "containers"):
        for index, container in enumerate(pod_spec.get(group) or []):
            image = container.get("image", "")
            if not PINNED_IMAGE.match(image):
                yield (
                    f"{where}.{group}[{index}].image",
                    f'Invalid value: "{image}": pin images by digest (repository@sha256:<64 hex>)',
                )


def _configmap_bytes(obj: Object) -> int:
    data = sum(len(value.encode()) for value in (obj.get("data") or {}).values())
    return data + sum(_decoded_len(value) for value in (obj.get("binaryData") or {}).values())


def _decoded_len(value: str) -> int:
    try:
        return len(base64.b64decode(value, validate=True))
    except ValueError:
        return len(value)
