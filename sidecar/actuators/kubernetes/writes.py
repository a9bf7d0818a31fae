"""Read-modify-write of one object, fenced by its resourceVersion, and the one place a
Kubernetes API error becomes an ActuationError."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sidecar.errors import (
    ActuationError,
    KubeConflictError,
    KubeError,
    KubeInvalidError,
    KubeNotFoundError,
)
from sidecar.kube.api import Kind, KubeApi, Object

T = TypeVar("T")
MAX_CONFLICTS = 5
"""Writes that lose a race are re-read and retried this many times before giving up."""

Edit = Callable[[Object], Object]
"""A pure edit: the object as read -> the object as it should be (a new dict)."""


async def update(
    api: KubeApi,
    kind: Kind,
    namespace: str,
    name: str,
    edit: Edit,
    *,
    current: Object | None = None,
) -> Object:
    """Read the object (unless the caller just did: ``current``), apply ``edit``, and write
    the result with the resourceVersion read; when another writer got there first (409),
    read again and redo the edit. Nothing is written when the edit changes nothing, so a
    repeated state costs no write."""
    for _ in range(MAX_CONFLICTS):
        if current is None:
            current = await call(api.get(kind, namespace, name), kind, namespace, name)
        desired = edit(copy.deepcopy(current))
        if desired == current:
            return current
        try:
            return await api.replace(kind, namespace, desired)
        except KubeConflictError:
            current = None
            continue
        except KubeError as exc:
            raise actuation_error(exc, kind, namespace, name) from None
    raise ActuationError(
        f"kubernetes: {kind.kind} {namespace}/{name} kept changing under promgate's writes "
        f"({MAX_CONFLICTS} conflicts in a row); the next attempt reads it again"
    )


async def call(awaitable: Awaitable[T], kind: Kind, namespace: str, name: str) -> T:
    """Await one API call on the object ``kind namespace/name``; its error as ActuationError."""
    try:
        return await awaitable
    except KubeError as exc:
        raise actuation_error(exc, kind, namespace, name) from None


def actuation_error(error: KubeError, kind: Kind, namespace: str, name: str) -> ActuationError:
    """What failed, on which object, and the fix; a refused object is permanent (writing it
    again cannot succeed), anything else is retried."""
    where = f"{kind.kind} {namespace}/{name}"
    if isinstance(error, KubeNotFoundError):
        return ActuationError(
            f"kubernetes: {where} does not exist; create it, or correct the stage's "
            "kubernetes target in the policy"
        )
    if isinstance(error, KubeInvalidError):
        return ActuationError(
            f"kubernetes: the API server refused {where} as invalid: {error}", permanent=True
        )
    return ActuationError(f"kubernetes: writing {where} failed: {error}")
