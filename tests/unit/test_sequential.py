"""The anytime-valid sequential test and the judge built on it."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import pytest
import yaml

from sidecar.analysis.judge import (
    Classification,
    Decision,
    Evidence,
    GateResult,
    GateVerdict,
    SequentialJudge,
    StepCounts,
    StepVerdict,
    build_judge,
    ratio_window,
)
from sidecar.analysis.sequential import (
    Counts,
    _log_upper_tail,
    clearance_log_e,
    clearance_test,
    log_e_value,
    null_share,
    regression_log_e,
    sequential_test,
)
from sidecar.domain.measurement import Measurement
from sidecar.domain.policy import SloGate, parse_policy
from sidecar.errors import PolicyError

P, B, N = GateResult.PASS, GateResult.BREACH, GateResult.NO_DATA
T, PE = Classification.TRANSIENT, Classification.PERSISTENT


def midpoint_tail(a: float, b: float, x: float, n: int = 20_000) -> float:
    """Beta(a, b)'s mass above x by the midpoint rule, to check the continued fraction."""
    h = (1 - x) / n
    total = sum((x + (i + 0.5) * h) ** (a - 1) * (1 - x - (i + 0.5) * h) ** (b - 1)
                for i in range(n))  # fmt: skip
    return total * h * math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b))


@pytest.mark.parametrize(
    ("a", "b", "x"),
    [(5, 45, 0.1), (2, 3, 0.5), (15, 40, 0.1), (1.5, 200, 0.02), (30, 60, 0.6)],
)
def test_upper_tail_matches_numeric_integration(a: float, b: float, x: float) -> None:
    """The Beta upper tail from the continued fraction agrees with plain integration."""
    assert math.exp(_log_upper_tail(a, b, x)) == pytest.approx(midpoint_tail(a, b, x), rel=1e-4)


@pytest.mark.parametrize(
    ("rho", "margin", "expected"),
    [(0.1, 0.0, 0.1), (0.5, 0.0, 0.5), (0.1, 1.0, 0.2 / 1.1), (0.5, 0.2, 0.6 / 1.1)],
)
def test_null_share_with_margin(rho: float, margin: float, expected: float) -> None:
    """The null share of bad events grows with the margin the candidate is allowed."""
    assert null_share(rho, margin) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("bad_c", "bad_b", "rho0", "confirmed"),
    [
        pytest.param(10, 90, 0.1, False, id="exactly-its-share"),
        pytest.param(0, 100, 0.1, False, id="better-than-baseline"),
        pytest.param(40, 60, 0.1, True, id="four-times-its-share"),
        pytest.param(3, 1, 0.2, False, id="too-few-events-to-tell"),
        pytest.param(25, 75, 0.1, True, id="two-and-a-half-times"),
    ],
)
def test_e_value_confirms_only_clear_excess(
    bad_c: int, bad_b: int, rho0: float, confirmed: bool
) -> None:
    """At alpha 1% (threshold 100), only a clear excess of bad events confirms."""
    assert (log_e_value(bad_c, bad_b, rho0) >= math.log(100)) is confirmed


def test_false_rollbacks_stay_below_alpha_under_repeated_looks() -> None:
    """A/A: looking after every batch for 40 batches rolls back at most about alpha."""
    rng = random.Random(7)
    alpha, runs, rolled_back = 0.05, 400, 0
    for _ in range(runs):
        bc = bb = tc = tb = 0
        for _ in range(40):
            nc = sum(rng.random() < 0.2 for _ in range(100))
            bc += sum(rng.random() < 0.05 for _ in range(nc))
            bb += sum(rng.random() < 0.05 for _ in range(100 - nc))
            tc, tb = tc + nc, tb + 100 - nc
            if tc and tb and sequential_test([(bc, tc, bb, tb)], margin=0, alpha=alpha).confirmed:
                rolled_back += 1
                break
    assert rolled_back / runs <= alpha


DETECT_2 = 1.0 / (1.0 - 0.95)  # the clearance threshold at power 0.95


@pytest.mark.parametrize(
    ("counts", "detect", "cleared"),
    [
        pytest.param((60, 5000, 60, 5000), 2.0, True, id="a-a-at-half-the-traffic"),
        pytest.param((30, 3000, 270, 27000), 2.0, True, id="a-a-at-a-tenth-of-the-traffic"),
        pytest.param((0, 5000, 30, 5000), 2.0, True, id="better-than-baseline"),
        pytest.param((20, 2000, 20, 2000), 3.0, True, id="a-a-rules-out-3x-sooner-than-2x"),
        pytest.param((20, 2000, 20, 2000), 2.0, False, id="a-a-too-few-events-for-2x"),
        pytest.param((5, 500, 5, 500), 2.0, False, id="too-few-events-to-tell"),
        pytest.param((40, 2000, 20, 2000), 2.0, False, id="twice-the-share"),
        pytest.param((20, 1000, 90, 9000), 2.0, False, id="twice-the-share-at-a-tenth"),
        pytest.param((120, 5000, 60, 5000), 2.0, False, id="twice-the-share-many-events"),
        pytest.param((100, 5000, 60, 5000), 2.0, False, id="near-2x-stays-uncleared"),
    ],
)
def test_clearance_rules_out_only_what_the_counts_rule_out(
    counts: Counts, detect: float, cleared: bool
) -> None:
    """The clearance test confirms (clears) when the candidate's share of bad events is
    clearly below what a ``detect`` times worse candidate would take, and never when it
    takes about that share, however many events there are."""
    got = clearance_test([counts], detect=detect, power=0.95)
    assert got.confirmed is cleared, got
    assert (got.e_value >= DETECT_2) is cleared
    assert got.threshold == pytest.approx(DETECT_2)
    rho = counts[1] / (counts[1] + counts[3])
    assert got.null_share == pytest.approx(null_share(rho, detect - 1.0))


@pytest.mark.parametrize(
    "counts",
    [
        pytest.param((0, 2000, 0, 2000), id="no-bad-events"),
        pytest.param((5, 0, 5, 2000), id="no-candidate-requests"),
        pytest.param((5, 2000, 5, 0), id="no-baseline-requests"),
    ],
)
def test_counts_that_cannot_tell_are_no_evidence(counts: Counts) -> None:
    """Without bad events (or without requests on a side) both tests' log e-values are 0:
    e 1, evidence neither way."""
    assert clearance_log_e(counts, 2.0) == 0.0
    assert regression_log_e(counts, 0.2) == 0.0


def test_no_bad_events_never_clear_or_confirm() -> None:
    """A step without bad events leaves both e-values at 1: nothing confirmed, nothing
    cleared."""
    cleared = clearance_test([(0, 2000, 0, 2000)], detect=2.0, power=0.95)
    regressed = sequential_test([(0, 2000, 0, 2000)], margin=0.0, alpha=0.01)
    assert (cleared.e_value, cleared.confirmed) == (1.0, False)
    assert (regressed.e_value, regressed.confirmed) == (1.0, False)


@pytest.mark.parametrize(
    ("detect", "power"),
    [
        pytest.param(1.0, 0.95, id="detect-1"),
        pytest.param(0.5, 0.95, id="detect-below-1"),
        pytest.param(2.0, 0.0, id="power-0"),
        pytest.param(2.0, 1.0, id="power-1"),
        pytest.param(2.0, 1.5, id="power-above-1"),
        pytest.param(2.0, -0.1, id="power-negative"),
    ],
)
def test_clearance_refuses_meaningless_detect_or_power(detect: float, power: float) -> None:
    """A regression of at most 1x, or a power outside (0, 1), cannot be tested for."""
    with pytest.raises(ValueError, match="detect must exceed 1 and power lie in"):
        clearance_test([(5, 500, 5, 500)], detect=detect, power=power)


@pytest.mark.parametrize(
    "test",
    [
        pytest.param(lambda s: sequential_test(s, margin=0.0, alpha=0.01), id="regression"),
        pytest.param(lambda s: clearance_test(s, detect=2.0, power=0.95), id="clearance"),
    ],
)
@pytest.mark.parametrize(
    "steps",
    [
        pytest.param([], id="no-steps"),
        pytest.param([(5, 500, 5, 500), (0, 0, 0, 0)], id="current-step-empty"),
        pytest.param([(1, 100, 4, 0)], id="no-baseline-this-step"),
    ],
)
def test_tests_need_requests_on_both_sides_this_step(
    steps: list[Counts], test: Callable[[list[Counts]], object]
) -> None:
    """Both tests report on the current step (the last): it needs requests on each side."""
    with pytest.raises(ValueError, match="both sides need requests this step"):
        test(steps)


@pytest.mark.parametrize("detect", [1.2, 2.0, 5.0])
@pytest.mark.parametrize(
    "counts",
    [
        pytest.param((10, 1000, 90, 9000), id="a-a-tenth"),
        pytest.param((40, 2000, 20, 2000), id="twice-half"),
        pytest.param((0, 500, 30, 4500), id="clean-candidate"),
        pytest.param((7, 300, 0, 700), id="clean-baseline"),
    ],
)
def test_clearance_is_the_regression_test_with_roles_swapped(counts: Counts, detect: float) -> None:
    """Clearing a ``detect`` times worse candidate is testing that the *baseline* takes
    more than its share would be next to such a candidate: the regression e-value with
    the versions' roles swapped and margin ``1/detect - 1``."""
    bad_c, total_c, bad_b, total_b = counts
    rho = total_c / (total_c + total_b)
    expected = log_e_value(bad_b, bad_c, 1.0 - null_share(rho, detect - 1.0))
    assert clearance_log_e(counts, detect) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    swapped = (bad_b, total_b, bad_c, total_c)
    assert clearance_log_e(counts, detect) == pytest.approx(
        regression_log_e(swapped, 1.0 / detect - 1.0), rel=1e-9, abs=1e-9
    )


S1 = (25.0, 1000.0, 100.0, 9000.0)  # a 10% step: the candidate takes 20% of bad events
S2 = (70.0, 5000.0, 40.0, 5000.0)  # a 50% step: the candidate takes 64% of bad events


@pytest.mark.parametrize(
    ("steps", "confirmed"),
    [
        pytest.param([S1], False, id="first-step-alone"),
        pytest.param([S2], False, id="second-step-alone"),
        pytest.param([S1, S2], True, id="the-release"),
        pytest.param([S2, S1], True, id="order-does-not-matter"),
    ],
)
def test_regression_evidence_carries_over_steps(steps: list[Counts], confirmed: bool) -> None:
    """A regression whose evidence is split over two steps (each below 1/alpha on its own)
    is confirmed on the release: the release's e-value is the product of its steps'."""
    got = sequential_test(steps, margin=0.0, alpha=0.01)
    assert got.confirmed is confirmed, got
    product = math.prod(math.exp(regression_log_e(step, 0.0)) for step in steps)
    assert got.e_value == pytest.approx(product)
    current = steps[-1]
    assert got.bad_share == pytest.approx(current[0] / (current[0] + current[2]))


A1 = (10.0, 1000.0, 90.0, 9000.0)  # A/A at 10%
A2 = (20.0, 2000.0, 20.0, 2000.0)  # A/A at 50%


@pytest.mark.parametrize(
    ("steps", "cleared"),
    [
        pytest.param([A1], False, id="first-step-alone"),
        pytest.param([A2], False, id="second-step-alone"),
        pytest.param([A1, A2], True, id="the-release"),
    ],
)
def test_clearance_evidence_carries_over_steps(steps: list[Counts], cleared: bool) -> None:
    """Evidence that a 2x regression is ruled out adds up over the release's steps too."""
    got = clearance_test(steps, detect=2.0, power=0.95)
    assert got.confirmed is cleared, got
    product = math.prod(math.exp(clearance_log_e(step, 2.0)) for step in steps)
    assert got.e_value == pytest.approx(product)


def window_of(
    rng: random.Random, share: float, worse: float, base_rate: float = 0.05, batch: int = 100
) -> Counts:
    """One window of ``batch`` requests, each on the candidate with probability ``share``
    (so the share varies from window to window), the candidate failing ``worse`` times as
    often as the baseline."""
    candidate_bad = share * base_rate * worse  # one uniform draw decides side and outcome
    baseline_bad = share + (1.0 - share) * base_rate
    bc = tc = bb = tb = 0.0
    for _ in range(batch):
        u = rng.random()
        if u < share:
            tc, bc = tc + 1, bc + (u < candidate_bad)
        else:
            tb, bb = tb + 1, bb + (u < baseline_bad)
    return (bc, tc, bb, tb)


def added(a: Counts, b: Counts) -> Counts:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3])


def release_fires(
    rng: random.Random,
    shares: Sequence[float],
    batches: int,
    worse: float,
    fires: Callable[[list[Counts]], bool],
) -> bool:
    """One simulated release: per step (one per traffic share) ``batches`` windows of
    :func:`window_of`. Looks after every window at the release's counts; True if ``fires``
    ever says so."""
    steps: list[Counts] = []
    for share in shares:
        step: Counts = (0.0, 0.0, 0.0, 0.0)
        for _ in range(batches):
            step = added(step, window_of(rng, share, worse))
            if step[1] and step[3] and fires([*steps, step]):
                return True
        steps.append(step)
    return False


def regression_at(alpha: float) -> Callable[[list[Counts]], bool]:
    return lambda steps: sequential_test(steps, margin=0.0, alpha=alpha).confirmed


def clearance_at(detect: float, power: float) -> Callable[[list[Counts]], bool]:
    return lambda steps: clearance_test(steps, detect=detect, power=power).confirmed


STEPS = (0.1, 0.25, 0.5)  # a canary's traffic shares


@pytest.mark.parametrize(
    ("worse", "fires", "low", "high"),
    [
        pytest.param(1.0, regression_at(0.05), 0.0, 0.05,
                     id="a-a-false-rollbacks-at-most-alpha"),
        pytest.param(2.0, clearance_at(2.0, 0.9), 0.0, 0.1,
                     id="2x-false-clearances-at-most-1-minus-power"),
        pytest.param(1.0, clearance_at(2.0, 0.9), 0.85, 1.0, id="a-a-is-cleared"),
        pytest.param(2.0, regression_at(0.05), 0.85, 1.0, id="2x-is-confirmed"),
    ],
)  # fmt: skip
def test_release_test_is_anytime_valid_across_steps(
    worse: float, fires: Callable[[list[Counts]], bool], low: float, high: float
) -> None:
    """Looked at after every batch of a three-step release whose traffic share changes
    from step to step: an A/A release rolls back at most alpha of the time, a 2x worse
    candidate is (falsely) cleared at most 1 - power of the time, and the same looks do
    clear an A/A release and confirm the 2x one (so the bounds are not met by a test that
    never fires)."""
    rng = random.Random(11)
    runs = 300
    rate = sum(release_fires(rng, STEPS, 12, worse, fires) for _ in range(runs)) / runs
    assert low <= rate <= high


def test_false_clearances_stay_below_one_minus_power_under_repeated_looks() -> None:
    """One step, the candidate exactly ``detect`` times worse, looked at after each of 40
    batches: it is cleared at most 1 - power of the time."""
    rng = random.Random(7)
    power, runs = 0.9, 400
    cleared = sum(
        release_fires(rng, (0.2,), 40, 2.0, clearance_at(2.0, power)) for _ in range(runs)
    )
    assert cleared / runs <= 1 - power


@pytest.mark.parametrize(
    ("counts", "floor", "cleared"),
    [
        pytest.param([(0, 400, 0, 1600)], None, False, id="spotless-without-floor-says-nothing"),
        pytest.param([(0, 400, 0, 1600)], 0.02, True, id="spotless-below-a-2pct-floor"),
        pytest.param([(0, 100, 0, 400)], 0.02, False, id="too-few-requests-for-the-floor"),
        pytest.param([(0, 200, 0, 800), (0, 200, 0, 800)], 0.02, True,
                     id="the-floor-counts-the-whole-release"),
        pytest.param([(10, 400, 0, 1600)], 0.02, False, id="at-the-floor-not-below"),
        pytest.param([(4, 2000, 16, 8000)], 0.02, True, id="a-ratio-test-alone-may-clear"),
    ],
)  # fmt: skip
def test_clearance_floor(counts: list[Counts], floor: float | None, cleared: bool) -> None:
    """With a floor a step also clears when the candidate is shown to be below it, which
    is the only evidence a spotless service can give (twice zero is zero)."""
    got = clearance_test(counts, detect=2.0, power=0.95, floor=floor)
    assert got.confirmed is cleared, got.e_value


def test_false_clearances_with_a_floor_stay_below_one_minus_power() -> None:
    """The candidate at the floor and twice the baseline's ratio (a regression that
    matters by both measures), looked at after each of 30 batches: cleared at most
    1 - power of the time, though the clearance mixes two tests."""
    rng = random.Random(5)
    power, runs, floor, cleared = 0.9, 300, 0.02, 0
    for _ in range(runs):
        totals = [0, 0, 0, 0]
        for _ in range(30):
            cand = sum(rng.random() < 0.2 for _ in range(200))
            totals[0] += sum(rng.random() < floor for _ in range(cand))
            totals[1] += cand
            totals[2] += sum(rng.random() < floor / 2 for _ in range(200 - cand))
            totals[3] += 200 - cand
            step = (totals[0], totals[1], totals[2], totals[3])
            if clearance_test([step], detect=2.0, power=power, floor=floor).confirmed:
                cleared += 1
                break
    assert cleared / runs <= 1 - power


def gate(**fields: object) -> SloGate:
    base = {"name": "errors", "ratio": {"bad": "b", "total": "t"}, "max": 0.05,
            "judge": "sequential", "minStepRequests": 100}  # fmt: skip
    return SloGate.model_validate({**base, **fields})


def evidence(window: float, requests: float, counts: StepCounts) -> Evidence:
    return Evidence(Measurement.of(window), Measurement.of(0.01), requests, 400, counts)


@pytest.mark.parametrize(
    ("window", "counts", "recent", "result", "classification", "fragment"),
    [
        pytest.param(0.01, StepCounts(10, 500, 40, 2000), [], P, None, "within 0.05",
                     id="healthy"),
        pytest.param(0.3, StepCounts(12, 500, 40, 2000), [B, B], B, T, "not confirmed",
                     id="blip-never-persistent-by-count"),
        pytest.param(0.3, StepCounts(60, 500, 40, 2000), [], B, PE, "regression confirmed",
                     id="confirmed-on-first-sight"),
        pytest.param(0.01, StepCounts(60, 500, 40, 2000), [], B, PE, "regression confirmed",
                     id="confirmed-even-if-this-window-is-clean"),
        pytest.param(0.01, StepCounts(1, 50, 4, 200), [], N, None, "need 100",
                     id="too-few-requests-this-step"),
        pytest.param(0.3, StepCounts(20, 500, 0, 0), [B, B], B, PE, "breach 3 of 3",
                     id="no-baseline-traffic-falls-back-to-confirm"),
    ],
)  # fmt: skip
def test_sequential_judge(
    *,
    window: float, counts: StepCounts, recent: list[GateResult], result: GateResult,
    classification: Classification | None, fragment: str,
) -> None:  # fmt: skip
    """Persistence comes from the test, not from counting breaches; the window still marks
    transients, and a step needs enough requests before it may pass."""
    got = SequentialJudge(alpha=0.01).judge(gate(), evidence(window, 50, counts), recent)
    assert (got.result, got.classification) == (result, classification), got.reason
    assert fragment in got.reason


def test_sequential_judge_reports_its_e_value() -> None:
    """The e-value travels with the verdict for the API, logs and metrics."""
    got = SequentialJudge(alpha=0.01).judge(
        gate(), evidence(0.3, 50, StepCounts(60, 500, 40, 2000)), []
    )
    assert got.e_value is not None and got.e_value >= 100
    assert got.e_threshold == pytest.approx(100)


POLICY = """
apiVersion: promgate/v1
kind: PromotionPolicy
metadata: {name: p}
version: "1"
analysis: {alpha: 0.02, power: 0.9}
stages:
  - name: prod
    strategy: {canary: {steps: [10, 50], stepDuration: 1m}}
    gates:
      slo:
        - {name: a, ratio: {bad: b, total: t}, max: 0.05, judge: sequential}
        - {name: b, ratio: {bad: b, total: t}, max: 0.05, judge: sequential}
        - {name: c, query: q, max: 1}
"""


@pytest.mark.parametrize(
    "strategy",
    [
        pytest.param({"canary": {"steps": [10], "stepDuration": "1m"}}, id="one-step"),
        pytest.param({"canary": {"steps": [10, 50], "stepDuration": "1m"}}, id="two-steps"),
        pytest.param({"canary": {"steps": [5, 25, 50, 100], "stepDuration": "1m"}},
                     id="four-steps"),
        pytest.param({"blueGreen": {"preview": "30s", "postPromotion": "1m"}}, id="blue-green"),
    ],
)  # fmt: skip
def test_alpha_is_split_over_sequential_gates_only(strategy: dict[str, Any]) -> None:
    """Two sequential gates share alpha 0.02: 0.01 each, however many steps the strategy
    has (each gate's test runs over the whole release, evidence carrying over), and the
    judge gets the analysis' power."""
    data = yaml.safe_load(POLICY)
    data["stages"][0]["strategy"] = strategy
    policy = parse_policy(data)
    stage = policy.stage("prod")
    judge = build_judge(stage, policy.analysis_for(stage))
    assert judge.sequential.alpha == pytest.approx(0.01)
    assert judge.sequential.power == pytest.approx(0.9)


def test_sequential_needs_a_ratio_gate() -> None:
    """A value query cannot be judged sequentially; the policy says so at its path."""
    data = yaml.safe_load(POLICY)
    data["stages"][0]["gates"]["slo"][2]["judge"] = "sequential"
    with pytest.raises(PolicyError) as raised:
        parse_policy(data)
    [problem] = raised.value.problems
    assert problem.path == "stages[0].gates.slo[2]"
    assert "needs counts" in problem.message


def step_of(*windows: tuple[float, float, float, float]) -> StepCounts:
    counts = StepCounts()
    for window in windows:
        counts = counts.plus(*window)
    return counts


QUIET = (1.0, 100.0, 4.0, 400.0)  # 1% errors on both sides


@pytest.mark.parametrize(
    ("windows", "classification"),
    [
        pytest.param([QUIET] * 5 + [(60.0, 100.0, 4.0, 400.0)], T, id="one-window-blip"),
        pytest.param([QUIET] * 4 + [(30.0, 100.0, 4.0, 400.0)] * 2, PE,
                     id="two-windows-of-regression"),
        pytest.param([(60.0, 100.0, 4.0, 400.0)], T, id="first-window-alone"),
    ],
)  # fmt: skip
def test_one_bad_window_never_confirms_a_regression(
    windows: list[tuple[float, float, float, float]], classification: Classification
) -> None:
    """The test leaves out the step's worst window: a blip stays transient, a regression
    that shows in two windows is confirmed."""
    step = step_of(*windows)
    window = windows[-1]
    got = SequentialJudge(alpha=0.01).judge(
        gate(), evidence(window[0] / window[1], window[1], step), []
    )
    assert (got.result, got.classification) == (B, classification), got.reason


def test_worst_window_is_the_one_with_most_excess_bad_events() -> None:
    """The excess is measured against the candidate's traffic share of the window."""
    step = step_of(QUIET, (10.0, 100.0, 10.0, 100.0), (12.0, 100.0, 8.0, 400.0))
    assert step.worst == (12.0, 100.0, 8.0, 400.0)
    rest = step.without_worst()
    assert (rest.candidate_bad, rest.candidate_total, rest.baseline_bad, rest.baseline_total) == (
        11.0, 200.0, 14.0, 500.0,
    )  # fmt: skip


def test_next_step_keeps_earlier_steps_and_starts_empty() -> None:
    """next_step starts the current step's counts and worst window afresh and keeps the
    steps so far, oldest first and flat (an earlier step carries no earlier steps)."""
    first = step_of(QUIET, (10.0, 100.0, 4.0, 400.0))
    second = first.next_step()
    assert (second.counts, second.worst) == ((0.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0))
    assert second.earlier == (first,)
    assert second.earlier[0].worst == (10.0, 100.0, 4.0, 400.0)
    grown = second.plus(*QUIET).plus(3.0, 100.0, 4.0, 400.0)
    assert grown.earlier == (first,)
    assert grown.counts == (4.0, 200.0, 8.0, 800.0)
    third = grown.next_step()
    assert third.earlier == (first, replace(grown, earlier=()))
    assert all(step.earlier == () for step in third.earlier)
    assert third.counts == (0.0, 0.0, 0.0, 0.0)


def test_plus_keeps_earlier_steps() -> None:
    """Adding a window to the current step changes only the current step."""
    earlier = (StepCounts(1, 100, 4, 400), StepCounts(2, 200, 8, 800))
    step = StepCounts(3, 300, 6, 600, earlier=earlier).plus(*QUIET)
    assert step.earlier == earlier
    assert step.counts == (4.0, 400.0, 10.0, 1000.0)


SAVED_FIRST = step_of(QUIET, (10.0, 100.0, 4.0, 400.0))
SAVED_SECOND = SAVED_FIRST.next_step().plus(*QUIET).plus(3.0, 100.0, 4.0, 400.0)
SAVED_THIRD = SAVED_SECOND.next_step().plus(0.5, 50.0, 2.5, 450.0)


@pytest.mark.parametrize(
    "step",
    [
        pytest.param(StepCounts(), id="empty"),
        pytest.param(SAVED_FIRST, id="one-step"),
        pytest.param(SAVED_FIRST.next_step(), id="new-step-nothing-counted-yet"),
        pytest.param(SAVED_SECOND, id="two-steps"),
        pytest.param(SAVED_THIRD, id="three-steps-fractional-counts"),
    ],
)
def test_step_counts_round_trip_through_json(step: StepCounts) -> None:
    """from_json(to_json()) gives the same counts, worst window and earlier steps back,
    also through a JSON text as a ledger stores it."""
    assert StepCounts.from_json(step.to_json()) == step
    stored = json.loads(json.dumps(step.to_json()))
    assert StepCounts.from_json(stored) == step
    assert StepCounts.from_json(stored).earlier == step.earlier


def test_step_counts_json_form() -> None:
    """The stored form: the step's four counts, its worst window, the earlier steps (each
    without earlier steps of its own), oldest first."""
    assert SAVED_SECOND.to_json() == {
        "counts": [4.0, 200.0, 8.0, 800.0],
        "worst": [3.0, 100.0, 4.0, 400.0],
        "earlier": [
            {"counts": [11.0, 200.0, 8.0, 800.0], "worst": [10.0, 100.0, 4.0, 400.0],
             "earlier": []},
        ],
    }  # fmt: skip


VALID = {"counts": [1, 100, 4, 400], "worst": [1, 100, 4, 400], "earlier": []}


@pytest.mark.parametrize(
    ("data", "error"),
    [
        pytest.param({**VALID, "counts": [1, 100, 4]}, ValueError, id="three-numbers"),
        pytest.param({**VALID, "counts": [1, 100, 4, 400, 5]}, ValueError, id="five-numbers"),
        pytest.param({**VALID, "counts": [1, 100, -4, 400]}, ValueError, id="negative"),
        pytest.param({**VALID, "counts": [1, math.nan, 4, 400]}, ValueError, id="nan"),
        pytest.param({**VALID, "counts": [1, 100, 4, math.inf]}, ValueError, id="infinite"),
        pytest.param({**VALID, "counts": "1234"}, ValueError, id="a-string-of-four-digits"),
        pytest.param({**VALID, "counts": ["1", "100", "4", "400"]}, ValueError,
                     id="numbers-as-strings"),
        pytest.param({**VALID, "counts": [True, 100, 4, 400]}, ValueError, id="a-boolean"),
        pytest.param({**VALID, "counts": 5}, ValueError, id="a-number"),
        pytest.param({**VALID, "worst": [1, 100, 4]}, ValueError, id="worst-three-numbers"),
        pytest.param({**VALID, "worst": [2, 100, 4, 400]}, ValueError,
                     id="worst-window-larger-than-the-step"),
        pytest.param({**VALID, "earlier": [{**VALID, "counts": [1, -1, 4, 400]}]}, ValueError,
                     id="an-earlier-step-negative"),
        pytest.param({"worst": [0, 0, 0, 0]}, KeyError, id="missing-counts"),
        pytest.param({"counts": [0, 0, 0, 0]}, KeyError, id="missing-worst"),
        pytest.param({**VALID, "earlier": [{"worst": [0, 0, 0, 0]}]}, KeyError,
                     id="an-earlier-step-missing-counts"),
    ],
)  # fmt: skip
def test_step_counts_from_json_refuses_what_are_not_counts(
    data: dict[str, Any], error: type[Exception]
) -> None:
    """Stored counts that are not four finite non-negative numbers are refused, never read
    as something else; missing keys raise KeyError."""
    with pytest.raises(error):
        StepCounts.from_json(data)


def test_step_counts_from_json_without_earlier_is_a_first_step() -> None:
    assert StepCounts.from_json({"counts": [1, 100, 4, 400], "worst": [1, 100, 4, 400]}) == (
        StepCounts(1.0, 100.0, 4.0, 400.0, worst=(1.0, 100.0, 4.0, 400.0))
    )


def steps_of(*steps: Sequence[Counts]) -> StepCounts:
    """A release whose steps saw the given windows; the last step is the current one."""
    counts = StepCounts()
    for index, windows in enumerate(steps):
        counts = counts.next_step() if index else counts
        for window in windows:
            counts = counts.plus(*window)
    return counts


W1 = (5.0, 200.0, 20.0, 1800.0)  # 10% of traffic, twice its share of bad events
W2 = (14.0, 1000.0, 8.0, 1000.0)  # 50% of traffic, 1.75 times as many bad events


@pytest.mark.parametrize(
    ("release", "result", "classification", "fragment"),
    [
        pytest.param([[W1] * 6], P, None, "within 0.05", id="first-step-alone"),
        pytest.param([[W2] * 6], P, None, "within 0.05", id="second-step-alone"),
        pytest.param([[W1] * 6, [W2] * 6], B, PE, "regression confirmed",
                     id="the-release-confirms"),
        pytest.param([[S1], [W2] * 6], P, None, "within 0.05",
                     id="an-earlier-steps-worst-window-is-left-out"),
        pytest.param([[W2] * 6, [], [W1] * 6], B, PE, "regression confirmed",
                     id="an-empty-step-in-between"),
    ],
)  # fmt: skip
def test_sequential_judge_carries_evidence_over_steps(
    release: list[list[Counts]], result: GateResult, classification: Classification | None,
    fragment: str,
) -> None:  # fmt: skip
    """A regression whose evidence is split over two steps, neither enough on its own, is
    confirmed on the release's counts, each step without its worst window."""
    step = steps_of(*release)
    window = release[-1][-1]
    got = SequentialJudge(alpha=0.01).judge(gate(), ratio_window(gate(), window, step), [])
    assert (got.result, got.classification) == (result, classification), got.reason
    assert fragment in got.reason
    expected = sequential_test(
        [s.without_worst().counts for s in (*step.earlier, step)], margin=0.0, alpha=0.01
    )
    assert got.e_value == pytest.approx(expected.e_value)


CLEARED_AA = StepCounts(60, 5000, 60, 5000)  # A/A, enough bad events to rule 2x out
FEW_AA = StepCounts(20, 2000, 20, 2000)  # A/A, too few to rule 2x out alone
EARLIER_AA = StepCounts(10, 1000, 90, 9000)  # A/A at 10%: with FEW_AA, enough


@pytest.mark.parametrize(
    ("fields", "counts", "power", "cleared", "fragment"),
    [
        pytest.param({"detect": 2}, CLEARED_AA, 0.95, True,
                     "a 2x regression ruled out (clearance 376 of 20)", id="cleared"),
        pytest.param({"detect": 2}, FEW_AA, 0.95, False,
                     "a 2x regression not yet ruled out (clearance 5.72 of 20)",
                     id="not-yet-cleared"),
        pytest.param({"detect": 3}, FEW_AA, 0.95, True, "a 3x regression ruled out",
                     id="a-larger-regression-is-ruled-out-sooner"),
        pytest.param({"detect": 2}, replace(FEW_AA, earlier=(EARLIER_AA,)), 0.95, True,
                     "a 2x regression ruled out (clearance 36.5 of 20)",
                     id="earlier-steps-count"),
        pytest.param({"detect": 2}, CLEARED_AA, 0.999, False,
                     "a 2x regression not yet ruled out (clearance 376 of 1e+03)",
                     id="more-power-needs-more-evidence"),
        pytest.param({"detect": 2.5, "margin": 0.2}, StepCounts(40, 2000, 20, 2000), 0.95,
                     False, "a 2.5x regression not yet ruled out", id="twice-as-bad"),
        pytest.param({"detect": 2}, StepCounts().plus(40, 2000, 20, 2000), 0.95, False,
                     "a 2x regression not yet ruled out (clearance 0.383 of 20)",
                     id="a-steps-only-window-is-checked-too"),
        pytest.param({"detect": 2}, StepCounts(earlier=(EARLIER_AA,)).plus(31, 3000, 29, 3000),
                     0.95, True, "a 2x regression ruled out (clearance 55.7 of 20)",
                     id="a-steps-only-window-with-earlier-steps"),
        pytest.param({}, CLEARED_AA, 0.95, None, "within 0.05", id="no-detect"),
        pytest.param({"detect": 2}, StepCounts(60, 5000, 0, 0), 0.95, None, "within 0.05",
                     id="no-baseline-traffic"),
    ],
)  # fmt: skip
def test_sequential_judge_reports_clearance(
    fields: dict[str, Any], counts: StepCounts, power: float, cleared: bool | None,
    fragment: str,
) -> None:  # fmt: skip
    """A gate with ``detect`` says whether the release's counts rule that regression out
    with the judge's power; a gate without it, or without baseline traffic, says nothing."""
    got = SequentialJudge(alpha=0.01, power=power).judge(
        gate(**fields), evidence(0.01, 500, counts), []
    )
    assert got.result is P, got.reason
    assert got.cleared is cleared, got.reason
    assert (got.to_dict()["cleared"], got.to_dict()["clearance"]) == (cleared, got.clearance)
    assert fragment in got.reason
    if cleared is None:
        assert got.clearance is None
        assert "ruled out" not in got.reason
    else:
        detect = float(fields["detect"])
        steps = [s.counts for s in (*counts.earlier, counts)]
        expected = clearance_test(steps, detect=detect, power=power)
        assert got.clearance == pytest.approx(expected.e_value)


def cv(name: str, cleared: bool | None) -> GateVerdict:
    """A passing gate verdict that has (True), has not (False) or need not (None) clear."""
    note = {True: "; ruled out", False: "; not yet ruled out", None: ""}[cleared]
    return GateVerdict(name, P, None, 0.01, 0.01, 0.05, False, f"{name}: pass{note}",
                       cleared=cleared)  # fmt: skip


@pytest.mark.parametrize(
    ("gates", "cleared", "uncleared"),
    [
        pytest.param([], True, "", id="no-gates"),
        pytest.param([cv("a", None)], True, "", id="no-detect"),
        pytest.param([cv("a", True), cv("b", None)], True, "", id="cleared-and-no-detect"),
        pytest.param([cv("a", True), cv("b", False)], False, "b: pass; not yet ruled out",
                     id="one-not-cleared"),
        pytest.param([cv("a", False), cv("b", None), cv("c", False)], False,
                     "a: pass; not yet ruled out; c: pass; not yet ruled out",
                     id="each-not-cleared-named"),
    ],
)  # fmt: skip
def test_step_verdict_cleared_only_when_no_gate_is_uncleared(
    gates: list[GateVerdict], cleared: bool, uncleared: str
) -> None:
    """A step is cleared unless some gate has not ruled out its regression; the reasons of
    those gates say why it waits."""
    step = StepVerdict(Decision.PASS, tuple(gates))
    assert (step.cleared, step.uncleared) == (cleared, uncleared)


@pytest.mark.parametrize(
    ("worse", "counted", "high"),
    [
        pytest.param(1.0, "rolled back", 0.05, id="a-a-false-rollbacks-at-most-alpha"),
        pytest.param(2.0, "cleared", 0.1, id="2x-false-clearances-at-most-1-minus-power"),
    ],
)
def test_judge_over_a_release_keeps_its_error_rates(
    worse: float, counted: str, high: float
) -> None:
    """The judge as the analyzer drives it (a window joins the step once it has enough
    candidate requests, a new step at each weight, evidence carried over): an A/A release
    is rolled back at most alpha of the time, a 2x worse one is cleared (at some look of
    some step) at most 1 - power of the time."""
    rng = random.Random(5)
    judge = SequentialJudge(alpha=0.05, power=0.9)
    checked = gate(detect=2, max=0.5, minRequests=5, minStepRequests=1)
    runs, hits = 200, 0
    for _ in range(runs):
        step, seen = StepCounts(), set()
        for index, share in enumerate(STEPS):
            step, pending = step.next_step() if index else step, (0.0, 0.0, 0.0, 0.0)
            for _ in range(12):
                pending = added(pending, window_of(rng, share, worse))
                if pending[1] < checked.min_requests:
                    continue  # not consumed: the next window adds to it
                window, pending = pending, (0.0, 0.0, 0.0, 0.0)
                step = step.plus(*window)
                got = judge.judge(checked, ratio_window(checked, window, step), [])
                if got.classification is PE:
                    seen.add("rolled back")
                if got.cleared:
                    seen.add("cleared")
        hits += counted in seen
    assert hits / runs <= high
