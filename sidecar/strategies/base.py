"""What every strategy shares: the action vocabulary and the timeouts on missing evidence.

Strategies are pure: ``(promotion, step verdict, now) -> Action``. The engine performs
the action; nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

from sidecar.analysis.judge import Decision, GateResult, StepVerdict
from sidecar.domain.policy import Analysis
from sidecar.domain.promotion import Promotion


class ActionKind(StrEnum):
    WAIT = "wait"  # keep evaluating; nothing changes
    HOLD = "hold"  # analysis unavailable: keep traffic where it is
    SET_WEIGHT = "set_weight"  # canary: move to the next step
    SWITCH = "switch"  # blue-green: all live traffic to the candidate, old slot kept
    PROMOTE = "promote"  # the candidate becomes stable
    ROLLBACK = "rollback"  # persistent breach: traffic back to the stable digest
    ABORT = "abort"  # analysis unavailable too long: traffic back, release not blamed
    INCONCLUSIVE = "inconclusive"  # no evidence in time: traffic back, release not blamed


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    weight: int | None = None
    step_index: int | None = None
    reason: str = ""


class Strategy(Protocol):
    """Turns a step verdict into the next action for one promotion."""

    def start(self, promotion: Promotion) -> Action:
        """The first traffic change once gates before traffic have passed."""

    def next_action(self, promotion: Promotion, verdict: StepVerdict, now: float) -> Action: ...


def track_evidence(
    promotion: Promotion, verdict: StepVerdict, now: float, unwatched_since: float | None = None
) -> Promotion:
    """Remember since when analysis has been unavailable or data missing; clear otherwise.

    Time without evidence does not count toward a step: when a gap ends, the step's start
    moves forward by the part of the gap that fell within the step, so a step is always
    judged on ``stepDuration`` of evidence. ``unwatched_since`` is the last evaluation
    before promgate stopped, when this is the first since it started again: the time in
    between was not watched and does not count either, even when the counters let the
    traffic served meanwhile be judged (one look cannot stand for a step's many).
    """
    missing = any(g.result is GateResult.NO_DATA for g in verdict.gates)
    unavailable = verdict.decision is Decision.HOLD
    unavailable_since = (promotion.unavailable_since or now) if unavailable else None
    no_data_since = (promotion.no_data_since or now) if missing and not unavailable else None
    started = promotion.step_started_at
    if started is not None:
        marks = (
            (promotion.unavailable_since, unavailable_since is not None),
            (promotion.no_data_since, no_data_since is not None),
        )
        ended = [since for since, still_open in marks if since is not None and not still_open]
        # a gap that goes on covers the unwatched time already, and will be taken off whole
        if unwatched_since is not None and not any(since and still for since, still in marks):
            ended.append(unwatched_since)
        if ended:  # every span ending now ends at now: take off their union
            started += now - max(min(ended), started)
    return replace(
        promotion,
        unavailable_since=unavailable_since,
        no_data_since=no_data_since,
        step_started_at=started,
    )


def guard(
    promotion: Promotion, verdict: StepVerdict, analysis: Analysis, now: float
) -> Action | None:
    """The actions every strategy takes alike, or None when the step may go on.

    Only a persistent breach rolls back. A provider error holds, and aborts only after
    ``maxProviderHold``; missing data waits, and stops as inconclusive after
    ``noDataTimeout``. ``promotion`` must already carry :func:`track_evidence`'s marks.
    """
    if verdict.decision is Decision.ROLLBACK:
        return Action(ActionKind.ROLLBACK, reason=verdict.reason)
    if verdict.decision is Decision.HOLD:
        since = promotion.unavailable_since or now
        if now - since >= analysis.max_provider_hold:
            return Action(
                ActionKind.ABORT,
                reason=f"analysis unavailable for {now - since:.0f}s "
                f"(limit {analysis.max_provider_hold:g}s): {verdict.reason}",
            )
        return Action(ActionKind.HOLD, reason=verdict.reason)
    if promotion.no_data_since is not None:
        waited = now - promotion.no_data_since
        if waited >= analysis.no_data_timeout:
            return Action(
                ActionKind.INCONCLUSIVE,
                reason=f"insufficient evidence after {waited:.0f}s "
                f"(limit {analysis.no_data_timeout:g}s): {verdict.reason}",
            )
    if verdict.decision is Decision.WAIT:
        return Action(ActionKind.WAIT, reason=verdict.reason)
    return None


def step_pending(
    promotion: Promotion,
    verdict: StepVerdict,
    analysis: Analysis,
    duration: float,
    now: float,
    *,
    in_progress: str,
) -> Action | None:
    """What every strategy does before its step may pass, or None once it may.

    First :func:`guard`; then WAIT (``in_progress``) until the step has run its
    ``duration``. A step that has run its time but whose gates have not yet ruled out the
    regression they must (``detect``) keeps going; after ``noDataTimeout`` more it stops
    as inconclusive.
    """
    guarded = guard(promotion, verdict, analysis, now)
    if guarded is not None:
        return guarded
    started = promotion.step_started_at
    if started is None or now - started < duration:
        return Action(ActionKind.WAIT, reason=in_progress)
    if verdict.cleared:
        return None
    waited = now - (started + duration)
    if waited >= analysis.no_data_timeout:
        return Action(
            ActionKind.INCONCLUSIVE,
            reason=f"insufficient evidence {waited:.0f}s after the step's time "
            f"(limit {analysis.no_data_timeout:g}s): {verdict.uncleared}",
        )
    return Action(
        ActionKind.WAIT, reason=f"step time done; waiting for evidence: {verdict.uncleared}"
    )
