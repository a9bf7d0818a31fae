"""The Kubernetes ledger: promgate's durable state in the API server, so no pod keeps any.

Why this layout (the design is told in full in the package docstring): the API server
offers atomic writes of one object at a time, checked by resourceVersion, and nothing
across objects. So each (service, stage) gets one ConfigMap that holds everything whose
consistency matters together (its stable history, its traffic state, its active
promotion) and, for the rest of a transaction (the Promotion object, the event-log
chunks), a journal written in that same single write. That write is the commit point;
the journal is then applied idempotently and cleared, and any reader that finds a
journal applies it first. A crash at any point leaves all of a transaction or none.
"""

from __future__ import annotations

import asyncio
import builtins  # KubernetesLedger defines a method named `list`, which hides the type
import contextlib
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

from sidecar.actuators.base import TrafficState
from sidecar.domain.artifact import ArtifactRef
from sidecar.domain.policy import PromotionPolicy
from sidecar.domain.promotion import Phase, Promotion, PromotionEvent, StableRelease
from sidecar.errors import KubeConflictError, KubeError, LedgerError
from sidecar.kube.api import CONFIGMAP, PROMOTION, KubeApi, Object
from sidecar.ledger import rules
from sidecar.ledger.base import AuditEntry, NewEvent, Transaction
from sidecar.ledger.kubernetes import names, plan, records
from sidecar.ledger.kubernetes.audit import AuditLog
from sidecar.ledger.kubernetes.journal import Applier, log_tail
from sidecar.ledger.kubernetes.records import StageState
from sidecar.ledger.kubernetes.store import Store, retrying
from sidecar.telemetry.logging import get_logger

_log = get_logger("ledger")
_STAGES = {names.LEDGER_LABEL: "stage"}
_PENDING = {**_STAGES, names.JOURNAL_LABEL: "pending"}


class KubernetesLedger:
    """A :class:`~sidecar.ledger.base.Ledger` in one namespace of a Kubernetes cluster.

    ``clock`` gives wall-clock seconds; it orders promotions created in the same instant.
    ``policy``, when given, lets each Promotion's status show its strategy's step count.
    """

    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        *,
        clock: Callable[[], float] = time.time,
        policy: PromotionPolicy | None = None,
    ) -> None:
        self._store = Store(api, namespace)
        self._applier = Applier(self._store, policy)
        self._audit = AuditLog(self._store)
        self._clock = clock
        self._last_order = 0
        self._lock = asyncio.Lock()  # this instance's commits and roll-forwards, in turn

    async def open(self) -> None:
        """Check that the Promotion CRD is installed, then finish any transaction a crash
        left half-applied. A second call does the same, harmlessly."""
        try:
            await self._store.api.list(PROMOTION, self._store.namespace)
        except KubeError as exc:
            raise LedgerError(
                f"cannot open the Kubernetes ledger in namespace {self._store.namespace!r}: "
                f"listing promotions.promgate.dev failed ({exc}); install the CRD "
                "(kubectl apply -f helm/promgate/crds/) and let promgate's service account "
                "read and write promotions and configmaps in that namespace"
            ) from exc
        await self._settle()

    async def close(self) -> None:
        """Nothing to release: the API client belongs to the caller."""

    # --- writes -----------------------------------------------------------------------

    async def create(self, promotion: Promotion) -> None:
        await self.commit(Transaction(create=promotion))

    async def save(self, promotion: Promotion) -> None:
        await self.commit(Transaction(save=promotion))

    async def append_event(
        self, promotion_id: str, kind: str, data: dict[str, Any], at: float
    ) -> PromotionEvent:
        (event,) = await self.commit(Transaction(events=(NewEvent(promotion_id, kind, data, at),)))
        return event

    async def push_stable(self, release: StableRelease) -> None:
        await self.commit(Transaction(push_stable=release))

    async def pop_stable(self, service: str, stage: str) -> StableRelease:
        history = await self.stable_history(service, stage)
        rules.check_can_pop(service, stage, len(history))
        await self.commit(Transaction(pop_stable=history[-1]))
        return history[-1]

    async def save_traffic(self, state: TrafficState) -> None:
        await self.commit(Transaction(traffic=state))

    async def commit(self, transaction: Transaction) -> Sequence[PromotionEvent]:
        """Decide and write the commit point (retried while other writers win the race),
        then apply the journal. Once the commit point is written the transaction stands:
        a failure applying it is logged and left to the next read, which finishes it."""
        async with self._lock:
            committed, appended = await retrying(
                "commit a transaction", lambda: self._commit_point(transaction)
            )
            if committed is not None:
                try:
                    await self._applier.roll_forward(committed)
                except LedgerError as exc:
                    _log.warning(
                        "transaction committed; applying it failed, the next read finishes it",
                        extra={"stage": committed.name, "error": str(exc)},
                    )
        return appended

    async def _commit_point(
        self, transaction: Transaction
    ) -> tuple[StageState | None, builtins.list[PromotionEvent]]:
        await self._settle(locked=True)
        stored: dict[str, Promotion] = {}
        for promotion_id in plan.named(transaction):
            found = await self._record(promotion_id)
            if found is not None:
                stored[promotion_id] = found
        key = plan.stage_of(transaction, stored)
        if key is None:
            for promotion_id in plan.named(transaction):
                raise rules.unknown_promotion(promotion_id)
            return None, []  # an empty transaction writes nothing
        state = await self._stage(*key)
        if state.journal is not None:  # another replica's, being applied: help it along
            await self._applier.roll_forward(state)
            state = await self._stage(*key)
        if state.journal is not None:
            raise KubeConflictError("another writer committed to this stage meanwhile")
        created = transaction.create
        taken = created is not None and await self._record(created.id) is not None
        untracked = {
            e.promotion_id
            for e in transaction.events
            if e.promotion_id not in state.tails and e.promotion_id in stored
        }
        tails = {i: log_tail(builtins.list(await self._chunks(i))) for i in untracked}
        facts = plan.Facts(known=stored, taken=taken, tails=tails, order=self._next_order())
        new, appended = plan.plan(state, transaction, facts)
        body = new.to_object()
        if state.resource_version is None:
            written = await self._store.create(CONFIGMAP, body)
        else:
            written = await self._store.replace(CONFIGMAP, body)
        return StageState.from_object(written), appended

    def _next_order(self) -> int:
        """Nanoseconds of wall clock, strictly growing within this instance."""
        self._last_order = max(int(self._clock() * 1e9), self._last_order + 1)
        return self._last_order

    async def remember_tag(self, artifact: ArtifactRef) -> None:
        tag = artifact.tag
        if tag is None:
            return
        name = names.tags_name(artifact.name)

        async def remember() -> None:
            current = await self._store.get(CONFIGMAP, name)
            data: dict[str, str] = (current or {}).get("data") or {}
            rules.check_tag(artifact.name, tag, data.get(tag), artifact.digest)
            if tag in data:
                return
            if current is None:
                labels = {names.LEDGER_LABEL: "tags"}
                body = records.config_map(name, labels, {tag: artifact.digest})
                await self._store.create(CONFIGMAP, body)
            else:
                body = {**current, "data": {**data, tag: artifact.digest}}
                await self._store.replace(CONFIGMAP, body)

        await retrying(f"remember tag {artifact.name}:{tag}", remember)

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
        await self._audit.append(AuditEntry(0, at, actor, action, target, result, reason))

    # --- reads ------------------------------------------------------------------------

    async def get(self, promotion_id: str) -> Promotion:
        await self._settle()
        found = await self._record(promotion_id)
        if found is None:
            raise rules.unknown_promotion(promotion_id)
        return found

    async def list(
        self,
        *,
        service: str | None = None,
        stage: str | None = None,
        active: bool | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Sequence[Promotion]:
        await self._settle()
        found = await self._all()
        return rules.select(
            found, service=service, stage=stage, active=active, limit=limit, after=after
        )

    async def newest(self, phases: Collection[Phase]) -> Sequence[Promotion]:
        return rules.newest_per_stage(await self.list(), phases)

    async def events(
        self, promotion_id: str, after: int = 0, limit: int | None = None
    ) -> Sequence[PromotionEvent]:
        await self._settle()
        if await self._record(promotion_id) is None:
            raise rules.unknown_promotion(promotion_id)
        found = [
            e
            for chunk in sorted(await self._chunks(promotion_id), key=names.chunk_number)
            for e in records.events_of(promotion_id, chunk.get("data") or {})
            if e.seq > after
        ]
        return found if limit is None else found[:limit]

    async def stable_history(self, service: str, stage: str) -> Sequence[StableRelease]:
        await self._settle()
        return builtins.list((await self._stage(service, stage)).history)

    async def traffic(self, service: str, stage: str) -> TrafficState | None:
        await self._settle()
        return (await self._stage(service, stage)).traffic

    async def all_traffic(self) -> Sequence[TrafficState]:
        await self._settle()
        states = sorted(await self._stages(), key=lambda s: (s.service, s.stage))
        return [s.traffic for s in states if s.traffic is not None]

    async def promoted_stages(self, service: str, digest: str) -> set[str]:
        await self._settle()
        return {
            release.stage
            for state in await self._stages({names.SERVICE_LABEL: names.label_value(service)})
            if state.service == service
            for release in state.history
            if release.artifact.digest == digest
        }

    async def audit_trail(self, *, limit: int, before: int | None = None) -> Sequence[AuditEntry]:
        return await self._audit.trail(limit, before)

    # --- helpers ----------------------------------------------------------------------

    async def _settle(self, *, locked: bool = False) -> None:
        """Finish every transaction committed but not yet applied, so no read sees half
        of one."""
        pending = await self._store.list(CONFIGMAP, _PENDING)
        if not pending:
            return
        async with contextlib.nullcontext() if locked else self._lock:
            # as listed: if a stage moved since, rolling forward again is harmless and the
            # clearing re-reads it
            for obj in pending:
                await self._applier.roll_forward(StageState.from_object(obj))

    async def _record(self, promotion_id: str) -> Promotion | None:
        obj = await self._store.get(PROMOTION, names.promotion_name(promotion_id))
        found = records.promotion_of(obj) if obj is not None else None
        return found if found is not None and found.id == promotion_id else None

    async def _all(self) -> builtins.list[Promotion]:
        """Every promotion, newest first; among equal creation times the later-created."""
        keyed = []
        for obj in await self._store.list(PROMOTION):
            promotion = records.promotion_of(obj)
            if promotion is not None:
                keyed.append(((promotion.created_at, records.order_of(obj)), promotion))
        keyed.sort(key=lambda pair: pair[0], reverse=True)
        return [promotion for _, promotion in keyed]

    async def _stage(self, service: str, stage: str) -> StageState:
        obj = await self._store.get(CONFIGMAP, names.stage_name(service, stage))
        return StageState(service, stage) if obj is None else StageState.from_object(obj)

    async def _stages(self, labels: dict[str, str] | None = None) -> builtins.list[StageState]:
        objs = await self._store.list(CONFIGMAP, {**_STAGES, **(labels or {})})
        return [StageState.from_object(o) for o in objs]

    async def _chunks(self, promotion_id: str) -> Sequence[Object]:
        owner = names.promotion_name(promotion_id)
        return await self._store.list(
            CONFIGMAP, {names.LEDGER_LABEL: "events", names.PROMOTION_LABEL: owner}
        )
