"""The decision benchmark's simulator, peer judges and promgate adapter (fast checks)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, norm

from benchmarks.decisions.peers import (
    ArgoJudge,
    FlaggerJudge,
    KayentaJudge,
    calibrate_bound,
    mann_whitney_z,
)
from benchmarks.decisions.promgate_judge import PromgateJudge
from benchmarks.decisions.simulate import (
    Scenario,
    Streams,
    World,
    scenarios,
    seed_for,
    simulate,
    slow_ratio,
)
from sidecar.analysis.judge import SequentialJudge

WORLD = World()


def streams(scenario: Scenario, runs: int = 200, seed: int = 1) -> Streams:
    return simulate(scenario, runs, seed_for(seed, scenario.name))


def test_simulator_produces_the_configured_rates() -> None:
    st = streams(Scenario("x", "x", "regression", error_x=2.0, p99_x=1.5), runs=300)
    per_interval = (st.cand_total + st.base_total).mean()
    assert per_interval == pytest.approx(WORLD.rps * WORLD.interval_s, rel=0.05)
    share = st.cand_total.sum(axis=0) / (st.cand_total + st.base_total).sum(axis=0)
    assert np.allclose(share, WORLD.weights(), atol=0.01)
    assert st.base_errors.sum() / st.base_total.sum() == pytest.approx(0.005, rel=0.05)
    assert st.cand_errors.sum() / st.cand_total.sum() == pytest.approx(0.010, rel=0.05)
    assert st.base_slow.sum() / st.base_total.sum() == pytest.approx(0.01, rel=0.05)
    assert st.cand_slow.sum() / st.cand_total.sum() == pytest.approx(
        slow_ratio(1.5, WORLD.latency_sigma), rel=0.05
    )
    assert not st.missing.any()


def test_slow_ratio_is_the_share_above_the_baseline_p99() -> None:
    assert slow_ratio(1.0, 0.5) == pytest.approx(0.01, rel=1e-6)
    assert slow_ratio(2.0, 0.5) == pytest.approx(norm.sf(norm.ppf(0.99) - math.log(2) / 0.5))


def test_blips_gaps_onset_and_low_traffic() -> None:
    blip = streams(Scenario("b", "b", "blip", blip="shared", blip_x=100.0), runs=100)
    base = blip.base_errors / blip.base_total
    assert np.all(np.sum(base > 0.1, axis=1) == 1)  # exactly one interval per release
    gaps = streams(Scenario("g", "g", "aa", gap_rate=0.03), runs=300).missing
    assert 0.04 < gaps.mean() < 0.11  # ~3% starts x ~2.5 evaluations each
    late = streams(Scenario("o", "o", "regression", error_x=10.0, onset_s=300.0), runs=200)
    before = late.cand_errors[:, :10].sum() / late.cand_total[:, :10].sum()
    after = late.cand_errors[:, 10:].sum() / late.cand_total[:, 10:].sum()
    assert before == pytest.approx(0.005, rel=0.2) and after == pytest.approx(0.05, rel=0.1)
    low = streams(Scenario("l", "l", "aa", world=World(rps=2.0)), runs=200)
    assert (low.cand_total + low.base_total).mean() == pytest.approx(60, rel=0.05)
    assert scenarios()[0].name == "aa"


PEERS = [
    FlaggerJudge(k=3.0, threshold=5),
    ArgoJudge(k=3.0, failure_limit=4),
    KayentaJudge(critical=3.5),
]


@pytest.mark.parametrize("judge", PEERS, ids=lambda j: j.name)
def test_peers_roll_back_on_a_10x_regression_and_not_on_clean_data(judge: object) -> None:
    bad = streams(Scenario("err-10x", "10x", "regression", error_x=10.0), runs=100)
    clean = streams(Scenario("aa", "aa", "aa"), runs=100)
    assert np.all(judge.rollback_at(bad) >= 0)  # type: ignore[attr-defined]
    assert np.mean(judge.rollback_at(clean) >= 0) <= 0.03  # type: ignore[attr-defined]


def _tiny(**arrays: np.ndarray) -> Streams:
    """One release of 60 evaluations, 1000 requests a side, no bad events unless given."""
    shape = (1, WORLD.evaluations)
    zeros = np.zeros(shape, dtype=np.int64)
    full = np.full(shape, 1000)
    values = {
        "cand_total": full,
        "cand_errors": zeros,
        "cand_slow": zeros,
        "base_total": full,
        "base_errors": np.full(shape, 5),
        "base_slow": np.full(shape, 10),
        "missing": np.zeros(shape, dtype=bool),
        "expected_bad": np.full(shape, 15.0),
    } | arrays
    blocks = {k: v.reshape(1, len(WORLD.steps), WORLD.per_step) for k, v in values.items()}
    return Streams(Scenario("t", "t", "aa"), blocks)


def test_peers_see_the_fixed_clock_promgate_the_whole_block() -> None:
    """Each step is a block of evaluations; the peers' view is its first stepDuration."""
    st = streams(Scenario("aa", "aa", "aa"), runs=3)
    assert st.block == WORLD.block(True) > WORLD.per_step
    assert st.blocks["cand_total"].shape == (3, len(WORLD.steps), st.block)
    assert st.cand_total.shape == (3, WORLD.evaluations)
    second = st.blocks["cand_errors"][:, 1, : WORLD.per_step]
    assert np.array_equal(st.cand_errors[:, WORLD.per_step : 2 * WORLD.per_step], second)
    fixed = simulate(Scenario("aa", "aa", "aa"), 3, seed_for(1, "aa"), budget=False)
    assert fixed.block == WORLD.per_step


def test_peer_rules_follow_peers_md() -> None:
    missing = np.zeros((1, WORLD.evaluations), dtype=bool)
    missing[0, 10:14] = True  # four empty results in a row
    gappy = _tiny(missing=missing)
    # Flagger: "no values found" is a failed check, never reset
    assert FlaggerJudge(threshold=4).rollback_at(gappy)[0] == 13
    assert FlaggerJudge(threshold=5).rollback_at(gappy)[0] == -1
    # Argo: empty results are errors; more than consecutiveErrorLimit (4) in a row fail
    assert ArgoJudge().rollback_at(gappy)[0] == -1
    missing[0, 14] = True
    assert ArgoJudge().rollback_at(_tiny(missing=missing))[0] == 14
    # Argo: failureLimit counts failed measurements per metric; NaN (no requests) fails
    errors = np.zeros((1, WORLD.evaluations), dtype=np.int64)
    errors[0, [3, 20, 40]] = 50
    assert ArgoJudge(failure_limit=2).rollback_at(_tiny(cand_errors=errors))[0] == 40
    empty = np.full((1, WORLD.evaluations), 1000)
    empty[0, 7] = 0
    assert ArgoJudge().rollback_at(_tiny(cand_total=empty))[0] == 7
    # Kayenta: NODATA points are removed, not failed
    assert KayentaJudge().rollback_at(gappy)[0] == -1


def test_mann_whitney_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    x = rng.poisson(3.0, size=(1, 25)).astype(float)
    y = rng.poisson(2.0, size=(1, 30)).astype(float)
    expected = mannwhitneyu(x[0], y[0], alternative="greater", method="asymptotic").pvalue
    assert norm.sf(mann_whitney_z(x, y)[0]) == pytest.approx(expected, rel=1e-6)
    y[0, :5] = np.nan  # removed points
    expected = mannwhitneyu(x[0], y[0, 5:], alternative="greater", method="asymptotic").pvalue
    assert norm.sf(mann_whitney_z(x, y)[0]) == pytest.approx(expected, rel=1e-6)


def test_calibration_keeps_the_rollback_rate_within_the_target() -> None:
    stat = np.arange(1000.0)
    bound = calibrate_bound(stat, 0.01)
    assert np.mean(stat > bound) == pytest.approx(0.01)


def test_promgate_adapter_drives_the_product_judge(monkeypatch: pytest.MonkeyPatch) -> None:
    judge = PromgateJudge(WORLD)
    assert judge.alpha == pytest.approx(0.01 / 2)  # split over the gates, as build_judge
    assert [g.judge for g in judge.gates] == ["sequential", "sequential"]
    assert [g.detect for g in judge.gates] == [2.0, 2.0]
    calls = []
    original = SequentialJudge.judge

    def counting(self: SequentialJudge, *args: object) -> object:
        calls.append(self.alpha)
        return original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(SequentialJudge, "judge", counting)
    st = streams(Scenario("aa", "aa", "aa"), runs=2)
    outcome = judge.run(st)
    evaluations = round(float(outcome.end_s.sum()) / WORLD.interval_s)
    assert len(calls) == 2 * evaluations and set(calls) == {judge.alpha}


def test_promgate_outcome_depends_on_the_product_alpha() -> None:
    st = streams(Scenario("err-1.5x", "1.5x", "regression", error_x=1.5), runs=40, seed=5)
    strict = PromgateJudge(WORLD, alpha=1e-6).run(st).detect_s
    loose = PromgateJudge(WORLD, alpha=0.5).run(st).detect_s
    assert np.mean(np.isfinite(loose)) > np.mean(np.isfinite(strict))
    caught = np.isfinite(loose) & np.isfinite(strict)
    assert np.all(loose[caught] <= strict[caught])


def test_promgate_rolls_back_a_10x_regression_fast_and_waits_out_gaps() -> None:
    bad = streams(Scenario("err-10x", "10x", "regression", error_x=10.0), runs=10)
    outcome = PromgateJudge(WORLD).run(bad)
    assert np.all(outcome.detect_s <= 5 * WORLD.interval_s) and np.all(outcome.first_step)
    gappy = streams(replace(Scenario("aa", "aa", "aa"), gap_rate=0.05), runs=10)
    outcome = PromgateJudge(WORLD).run(gappy)
    assert np.all(np.isinf(outcome.detect_s)) and not outcome.inconclusive.any()


def test_promgate_steps_wait_for_evidence_only_with_detect() -> None:
    """With ``detect`` a step that cannot yet rule out the regression goes on past its
    stepDuration (the product's strategy decides); without it steps keep their length."""
    regression = streams(Scenario("err-1.5x", "1.5x", "regression", error_x=1.5), runs=30)
    waiting = PromgateJudge(WORLD).run(regression)
    fixed = PromgateJudge(WORLD, detect=None).run(regression)
    assert waiting.extended.sum() > 0 and np.max(waiting.end_s) > WORLD.budget_s
    assert np.all(fixed.end_s <= WORLD.budget_s + WORLD.interval_s * WORLD.per_step)
    assert waiting.first_step.sum() > fixed.first_step.sum()  # the 10% step waited for it
