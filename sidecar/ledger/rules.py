"""Rules and messages the ledgers share, so the SQLite, in-memory and Kubernetes ledgers
cannot drift.

Both ledgers keep free-form payloads as JSON: the in-memory one too, so that data SQLite
could not store fails in tests and dry runs as well, and stored state is never aliased.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import Any

from sidecar.domain.promotion import Phase, Promotion, StableRelease
from sidecar.errors import (
    ArtifactReferenceError,
    ConflictError,
    LedgerError,
    NotFoundError,
    TagMutationError,
)

MAX_ID = 2**63 - 1  # SQLite's largest integer: ids and event seqs stay below it


def dump(what: str, data: dict[str, Any]) -> str:
    """JSON text for storage; data JSON cannot hold is refused before anything is written."""
    try:
        return json.dumps(data)
    except (TypeError, ValueError) as exc:
        raise LedgerError(f"cannot store {what}: it is not JSON-serialisable ({exc})") from exc


def event_what(promotion_id: str, kind: str) -> str:
    """How messages name one event of a promotion's log."""
    return f"event {kind!r} of promotion {promotion_id!r}"


def load(what: str, text: str) -> dict[str, Any]:
    """The dict stored by :func:`dump`; anything else means the stored state is damaged."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise LedgerError(f"stored {what} is not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise LedgerError(f"stored {what} is a JSON {type(value).__name__}, not an object")
    return value


def dump_promotion(promotion: Promotion) -> str:
    """A promotion's stored body: everything but its manifest, which is stored once apart,
    so saving a step rewrites a few hundred bytes, not the whole manifest."""
    body = promotion.to_dict()
    del body["manifest"]
    return dump(f"promotion {promotion.id!r}", body)


def dump_manifest(promotion: Promotion) -> str:
    return dump(f"manifest of promotion {promotion.id!r}", promotion.manifest)


def load_promotion(what: str, text: str) -> Promotion:
    """A promotion from its stored body (its manifest empty until joined); a body that no
    longer fits is a LedgerError."""
    try:
        return Promotion.from_dict({"manifest": {}, **load(what, text)})
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


def already_newest(newest: StableRelease | None, release: StableRelease) -> bool:
    """Whether pushing ``release`` adds nothing: the newest stable release already has its
    digest (the push is repeated after a crash, or the stage is back on it after a rollback)."""
    return newest is not None and newest.artifact.digest == release.artifact.digest


def check_newest_stable(newest: StableRelease, expected: StableRelease) -> None:
    """A rollback removes the release it read as the newest, or nothing."""
    if (newest.promotion_id, newest.artifact.digest) != (
        expected.promotion_id,
        expected.artifact.digest,
    ):
        raise ConflictError(
            f"the newest stable release of service {newest.service!r} stage {newest.stage!r} "
            f"is now {newest.artifact.digest} (promotion {newest.promotion_id!r}), not "
            f"{expected.artifact.digest}; another write changed it: read the history again"
        )


def select(
    newest_first: Sequence[Promotion],
    *,
    service: str | None,
    stage: str | None,
    active: bool | None,
    limit: int | None,
    after: str | None,
) -> list[Promotion]:
    """What :meth:`Ledger.list` gives, from every promotion ordered newest first."""
    found = list(newest_first)
    if after is not None:
        ids = [p.id for p in found]
        if after not in ids:
            raise unknown_promotion(after)
        found = found[ids.index(after) + 1 :]
    matching = [
        p
        for p in found
        if (service is None or p.service == service)
        and (stage is None or p.stage == stage)
        and (active is None or p.active == active)
    ]
    return matching if limit is None else matching[:limit]


def newest_per_stage(
    newest_first: Sequence[Promotion], phases: Collection[Phase]
) -> list[Promotion]:
    """What :meth:`Ledger.newest` gives, from every promotion ordered newest first."""
    newest: dict[tuple[str, str], Promotion] = {}
    for p in newest_first:
        if p.phase in phases:
            newest.setdefault((p.service, p.stage), p)
    return list(newest.values())
