"""The analyzer against a real Prometheus: step counts carry over from step to step.

The ratio gate's counters are PromQL's own clock (``time()`` scaled), so every reading on
a real Prometheus is larger than the last by the time between them: each evaluation
judges a fresh window of a few hundred requests and a few bad events, on both sides.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider

from sidecar.analysis.analyzer import Analyzer
from sidecar.analysis.judge import (
    Decision,
    Evidence,
    GateResult,
    GateVerdict,
    Judge,
    SequentialJudge,
    StepCounts,
    StepVerdict,
    ThresholdJudge,
)
from sidecar.analysis.prometheus import NullMetricsSource, PrometheusSource
from sidecar.analysis.sequential import clearance_test, sequential_test
from sidecar.domain.measurement import Measurement
from sidecar.domain.policy import SloGate
from sidecar.local.processes import wait_until

CANDIDATE = {"role": "candidate"}
BASELINE = {"role": "baseline"}
GATE = SloGate.model_validate(
    {
        "name": "errors",
        "ratio": {"bad": "time() * 10", "total": "time() * 1000"},  # 1% bad, 1000 per second
        "max": 0.05,
        "judge": "sequential",
        "detect": 2,
    }
)


@dataclass
class Recording:
    """The product's judge, remembering the evidence the analyzer gave it."""

    inner: Judge
    seen: list[Evidence] = field(default_factory=list)

    def judge(self, gate: SloGate, evidence: Evidence, recent: Sequence[GateResult]) -> GateVerdict:
        self.seen.append(evidence)
        return self.inner.judge(gate, evidence, recent)


async def test_new_step_carries_the_counts_over(time_source: PrometheusSource) -> None:
    """After new_step the judge sees the current step's counts alone, the earlier steps'
    counts as ``earlier`` (oldest first), and tests the whole release with them."""
    judge = Recording(SequentialJudge(alpha=0.01, power=0.95))
    analyzer = Analyzer(time_source, judge, [GATE], TracerProvider().get_tracer("test"))

    async def evaluate() -> tuple[StepCounts | None, StepVerdict]:
        await asyncio.sleep(0.25)
        verdict = await analyzer.evaluate(CANDIDATE, BASELINE)
        return judge.seen[-1].step, verdict

    first, _ = await evaluate()  # the first reading only starts the counting
    assert first is None
    analyzer.new_step()  # nothing counted yet: nothing to carry over

    steps: list[StepCounts] = []
    for index in range(3):
        if index:
            analyzer.new_step()
        opening, opened = await evaluate()
        step, verdict = await evaluate()
        assert opening is not None and step is not None
        window = judge.seen[-1]
        assert window.candidate_requests is not None and window.baseline_requests is not None
        assert step.earlier == tuple(steps)
        assert step.candidate_total == opening.candidate_total + window.candidate_requests
        assert step.baseline_total == opening.baseline_total + window.baseline_requests
        assert opening.earlier == tuple(steps)
        assert (opening.candidate_total, opening.baseline_total) == (
            judge.seen[-2].candidate_requests,
            judge.seen[-2].baseline_requests,
        )
        release = [*step.earlier, step]
        [gate] = verdict.gates
        regression = sequential_test(
            [s.without_worst().counts for s in release], margin=0.0, alpha=0.01
        )
        clearance = clearance_test([s.counts for s in release], detect=2.0, power=0.95)
        assert gate.e_value == regression.e_value, gate.reason
        assert gate.clearance == clearance.e_value, gate.reason
        # the step's first window (maybe left out of the regression test as its worst)
        # already counts for clearance, with the earlier steps
        first = clearance_test([*(s.counts for s in steps), opening.counts], detect=2.0, power=0.95)
        assert opened.gates[0].clearance == first.e_value, opened.gates[0].reason
        steps.append(replace(step, earlier=()))
    assert len(steps) == 3


async def test_restored_evidence_continues_the_same_counts(time_source: PrometheusSource) -> None:
    """A new analyzer (a restarted sidecar) given the old one's evidence, as the ledger
    stores it, carries on with the same counts: the earlier steps as they were, the current
    step's counts plus the new analyzer's windows. Its first reading only starts its own
    counters, so nothing the old analyzer counted is counted twice."""
    tracer = TracerProvider().get_tracer("test")
    old_judge = Recording(SequentialJudge(alpha=0.01, power=0.95))
    old = Analyzer(time_source, old_judge, [GATE], tracer)
    for index in range(5):  # start, a window; new step, two windows
        if index == 2:
            old.new_step()
        await asyncio.sleep(0.25)
        await old.evaluate(CANDIDATE, BASELINE)
    before = old_judge.seen[-1].step
    assert before is not None and len(before.earlier) == 1 and before.candidate_total > 0
    saved = json.loads(json.dumps(old.evidence()))
    assert list(saved) == ["errors"]

    judge = Recording(SequentialJudge(alpha=0.01, power=0.95))
    new = Analyzer(time_source, judge, [GATE], tracer)
    new.restore(saved)
    assert new.evidence() == saved

    await asyncio.sleep(0.25)
    await new.evaluate(CANDIDATE, BASELINE)
    assert judge.seen[-1].step is None  # the first reading only starts the counting
    assert new.evidence() == saved

    expected = before
    for _ in range(2):
        await asyncio.sleep(0.25)
        verdict = await new.evaluate(CANDIDATE, BASELINE)
        window = judge.seen[-1]
        step = window.step
        assert step is not None
        assert window.candidate_requests is not None and window.baseline_requests is not None
        assert step.earlier == before.earlier
        assert step.candidate_total == expected.candidate_total + window.candidate_requests
        assert step.baseline_total == expected.baseline_total + window.baseline_requests
        assert step.candidate_bad >= expected.candidate_bad
        assert step.baseline_bad >= expected.baseline_bad
        [gate] = verdict.gates
        release = [*step.earlier, step]
        regression = sequential_test(
            [s.without_worst().counts for s in release], margin=0.0, alpha=0.01
        )
        assert gate.e_value == regression.e_value, gate.reason
        expected = step
    assert StepCounts.from_json(new.evidence()["errors"]) == expected


@pytest.mark.parametrize(
    "saved",
    [
        pytest.param({"errors": {"counts": [1, 2]}}, id="two-counts"),
        pytest.param({"errors": {"counts": [1, 2, 3, 4]}}, id="no-worst-window"),
        pytest.param({"errors": {"counts": [1, 100, 4, -400], "worst": [0, 0, 0, 0]}},
                     id="negative"),
        pytest.param({"errors": 5}, id="a-number"),
        pytest.param({"errors": "counts"}, id="a-string"),
        pytest.param(["errors"], id="a-list"),
        pytest.param("errors", id="a-string-for-all"),
        pytest.param({"errors": {"counts": [1, 100, 4, 400], "worst": [1, 100, 4, 400],
                                 "earlier": [{"counts": [1, 2]}]}}, id="an-earlier-step"),
        pytest.param({"latency": {"counts": [1, 100, 4, 400], "worst": [1, 100, 4, 400]},
                      "errors": {"counts": [1, 2]}}, id="one-gate-of-two"),
    ],
)  # fmt: skip
def test_unreadable_evidence_starts_over_and_says_so(
    saved: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Evidence that cannot be read leaves no counts at all (the tests start over, which is
    only more cautious), replacing any counts the analyzer had, and logs a warning."""
    analyzer = Analyzer(
        NullMetricsSource(), SequentialJudge(alpha=0.01), [GATE], TracerProvider().get_tracer("t")
    )
    readable = {"errors": StepCounts(1, 100, 4, 400).next_step().plus(2, 100, 4, 400).to_json()}
    analyzer.restore(readable)
    assert analyzer.evidence() == readable
    logger = logging.getLogger("promgate.analysis")
    logger.addHandler(caplog.handler)  # promgate's logger may not propagate to the root
    try:
        with caplog.at_level(logging.WARNING, logger="promgate.analysis"):
            analyzer.restore(saved)
    finally:
        logger.removeHandler(caplog.handler)
    assert analyzer.evidence() == {}
    # a record that also propagates to the root reaches caplog's handler twice
    [record] = {id(r): r for r in caplog.records if r.name == "promgate.analysis"}.values()
    assert record.levelno == logging.WARNING
    assert "stored evidence unreadable, the sequential tests start over" in record.getMessage()


def test_restore_replaces_the_counts_it_had() -> None:
    """Restored evidence is the analyzer's whole state of counts, not added to it."""
    analyzer = Analyzer(
        NullMetricsSource(), SequentialJudge(alpha=0.01), [GATE], TracerProvider().get_tracer("t")
    )
    analyzer.restore({"errors": StepCounts(1, 100, 4, 400).to_json()})
    errors = {"errors": StepCounts(1, 100, 4, 400).next_step().to_json()}
    analyzer.restore(errors)
    assert analyzer.evidence() == errors
    analyzer.restore({})
    assert analyzer.evidence() == {}


def test_restore_drops_gates_the_policy_no_longer_has() -> None:
    """Counts of a gate that is gone from the policy are not carried along for ever."""
    analyzer = Analyzer(
        NullMetricsSource(), SequentialJudge(alpha=0.01), [GATE], TracerProvider().get_tracer("t")
    )
    errors = StepCounts(1, 100, 4, 400).to_json()
    analyzer.restore({"errors": errors, "latency": StepCounts(2, 100, 4, 400).to_json()})
    assert analyzer.evidence() == {"errors": errors}


def _ratio_gate(name: str, rate: int) -> SloGate:
    return SloGate.model_validate(
        {
            "name": name,
            "ratio": {"bad": "time() * 0", "total": f"time() * {rate}"},
            "max": 0.05,
            "minRequests": 40,
        }
    )


async def test_ratio_gates_judge_their_windows_together(time_source: PrometheusSource) -> None:
    """Two ratio gates whose requests come at 100/s and 60/s, evaluated every quarter
    second: each evaluation judges both of them or neither, so the step never sees them
    take turns at lacking data (which would keep it waiting for ever)."""
    gates = [_ratio_gate("fast", 100), _ratio_gate("slow", 60)]
    analyzer = Analyzer(time_source, ThresholdJudge(), gates, TracerProvider().get_tracer("test"))
    seen: list[tuple[GateResult, GateResult]] = []
    reasons: list[str] = []
    for _ in range(14):
        await asyncio.sleep(0.25)
        verdict = await analyzer.evaluate(CANDIDATE, BASELINE)
        fast, slow = verdict.gates
        seen.append((fast.result, slow.result))
        reasons.append(fast.reason)
    judged = seen[1:]  # the first reading only starts the counting
    assert (GateResult.PASS, GateResult.PASS) in judged, seen
    assert all(fast == slow for fast, slow in judged), seen
    assert any("waiting for the other ratio gates" in reason for reason in reasons), reasons


FLICKERING = SloGate.model_validate(
    {
        "name": "errors",
        "ratio": {  # 2% bad on both sides; the bad query matches nothing 3 s in every 6 s
            "bad": "vector(time() * 20) unless on() (vector(time() % 6) < 3)",
            "total": "time() * 1000",
        },
        "max": 0.05,
        "maxVsBaseline": 2,
        "hardMax": 0.6,
        "minRequests": 1000,  # windows of a second or more: the queries' skew stays small
    }
)


async def test_a_bad_query_that_matches_nothing_for_a_while_never_rolls_back(
    time_source: PrometheusSource,
) -> None:
    """Both sides fail 2% and their bad query comes back empty for 3 s at a time while the
    total answers: the empty readings are gaps, never zero, so no window ever holds the
    errors counted before the gap; every judged window is 2% and nothing breaches."""

    async def bad_series_begins() -> bool:
        # The first reading must find the bad series: an empty first reading is (rightly)
        # taken as "no bad event yet", i.e. zero. It answers while time() % 6 >= 3.
        second = (await time_source.query("time() % 6")).value
        return second is not None and 3.0 <= second < 4.5

    await wait_until(bad_series_begins, 10, what="the bad series to match", interval_s=0.05)
    analyzer = Analyzer(
        time_source, ThresholdJudge(confirm=3), [FLICKERING], TracerProvider().get_tracer("t")
    )
    verdicts: list[GateVerdict] = []
    for _ in range(40):  # 10 s: every phase of the 6 s cycle, twice over
        await asyncio.sleep(0.25)
        verdicts.extend((await analyzer.evaluate(CANDIDATE, BASELINE)).gates)
    results = [v.result for v in verdicts]
    assert GateResult.BREACH not in results, [v.reason for v in verdicts]
    judged = [v for v in verdicts if v.result is GateResult.PASS]
    # the two queries run a few milliseconds apart: near 2%, not exactly
    assert judged and all(0.015 < (v.value or 0) < 0.025 for v in judged), judged
    gaps = [v.reason for v in verdicts if "query matched nothing after" in v.reason]
    assert gaps, [v.reason for v in verdicts]
    assert "vector(time() * 20)" in gaps[0], gaps[0]


@dataclass
class _Process:
    """One side's service: its lifetime requests, exactly 2% of them bad (rounded down)."""

    total: int = 0

    @property
    def bad(self) -> int:
        return self.total * 2 // 100


@dataclass
class _ScriptedSource:
    """Answers each PromQL query with the measurement the test set for it; a source that
    can be made to fail, come back empty or NaN at will, one evaluation at a time."""

    answers: dict[str, Measurement] = field(default_factory=dict)

    async def query(self, promql: str) -> Measurement:
        return self.answers[promql]

    async def close(self) -> None:
        """Nothing to release."""


_FAULTS = ("ok",) * 6 + ("empty", "failed", "nan")
_EVALUATION = st.tuples(
    st.integers(0, 40),  # candidate requests since the last evaluation
    st.integers(0, 120),  # baseline requests
    st.sampled_from([False] * 9 + [True]),  # the candidate's process restarted
    st.sampled_from([False] * 9 + [True]),  # the baseline's
    st.tuples(*[st.sampled_from(_FAULTS)] * 4),  # candidate bad, total, baseline bad, total
)
_SAME_RATE_GATES = {
    "threshold": {"max": 0.05, "maxVsBaseline": 2, "hardMax": 0.6, "minRequests": 10},
    "sequential": {"max": 0.05, "maxVsBaseline": 2, "hardMax": 0.6, "minRequests": 10,
                   "judge": "sequential", "margin": 0.2, "minStepRequests": 50},
}  # fmt: skip


def _answer(fault: str, value: float | None) -> Measurement:
    if fault == "failed":
        return Measurement.provider_error("Prometheus answered HTTP 503")
    if fault == "nan":
        return Measurement.of(float("nan"))
    if fault == "empty" or value is None:
        return Measurement.no_data()
    return Measurement.of(value)


_OK = ("ok",) * 4
_BAD_EMPTY = ("empty", "ok", "ok", "ok")
_ISSUE = [(25, 75, False, False, faults) for faults in [_OK] * 3 + [_BAD_EMPTY] * 4 + [_OK] * 3]


@pytest.mark.parametrize("judged", sorted(_SAME_RATE_GATES))
@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure here is never a fluke
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    served=st.tuples(st.integers(0, 500), st.integers(0, 100_000)),
    evaluations=st.lists(_EVALUATION, min_size=2, max_size=60),
)
@example(served=(1150, 50_000), evaluations=_ISSUE)  # the candidate's bad query empty for 4 s
def test_no_mix_of_gaps_and_restarts_rolls_back_a_release_as_good_as_its_baseline(
    judged: str,
    served: tuple[int, int],
    evaluations: list[tuple[int, int, bool, bool, tuple[str, ...]]],
) -> None:
    """Both sides fail exactly 2%; any mix of empty, failed and NaN readings of either
    query on either side, and restarts of either side's counters, never rolls back.
    ``served``: the requests each side had served before the first reading (a fresh
    candidate little, the baseline a lot)."""
    gate = SloGate.model_validate(
        {"name": "errors", "ratio": {"bad": 'bad{role="$role"}', "total": 'total{role="$role"}'},
         **_SAME_RATE_GATES[judged]}
    )  # fmt: skip
    source = _ScriptedSource()
    judge = SequentialJudge(alpha=0.01) if judged == "sequential" else ThresholdJudge(confirm=3)
    analyzer = Analyzer(source, judge, [gate], TracerProvider().get_tracer("t"))
    sides = {"candidate": _Process(served[0]), "baseline": _Process(served[1])}

    async def run() -> list[StepVerdict]:
        verdicts = []
        for cand_n, base_n, cand_restart, base_restart, faults in evaluations:
            for (role, process), requests, restart, (bad_fault, total_fault) in zip(
                sides.items(), (cand_n, base_n), (cand_restart, base_restart),
                (faults[:2], faults[2:]), strict=True,
            ):  # fmt: skip
                process.total = requests if restart else process.total + requests
                # a bad counter has no series until its first bad event
                source.answers[f'bad{{role="{role}"}}'] = _answer(bad_fault, process.bad or None)
                source.answers[f'total{{role="{role}"}}'] = _answer(total_fault, process.total)
            verdicts.append(await analyzer.evaluate(CANDIDATE, BASELINE))
        return verdicts

    for verdict in asyncio.run(run()):
        assert verdict.decision is not Decision.ROLLBACK, verdict.reason


async def test_restored_counters_judge_the_traffic_served_while_down(
    time_source: PrometheusSource,
) -> None:
    """A new analyzer given the old one's counter readings, as the ledger stores them,
    judges its first reading against the saved one: the requests served in between (a
    second of downtime, 1000 a second) are in its first window, on both sides."""
    tracer = TracerProvider().get_tracer("test")
    old = Analyzer(time_source, ThresholdJudge(), [GATE], tracer)
    for _ in range(2):
        await asyncio.sleep(0.25)
        await old.evaluate(CANDIDATE, BASELINE)
    saved = json.loads(json.dumps({"evidence": old.evidence(), "counters": old.counters()}))
    await asyncio.sleep(1.0)  # promgate is down

    judge = Recording(ThresholdJudge())
    new = Analyzer(time_source, judge, [GATE], tracer)
    new.restore(saved["evidence"])
    new.restore_counters(saved["counters"])
    verdict = await new.evaluate(CANDIDATE, BASELINE)

    [gate] = verdict.gates
    window = judge.seen[-1]
    assert gate.result is GateResult.PASS, gate.reason
    assert window.candidate_requests is not None and window.candidate_requests >= 1000
    assert window.baseline_requests == pytest.approx(window.candidate_requests, rel=0.01)
    assert gate.value == pytest.approx(0.01, rel=0.05)


@pytest.mark.parametrize(
    "saved",
    [
        pytest.param({"errors": {"open": "yes", "sides": {}}}, id="open-a-string"),
        pytest.param({"errors": {"open": True, "sides": {"candidate": {"bad": 1}}}},
                     id="a-side-short"),
        pytest.param({"errors": 5}, id="a-number"),
        pytest.param(["errors"], id="a-list"),
    ],
)  # fmt: skip
async def test_unreadable_counters_start_the_counting_again(
    saved: Any, time_source: PrometheusSource, caplog: pytest.LogCaptureFixture
) -> None:
    """Counter readings that cannot be read are dropped with a warning: the first reading
    starts the counting again, as on a first start."""
    analyzer = Analyzer(time_source, ThresholdJudge(), [GATE], TracerProvider().get_tracer("t"))
    logger = logging.getLogger("promgate.analysis")
    logger.addHandler(caplog.handler)
    try:
        analyzer.restore_counters(saved)
    finally:
        logger.removeHandler(caplog.handler)
    assert analyzer.counters() == {}
    assert any("counter readings unreadable" in r.getMessage() for r in caplog.records)
    [gate] = (await analyzer.evaluate(CANDIDATE, BASELINE)).gates
    assert "first reading; counting starts now" in gate.reason, gate.reason


# the baseline's total matches nothing (as a query with a wrong label would); the
# candidate's answers with 1000 requests a second
_ONLY_CANDIDATE = (
    'label_replace(vector(time() * {rate}), "role", "$role", "", "") '
    'unless on(role) label_replace(vector(0), "role", "baseline", "", "")'
)
SILENT_BASELINE = SloGate.model_validate(
    {
        "name": "errors",
        "ratio": {
            "bad": _ONLY_CANDIDATE.format(rate=10),
            "total": _ONLY_CANDIDATE.format(rate=1000),
        },
        "max": 0.05,
        "judge": "sequential",
    }
)


async def test_a_baseline_query_that_matches_nothing_is_named_and_never_judged_without(
    time_source: PrometheusSource, caplog: pytest.LogCaptureFixture
) -> None:
    """While the baseline serves, its query matching nothing leaves a sequential gate
    without evidence: the verdict names the rendered query (never a threshold verdict
    such as "breach 3 of 3"), and one warning says so until it matches again."""
    tracer = TracerProvider().get_tracer("t")
    analyzer = Analyzer(time_source, SequentialJudge(alpha=0.01), [SILENT_BASELINE], tracer)
    logger = logging.getLogger("promgate.analysis")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="promgate.analysis"):
            verdicts = []
            for _ in range(4):
                await asyncio.sleep(0.25)
                verdicts.extend((await analyzer.evaluate(CANDIDATE, BASELINE)).gates)
    finally:
        logger.removeHandler(caplog.handler)
    rendered = _ONLY_CANDIDATE.format(rate=1000).replace("$role", "baseline")
    for verdict in verdicts:
        assert verdict.result is GateResult.NO_DATA, verdict.reason
        assert verdict.reason == f"errors: baseline total query matched nothing: {rendered}"
    warnings = {id(r): r for r in caplog.records if r.name == "promgate.analysis"}.values()
    assert [r.getMessage() for r in warnings] == [verdicts[0].reason]


async def test_after_a_switch_a_baseline_that_matches_nothing_has_no_traffic(
    time_source: PrometheusSource,
) -> None:
    """Once the baseline serves nothing (after a blue-green switch), its query matching
    nothing is no baseline traffic: the gate judges the candidate on its bounds."""
    tracer = TracerProvider().get_tracer("t")
    analyzer = Analyzer(time_source, SequentialJudge(alpha=0.01), [SILENT_BASELINE], tracer)
    results = []
    for _ in range(3):
        await asyncio.sleep(0.25)
        verdict = await analyzer.evaluate(CANDIDATE, BASELINE, baseline_serves=False)
        results.append(verdict.gates[0].result)
    assert results[1:] == [GateResult.PASS, GateResult.PASS], results
