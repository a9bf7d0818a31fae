"""Pure: the traffic split a promotion's state calls for."""

from __future__ import annotations

from dataclasses import replace

from sidecar.actuators.base import Backend, TrafficState
from sidecar.domain.artifact import ArtifactRef
from sidecar.domain.promotion import Phase, Promotion

_STABLE_AGAIN = frozenset({Phase.ROLLED_BACK, Phase.ABORTED, Phase.INCONCLUSIVE})
_NO_TRAFFIC_YET = frozenset({Phase.PENDING, Phase.AWAITING_APPROVAL, Phase.REFUSED})
ROUTED_PHASES = frozenset(Phase) - _NO_TRAFFIC_YET
"""The phases in which :func:`desired_traffic` gives a split."""


def desired_traffic(promotion: Promotion) -> TrafficState | None:
    """The split for the promotion's phase and weight; None where traffic is not its to set."""
    if promotion.phase in _NO_TRAFFIC_YET:
        return None
    candidate = _backend(promotion.artifact, promotion.candidate_upstream, "candidate")
    stable = (
        _backend(promotion.baseline, promotion.baseline_upstream or "", "stable")
        if promotion.baseline
        else None
    )
    preview = None
    kept_until = promotion.extra.get("previous_kept_until")
    if promotion.phase in _STABLE_AGAIN:
        if stable is None:
            return None  # a first release stopped before it routed: nothing to go back to
        backends = [replace(stable, weight=100)]
    elif promotion.phase is Phase.PROMOTED and stable is not None and kept_until is not None:
        backends = [replace(candidate, weight=100), replace(stable, retain_until=float(kept_until))]
    elif promotion.phase is Phase.PROMOTED or stable is None:
        backends = [replace(candidate, weight=100)]
    elif promotion.phase is Phase.POST_PROMOTION:
        backends = [replace(candidate, weight=100), stable]
    elif promotion.strategy == "blue_green":
        backends, preview = [replace(stable, weight=100)], candidate
    else:
        backends = [
            replace(stable, weight=100 - promotion.weight),
            replace(candidate, weight=promotion.weight),
        ]
    return TrafficState(
        promotion_id=promotion.id,
        sequence=promotion.actuation_seq,
        service=promotion.service,
        stage=promotion.stage,
        backends=tuple(backends),
        preview=preview,
    )


def candidate_traffic(promotion: Promotion) -> TrafficState:
    """The split that sends all traffic to the candidate, as a promotion would end: what an
    actuator checks before the promotion is admitted."""
    return TrafficState(
        promotion_id=promotion.id,
        sequence=promotion.actuation_seq,
        service=promotion.service,
        stage=promotion.stage,
        backends=(
            _backend(promotion.artifact, promotion.candidate_upstream, "candidate", weight=100),
        ),
    )


def _backend(artifact: ArtifactRef, upstream: str, role: str, weight: int = 0) -> Backend:
    return Backend(digest=artifact.digest, upstream=upstream, weight=weight, role=role)
