"""Strategies (canary, blue-green), evidence tracking, and the promotion state machine."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from typing import Any

import pytest

from sidecar.analysis.judge import (
    Classification,
    Decision,
    GateResult,
    GateVerdict,
    StepVerdict,
    decide,
)
from sidecar.domain.artifact import ArtifactRef
from sidecar.domain.policy import Analysis, BlueGreen, Canary, parse_policy
from sidecar.domain.promotion import (
    ALLOWED_TRANSITIONS,
    Phase,
    Promotion,
    can_transition,
)
from sidecar.strategies.base import Action, ActionKind, track_evidence
from sidecar.strategies.blue_green import BlueGreenStrategy
from sidecar.strategies.canary import CanaryStrategy
from sidecar.strategies.factory import build_strategy

T0 = 1_700_000_000.0
CANDIDATE = ArtifactRef("registry.example/shop/checkout", "sha256:" + "ab" * 32, "1.4.2")
STABLE = ArtifactRef("registry.example/shop/checkout", "sha256:" + "cd" * 32, "1.4.1")
ANALYSIS = Analysis.model_validate({"noDataTimeout": "2m", "maxProviderHold": "5m"})
CANARY = Canary.model_validate({"steps": [10, 50, 100], "stepDuration": "1m"})
BLUE_GREEN = BlueGreen.model_validate({"preview": "30s", "postPromotion": "1m"})


def promotion(**changes: Any) -> Promotion:
    """A progressing canary promotion at its first step, started at T0."""
    base = Promotion(
        id="p1",
        service="checkout",
        stage="prod",
        artifact=CANDIDATE,
        version="1.4.2",
        policy_version="7",
        strategy="canary",
        candidate_upstream="http://127.0.0.1:9002",
        manifest={"service": "checkout"},
        created_at=T0,
        phase=Phase.PROGRESSING,
        step_index=0,
        weight=10,
        step_started_at=T0,
        updated_at=T0,
        baseline=STABLE,
        baseline_upstream="http://127.0.0.1:9001",
        baseline_version="1.4.1",
    )
    return Promotion(**{**base.__dict__, **changes})


def gv(result: GateResult, classification: Classification | None = None) -> GateVerdict:
    """A gate verdict for gate ``g`` whose reason names its result."""
    return GateVerdict("g", result, classification, None, None, None, False, f"g: {result}")


PASS = decide([gv(GateResult.PASS)])
NO_DATA = decide([gv(GateResult.PASS), gv(GateResult.NO_DATA)])
TRANSIENT = decide([gv(GateResult.BREACH, Classification.TRANSIENT)])
PERSISTENT = decide([gv(GateResult.BREACH, Classification.PERSISTENT)])
UNAVAILABLE = decide([gv(GateResult.UNAVAILABLE, Classification.TRANSIENT)])
UNAVAILABLE_AND_NO_DATA = decide(
    [gv(GateResult.UNAVAILABLE, Classification.TRANSIENT), gv(GateResult.NO_DATA)]
)
UNCLEARED = decide(
    [
        gv(GateResult.PASS),
        GateVerdict("e", GateResult.PASS, None, None, None, None, False,
                    "e: 2x not yet ruled out", cleared=False),
        GateVerdict("f", GateResult.PASS, None, None, None, None, False, "f: 2x ruled out",
                    cleared=True),
    ]
)  # fmt: skip
CLEARED = decide(
    [GateVerdict("e", GateResult.PASS, None, None, None, None, False, "e: 2x ruled out",
                 cleared=True)]
)  # fmt: skip


def test_verdict_fixtures_have_expected_decisions() -> None:
    """The step verdicts used below carry the decisions their names say."""
    fixtures = (PASS, NO_DATA, TRANSIENT, PERSISTENT, UNAVAILABLE, UNCLEARED, CLEARED)
    assert [v.decision for v in fixtures] == [
        Decision.PASS,
        Decision.WAIT,
        Decision.WAIT,
        Decision.ROLLBACK,
        Decision.HOLD,
        Decision.PASS,
        Decision.PASS,
    ]
    assert [v.cleared for v in fixtures] == [True] * 5 + [False, True]


STEP_IN_PROGRESS = Action(ActionKind.WAIT, reason="step in progress; gates pass")
AWAITING = Action(
    ActionKind.WAIT, reason="step time done; waiting for evidence: e: 2x not yet ruled out"
)


def test_canary_start_sets_first_weight() -> None:
    """Canary starts at its first step's weight."""
    action = CanaryStrategy(CANARY, ANALYSIS).start(promotion(phase=Phase.PENDING, weight=0))
    assert action == Action(ActionKind.SET_WEIGHT, weight=10, step_index=0, reason="step 1 of 3")


@pytest.mark.parametrize(
    ("state", "verdict", "now", "expected"),
    [
        pytest.param({}, PASS, T0 + 59, STEP_IN_PROGRESS,
                     id="pass-step-not-elapsed"),
        pytest.param({"step_started_at": None}, PASS, T0 + 9999,
                     STEP_IN_PROGRESS,
                     id="pass-step-not-started"),
        pytest.param({}, PASS, T0 + 60,
                     Action(ActionKind.SET_WEIGHT, weight=50, step_index=1,
                            reason="step 1 of 3 passed: g: pass"),
                     id="pass-elapsed-advances"),
        pytest.param({"step_index": 1, "weight": 50}, PASS, T0 + 61,
                     Action(ActionKind.SET_WEIGHT, weight=100, step_index=2,
                            reason="step 2 of 3 passed: g: pass"),
                     id="pass-elapsed-advances-to-last"),
        pytest.param({"step_index": 2, "weight": 100}, PASS, T0 + 60,
                     Action(ActionKind.PROMOTE, weight=100, reason="all 3 steps passed: g: pass"),
                     id="pass-after-last-promotes"),
        pytest.param({"step_index": 2, "weight": 100}, PASS, T0 + 59,
                     STEP_IN_PROGRESS,
                     id="last-step-not-elapsed-waits"),
        pytest.param({}, TRANSIENT, T0 + 600,
                     Action(ActionKind.WAIT, reason="g: breach"), id="transient-never-advances"),
        pytest.param({"step_index": 2, "weight": 100}, TRANSIENT, T0 + 600,
                     Action(ActionKind.WAIT, reason="g: breach"), id="transient-never-promotes"),
        pytest.param({"no_data_since": T0 + 10}, NO_DATA, T0 + 129,
                     Action(ActionKind.WAIT, reason="g: no_data"),
                     id="no-data-below-timeout-waits"),
        pytest.param({"no_data_since": T0 + 10}, NO_DATA, T0 + 130,
                     Action(ActionKind.INCONCLUSIVE,
                            reason="insufficient evidence after 120s (limit 120s): g: no_data"),
                     id="no-data-at-timeout-inconclusive"),
        pytest.param({}, PERSISTENT, T0 + 1,
                     Action(ActionKind.ROLLBACK, reason="g: breach"), id="persistent-rolls-back"),
        pytest.param({"step_index": 2, "weight": 100}, PERSISTENT, T0 + 600,
                     Action(ActionKind.ROLLBACK, reason="g: breach"),
                     id="persistent-beats-promote"),
        pytest.param({"unavailable_since": T0}, UNAVAILABLE, T0 + 299,
                     Action(ActionKind.HOLD, reason="g: unavailable"), id="hold-below-limit"),
        pytest.param({"unavailable_since": T0}, UNAVAILABLE, T0 + 300,
                     Action(ActionKind.ABORT,
                            reason="analysis unavailable for 300s (limit 300s): g: unavailable"),
                     id="abort-at-limit"),
        pytest.param({}, UNCLEARED, T0 + 59, STEP_IN_PROGRESS,
                     id="uncleared-step-not-elapsed-waits"),
        pytest.param({}, UNCLEARED, T0 + 60, AWAITING, id="uncleared-elapsed-waits"),
        pytest.param({}, UNCLEARED, T0 + 179, AWAITING, id="uncleared-below-timeout-waits"),
        pytest.param({}, UNCLEARED, T0 + 180,
                     Action(ActionKind.INCONCLUSIVE,
                            reason="insufficient evidence 120s after the step's time "
                            "(limit 120s): e: 2x not yet ruled out"),
                     id="uncleared-at-timeout-inconclusive"),
        pytest.param({"step_started_at": T0 + 30}, UNCLEARED, T0 + 209, AWAITING,
                     id="uncleared-timeout-counts-from-the-steps-end"),
        pytest.param({"step_started_at": T0 + 30}, UNCLEARED, T0 + 210,
                     Action(ActionKind.INCONCLUSIVE,
                            reason="insufficient evidence 120s after the step's time "
                            "(limit 120s): e: 2x not yet ruled out"),
                     id="uncleared-moved-step-inconclusive"),
        pytest.param({"step_index": 2, "weight": 100}, UNCLEARED, T0 + 60, AWAITING,
                     id="uncleared-never-promotes"),
        pytest.param({}, CLEARED, T0 + 60,
                     Action(ActionKind.SET_WEIGHT, weight=50, step_index=1,
                            reason="step 1 of 3 passed: e: 2x ruled out"),
                     id="cleared-advances"),
        pytest.param({"step_index": 2, "weight": 100}, CLEARED, T0 + 60,
                     Action(ActionKind.PROMOTE, weight=100,
                            reason="all 3 steps passed: e: 2x ruled out"),
                     id="cleared-promotes"),
    ],
)  # fmt: skip
def test_canary_next_action(
    state: dict[str, Any], verdict: StepVerdict, now: float, expected: Action
) -> None:
    """Canary waits, advances, promotes, rolls back, holds or stops as the table says."""
    assert (
        CanaryStrategy(CANARY, ANALYSIS).next_action(promotion(**state), verdict, now) == expected
    )


def test_canary_promotes_after_last_step_below_100() -> None:
    """Steps that end below 100 promote once the last step has passed."""
    spec = Canary.model_validate({"steps": [5, 25], "stepDuration": 10})
    action = CanaryStrategy(spec, ANALYSIS).next_action(
        promotion(step_index=1, weight=25), PASS, T0 + 10
    )
    assert action == Action(ActionKind.PROMOTE, weight=100, reason="all 2 steps passed: g: pass")


def as_the_engine_tracks_it(
    strategy: CanaryStrategy | BlueGreenStrategy,
    state: Promotion,
    verdicts: Iterable[tuple[float, StepVerdict]],
) -> tuple[Promotion, list[ActionKind]]:
    """Each (offset from T0, verdict) tracked into the state and then acted on, as the
    engine does: the last state and the kind of each action."""
    actions = []
    for offset, verdict in verdicts:
        now = T0 + offset
        state = track_evidence(state, verdict, now)
        actions.append(strategy.next_action(state, verdict, now).kind)
    return state, actions


def test_provider_hold_then_abort_as_the_engine_tracks_it() -> None:
    """Repeated provider errors hold until maxProviderHold after the first one, then abort."""
    state, actions = as_the_engine_tracks_it(
        CanaryStrategy(CANARY, ANALYSIS),
        promotion(),
        [(offset, UNAVAILABLE) for offset in (100, 200, 399, 400)],
    )
    assert state.unavailable_since == T0 + 100
    assert actions == [ActionKind.HOLD, ActionKind.HOLD, ActionKind.HOLD, ActionKind.ABORT]


def test_provider_recovery_resets_the_hold_clock() -> None:
    """A good evaluation between outages restarts the provider-hold clock."""
    strategy = CanaryStrategy(CANARY, ANALYSIS)
    state = track_evidence(promotion(), UNAVAILABLE, T0 + 100)
    state = track_evidence(state, TRANSIENT, T0 + 350)
    state = track_evidence(state, UNAVAILABLE, T0 + 390)
    assert state.unavailable_since == T0 + 390
    assert strategy.next_action(state, UNAVAILABLE, T0 + 420).kind is ActionKind.HOLD


def test_no_data_waits_then_inconclusive_as_the_engine_tracks_it() -> None:
    """Missing data waits until noDataTimeout after it began, then stops as inconclusive."""
    state, actions = as_the_engine_tracks_it(
        CanaryStrategy(CANARY, ANALYSIS),
        promotion(),
        [(offset, NO_DATA) for offset in (10, 60, 129, 130)],
    )
    assert state.no_data_since == T0 + 10
    assert actions == [ActionKind.WAIT, ActionKind.WAIT, ActionKind.WAIT, ActionKind.INCONCLUSIVE]


POST = {"phase": Phase.POST_PROMOTION, "step_index": 1, "weight": 100}
PREVIEW = {"strategy": "blue_green", "weight": 0}


@pytest.mark.parametrize(
    ("strategy", "state", "passed"),
    [
        pytest.param(CanaryStrategy(CANARY, ANALYSIS), {}, ActionKind.SET_WEIGHT, id="canary"),
        pytest.param(BlueGreenStrategy(BLUE_GREEN, ANALYSIS), PREVIEW, ActionKind.SWITCH,
                     id="blue-green-preview"),
        pytest.param(BlueGreenStrategy(BLUE_GREEN, ANALYSIS), {**PREVIEW, **POST},
                     ActionKind.PROMOTE, id="blue-green-post-promotion"),
    ],
)  # fmt: skip
def test_a_step_waits_for_clearance_then_passes_as_the_engine_tracks_it(
    strategy: CanaryStrategy | BlueGreenStrategy, state: dict[str, Any], passed: ActionKind
) -> None:
    """Past its time, a step whose gates have not ruled their regression out keeps
    waiting (its start does not move: the evidence is there, it is just not enough yet),
    and passes as soon as they have."""
    current, actions = as_the_engine_tracks_it(
        strategy,
        promotion(**state),
        [(20, UNCLEARED), (60, UNCLEARED), (90, UNCLEARED), (100, CLEARED)],
    )
    assert current.step_started_at == T0
    assert actions == [ActionKind.WAIT, ActionKind.WAIT, ActionKind.WAIT, passed]


def test_blue_green_start_is_preview_at_weight_zero() -> None:
    """Blue-green starts with no live traffic on the candidate, reachable as a preview."""
    action = BlueGreenStrategy(BLUE_GREEN, ANALYSIS).start(promotion(phase=Phase.PENDING))
    assert action == Action(
        ActionKind.SET_WEIGHT,
        weight=0,
        step_index=0,
        reason="preview: candidate reachable with X-Promgate-Preview: 1",
    )


@pytest.mark.parametrize(
    ("state", "verdict", "now", "expected"),
    [
        pytest.param(PREVIEW, PASS, T0 + 29,
                     Action(ActionKind.WAIT, reason="preview analysis in progress"),
                     id="preview-in-progress"),
        pytest.param(PREVIEW, PASS, T0 + 30,
                     Action(ActionKind.SWITCH, weight=100, step_index=1,
                            reason="preview analysis passed: g: pass"),
                     id="switch-after-preview"),
        pytest.param(PREVIEW, TRANSIENT, T0 + 300, Action(ActionKind.WAIT, reason="g: breach"),
                     id="preview-transient-never-switches"),
        pytest.param(PREVIEW, PERSISTENT, T0 + 5, Action(ActionKind.ROLLBACK, reason="g: breach"),
                     id="preview-rollback"),
        pytest.param({**PREVIEW, **POST}, PASS, T0 + 59,
                     Action(ActionKind.WAIT, reason="post-promotion analysis in progress"),
                     id="post-promotion-in-progress"),
        pytest.param({**PREVIEW, **POST}, PASS, T0 + 60,
                     Action(ActionKind.PROMOTE, weight=100,
                            reason="post-promotion analysis passed: g: pass"),
                     id="promote-after-post-promotion"),
        pytest.param({**PREVIEW, **POST}, PERSISTENT, T0 + 60,
                     Action(ActionKind.ROLLBACK, reason="g: breach"),
                     id="post-promotion-rollback"),
        pytest.param({**PREVIEW, **POST}, TRANSIENT, T0 + 600,
                     Action(ActionKind.WAIT, reason="g: breach"),
                     id="post-promotion-transient-waits"),
        pytest.param({**PREVIEW, **POST, "unavailable_since": T0}, UNAVAILABLE, T0 + 10,
                     Action(ActionKind.HOLD, reason="g: unavailable"),
                     id="post-promotion-hold"),
        pytest.param({**PREVIEW, **POST, "unavailable_since": T0}, UNAVAILABLE, T0 + 300,
                     Action(ActionKind.ABORT,
                            reason="analysis unavailable for 300s (limit 300s): g: unavailable"),
                     id="post-promotion-abort"),
        pytest.param({**PREVIEW, "no_data_since": T0}, NO_DATA, T0 + 120,
                     Action(ActionKind.INCONCLUSIVE,
                            reason="insufficient evidence after 120s (limit 120s): g: no_data"),
                     id="preview-no-data-inconclusive"),
        pytest.param(PREVIEW, UNCLEARED, T0 + 29,
                     Action(ActionKind.WAIT, reason="preview analysis in progress"),
                     id="preview-uncleared-in-progress"),
        pytest.param(PREVIEW, UNCLEARED, T0 + 30, AWAITING, id="preview-uncleared-waits"),
        pytest.param(PREVIEW, UNCLEARED, T0 + 149, AWAITING,
                     id="preview-uncleared-below-timeout-waits"),
        pytest.param(PREVIEW, UNCLEARED, T0 + 150,
                     Action(ActionKind.INCONCLUSIVE,
                            reason="insufficient evidence 120s after the step's time "
                            "(limit 120s): e: 2x not yet ruled out"),
                     id="preview-uncleared-inconclusive"),
        pytest.param(PREVIEW, CLEARED, T0 + 30,
                     Action(ActionKind.SWITCH, weight=100, step_index=1,
                            reason="preview analysis passed: e: 2x ruled out"),
                     id="preview-cleared-switches"),
        pytest.param({**PREVIEW, **POST}, UNCLEARED, T0 + 59,
                     Action(ActionKind.WAIT, reason="post-promotion analysis in progress"),
                     id="post-promotion-uncleared-in-progress"),
        pytest.param({**PREVIEW, **POST}, UNCLEARED, T0 + 60, AWAITING,
                     id="post-promotion-uncleared-waits"),
        pytest.param({**PREVIEW, **POST}, UNCLEARED, T0 + 179, AWAITING,
                     id="post-promotion-uncleared-below-timeout-waits"),
        pytest.param({**PREVIEW, **POST}, UNCLEARED, T0 + 180,
                     Action(ActionKind.INCONCLUSIVE,
                            reason="insufficient evidence 120s after the step's time "
                            "(limit 120s): e: 2x not yet ruled out"),
                     id="post-promotion-uncleared-inconclusive"),
        pytest.param({**PREVIEW, **POST}, CLEARED, T0 + 60,
                     Action(ActionKind.PROMOTE, weight=100,
                            reason="post-promotion analysis passed: e: 2x ruled out"),
                     id="post-promotion-cleared-promotes"),
        pytest.param({**PREVIEW, **POST, "step_started_at": None}, PASS, T0 + 9999,
                     Action(ActionKind.WAIT, reason="post-promotion analysis in progress"),
                     id="post-promotion-not-started"),
    ],
)  # fmt: skip
def test_blue_green_next_action(
    state: dict[str, Any], verdict: StepVerdict, now: float, expected: Action
) -> None:
    """Blue-green waits for the preview, switches, waits again, then promotes or rolls back."""
    strategy = BlueGreenStrategy(BLUE_GREEN, ANALYSIS)
    assert strategy.next_action(promotion(**state), verdict, now) == expected


@pytest.mark.parametrize(
    ("marks", "verdict", "unavailable_since", "no_data_since"),
    [
        pytest.param({}, UNAVAILABLE, T0 + 50, None, id="unavailable-sets"),
        pytest.param({"unavailable_since": T0}, UNAVAILABLE, T0, None, id="unavailable-keeps"),
        pytest.param({"no_data_since": T0}, UNAVAILABLE, T0 + 50, None,
                     id="unavailable-clears-no-data"),
        pytest.param({}, UNAVAILABLE_AND_NO_DATA, T0 + 50, None,
                     id="unavailable-with-no-data-gate"),
        pytest.param({}, NO_DATA, None, T0 + 50, id="no-data-sets"),
        pytest.param({"no_data_since": T0}, NO_DATA, None, T0, id="no-data-keeps"),
        pytest.param({"unavailable_since": T0}, NO_DATA, None, T0 + 50,
                     id="no-data-clears-unavailable"),
        pytest.param({"unavailable_since": T0, "no_data_since": T0}, PASS, None, None,
                     id="pass-clears-both"),
        pytest.param({"no_data_since": T0}, TRANSIENT, None, None, id="transient-clears-no-data"),
        pytest.param({"unavailable_since": T0}, PERSISTENT, None, None,
                     id="persistent-clears-unavailable"),
    ],
)  # fmt: skip
def test_track_evidence(
    marks: dict[str, float],
    verdict: StepVerdict,
    unavailable_since: float | None,
    no_data_since: float | None,
) -> None:
    """track_evidence sets a mark when its condition starts, keeps it, and clears it after."""
    state = promotion(**marks)
    tracked = track_evidence(state, verdict, T0 + 50)
    assert (tracked.unavailable_since, tracked.no_data_since) == (unavailable_since, no_data_since)
    assert tracked.phase is state.phase
    assert tracked.weight == state.weight


@pytest.mark.parametrize(
    ("strategy", "expected_type", "spec_attr"),
    [
        pytest.param({"canary": {"steps": [10, 100], "stepDuration": "1m"}}, CanaryStrategy,
                     "canary", id="canary"),
        pytest.param({"blueGreen": {"preview": "30s", "postPromotion": "1m"}}, BlueGreenStrategy,
                     "blue_green", id="blue-green"),
    ],
)  # fmt: skip
def test_factory_builds_the_named_strategy(
    strategy: dict[str, Any], expected_type: type, spec_attr: str
) -> None:
    """build_strategy picks the stage's strategy and hands it the spec and analysis."""
    policy = parse_policy(
        {
            "apiVersion": "promgate/v1",
            "kind": "PromotionPolicy",
            "metadata": {"name": "p"},
            "version": "1",
            "stages": [{"name": "prod", "strategy": strategy}],
        }
    )
    stage = policy.stages[0]
    built = build_strategy(stage, ANALYSIS)
    assert type(built) is expected_type
    assert built.spec == getattr(stage.strategy, spec_attr)  # type: ignore[attr-defined]
    assert built.analysis == ANALYSIS  # type: ignore[attr-defined]


ALLOWED = sorted(
    (current, target) for current, targets in ALLOWED_TRANSITIONS.items() for target in targets
)
REFUSED = sorted(
    (current, target)
    for current, target in itertools.product(Phase, Phase)
    if current != target and target not in ALLOWED_TRANSITIONS[current]
)


def test_transition_table_covers_every_phase() -> None:
    """Every phase has a row, terminal phases have no way out, and the table is as designed."""
    assert set(ALLOWED_TRANSITIONS) == set(Phase)
    assert {p for p in Phase if p.terminal} == {
        Phase.PROMOTED,
        Phase.ROLLED_BACK,
        Phase.ABORTED,
        Phase.INCONCLUSIVE,
        Phase.REFUSED,
        Phase.NOT_READY,
    }
    assert all(not ALLOWED_TRANSITIONS[p] for p in Phase if p.terminal)
    assert Phase.ROLLED_BACK not in ALLOWED_TRANSITIONS[Phase.PENDING]
    assert Phase.PROGRESSING not in ALLOWED_TRANSITIONS[Phase.POST_PROMOTION]
    assert len(ALLOWED) == 21


@pytest.mark.parametrize(("current", "target"), ALLOWED, ids=[f"{a}->{b}" for a, b in ALLOWED])
def test_evolve_allows_listed_transition(current: Phase, target: Phase) -> None:
    """A transition listed in ALLOWED_TRANSITIONS is made."""
    moved = promotion(phase=current).evolve(phase=target, reason="r")
    assert (moved.phase, moved.reason) == (target, "r")
    assert can_transition(current, target)


@pytest.mark.parametrize(("current", "target"), REFUSED, ids=[f"{a}->{b}" for a, b in REFUSED])
def test_evolve_refuses_unlisted_transition(current: Phase, target: Phase) -> None:
    """A transition not in ALLOWED_TRANSITIONS raises ValueError naming both phases."""
    with pytest.raises(ValueError) as caught:
        promotion(phase=current).evolve(phase=target)
    assert str(caught.value) == f"promotion p1: {current.value} -> {target.value} is not allowed"
    assert not can_transition(current, target)


@pytest.mark.parametrize(
    ("phase", "allowed"),
    [
        pytest.param(Phase.PROGRESSING, True, id="active-stays"),
        pytest.param(Phase.POST_PROMOTION, True, id="post-promotion-stays"),
        pytest.param(Phase.PROMOTED, False, id="terminal-does-not-stay"),
        pytest.param(Phase.REFUSED, False, id="refused-does-not-stay"),
    ],
)
def test_can_transition_to_same_phase(phase: Phase, allowed: bool) -> None:
    """Staying put is allowed for active phases only."""
    assert can_transition(phase, phase) is allowed


def test_evolve_without_phase_change_keeps_terminal_record_editable() -> None:
    """evolve with the same (terminal) phase or no phase only changes other fields."""
    done = promotion(phase=Phase.PROMOTED)
    assert done.evolve(updated_at=T0 + 5).updated_at == T0 + 5
    assert done.evolve(phase=Phase.PROMOTED, reason="x").reason == "x"
    assert not done.active
    assert promotion().active


@pytest.mark.parametrize(
    "state",
    [
        pytest.param({}, id="with-baseline"),
        pytest.param({"baseline": None, "baseline_upstream": None, "baseline_version": ""},
                     id="first-release"),
        pytest.param({"phase": Phase.ROLLED_BACK, "classification": "persistent",
                      "unavailable_since": T0 + 1, "no_data_since": T0 + 2,
                      "approved_by": "alice", "traceparent": "00-" + "a" * 32 + "-" + "b" * 16
                      + "-01", "extra": {"k": [1, 2]}, "actuation_seq": 4},
                     id="every-field"),
        pytest.param({"artifact": ArtifactRef("app", "sha256:" + "ef" * 32)}, id="untagged"),
    ],
)  # fmt: skip
def test_to_dict_from_dict_round_trip(state: dict[str, Any]) -> None:
    """A promotion survives to_dict -> JSON -> from_dict unchanged."""
    original = promotion(**state)
    data = original.to_dict()
    assert data["artifact"] == str(original.artifact)
    assert data["phase"] == original.phase.value
    assert data["baseline"] == (str(original.baseline) if original.baseline else None)
    restored = Promotion.from_dict(json.loads(json.dumps(data)))
    assert restored == original
    assert restored.phase is original.phase


@pytest.mark.parametrize(
    ("verdicts", "step_started_at"),
    [
        pytest.param([(10, PASS), (20, PASS)], T0, id="evidence-throughout"),
        pytest.param([(10, UNAVAILABLE), (25, PASS)], T0 + 15, id="outage-within-step"),
        pytest.param([(10, NO_DATA), (14, NO_DATA), (16, PASS)], T0 + 6, id="no-data-gap"),
        pytest.param(
            [(10, UNAVAILABLE), (20, NO_DATA), (30, PASS)], T0 + 20, id="outage-then-no-data"
        ),
        pytest.param([(10, UNAVAILABLE), (20, UNAVAILABLE)], T0, id="gap-still-open"),
        pytest.param([(10, TRANSIENT), (20, PASS)], T0, id="a-breach-is-evidence"),
    ],
)
def test_time_without_evidence_does_not_count_toward_the_step(
    verdicts: list[tuple[float, StepVerdict]], step_started_at: float
) -> None:
    """When a gap in evidence ends, the step's start moves on by the gap's length."""
    state = promotion(step_started_at=T0)
    for offset, verdict in verdicts:
        state = track_evidence(state, verdict, T0 + offset)
    assert state.step_started_at == step_started_at


@pytest.mark.parametrize(
    ("marks", "verdicts", "step_started_at"),
    [
        pytest.param({}, [(40, PASS)], T0 + 30, id="judged-at-once"),
        pytest.param({}, [(40, NO_DATA), (45, PASS)], T0 + 35, id="then-no-data"),
        pytest.param({"no_data_since": T0 + 5}, [(40, NO_DATA), (50, PASS)], T0 + 45,
                     id="inside-a-gap-that-goes-on"),
        pytest.param({"no_data_since": T0 + 5}, [(40, PASS)], T0 + 35,
                     id="a-gap-that-ends-with-it"),
        pytest.param({"unavailable_since": T0 + 5}, [(40, NO_DATA), (50, PASS)], T0 + 45,
                     id="after-an-outage"),
    ],
)  # fmt: skip
def test_time_promgate_was_down_does_not_count_toward_the_step(
    marks: dict[str, float], verdicts: list[tuple[float, StepVerdict]], step_started_at: float
) -> None:
    """promgate's last evaluation was at T0 + 10 and the next after its restart at T0 + 40:
    those 30 s are taken off the step once, whatever the gaps around them."""
    state = promotion(step_started_at=T0, **marks)
    unwatched_since: float | None = T0 + 10
    for offset, verdict in verdicts:
        state = track_evidence(state, verdict, T0 + offset, unwatched_since)
        unwatched_since = None
    assert state.step_started_at == step_started_at


def test_unwatched_time_before_the_step_began_is_not_taken_off() -> None:
    """Only the part of the downtime within the step counts against it."""
    state = track_evidence(promotion(step_started_at=T0), PASS, T0 + 40, T0 - 30)
    assert state.step_started_at == T0 + 40
