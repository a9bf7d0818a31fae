"""The pure judge: evidence -> gate verdict, gate verdicts -> step decision."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from sidecar.analysis.judge import (
    Classification,
    Decision,
    Evidence,
    GateResult,
    GateVerdict,
    StepVerdict,
    ThresholdJudge,
    build_judge,
    decide,
    judge_threshold,
    ratio_evidence,
)
from sidecar.domain.measurement import Measurement, MeasurementKind
from sidecar.domain.policy import SloGate, parse_policy

B, P, N, U = GateResult.BREACH, GateResult.PASS, GateResult.NO_DATA, GateResult.UNAVAILABLE
T, PE = Classification.TRANSIENT, Classification.PERSISTENT


def gate(**bounds: Any) -> SloGate:
    """A query gate named ``g`` with the given bounds (wire names)."""
    return SloGate.model_validate({"name": "g", "query": "up", **bounds})


def value(x: float) -> Measurement:
    return Measurement.of(x)


NO_DATA = Measurement.no_data()
DOWN = Measurement.provider_error("timeout after 5s")


def evidence(candidate: Measurement, baseline: Measurement = NO_DATA) -> Evidence:
    return Evidence(candidate=candidate, baseline=baseline)


def verdict(
    result: GateResult,
    classification: Classification | None = None,
    name: str = "g",
    reason: str = "",
) -> GateVerdict:
    """A gate verdict with only what decide() and reason look at."""
    return GateVerdict(name, result, classification, None, None, None, False, reason or name)


@pytest.mark.parametrize(
    ("ev", "recent", "reason"),
    [
        pytest.param(evidence(DOWN, value(0.1)), [], "g: analysis unavailable (timeout after 5s)",
                     id="candidate-down"),
        pytest.param(evidence(value(0.9), DOWN), [], "g: analysis unavailable (timeout after 5s)",
                     id="baseline-down-candidate-breaching"),
        pytest.param(evidence(NO_DATA, DOWN), [], "g: analysis unavailable (timeout after 5s)",
                     id="baseline-down-candidate-no-data"),
        pytest.param(evidence(DOWN, DOWN), [U] * 50, "g: analysis unavailable (timeout after 5s)",
                     id="after-fifty-unavailable"),
        pytest.param(evidence(DOWN), [B, B, B, B], "g: analysis unavailable (timeout after 5s)",
                     id="after-breach-streak"),
    ],
)  # fmt: skip
def test_provider_error_is_unavailable_and_transient(
    ev: Evidence, recent: list[GateResult], reason: str
) -> None:
    """A provider error is UNAVAILABLE and transient, never persistent however often."""
    result = judge_threshold(gate(max=0.1, hardMax=0.5), ev, recent, confirm=3)
    assert (result.result, result.classification, result.hard) == (U, T, False)
    assert result.reason == reason
    assert result.threshold is None


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        pytest.param(NO_DATA, "g: no data for the candidate (empty result)", id="empty"),
        pytest.param(Measurement.of(float("nan")),
                     "g: no data for the candidate (query returned nan)", id="nan"),
        pytest.param(Measurement.no_data("3 requests, need 10"),
                     "g: no data for the candidate (3 requests, need 10)", id="too-few-requests"),
    ],
)  # fmt: skip
def test_no_data_is_no_data(candidate: Measurement, reason: str) -> None:
    """Missing candidate data is NO_DATA without classification, never a pass or breach."""
    result = judge_threshold(gate(max=0.1), evidence(candidate, value(0.5)), [B, B], confirm=3)
    assert (result.result, result.classification, result.value) == (N, None, None)
    assert result.reason == reason
    assert result.baseline == 0.5


RATIO = {"ratio": {"bad": "bad", "total": "total"}, "max": 0.1, "minRequests": 50}


@pytest.mark.parametrize(
    ("bounds", "candidate", "requests", "needed"),
    [
        pytest.param(RATIO, Measurement.no_data("12 requests, need 50"), 12.0, 50, id="too-few"),
        pytest.param(RATIO, Measurement.no_data("waiting for the other gates"), 60.0, None,
                     id="enough-requests-other-reason"),
        pytest.param(RATIO, Measurement.no_data("first reading"), None, None, id="first-reading"),
        pytest.param({"query": "up", "max": 0.1}, NO_DATA, 12.0, None, id="query-gate"),
        pytest.param(RATIO, value(0.01), 60.0, None, id="judged"),
    ],
)  # fmt: skip
def test_no_data_for_want_of_traffic_names_the_requests_needed(
    bounds: dict[str, Any], candidate: Measurement, requests: float | None, needed: int | None
) -> None:
    """A ratio gate short of ``minRequests`` says how many it needs, so a view can show
    how far the evidence has come; other verdicts carry no such number."""
    got = judge_threshold(
        SloGate.model_validate({"name": "g", **bounds}),
        Evidence(candidate, NO_DATA, candidate_requests=requests),
        [],
        confirm=3,
    )
    assert (got.requests, got.min_requests) == (requests, needed)


@pytest.mark.parametrize(
    ("bounds", "candidate", "baseline", "result", "threshold", "reason"),
    [
        pytest.param({"max": 0.01}, 0.005, NO_DATA, P, 0.01, "g: 0.005 within 0.01",
                     id="below-max"),
        pytest.param({"max": 0.01}, 0.01, NO_DATA, P, 0.01, "g: 0.01 within 0.01",
                     id="equal-to-max-passes"),
        pytest.param({"max": 0.01}, 0.02, NO_DATA, B, 0.01,
                     "g: 0.02 above 0.01, breach 1 of 3 to confirm", id="above-max"),
        pytest.param({"max": 0.01, "maxVsBaseline": 2}, 0.03, value(0.02), P, 0.04,
                     "g: 0.03 within 0.04", id="relative-bound-larger"),
        pytest.param({"max": 0.01, "maxVsBaseline": 2}, 0.05, value(0.02), B, 0.04,
                     "g: 0.05 above 0.04 (baseline 0.02), breach 1 of 3 to confirm",
                     id="relative-bound-breached"),
        pytest.param({"max": 0.01, "maxVsBaseline": 2}, 0.008, value(0.001), P, 0.01,
                     "g: 0.008 within 0.01", id="absolute-bound-larger"),
        pytest.param({"max": 0.01, "maxVsBaseline": 2}, 0.03, value(0.001), B, 0.01,
                     "g: 0.03 above 0.01 (baseline 0.001), breach 1 of 3 to confirm",
                     id="absolute-larger-breached"),
        pytest.param({"max": 0.01, "maxVsBaseline": 2}, 0.03, NO_DATA, B, 0.01,
                     "g: 0.03 above 0.01, breach 1 of 3 to confirm",
                     id="baseline-missing-absolute-only"),
        pytest.param({"max": 0.01, "maxVsBaseline": 2}, 0.005, NO_DATA, P, 0.01,
                     "g: 0.005 within 0.01", id="baseline-missing-absolute-pass"),
        pytest.param({"maxVsBaseline": 1.5}, 0.2, value(0.1), B, 0.15,
                     "g: 0.2 above 0.15 (baseline 0.1), breach 1 of 3 to confirm",
                     id="relative-only"),
        pytest.param({"min": 100}, 150, NO_DATA, P, 100, "g: 150 at or above 100", id="above-min"),
        pytest.param({"min": 100}, 100, NO_DATA, P, 100, "g: 100 at or above 100",
                     id="equal-to-min-passes"),
        pytest.param({"min": 100}, 40, value(120), B, 100,
                     "g: 40 below 100 (baseline 120), breach 1 of 3 to confirm", id="below-min"),
    ],
)  # fmt: skip
def test_bounds(
    *,
    bounds: dict[str, float],
    candidate: float,
    baseline: Measurement,
    result: GateResult,
    threshold: float,
    reason: str,
) -> None:
    """The effective bound is max, min, or the larger of max and maxVsBaseline x baseline."""
    got = judge_threshold(gate(**bounds), evidence(value(candidate), baseline), [], confirm=3)
    assert got.result is result
    assert got.threshold == pytest.approx(threshold)
    assert got.reason == reason
    assert got.hard is False
    assert got.classification is (T if result is B else None)
    assert got.value == candidate


@pytest.mark.parametrize(
    ("bounds", "candidate", "baseline", "threshold"),
    [
        pytest.param({"min": 1, "max": 10}, 0.5, NO_DATA, 1, id="below-min-with-max"),
        pytest.param({"min": 1, "max": 10}, 20, NO_DATA, 10, id="above-max-with-min"),
        pytest.param({"min": 1, "maxVsBaseline": 2}, 20, value(5), 10,
                     id="above-relative-with-min"),
    ],
)  # fmt: skip
def test_lower_and_upper_bounds_are_both_enforced(
    bounds: dict[str, float], candidate: float, baseline: Measurement, threshold: float
) -> None:
    """A gate with min and an upper bound breaches on either side."""
    got = judge_threshold(gate(**bounds), evidence(value(candidate), baseline), [], confirm=3)
    assert (got.result, got.threshold) == (B, threshold), got.reason


@pytest.mark.parametrize(
    ("baseline", "allowed"),
    [
        pytest.param(NO_DATA, {N}, id="baseline-no-data"),
        pytest.param(Measurement.of(float("nan")), {N}, id="baseline-nan"),
        pytest.param(value(0.0), {N, B}, id="baseline-zero"),
    ],
)
def test_relative_only_gate_without_usable_baseline_never_passes(
    baseline: Measurement, allowed: set[GateResult]
) -> None:
    """A gate bounded only by maxVsBaseline cannot pass 0.9 when the baseline gives no bound."""
    got = judge_threshold(gate(maxVsBaseline=2), evidence(value(0.9), baseline), [], confirm=3)
    assert got.result in allowed, got.reason


@pytest.mark.parametrize(
    ("bounds", "candidate", "baseline", "threshold"),
    [
        pytest.param({"max": 0.01, "hardMax": 0.5}, 0.6, NO_DATA, 0.5, id="hard-max"),
        pytest.param({"max": 0.01, "hardVsBaseline": 10}, 0.2, value(0.01), 0.1,
                     id="hard-vs-baseline"),
        pytest.param({"max": 0.01, "hardMax": 0.05, "hardVsBaseline": 10}, 0.3, value(0.02), 0.2,
                     id="hard-larger-of-both"),
    ],
)  # fmt: skip
def test_hard_guard_is_persistent_at_once(
    bounds: dict[str, float], candidate: float, baseline: Measurement, threshold: float
) -> None:
    """A value over a hard guard is a persistent, hard breach on first sight."""
    got = judge_threshold(gate(**bounds), evidence(value(candidate), baseline), [], confirm=5)
    assert (got.result, got.classification, got.hard) == (B, PE, True)
    assert got.threshold == pytest.approx(threshold)
    assert got.reason == (
        f"g: {candidate:.4g} exceeds the hard guard {threshold:.4g}; rolling back at once"
    )


@pytest.mark.parametrize(
    ("bad", "requests", "hard"),
    [
        pytest.param(8, 12, False, id="8-of-12-could-be-luck"),
        pytest.param(12, 12, True, id="12-of-12-is-not"),
        pytest.param(45, 50, True, id="45-of-50"),
        pytest.param(5, 5, False, id="5-of-5-too-few"),
        pytest.param(70, 100, False, id="70-of-100-not-surely-above-0.6"),
        pytest.param(80, 100, True, id="80-of-100"),
    ],
)
def test_hard_guard_on_a_ratio_needs_confidence(bad: int, requests: int, hard: bool) -> None:
    """A ratio trips the hard guard only when its 99% lower bound is above it."""
    got = judge_threshold(
        gate(max=0.05, hardMax=0.6),
        Evidence(value(bad / requests), Measurement.no_data(), candidate_requests=requests),
        [],
        confirm=3,
    )
    assert (got.result, got.hard, got.classification) == (B, hard, PE if hard else T)
    if hard:
        assert f"with 99% confidence over {requests} requests" in got.reason


def test_hard_guard_below_relative_is_soft_breach() -> None:
    """Below the larger hard bound, a breach of max is only a transient soft breach."""
    got = judge_threshold(
        gate(max=0.01, hardMax=0.05, hardVsBaseline=10),
        evidence(value(0.06), value(0.02)),
        [],
        confirm=3,
    )
    assert (got.result, got.classification, got.hard, got.threshold) == (B, T, False, 0.01)


@pytest.mark.parametrize(
    ("confirm", "recent", "classification", "streak"),
    [
        pytest.param(3, [], T, 1, id="first-breach"),
        pytest.param(3, [B], T, 2, id="second-breach"),
        pytest.param(3, [B, B], PE, 3, id="third-breach-confirms"),
        pytest.param(3, [B, P, B], T, 2, id="pass-resets-streak"),
        pytest.param(3, [B, B, N], PE, 3, id="no-data-neither-confirms-nor-clears"),
        pytest.param(3, [B, U, U, B], PE, 3, id="unavailable-neither-confirms-nor-clears"),
        pytest.param(3, [N, U, N], T, 1, id="no-evidence-only"),
        pytest.param(3, [B, B, P, N, B], T, 2, id="pass-clears-behind-no-data"),
        pytest.param(3, [P, B, B, B, B], PE, 5, id="long-streak"),
        pytest.param(1, [], PE, 1, id="confirm-1-persistent-at-once"),
        pytest.param(2, [P], T, 1, id="confirm-2-after-pass"),
    ],
)
def test_breach_streak(
    confirm: int, recent: Sequence[GateResult], classification: Classification, streak: int
) -> None:
    """A breach is persistent after ``confirm`` breaches since the last pass, this one included."""
    got = judge_threshold(gate(max=0.01), evidence(value(0.5)), recent, confirm)
    assert (got.result, got.classification, got.hard) == (B, classification, False)
    assert got.reason == f"g: 0.5 above 0.01, breach {streak} of {confirm} to confirm"


@pytest.mark.parametrize(
    ("confirm", "within", "recent", "classification", "breaches"),
    [
        pytest.param(3, 5, [], T, 1, id="first-breach"),
        pytest.param(3, 5, [B, P, B], PE, 3, id="a-pass-between-does-not-reset"),
        pytest.param(3, 5, [B, P, P, P, B], T, 2, id="the-oldest-breach-fell-out"),
        pytest.param(3, 5, [B, P, P, N, U, P, B], T, 2, id="no-evidence-is-skipped-not-counted"),
        pytest.param(3, 5, [B, N, P, U, B], PE, 3, id="skipped-keeps-an-old-breach-in"),
        pytest.param(2, 2, [P, B], PE, 2, id="k-of-k-is-in-a-row"),
        pytest.param(2, 2, [B, P], T, 1, id="k-of-k-after-a-pass"),
        pytest.param(1, 4, [], PE, 1, id="one-of-n-persistent-at-once"),
    ],
)  # fmt: skip
def test_breaches_k_of_n(
    *, confirm: int, within: int, recent: Sequence[GateResult],
    classification: Classification, breaches: int,
) -> None:  # fmt: skip
    """With ``within``, ``confirm`` breaches among the last ``within`` evaluations with
    evidence (this one included) are persistent: a flapping gate is caught, one bad point
    is not."""
    got = judge_threshold(gate(max=0.01), evidence(value(0.5)), recent, confirm, within)
    assert (got.result, got.classification) == (B, classification), got.reason
    expected = f"{breaches} of the last {within} evaluations breached, {confirm} confirm"
    assert got.reason == f"g: 0.5 above 0.01, {expected}"


def test_policy_confirm_within_reaches_the_threshold_judge() -> None:
    """``analysis.confirmWithin`` is what build_judge gives the threshold judge."""
    data = {
        "apiVersion": "promgate/v1", "kind": "PromotionPolicy", "metadata": {"name": "p"},
        "version": "1", "analysis": {"confirm": 2, "confirmWithin": 4},
        "stages": [{"name": "s", "strategy": {"canary": {"steps": [50], "stepDuration": "1m"}},
                    "gates": {"slo": [{"name": "g", "query": "q", "max": 1}]}}],
    }  # fmt: skip
    policy = parse_policy(data)
    stage = policy.stage("s")
    judge = build_judge(stage, policy.analysis_for(stage))
    assert judge.threshold == ThresholdJudge(confirm=2, within=4)
    got = judge.judge(stage.gates.slo[0], evidence(value(5.0)), [B, P, P])
    assert got.classification is PE, got.reason


def test_threshold_judge_uses_its_confirm() -> None:
    """ThresholdJudge applies judge_threshold with its own confirm count."""
    judge = ThresholdJudge(confirm=2)
    got = judge.judge(gate(max=0.01), evidence(value(0.5)), [B])
    assert got.classification is PE


def test_verdict_carries_the_numbers() -> None:
    """A verdict carries value, baseline, threshold and candidate requests for people."""
    ev = Evidence(value(0.02), value(0.01), candidate_requests=400, baseline_requests=900)
    got = judge_threshold(gate(max=0.05), ev, [], confirm=3)
    assert got.to_dict() == {
        "gate": "g",
        "result": GateResult.PASS,
        "classification": None,
        "value": 0.02,
        "baseline": 0.01,
        "threshold": 0.05,
        "hard": False,
        "reason": "g: 0.02 within 0.05",
        "requests": 400,
        "e_value": None,
        "e_threshold": None,
        "clearance": None,
        "cleared": None,
        "min_requests": None,
    }


@pytest.mark.parametrize(
    ("verdicts", "decision"),
    [
        pytest.param([], Decision.PASS, id="empty"),
        pytest.param([verdict(P), verdict(P)], Decision.PASS, id="all-pass"),
        pytest.param([verdict(P), verdict(N)], Decision.WAIT, id="no-data-waits"),
        pytest.param([verdict(P), verdict(B, T)], Decision.WAIT, id="transient-waits"),
        pytest.param([verdict(N), verdict(U, T)], Decision.HOLD, id="unavailable-over-wait"),
        pytest.param([verdict(B, T), verdict(U, T)], Decision.HOLD,
                     id="unavailable-over-transient"),
        pytest.param([verdict(U, T), verdict(B, PE)], Decision.ROLLBACK,
                     id="persistent-over-unavailable"),
        pytest.param([verdict(P), verdict(N), verdict(B, PE)], Decision.ROLLBACK,
                     id="persistent-over-wait"),
        pytest.param([verdict(U, T)] * 3, Decision.HOLD, id="only-unavailable"),
    ],
)  # fmt: skip
def test_decide_precedence(verdicts: list[GateVerdict], decision: Decision) -> None:
    """Persistent breach > unavailable > wait > pass; no gates is a pass."""
    step = decide(verdicts)
    assert step.decision is decision
    assert step.gates == tuple(verdicts)


@pytest.mark.parametrize(
    ("verdicts", "reason"),
    [
        pytest.param([], "no gates", id="no-gates"),
        pytest.param([verdict(P, name="a"), verdict(P, name="b")], "a; b", id="pass-lists-all"),
        pytest.param([verdict(P, name="a"), verdict(N, name="b"), verdict(B, T, name="c")],
                     "b; c", id="wait-lists-non-passing"),
        pytest.param([verdict(B, T, name="a"), verdict(U, T, name="b")], "b",
                     id="hold-lists-unavailable"),
        pytest.param([verdict(B, T, name="a"), verdict(B, PE, name="b"), verdict(U, T, name="c")],
                     "b", id="rollback-lists-persistent"),
    ],
)  # fmt: skip
def test_step_verdict_reason(verdicts: list[GateVerdict], reason: str) -> None:
    """The step's reason joins the reasons of the gates that decided it."""
    assert decide(verdicts).reason == reason


def test_step_verdict_reason_for_explicit_decision() -> None:
    """A StepVerdict built directly explains itself by its own decision."""
    step = StepVerdict(Decision.WAIT, (verdict(P, name="a"), verdict(N, name="b")))
    assert step.reason == "b"


@pytest.mark.parametrize(
    ("bad", "total", "min_requests", "kind", "expected", "detail"),
    [
        pytest.param(1, 9, 10, MeasurementKind.NO_DATA, None, "9 requests, need 10",
                     id="below-min"),
        pytest.param(0, 0, 1, MeasurementKind.NO_DATA, None, "0 requests, need 1", id="zero-total"),
        pytest.param(1, 10, 10, MeasurementKind.VALUE, 0.1, "", id="at-min"),
        pytest.param(0, 250, 10, MeasurementKind.VALUE, 0.0, "", id="no-bad"),
        pytest.param(3, 12.5, 10, MeasurementKind.VALUE, 0.24, "", id="fractional-total"),
    ],
)  # fmt: skip
def test_ratio_evidence(
    *,
    bad: float,
    total: float,
    min_requests: int,
    kind: MeasurementKind,
    expected: float | None,
    detail: str,
) -> None:
    """bad/total is a value only with at least ``min_requests`` requests; otherwise no data."""
    got = ratio_evidence(bad, total, min_requests)
    assert (got.kind, got.detail) == (kind, detail)
    assert got.value == (pytest.approx(expected) if expected is not None else None)
