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
from opentelemetry.sdk.trace import TracerProvider

from sidecar.analysis.analyzer import Analyzer
from sidecar.analysis.judge import (
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
from sidecar.domain.policy import SloGate

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
