"""Refusals answered as the real API server answers them: a ``kind: Status`` body."""

from __future__ import annotations

from typing import Any

from tests.kubeapi.resources import Resource

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "RequestEntityTooLarge",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiError(Exception):
    """A request the server refuses; ``body()`` is the Status object it answers with."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "InternalError")
        self.details = details

    def body(self) -> dict[str, Any]:
        """The Status object."""
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            status["details"] = self.details
        return status


def _details(resource: Resource, name: str) -> dict[str, Any]:
    return {"name": name, "group": resource.kind.group, "kind": resource.kind.plural}


def not_found(resource: Resource, name: str) -> ApiError:
    """The named object does not exist."""
    return ApiError(
        404, f'{resource.qualified} "{name}" not found', details=_details(resource, name)
    )


def already_exists(resource: Resource, name: str) -> ApiError:
    """A create found the name taken."""
    return ApiError(
        409,
        f'{resource.qualified} "{name}" already exists',
        reason="AlreadyExists",
        details=_details(resource, name),
    )


def conflict(resource: Resource, name: str, why: str) -> ApiError:
    """A write or delete whose resourceVersion precondition no longer holds."""
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {resource.qualified} "{name}": {why}',
        details=_details(resource, name),
    )


def invalid(resource: Resource, name: str, field: str, detail: str) -> ApiError:
    """The object fails validation; the message names the field, as the real server's does."""
    details = _details(resource, name) | {
        "kind": resource.kind.kind,
        "causes": [{"reason": "FieldValueInvalid", "message": detail, "field": field}],
    }
    return ApiError(
        422,
        f'{resource.qualified_kind} "{name}" is invalid: {field}: {detail}',
        details=details,
    )
