"""Applying a committed journal to the objects outside its stage's ConfigMap.

Every step is idempotent and safe to run from several places at once (the writer that
committed, a reader that found the journal, another replica): a Promotion object takes a
record only from a newer transaction of its stage, an event-log chunk only gains the
events it lacks. So rolling a journal forward twice, or after a crash halfway, ends in
the same objects as once.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json

from sidecar.domain.policy import PromotionPolicy
from sidecar.domain.promotion import Promotion
from sidecar.errors import KubeConflictError
from sidecar.kube.api import CONFIGMAP, PROMOTION, Object
from sidecar.ledger.kubernetes import names, records
from sidecar.ledger.kubernetes.records import Journal, JournalEvent, StageState
from sidecar.ledger.kubernetes.store import Store, retrying
from sidecar.telemetry.logging import get_logger

_log = get_logger("ledger")


class Applier:
    """Rolls journals forward in one namespace."""

    def __init__(self, store: Store, policy: PromotionPolicy | None) -> None:
        self._store = store
        self._policy = policy

    async def roll_forward(self, state: StageState) -> None:
        """Apply the stage's journal, then clear it from the stage's ConfigMap."""
        journal = state.journal
        if journal is None:
            return
        await self.apply(journal)
        cleared = dataclasses.replace(state, journal=None).to_object()
        try:  # as read: if the stage moved, whoever moved it may have cleared it already
            await self._store.replace(CONFIGMAP, cleared)
            return
        except KubeConflictError:
            pass
        await retrying(
            f"clear the journal of {state.name}", lambda: self._clear(state.name, journal)
        )

    async def apply(self, journal: Journal) -> None:
        if journal.create is not None:
            await self._promotion(journal, journal.create, journal.create_order)
        if journal.save is not None:
            await self._promotion(journal, journal.save, 0)
        for (promotion_id, chunk), events in itertools.groupby(
            journal.events, key=lambda e: (e.promotion_id, e.chunk)
        ):
            await retrying(
                f"append events to the log of {promotion_id!r}",
                functools.partial(self._append, promotion_id, chunk, list(events)),
            )

    async def _promotion(self, journal: Journal, promotion: Promotion, order: int) -> None:
        gates = None
        for event in journal.events:
            if event.promotion_id == promotion.id:
                gates = records.gates_of(json.loads(event.text)) or gates
        await retrying(
            f"write Promotion {names.promotion_name(promotion.id)!r}",
            lambda: self._write_promotion(journal.txn, promotion, order, gates),
        )

    async def _write_promotion(
        self, txn: int, promotion: Promotion, order: int, gates: list[dict[str, object]] | None
    ) -> None:
        name = names.promotion_name(promotion.id)
        current = await self._store.get(PROMOTION, name)
        if current is None:
            if not order:  # a save whose object a person deleted: nothing left to update
                _log.warning("promotion object deleted; its record is gone", extra={"name": name})
                return
            current = await self._store.create(
                PROMOTION, records.new_promotion_object(promotion, order)
            )
        if records.applied_txn(current) >= txn:
            return  # this transaction, or a newer one of the stage, is there already
        labels = current["metadata"].get("labels") or {}
        wanted = records.promotion_labels(promotion)
        if any(labels.get(k) != v for k, v in wanted.items()):
            kept_order = records.order_of(current) or order
            current = await self._store.replace(
                PROMOTION, records.adopted_metadata(current, promotion, kept_order)
            )
        steps = records.step_count(self._policy, promotion)
        await self._store.replace_status(
            PROMOTION, records.promotion_status(current, promotion, txn, gates=gates, steps=steps)
        )

    async def _append(self, promotion_id: str, chunk: int, events: list[JournalEvent]) -> None:
        owner = names.promotion_name(promotion_id)
        name = names.events_name(owner, chunk)
        entries = {
            records.event_key(e.seq): records.event_value(e.at, e.kind, e.text) for e in events
        }
        current = await self._store.get(CONFIGMAP, name)
        if current is None:
            labels = {names.LEDGER_LABEL: "events", names.PROMOTION_LABEL: owner}
            await self._store.create(CONFIGMAP, records.config_map(name, labels, entries))
            return
        data: dict[str, str] = current.get("data") or {}
        missing = {k: v for k, v in entries.items() if k not in data}
        if missing:
            await self._store.replace(CONFIGMAP, {**current, "data": {**data, **missing}})

    async def _clear(self, name: str, journal: Journal) -> None:
        current = await self._store.get(CONFIGMAP, name)
        if current is None:
            return
        state = StageState.from_object(current)
        if state.journal is None or state.journal.txn != journal.txn:
            return  # cleared already, by whoever rolled it forward first
        state.journal = None
        await self._store.replace(CONFIGMAP, state.to_object())


def log_tail(chunks: list[Object]) -> records.LogTail:
    """Where a promotion's log ends, from all its chunks (when its stage forgot)."""
    if not chunks:
        return records.LogTail()
    last = max(chunks, key=names.chunk_number)
    data: dict[str, str] = last.get("data") or {}
    seq = max((int(k) for k in data), default=0)
    return records.LogTail(seq, names.chunk_number(last), records.data_bytes(data))
