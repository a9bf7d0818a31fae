"""Canary: live traffic moves to the candidate in weighted steps, judged at each step."""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.analysis.judge import StepVerdict
from sidecar.domain.policy import Analysis, Canary
from sidecar.domain.promotion import Promotion
from sidecar.strategies.base import Action, ActionKind, step_pending


@dataclass(frozen=True)
class CanaryStrategy:
    spec: Canary
    analysis: Analysis

    def start(self, promotion: Promotion) -> Action:
        return Action(
            ActionKind.SET_WEIGHT,
            weight=self.spec.steps[0],
            step_index=0,
            reason=f"step 1 of {len(self.spec.steps)}",
        )

    def next_action(self, promotion: Promotion, verdict: StepVerdict, now: float) -> Action:
        pending = step_pending(
            promotion,
            verdict,
            self.analysis,
            self.spec.step_duration,
            now,
            in_progress="step in progress; gates pass",
        )
        if pending is not None:
            return pending
        following = promotion.step_index + 1
        if following >= len(self.spec.steps) or self.spec.steps[promotion.step_index] >= 100:
            return Action(
                ActionKind.PROMOTE,
                weight=100,
                reason=f"all {len(self.spec.steps)} steps passed: {verdict.reason}",
            )
        return Action(
            ActionKind.SET_WEIGHT,
            weight=self.spec.steps[following],
            step_index=following,
            reason=f"step {following} of {len(self.spec.steps)} passed: {verdict.reason}",
        )
