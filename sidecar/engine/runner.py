"""The reconcile loop of one promotion: evaluate, decide, act, until a terminal phase."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from sidecar.actuators.base import Backend
from sidecar.analysis.analyzer import Analyzer
from sidecar.analysis.judge import StepVerdict, build_judge
from sidecar.analysis.queries import kubernetes_identity
from sidecar.domain.artifact import ArtifactRef
from sidecar.domain.kubernetes import KubernetesTarget
from sidecar.domain.policy import Stage
from sidecar.domain.promotion import Phase, Promotion
from sidecar.engine.context import EngineContext
from sidecar.engine.traffic import sides
from sidecar.errors import ActuationError, CandidateNotReadyError, PromgateError
from sidecar.strategies.base import Action, ActionKind, Strategy, track_evidence
from sidecar.strategies.factory import build_strategy
from sidecar.telemetry.logging import get_logger
from sidecar.telemetry.tracing import promotion_parent

_log = get_logger("decision")

EVIDENCE = "evidence"  # Promotion.extra key: the analyzer's counts, per gate
COUNTERS = "counters"  # Promotion.extra key: the last evaluation's time and counter readings
_WATCHED = (Phase.PROGRESSING, Phase.POST_PROMOTION)  # phases whose steps run on time

_FINAL_PHASE = {
    ActionKind.PROMOTE: Phase.PROMOTED,
    ActionKind.ROLLBACK: Phase.ROLLED_BACK,
    ActionKind.ABORT: Phase.ABORTED,
    ActionKind.INCONCLUSIVE: Phase.INCONCLUSIVE,
}


@dataclass
class PromotionRunner:
    """Drives one promotion. Cancel the task to stop it; its state is always saved."""

    ctx: EngineContext
    promotion: Promotion
    approved: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.stage: Stage = self.ctx.policy.stage(self.promotion.stage)
        self.analysis = self.ctx.policy.analysis_for(self.stage)
        self.strategy: Strategy = build_strategy(self.stage, self.analysis)
        self.analyzer = Analyzer(
            self.ctx.source,
            build_judge(self.stage, self.analysis),
            self.stage.gates.slo,
            self.ctx.tracer,
        )
        self.analyzer.restore(self.promotion.extra.get(EVIDENCE) or {})
        saved = self.promotion.extra.get(COUNTERS)
        saved = saved if isinstance(saved, dict) else {}
        self.analyzer.restore_counters(saved.get("gates") or {})
        # resuming a step: the time since its last evaluation was not watched
        self.unwatched_since: float | None = None
        if self.promotion.phase in _WATCHED:
            at = saved.get("at")
            if isinstance(at, int | float) and not isinstance(at, bool):
                self.unwatched_since = float(at)
            else:  # saved before evaluations were timed: the whole step so far
                self.unwatched_since = self.promotion.step_started_at

    async def begin(self) -> None:
        """Take the first step (await approval, or move traffic) if not taken yet."""
        if self.promotion.phase is Phase.PENDING:
            self.promotion = await self._begin(self.promotion)

    async def run(self) -> Promotion:
        await self.begin()
        while self.promotion.active:
            try:
                await self.ctx.ensure_applied(self.promotion)
            except ActuationError as exc:
                if exc.permanent:  # it can never move on: stop, traffic back to stable
                    self.promotion = await self._abort_unroutable(exc)
                else:
                    await self.ctx.clock.sleep(self.analysis.interval)
                continue
            if self.promotion.phase is Phase.AWAITING_APPROVAL:
                await self.approved.wait()
                approved = await self.ctx.ledger.get(self.promotion.id)
                self.promotion = await self.start_traffic(approved)
                continue
            await self.ctx.clock.sleep(self.analysis.interval)
            try:
                await self._step()
            except Exception as exc:  # a fault of ours must not orphan the promotion
                await self._evaluation_failed(exc)
        return self.promotion

    async def _evaluation_failed(self, error: Exception) -> None:
        """An evaluation failed unexpectedly (a bug, a ledger that refused a write): log it
        with its traceback, then carry on from the stored state at the next interval, so
        the promotion holds where it is instead of being left without a runner."""
        _log.error(
            "evaluation failed; the next interval tries again",
            extra={"promotion": self.promotion.id, "error": f"{type(error).__name__}: {error}"},
            exc_info=error,
        )
        with contextlib.suppress(PromgateError):
            self.promotion = await self.ctx.ledger.get(self.promotion.id)
            await self.ctx.event(
                self.promotion, "evaluation_failed", {"error": type(error).__name__}
            )

    async def _abort_unroutable(self, error: ActuationError) -> Promotion:
        if isinstance(error, CandidateNotReadyError):
            phase, reason = Phase.NOT_READY, f"candidate never became ready: {error.reason}"
        else:
            phase = Phase.ABORTED
            reason = f"the traffic actuator refuses this promotion's traffic state: {error}"
        return await self.ctx.move(
            self.promotion, event=phase.value, phase=phase, weight=0, reason=reason
        )

    async def _begin(self, promotion: Promotion) -> Promotion:
        if self.stage.approval.required and promotion.approved_by is None:
            return await self.ctx.move(
                promotion,
                event="awaiting_approval",
                phase=Phase.AWAITING_APPROVAL,
                reason="stage requires approval before traffic moves",
            )
        return await self.start_traffic(promotion)

    async def start_traffic(self, promotion: Promotion) -> Promotion:
        """First traffic change; with no stable release yet, the candidate takes it all."""
        now = self.ctx.clock.now()
        if promotion.baseline is None:
            return await self.ctx.move(
                promotion,
                event="promoted",
                phase=Phase.PROMOTED,
                weight=100,
                step_started_at=now,
                reason="first release of this stage: nothing to compare with",
            )
        action = self.strategy.start(promotion)
        return await self.ctx.move(
            promotion,
            event="step",
            data={"reason": action.reason},
            phase=Phase.PROGRESSING,
            weight=action.weight or 0,
            step_index=0,
            step_started_at=now,
        )

    async def _step(self) -> None:
        promotion = self.promotion
        started = self.ctx.clock.now()
        verdict = await self.analyzer.evaluate(
            *identities(promotion, self.stage.kubernetes, self.ctx.kube_namespace),
            promotion_parent(promotion),
            baseline_serves=promotion.weight < 100,
        )
        now = self.ctx.clock.now()
        tracked = track_evidence(promotion, verdict, now, self.unwatched_since)
        self.unwatched_since = None
        action = self.strategy.next_action(tracked, verdict, now)
        self.ctx.recorder.gate_verdicts(promotion, verdict)
        self.promotion = await self._act(tracked, action, verdict, now)
        if action.kind not in (ActionKind.WAIT, ActionKind.HOLD):
            self.ctx.recorder.decision_latency(promotion, self.ctx.clock.now() - started)
        self._log(self.promotion, action, verdict)

    async def _act(
        self, promotion: Promotion, action: Action, verdict: StepVerdict, now: float
    ) -> Promotion:
        data: dict[str, Any] = {
            "decision": verdict.decision.value,
            "action": action.kind.value,
            "gates": [g.to_dict() for g in verdict.gates],
            "reason": action.reason,
        }
        kind = action.kind
        if kind in (ActionKind.SET_WEIGHT, ActionKind.SWITCH):
            self.analyzer.new_step()
        # the sequential tests' counts and the counter readings travel with the promotion,
        # so a restart resumes them and judges the traffic served while promgate was down
        promotion = promotion.evolve(
            extra={
                **promotion.extra,
                EVIDENCE: self.analyzer.evidence(),
                COUNTERS: {"at": now, "gates": self.analyzer.counters()},
            }
        )
        if kind in (ActionKind.WAIT, ActionKind.HOLD):
            return await self.ctx.move(promotion, event="verdict", data=data)
        if kind is ActionKind.SET_WEIGHT:
            return await self.ctx.move(
                promotion,
                event="step",
                data=data,
                weight=action.weight,
                step_index=action.step_index,
                step_started_at=now,
            )
        if kind is ActionKind.SWITCH:
            return await self.ctx.move(
                promotion,
                event="switched",
                data=data,
                phase=Phase.POST_PROMOTION,
                weight=100,
                step_index=action.step_index,
                step_started_at=now,
            )
        classification = "persistent" if kind is ActionKind.ROLLBACK else None
        if kind is ActionKind.ROLLBACK:
            hard = any(g.hard for g in verdict.gates)
            self.ctx.recorder.rollback(promotion, "hard_guard" if hard else "persistent_breach")
        extra = (
            {"previous_kept_until": now + self.stage.strategy.blue_green.keep_previous}
            if (kind is ActionKind.PROMOTE and self.stage.strategy.blue_green)
            else {}
        )
        return await self.ctx.move(
            promotion,
            event=_FINAL_PHASE[kind].value,
            data=data,
            phase=_FINAL_PHASE[kind],
            weight=100 if kind is ActionKind.PROMOTE else 0,
            reason=action.reason,
            classification=classification,
            extra={**promotion.extra, **extra},
        )

    def _log(self, promotion: Promotion, action: Action, verdict: StepVerdict) -> None:
        trace_id = (promotion.traceparent or "---").split("-")[1]
        _log.info(
            "decision",
            extra={
                "trace_id": trace_id,
                "promotion": promotion.id,
                "service": promotion.service,
                "stage": promotion.stage,
                "digest": promotion.artifact.digest,
                "policy_version": promotion.policy_version,
                "phase": promotion.phase.value,
                "step": promotion.step_index,
                "weight": promotion.weight,
                "decision": verdict.decision.value,
                "action": action.kind.value,
                "reason": action.reason,
                "gates": [
                    {
                        "gate": g.gate,
                        "result": g.result.value,
                        "value": g.value,
                        "baseline": g.baseline,
                        "threshold": g.threshold,
                        "classification": g.classification.value if g.classification else None,
                        "e_value": g.e_value,
                        "e_threshold": g.e_threshold,
                        "requests": g.requests,
                    }
                    for g in verdict.gates
                ],
            },
        )


def identities(
    promotion: Promotion, target: KubernetesTarget | None = None, namespace: str = "default"
) -> tuple[dict[str, str], dict[str, str] | None]:
    """The values the gates' query templates are rendered with, for the candidate and the
    stable release; ``$role``, ``$backend`` and ``$upstream`` are the traffic state's, the
    Kubernetes placeholders come from the stage's ``target`` (``namespace`` when it names
    none)."""
    candidate, stable = sides(promotion)

    def identity(backend: Backend, artifact: ArtifactRef) -> dict[str, str]:
        return {
            **kubernetes_identity(
                target, promotion.strategy, backend.role, backend.backend, namespace
            ),
            "service": promotion.service,
            "stage": promotion.stage,
            "role": backend.role,
            "backend": backend.backend,
            "upstream": backend.upstream,
            "digest": artifact.digest,
            "tag": artifact.tag or "",
            "version": backend.version,
            "repository": artifact.repository,
        }

    return (
        identity(candidate, promotion.artifact),
        identity(stable, promotion.baseline)
        if stable is not None and promotion.baseline is not None
        else None,
    )
