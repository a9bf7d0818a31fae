"""Rules and messages both ledgers share, so the SQLite and in-memory ledgers cannot drift.

Both ledgers keep free-form payloads as JSON: the in-memory one too, so that data SQLite
could not store fails in tests and dry runs as well, and stored state is never aliased.
"""

from __future__ import annotations

import json
from typing import Any

from sidecar.domain.promotion import Promotion
from sidecar.errors import (
    ArtifactReferenceError,
    ConflictError,
    LedgerError,
    NotFoundError,
    TagMutationError,
)


def dump(what: str, data: dict[str, Any]) -> str:
    """JSON text for storage; data JSON cannot hold is refused before anything is written."""
    try:
        return json.dumps(data)
    except (TypeError, ValueError) as exc:
        raise LedgerError(f"cannot store {what}: it is not JSON-serialisable ({exc})") from exc


def load(what: str, text: str) -> dict[str, Any]:
    """The dict stored by :func:`dump`; anything else means the stored state is damaged."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise LedgerError(f"stored {what} is not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise LedgerError(f"stored {what} is a JSON {type(value).__name__}, not an object")
    return value


def load_promotion(what: str, text: str) -> Promotion:
    """A promotion from its stored body; a body that no longer fits is a LedgerError."""
    try:
        return Promotion.from_dict(load(what, text))
    except (KeyError, TypeError, ValueError, ArtifactReferenceError) as exc:
        raise LedgerError(f"stored {what} does not describe a promotion ({exc})") from exc


def unknown_promotion(promotion_id: str) -> NotFoundError:
    return NotFoundError(f"no promotion with id {promotion_id!r}; list promotions to find its id")


def duplicate_promotion(promotion_id: str) -> ConflictError:
    return ConflictError(
        f"a promotion with id {promotion_id!r} already exists; every promotion needs a new id"
    )


def active_conflict(promotion: Promotion, active_id: str) -> ConflictError:
    """Only one promotion may drive a (service, stage)'s traffic at a time."""
    conflict = ConflictError(
        f"promotion {active_id!r} is still active for service {promotion.service!r} "
        f"stage {promotion.stage!r}; wait for it to finish or abort it before starting "
        f"{promotion.id!r}"
    )
    conflict.active_id = active_id
    return conflict


def check_tag(repository: str, tag: str, known: str | None, digest: str) -> None:
    """A tag seen once must keep its digest: a moved tag hides which image is running."""
    if known is not None and known != digest:
        raise TagMutationError(
            f"tag {repository}:{tag} was seen with digest {known} and now points to {digest}; "
            "tags are mutable, so promgate trusts digests only: promote the image by digest "
            f"({repository}@{digest}) or publish it under a new tag"
        )


def check_can_pop(service: str, stage: str, count: int) -> None:
    """A rollback needs an earlier stable digest to return to."""
    if count < 2:
        raise NotFoundError(
            f"service {service!r} stage {stage!r} has {count} stable release(s), so there is "
            "no earlier digest to roll back to"
        )
