"""An in-process ledger for tests and dry runs, where nothing may outlive the process.

Every method runs without awaiting, so under asyncio each one is atomic, as a transaction
of the SQLite ledger is; :meth:`MemoryLedger.commit` checks every write before it makes
any, so a refused one leaves nothing behind either.
"""

from __future__ import annotations

import builtins  # MemoryLedger defines a method named `list`, which hides the type
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sidecar.actuators.base import TrafficState
from sidecar.domain.artifact import ArtifactRef
from sidecar.domain.promotion import Phase, Promotion, PromotionEvent, StableRelease
from sidecar.ledger import rules
from sidecar.ledger.base import AuditEntry, NewEvent, Transaction


@dataclass(frozen=True)
class _StoredEvent:
    at: float
    kind: str
    data: str  # JSON, so a caller mutating its dict cannot rewrite history


class MemoryLedger:
    """A :class:`~sidecar.ledger.base.Ledger` in dicts, with the SQLite ledger's rules."""

    def __init__(self) -> None:
        self._promotions: dict[str, str] = {}  # id -> JSON body, in creation order
        self._manifests: dict[str, str] = {}  # id -> JSON manifest, written once
        self._events: dict[str, list[_StoredEvent]] = {}
        self._tags: dict[tuple[str, str], str] = {}
        self._stable: dict[tuple[str, str], list[StableRelease]] = {}
        self._traffic: dict[tuple[str, str], TrafficState] = {}
        self.audit_entries: list[AuditEntry] = []

    async def open(self) -> None:
        """Nothing to create: the state lives as long as this object."""

    async def close(self) -> None:
        """Nothing to release; the state stays readable, which helps tests inspect it."""

    async def create(self, promotion: Promotion) -> None:
        await self.commit(Transaction(create=promotion))

    async def save(self, promotion: Promotion) -> None:
        await self.commit(Transaction(save=promotion))

    async def commit(self, transaction: Transaction) -> Sequence[PromotionEvent]:
        # check and serialise everything before changing anything: a refusal leaves no trace
        created, saved, popped = transaction.create, transaction.save, transaction.pop_stable
        if created is not None:
            self._check_create(created)
        known = {*self._promotions, *([created.id] if created else [])}
        for promotion_id in [
            *([saved.id] if saved else []),
            *(e.promotion_id for e in transaction.events),
        ]:
            if promotion_id not in known:
                raise rules.unknown_promotion(promotion_id)
        if popped is not None:
            history = self._stable.get((popped.service, popped.stage), [])
            rules.check_can_pop(popped.service, popped.stage, len(history))
            rules.check_newest_stable(history[-1], popped)
        bodies = {p.id: rules.dump_promotion(p) for p in (created, saved) if p is not None}
        manifest = rules.dump_manifest(created) if created is not None else None
        texts = [
            rules.dump(rules.event_what(e.promotion_id, e.kind), e.data) for e in transaction.events
        ]

        self._promotions.update(bodies)
        if created is not None and manifest is not None:
            self._manifests[created.id] = manifest
            self._events[created.id] = []
        if popped is not None:
            self._stable[(popped.service, popped.stage)].pop()
        if transaction.push_stable is not None:
            self._push(transaction.push_stable)
        if (state := transaction.traffic) is not None:
            self._traffic[(state.service, state.stage)] = state
        return [
            self._append(event, text) for event, text in zip(transaction.events, texts, strict=True)
        ]

    def _append(self, event: NewEvent, text: str) -> PromotionEvent:
        log = self._events[event.promotion_id]
        log.append(_StoredEvent(event.at, event.kind, text))
        data = rules.load(rules.event_what(event.promotion_id, event.kind), text)
        return PromotionEvent(event.promotion_id, len(log), event.at, event.kind, data)

    def _check_create(self, promotion: Promotion) -> None:
        if promotion.id in self._promotions:
            raise rules.duplicate_promotion(promotion.id)
        if promotion.active:
            for other in self._load_all():
                if other.active and (other.service, other.stage) == (
                    promotion.service,
                    promotion.stage,
                ):
                    raise rules.active_conflict(promotion, other.id)

    async def get(self, promotion_id: str) -> Promotion:
        if promotion_id not in self._promotions:
            raise rules.unknown_promotion(promotion_id)
        return self._load(promotion_id)

    async def list(
        self,
        *,
        service: str | None = None,
        stage: str | None = None,
        active: bool | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Sequence[Promotion]:
        # Newest first; among equal creation times the later-created one first, as in SQLite.
        found = sorted(reversed(self._load_all()), key=lambda p: p.created_at, reverse=True)
        return rules.select(
            found, service=service, stage=stage, active=active, limit=limit, after=after
        )

    async def newest(self, phases: Collection[Phase]) -> Sequence[Promotion]:
        return rules.newest_per_stage(await self.list(), phases)

    async def append_event(
        self, promotion_id: str, kind: str, data: dict[str, Any], at: float
    ) -> PromotionEvent:
        (event,) = await self.commit(Transaction(events=(NewEvent(promotion_id, kind, data, at),)))
        return event

    async def events(
        self, promotion_id: str, after: int = 0, limit: int | None = None
    ) -> Sequence[PromotionEvent]:
        log = self._log(promotion_id)
        start = max(after, 0)
        end = None if limit is None else start + limit
        return [
            PromotionEvent(promotion_id, seq, e.at, e.kind, rules.load(f"event {seq}", e.data))
            for seq, e in enumerate(log[start:end], start=start + 1)
        ]

    async def remember_tag(self, artifact: ArtifactRef) -> None:
        if artifact.tag is None:
            return
        key = (artifact.name, artifact.tag)
        rules.check_tag(artifact.name, artifact.tag, self._tags.get(key), artifact.digest)
        self._tags.setdefault(key, artifact.digest)

    async def push_stable(self, release: StableRelease) -> None:
        self._push(release)

    def _push(self, release: StableRelease) -> None:
        history = self._stable.setdefault((release.service, release.stage), [])
        if not rules.already_newest(history[-1] if history else None, release):
            history.append(release)

    async def stable_history(self, service: str, stage: str) -> Sequence[StableRelease]:
        return builtins.list(self._stable.get((service, stage), ()))

    async def pop_stable(self, service: str, stage: str) -> StableRelease:
        history = self._stable.get((service, stage), [])
        rules.check_can_pop(service, stage, len(history))
        return history.pop()

    async def save_traffic(self, state: TrafficState) -> None:
        await self.commit(Transaction(traffic=state))

    async def traffic(self, service: str, stage: str) -> TrafficState | None:
        return self._traffic.get((service, stage))

    async def all_traffic(self) -> Sequence[TrafficState]:
        return [self._traffic[key] for key in sorted(self._traffic)]

    async def promoted_stages(self, service: str, digest: str) -> set[str]:
        return {
            release.stage
            for (svc, _), history in self._stable.items()
            if svc == service
            for release in history
            if release.artifact.digest == digest
        }

    async def audit(
        self,
        actor: str,
        action: str,
        target: str,
        at: float,
        *,
        result: str = "applied",
        reason: str = "",
    ) -> None:
        entry = AuditEntry(len(self.audit_entries) + 1, at, actor, action, target, result, reason)
        self.audit_entries.append(entry)

    async def audit_trail(self, *, limit: int, before: int | None = None) -> Sequence[AuditEntry]:
        older = [e for e in reversed(self.audit_entries) if before is None or e.id < before]
        return older[:limit]

    def _load(self, promotion_id: str) -> Promotion:
        what = f"promotion {promotion_id!r}"
        promotion = rules.load_promotion(what, self._promotions[promotion_id])
        return replace(
            promotion, manifest=rules.load(f"manifest of {what}", self._manifests[promotion_id])
        )

    def _load_all(self) -> builtins.list[Promotion]:
        return [self._load(promotion_id) for promotion_id in self._promotions]

    def _log(self, promotion_id: str) -> builtins.list[_StoredEvent]:
        log = self._events.get(promotion_id)
        if log is None:
            raise rules.unknown_promotion(promotion_id)
        return log
