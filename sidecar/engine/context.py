"""What the engine works with, and the one place that changes a promotion's state.

Every state change goes through :meth:`EngineContext.move`: save the new state and its
event in one ledger transaction (with a new actuation sequence number when traffic must
change), then make the actuator match. Once the actuator has applied a split, the split,
its ``actuation`` event and, for a promoted release, its place in the stage's stable
history are recorded in one more transaction: a crash between any two steps leaves a
state that :meth:`EngineContext.ensure_applied` completes on restart, never one that
contradicts the traffic.

A failed actuation is remembered in ``unapplied`` and retried by the controller, once per
state logged and recorded as an event; a permanent failure is not retried.

Both writes are fenced by ``may_act`` (the leadership seam): a replica whose lease lapsed
refuses to shift traffic or write state, even if a runner has not been cancelled yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from sidecar.actuators.base import TrafficActuator, TrafficState
from sidecar.analysis.prometheus import MetricsSource
from sidecar.domain.policy import PromotionPolicy
from sidecar.domain.promotion import Phase, Promotion, StableRelease
from sidecar.engine.clock import Clock
from sidecar.engine.traffic import desired_traffic
from sidecar.errors import ActuationError, LedgerError
from sidecar.ledger.base import Ledger, NewEvent, Transaction
from sidecar.telemetry.logging import get_logger
from sidecar.telemetry.metrics import Recorder
from sidecar.telemetry.tracing import promotion_parent, release_attributes

FIRST_RETRY_S = 2.0
MAX_RETRY_S = 60.0

_log = get_logger("engine")
_NOT_LEADER = "not the leader: this replica's lease lapsed, so another replica acts"


def _always() -> bool:
    return True


@dataclass
class EventBus:
    """Wakes API streams when a promotion's event log grows."""

    _changed: dict[str, asyncio.Event] = field(default_factory=dict)

    def notify(self, promotion_id: str) -> None:
        event = self._changed.pop(promotion_id, None)
        if event is not None:
            event.set()

    def waiter(self, promotion_id: str) -> asyncio.Event:
        """An event set at the next notify; take it *before* reading, so nothing slips by."""
        return self._changed.setdefault(promotion_id, asyncio.Event())


@dataclass(frozen=True)
class Unapplied:
    """A traffic state that failed to apply, and when the controller may try it again.

    ``retry_at`` is on the monotonic clock, doubling from ``FIRST_RETRY_S`` per failed
    attempt up to ``MAX_RETRY_S``; a permanent failure is never retried.
    """

    sequence: int
    error: str
    permanent: bool
    attempts: int
    retry_at: float

    @classmethod
    def of(cls, sequence: int, error: ActuationError, attempts: int) -> Unapplied:
        wait = min(FIRST_RETRY_S * 2 ** (attempts - 1), MAX_RETRY_S)
        return cls(sequence, str(error), error.permanent, attempts, time.monotonic() + wait)


@dataclass
class EngineContext:
    policy: PromotionPolicy
    ledger: Ledger
    actuator: TrafficActuator
    source: MetricsSource
    recorder: Recorder
    tracer: trace.Tracer
    clock: Clock
    kube_namespace: str = "default"
    """The namespace of a stage whose Kubernetes target names none: promgate's own."""
    bus: EventBus = field(default_factory=EventBus)
    unapplied: dict[str, Unapplied] = field(default_factory=dict)
    may_act: Callable[[], bool] = _always
    """True only while this replica leads; the one replica there is always does."""

    async def event(self, promotion: Promotion, kind: str, data: dict[str, Any]) -> None:
        await self.commit(Transaction(events=(self.new_event(promotion, kind, data),)))

    def new_event(self, promotion: Promotion, kind: str, data: dict[str, Any]) -> NewEvent:
        return NewEvent(promotion.id, kind, data, self.clock.now())

    async def commit(self, transaction: Transaction) -> None:
        """Write ``transaction``, then wake the streams of the promotions it logged to."""
        if not self.may_act():
            raise LedgerError(f"state not written: {_NOT_LEADER}")
        await self.ledger.commit(transaction)
        for promotion_id in {e.promotion_id for e in transaction.events}:
            self.bus.notify(promotion_id)

    async def move(
        self,
        promotion: Promotion,
        *,
        event: str,
        data: dict[str, Any] | None = None,
        **changes: Any,
    ) -> Promotion:
        """Save ``changes`` with ``event``, then shift traffic if the split changed.

        A failed actuation does not raise: it is kept in ``unapplied`` for a retry.
        """
        moved = promotion.evolve(updated_at=self.clock.now(), **changes)
        traffic_changed = desired_traffic(moved) != desired_traffic(promotion)
        if traffic_changed:
            moved = moved.evolve(actuation_seq=promotion.actuation_seq + 1)
        payload = {
            "phase": moved.phase.value,
            "weight": moved.weight,
            "step": moved.step_index,
            **(data or {}),
        }
        if moved.reason and moved.reason != promotion.reason:
            payload.setdefault("reason", moved.reason)
        await self.commit(Transaction(save=moved, events=(self.new_event(moved, event, payload),)))
        self.recorder.progress(moved)
        # a new sequence number was just saved, so the ledger cannot hold it as applied yet
        desired = desired_traffic(moved) if traffic_changed else None
        if desired is not None:
            with contextlib.suppress(ActuationError):
                await self._apply(moved, desired)
        if moved.phase.terminal and not promotion.phase.terminal:
            self.recorder.finished(moved)
        return moved

    async def ensure_applied(self, promotion: Promotion) -> None:
        """Apply the promotion's traffic split unless the ledger says it already was.

        Level-triggered: a promoted release whose split is recorded as applied but which is
        missing from the stable history (a ledger written by a version that recorded them
        apart) is put back there; when it already is, nothing is written.
        """
        desired = desired_traffic(promotion)
        if desired is None:
            return
        if not self.may_act():  # it may write the ledger below, not only the actuator
            raise ActuationError(f"traffic not checked: {_NOT_LEADER}")
        applied = await self.ledger.traffic(promotion.service, promotion.stage)
        if applied is None or not applied.covers(desired):
            await self._apply(promotion, desired)
            return
        stable = self._stable_release(promotion)
        if stable is not None:
            history = await self.ledger.stable_history(promotion.service, promotion.stage)
            if not history or history[-1].artifact.digest != stable.artifact.digest:
                await self.ledger.push_stable(stable)
                self._published_stable(stable)

    async def _apply(self, promotion: Promotion, desired: TrafficState) -> None:
        if not self.may_act():  # nothing is recorded either: the leader owns the ledger
            raise ActuationError(f"traffic not shifted: {_NOT_LEADER}")
        with self.tracer.start_as_current_span(
            "promgate.actuate",
            context=promotion_parent(promotion),
            attributes={
                **release_attributes(promotion),
                "promgate.sequence": desired.sequence,
                "promgate.weight": promotion.weight,
            },
        ) as span:
            try:
                await self.actuator.apply(desired)
            except ActuationError as exc:
                span.record_exception(exc)
                self.recorder.actuation(promotion, ok=False)
                await self._failed(promotion, desired, exc)
                raise
        self.unapplied.pop(promotion.id, None)
        self.recorder.actuation(promotion, ok=True)
        stable = self._stable_release(promotion)
        applied = self.new_event(promotion, "actuation", _actuation_data(desired))
        await self.commit(Transaction(push_stable=stable, traffic=desired, events=(applied,)))
        if stable is not None:
            self._published_stable(stable)

    async def _failed(
        self, promotion: Promotion, desired: TrafficState, error: ActuationError
    ) -> None:
        """Remember the failure for a retry; log it and record its event once per state."""
        before = self.unapplied.get(promotion.id)
        repeated = before is not None and before.sequence == desired.sequence
        attempts = before.attempts + 1 if before is not None and repeated else 1
        self.unapplied[promotion.id] = Unapplied.of(desired.sequence, error, attempts)
        if repeated:
            return
        _log.error(
            "actuation failed",
            extra={
                "promotion": promotion.id,
                "sequence": desired.sequence,
                "error": str(error),
                "permanent": error.permanent,
            },
        )
        await self.event(
            promotion,
            "actuation_failed",
            {"sequence": desired.sequence, "error": str(error), "permanent": error.permanent},
        )

    def _stable_release(self, promotion: Promotion) -> StableRelease | None:
        """The stable release a promoted promotion's applied split makes; None otherwise."""
        if promotion.phase is not Phase.PROMOTED:
            return None
        return StableRelease(
            promotion.service,
            promotion.stage,
            promotion.artifact,
            promotion.candidate_upstream,
            promotion.id,
            self.clock.now(),
            promotion.version,
        )

    def _published_stable(self, stable: StableRelease) -> None:
        self.recorder.stable_digest(
            stable.service, stable.stage, stable.artifact.digest, stable.version
        )


def _actuation_data(state: TrafficState) -> dict[str, Any]:
    return {
        "sequence": state.sequence,
        "backends": [
            {
                "digest": b.digest,
                "backend": b.backend,
                "weight": b.weight,
                "role": b.role,
                "retain_until": b.retain_until,
            }
            for b in state.backends
        ],
        "preview": state.preview.digest if state.preview else None,
    }
