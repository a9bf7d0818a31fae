"""Blue-green: judge a preview, switch all traffic at once, judge again, then promote.

The old slot stays routable during post-promotion analysis and for ``keepPrevious``
after it, so a switch-back is instant.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.analysis.judge import StepVerdict
from sidecar.domain.policy import Analysis, BlueGreen
from sidecar.domain.promotion import Phase, Promotion
from sidecar.strategies.base import Action, ActionKind, step_pending


@dataclass(frozen=True)
class BlueGreenStrategy:
    spec: BlueGreen
    analysis: Analysis

    def start(self, promotion: Promotion) -> Action:
        return Action(
            ActionKind.SET_WEIGHT,
            weight=0,
            step_index=0,
            reason="preview: candidate reachable with X-Promgate-Preview: 1",
        )

    def next_action(self, promotion: Promotion, verdict: StepVerdict, now: float) -> Action:
        post = promotion.phase is Phase.POST_PROMOTION
        duration = self.spec.post_promotion if post else self.spec.preview
        phase = "post-promotion" if post else "preview"
        pending = step_pending(
            promotion,
            verdict,
            self.analysis,
            duration,
            now,
            in_progress=f"{phase} analysis in progress",
        )
        if pending is not None:
            return pending
        if post:
            return Action(
                ActionKind.PROMOTE,
                weight=100,
                reason=f"post-promotion analysis passed: {verdict.reason}",
            )
        return Action(
            ActionKind.SWITCH,
            weight=100,
            step_index=1,
            reason=f"preview analysis passed: {verdict.reason}",
        )
