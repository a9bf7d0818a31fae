"""Pure: the traffic split a promotion's state calls for, and the backend each side runs in."""

from __future__ import annotations

import re
from dataclasses import replace

from sidecar.actuators.base import BACKEND_NAME, Backend, Role, TrafficState
from sidecar.domain.artifact import ArtifactRef
from sidecar.domain.promotion import SLOTS, Phase, Promotion
from sidecar.errors import InputError

_STABLE_AGAIN = frozenset({Phase.ROLLED_BACK, Phase.ABORTED, Phase.INCONCLUSIVE, Phase.NOT_READY})
_NO_TRAFFIC_YET = frozenset({Phase.PENDING, Phase.AWAITING_APPROVAL, Phase.REFUSED})
ROUTED_PHASES = frozenset(Phase) - _NO_TRAFFIC_YET
"""The phases in which :func:`desired_traffic` gives a split."""


def candidate_backend(requested: str | None, stable_backend: str | None) -> str:
    """The backend the candidate runs in: the one asked for, else the slot the stable
    release is not in (the first slot for a first release)."""
    if not requested:
        return next(slot for slot in SLOTS if slot != stable_backend)
    if re.fullmatch(BACKEND_NAME, requested) is None:
        raise InputError(
            f"backend: {requested!r} is not a backend name; use letters, digits, '.', '_' "
            "and '-' (at most 63, starting with a letter or digit), e.g. blue"
        )
    if requested == stable_backend:
        raise InputError(
            f"backend: {requested!r} runs the stable release; deploy the candidate to "
            "another backend and name that one"
        )
    return requested


def sides(promotion: Promotion) -> tuple[Backend, Backend | None]:
    """The candidate and the stable release (if any) as the traffic state names them,
    with weight 0: the one identity that queries, payload and metrics share."""
    # a backend name is empty only in promotions stored before backends had names
    candidate = _backend(
        promotion.artifact,
        promotion.version,
        promotion.candidate_upstream,
        "candidate",
        promotion.candidate_backend or SLOTS[1],
    )
    if promotion.baseline is None:
        return candidate, None
    stable = _backend(
        promotion.baseline,
        promotion.baseline_version,
        promotion.baseline_upstream or "",
        "stable",
        promotion.baseline_backend or SLOTS[0],
    )
    return candidate, stable


def desired_traffic(promotion: Promotion) -> TrafficState | None:
    """The split for the promotion's phase and weight; None where traffic is not its to set."""
    if promotion.phase in _NO_TRAFFIC_YET:
        return None
    candidate, stable = sides(promotion)
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
    candidate, _ = sides(promotion)
    return TrafficState(
        promotion_id=promotion.id,
        sequence=promotion.actuation_seq,
        service=promotion.service,
        stage=promotion.stage,
        backends=(replace(candidate, weight=100),),
    )


def _backend(artifact: ArtifactRef, version: str, upstream: str, role: Role, name: str) -> Backend:
    return Backend(
        digest=artifact.digest,
        upstream=upstream,
        weight=0,
        role=role,
        backend=name,
        image=artifact.pinned,
        version=version,
    )
