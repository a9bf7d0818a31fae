"""Pure: what one transaction does to a stage's ConfigMap, and the journal it leaves.

The ledger reads a stage's ConfigMap (and the few facts the transaction's checks need),
and this module decides: refuse the transaction with the same errors as every ledger, or
return the new content of that ConfigMap, journal included. Writing it is the commit.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace

from sidecar.domain.promotion import Promotion, PromotionEvent, StableRelease
from sidecar.errors import LedgerError
from sidecar.ledger import rules
from sidecar.ledger.base import Transaction
from sidecar.ledger.kubernetes import names, records
from sidecar.ledger.kubernetes.records import Journal, JournalEvent, LogTail, StageState

MAX_OBJECT_BYTES = 1_000_000
"""Largest data promgate writes into one object: under the API's 1 MiB for a ConfigMap
and etcd's 1.5 MiB request limit, with room for metadata."""

CHUNK_BYTES = 256 * 1024
"""An event-log chunk takes no more events once it holds this much; a single larger
event gets a chunk of its own (the journal's limit bounds it)."""

MAX_HISTORY = 1000
"""Stable releases kept per (service, stage), newest last: about 300 KiB. Older ones
are dropped, so a digest promoted more than this many releases ago no longer counts as
promoted there for stage-order checks."""

MAX_TAILS = 64
"""Finished promotions whose event-log end a stage remembers beside its active ones;
an event for an older one finds the end by listing its log."""


@dataclass(frozen=True)
class Facts:
    """What the checks of a transaction need to know beyond the stage's ConfigMap."""

    known: Collection[str]
    """Ids of the stored promotions the transaction names."""
    taken: bool = False
    """Whether the id of the promotion to create already has a record."""
    tails: Mapping[str, LogTail] | None = None
    """Log ends of promotions the stage does not remember."""
    order: int = 0
    """The creation order of the promotion to create."""


def stage_of(transaction: Transaction, stored: Mapping[str, Promotion]) -> tuple[str, str] | None:
    """The one (service, stage) a transaction writes; None for an empty one. ``stored`` maps
    the ids it names to their stored promotions (missing ids are refused later)."""
    keys = set()
    if transaction.create is not None:
        keys.add((transaction.create.service, transaction.create.stage))
    for promotion_id in named(transaction):
        if promotion_id in stored:
            keys.add((stored[promotion_id].service, stored[promotion_id].stage))
    for release in (transaction.pop_stable, transaction.push_stable):
        if release is not None:
            keys.add((release.service, release.stage))
    if transaction.traffic is not None:
        keys.add((transaction.traffic.service, transaction.traffic.stage))
    if len(keys) > 1:
        spans = ", ".join(f"{sv}/{st}" for sv, st in sorted(keys))
        raise LedgerError(
            f"a transaction writes several (service, stage)s ({spans}); the Kubernetes "
            "ledger commits one at a time: split it into one transaction per stage"
        )
    return next(iter(keys), None)


def named(transaction: Transaction) -> list[str]:
    """Ids of existing promotions the transaction writes to."""
    created = transaction.create.id if transaction.create else None
    ids = [transaction.save.id] if transaction.save else []
    ids += [e.promotion_id for e in transaction.events]
    return [i for i in dict.fromkeys(ids) if i != created]


def plan(
    state: StageState, transaction: Transaction, facts: Facts
) -> tuple[StageState, list[PromotionEvent]]:
    """The stage's new state, its journal set, and the events the transaction appends;
    a refused write raises and nothing is decided."""
    created, saved, popped = transaction.create, transaction.save, transaction.pop_stable
    active = list(state.active)
    if created is not None:
        if len(created.stage) > names.MAX_LABEL:
            raise LedgerError(
                f"cannot store promotion {created.id!r}: its stage name is "
                f"{len(created.stage)} characters, and a Promotion object's spec.stage takes "
                f"at most {names.MAX_LABEL}; name the stage in the policy shorter"
            )
        if facts.taken:
            raise rules.duplicate_promotion(created.id)
        if created.active and active:
            raise rules.active_conflict(created, active[0])
    for promotion_id in named(transaction):
        if promotion_id not in facts.known:
            raise rules.unknown_promotion(promotion_id)
    history = list(state.history)
    if popped is not None:
        rules.check_can_pop(popped.service, popped.stage, len(history))
        rules.check_newest_stable(history[-1], popped)
        history.pop()
    for promotion in (created, saved):
        if promotion is not None:
            rules.dump_promotion(promotion)  # refuse what JSON cannot hold, before anything
            active = [i for i in active if i != promotion.id]
            if promotion.active:
                active.append(promotion.id)
    if transaction.push_stable is not None:
        history = _pushed(history, transaction.push_stable)

    tails = dict(state.tails)
    if created is not None:
        tails[created.id] = LogTail()
    events, appended = [], []
    for event in transaction.events:
        text = rules.dump(rules.event_what(event.promotion_id, event.kind), event.data)
        tail = tails.pop(event.promotion_id, None) or (facts.tails or {})[event.promotion_id]
        size = len(records.event_key(0)) + len(
            records.event_value(event.at, event.kind, text).encode()
        )
        chunk, used = tail.chunk, tail.bytes
        if used and used + size > CHUNK_BYTES:
            chunk, used = chunk + 1, 0
        tails[event.promotion_id] = LogTail(tail.seq + 1, chunk, used + size)
        events.append(JournalEvent(event.promotion_id, tail.seq + 1, chunk, event.at,
                                   event.kind, text))  # fmt: skip
        data = rules.load(rules.event_what(event.promotion_id, event.kind), text)
        appended.append(
            PromotionEvent(event.promotion_id, tail.seq + 1, event.at, event.kind, data)
        )
    for promotion in (created, saved):
        if promotion is not None and promotion.id in tails:  # written now: newest
            tails[promotion.id] = tails.pop(promotion.id)

    journal = Journal(
        txn=state.txn + 1,
        create=created,
        create_order=facts.order,
        save=replace(saved, manifest={}) if saved is not None else None,  # never rewritten
        events=tuple(events),
    )
    new = replace(
        state,
        history=history,
        traffic=transaction.traffic or state.traffic,
        active=active,
        tails=_bounded(tails, active),
        txn=journal.txn,
        journal=journal,
    )
    size = records.data_bytes(new.to_object()["data"])
    if size > MAX_OBJECT_BYTES:
        raise LedgerError(
            f"the transaction for {state.service}/{state.stage} needs {size} bytes in "
            f"ConfigMap {state.name!r}, over the {MAX_OBJECT_BYTES} bytes Kubernetes "
            "accepts in one object; write large event data or manifests in smaller parts"
        )
    return new, appended


def _pushed(history: list[StableRelease], release: StableRelease) -> list[StableRelease]:
    if rules.already_newest(history[-1] if history else None, release):
        return history
    return [*history, release][-MAX_HISTORY:]


def _bounded(tails: dict[str, LogTail], active: Collection[str]) -> dict[str, LogTail]:
    """The active promotions' log ends and the newest MAX_TAILS others, oldest first."""
    others = [k for k in tails if k not in active]
    dropped = set(others[: max(0, len(others) - MAX_TAILS)])
    return {k: t for k, t in tails.items() if k not in dropped}
