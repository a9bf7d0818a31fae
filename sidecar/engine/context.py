"""What the engine works with, and the one place that changes a promotion's state.

Every state change goes through :meth:`EngineContext.move`: save the new state (with a
new actuation sequence number when traffic must change), append an event, then make the
actuator match. A failed actuation is remembered in ``unapplied`` and retried by the
controller; after a crash, :meth:`ensure_applied` finishes an actuation that was saved
but not applied, and never repeats one that was.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from sidecar.actuators.base import TrafficActuator, TrafficState
from sidecar.analysis.prometheus import MetricsSource
from sidecar.domain.policy import PromotionPolicy
from sidecar.domain.promotion import Phase, Promotion, StableRelease
from sidecar.engine.clock import Clock
from sidecar.engine.traffic import desired_traffic
from sidecar.errors import ActuationError
from sidecar.ledger.base import Ledger
from sidecar.telemetry.logging import get_logger
from sidecar.telemetry.metrics import Recorder
from sidecar.telemetry.tracing import promotion_parent, release_attributes

_log = get_logger("engine")


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


@dataclass
class EngineContext:
    policy: PromotionPolicy
    ledger: Ledger
    actuator: TrafficActuator
    source: MetricsSource
    recorder: Recorder
    tracer: trace.Tracer
    clock: Clock
    bus: EventBus = field(default_factory=EventBus)
    unapplied: set[str] = field(default_factory=set)

    async def event(self, promotion: Promotion, kind: str, data: dict[str, Any]) -> None:
        await self.ledger.append_event(promotion.id, kind, data, self.clock.now())
        self.bus.notify(promotion.id)

    async def move(
        self,
        promotion: Promotion,
        *,
        event: str,
        data: dict[str, Any] | None = None,
        raise_on_failure: bool = False,
        **changes: Any,
    ) -> Promotion:
        """Save ``changes``, log ``event``, and shift traffic if the split changed.

        A failed actuation is kept in ``unapplied`` for retry; it raises only with
        ``raise_on_failure`` (a person's command: they should hear of it at once).
        """
        moved = promotion.evolve(updated_at=self.clock.now(), **changes)
        traffic_changed = desired_traffic(moved) != desired_traffic(promotion)
        if traffic_changed:
            moved = moved.evolve(actuation_seq=promotion.actuation_seq + 1)
        await self.ledger.save(moved)
        payload = {
            "phase": moved.phase.value,
            "weight": moved.weight,
            "step": moved.step_index,
            **(data or {}),
        }
        if moved.reason and moved.reason != promotion.reason:
            payload.setdefault("reason", moved.reason)
        await self.event(moved, event, payload)
        self.recorder.progress(moved)
        # a new sequence number was just saved, so the ledger cannot hold it as applied yet
        desired = desired_traffic(moved) if traffic_changed else None
        if desired is not None:
            try:
                await self._apply(moved, desired)
            except ActuationError:
                if raise_on_failure:
                    raise
        if moved.phase.terminal and not promotion.phase.terminal:
            if moved.phase is Phase.PROMOTED:
                await self._record_stable(moved)
            self.recorder.finished(moved)
        return moved

    async def ensure_applied(self, promotion: Promotion) -> None:
        """Apply the promotion's traffic split unless the ledger says it already was."""
        desired = desired_traffic(promotion)
        if desired is None:
            return
        applied = await self.ledger.traffic(promotion.service, promotion.stage)
        if applied is None or not applied.covers(desired):
            await self._apply(promotion, desired)

    async def _apply(self, promotion: Promotion, desired: TrafficState) -> None:
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
                self.unapplied.add(promotion.id)
                self.recorder.actuation(promotion, ok=False)
                _log.error(
                    "actuation failed",
                    extra={
                        "promotion": promotion.id,
                        "sequence": desired.sequence,
                        "error": str(exc),
                    },
                )
                await self.event(
                    promotion, "actuation_failed", {"sequence": desired.sequence, "error": str(exc)}
                )
                raise
        self.unapplied.discard(promotion.id)
        self.recorder.actuation(promotion, ok=True)
        await self.ledger.save_traffic(desired)
        await self.event(
            promotion,
            "actuation",
            {
                "sequence": desired.sequence,
                "backends": [
                    {
                        "digest": b.digest,
                        "weight": b.weight,
                        "role": b.role,
                        "retain_until": b.retain_until,
                    }
                    for b in desired.backends
                ],
                "preview": desired.preview.digest if desired.preview else None,
            },
        )

    async def _record_stable(self, promotion: Promotion) -> None:
        await self.ledger.push_stable(
            StableRelease(
                promotion.service,
                promotion.stage,
                promotion.artifact,
                promotion.candidate_upstream,
                promotion.id,
                self.clock.now(),
                promotion.version,
            )
        )
        self.recorder.stable_digest(
            promotion.service, promotion.stage, promotion.artifact.digest, promotion.version
        )
