"""The anytime-valid sequential test and the judge built on it."""

from __future__ import annotations

import math
import random

import pytest
import yaml

from sidecar.analysis.judge import (
    Classification,
    Evidence,
    GateResult,
    SequentialJudge,
    StepCounts,
    build_judge,
)
from sidecar.analysis.sequential import (
    _log_upper_tail,
    log_e_value,
    null_share,
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
            if tc and tb and sequential_test(bc, tc, bb, tb, margin=0, alpha=alpha).confirmed:
                rolled_back += 1
                break
    assert rolled_back / runs <= alpha


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
analysis: {alpha: 0.02}
stages:
  - name: prod
    strategy: {canary: {steps: [10, 50], stepDuration: 1m}}
    gates:
      slo:
        - {name: a, ratio: {bad: b, total: t}, max: 0.05, judge: sequential}
        - {name: b, ratio: {bad: b, total: t}, max: 0.05, judge: sequential}
        - {name: c, query: q, max: 1}
"""


def test_alpha_is_split_over_sequential_gates_and_steps() -> None:
    """Two sequential gates and two steps share alpha 0.02: 0.005 each."""
    policy = parse_policy(yaml.safe_load(POLICY))
    stage = policy.stage("prod")
    judge = build_judge(stage, policy.analysis_for(stage))
    assert judge.sequential.alpha == pytest.approx(0.005)


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
