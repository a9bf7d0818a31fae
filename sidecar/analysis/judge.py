"""Pure judging: one gate's evidence -> a verdict, a step's verdicts -> a decision.

No I/O here: the analyzer gathers the evidence, this module only decides, so every rule
can be table-tested. The rules:

- a provider error is UNAVAILABLE: traffic holds, it never rolls back by itself;
- no data (or too few requests) is NO_DATA: the step waits, it never promotes;
- a value beyond its bound is a BREACH: ``transient`` until ``confirm`` evaluations in a
  row breach (or ``confirm`` of the last ``confirmWithin``; evaluations without evidence
  are skipped), then ``persistent``; a hard guard is persistent at once;
- only a persistent breach rolls back;
- a sequential gate with ``detect`` also says whether its evidence has ruled that
  regression out yet (``cleared``): until then a step that has run its time waits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any, Protocol

from sidecar.analysis.sequential import Counts, clearance_test, sequential_test
from sidecar.domain.measurement import Measurement, MeasurementKind
from sidecar.domain.policy import Analysis, SloGate, Stage


class GateResult(StrEnum):
    PASS = "pass"
    BREACH = "breach"
    NO_DATA = "no_data"
    UNAVAILABLE = "unavailable"


class Classification(StrEnum):
    TRANSIENT = "transient"  # not confirmed: a blip, or the provider failed
    PERSISTENT = "persistent"  # confirmed by repeated evidence or a hard guard


class Decision(StrEnum):
    """What a step's gates say, before the strategy turns it into an action."""

    PASS = "pass"  # every gate has data and is within bounds
    WAIT = "wait"  # some gate lacks data or has an unconfirmed breach
    HOLD = "hold"  # some gate could not be measured: keep traffic where it is
    ROLLBACK = "rollback"  # some gate has a persistent breach


@dataclass(frozen=True)
class Evidence:
    """What the analyzer measured for one gate in one evaluation."""

    candidate: Measurement
    baseline: Measurement
    candidate_requests: float | None = None  # ratio gates: requests behind the ratio
    baseline_requests: float | None = None
    step: StepCounts | None = None  # ratio gates: counts since the step began
    missing: str = ""  # why there is no evidence this evaluation, when it is known


@dataclass(frozen=True)
class StepCounts:
    """Bad and total events on each side since the current step began, the single
    evaluation window that put the most excess bad events on the candidate, and the
    counts of the release's earlier steps (evidence carries over)."""

    candidate_bad: float = 0.0
    candidate_total: float = 0.0
    baseline_bad: float = 0.0
    baseline_total: float = 0.0
    worst: Counts = (0.0, 0.0, 0.0, 0.0)
    earlier: tuple[StepCounts, ...] = ()

    @property
    def counts(self) -> Counts:
        return (self.candidate_bad, self.candidate_total, self.baseline_bad, self.baseline_total)

    def plus(
        self, cand_bad: float, cand_total: float, base_bad: float, base_total: float
    ) -> StepCounts:
        window = (cand_bad, cand_total, base_bad, base_total)
        return StepCounts(
            self.candidate_bad + cand_bad,
            self.candidate_total + cand_total,
            self.baseline_bad + base_bad,
            self.baseline_total + base_total,
            max(self.worst, window, key=_excess),
            self.earlier,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "counts": list(self.counts),
            "worst": list(self.worst),
            "earlier": [step.to_json() for step in self.earlier],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StepCounts:
        """The inverse of :meth:`to_json`; raises ValueError on anything else."""
        counts, worst = _four(data["counts"]), _four(data["worst"])
        if any(w > c for w, c in zip(worst, counts, strict=True)):
            raise ValueError(f"the worst window {list(worst)} exceeds the step {list(counts)}")
        earlier = tuple(cls.from_json(step) for step in data.get("earlier", ()))
        return cls(*counts, worst=worst, earlier=earlier)

    def next_step(self) -> StepCounts:
        """Empty counts for the next step, with this one's kept as earlier evidence."""
        return StepCounts(earlier=(*self.earlier, replace(self, earlier=())))

    def without_worst(self) -> StepCounts:
        """The step with its worst window left out: what a regression must show *beyond*
        one bad interval, so a one-interval blip cannot confirm it on its own."""
        c_bad, c_total, b_bad, b_total = self.worst
        return StepCounts(
            self.candidate_bad - c_bad,
            self.candidate_total - c_total,
            self.baseline_bad - b_bad,
            self.baseline_total - b_total,
        )


def _four(values: Any) -> Counts:
    """A list of four finite non-negative numbers as counts; ValueError for anything else
    (a string of four digits or numbers written as strings are not counts)."""
    problem = ValueError(f"expected four non-negative counts, got {values!r}")
    if not isinstance(values, list | tuple) or len(values) != 4:
        raise problem
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
        raise problem
    try:
        numbers = tuple(float(v) for v in values)
    except OverflowError:  # an integer too large for a float
        raise problem from None
    if any(not math.isfinite(n) or n < 0 for n in numbers):
        raise problem
    return numbers[0], numbers[1], numbers[2], numbers[3]


def _excess(window: Counts) -> float:
    """Bad events on the candidate beyond its traffic share of the window's bad events."""
    c_bad, c_total, b_bad, b_total = window
    requests = c_total + b_total
    return c_bad - (c_bad + b_bad) * c_total / requests if requests > 0 else 0.0


@dataclass(frozen=True)
class GateVerdict:
    """One gate's verdict with the numbers behind it, for people and metrics."""

    gate: str
    result: GateResult
    classification: Classification | None
    value: float | None
    baseline: float | None
    threshold: float | None
    hard: bool
    reason: str
    requests: float | None = None
    e_value: float | None = None  # sequential gates: the evidence of a regression
    e_threshold: float | None = None  # sequential gates: 1/alpha, where it confirms
    clearance: float | None = None  # gates with `detect`: the evidence that it is ruled out
    cleared: bool | None = None  # gates with `detect`: whether the step may pass yet
    min_requests: int | None = None  # no data for want of traffic: the requests it needs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StepVerdict:
    decision: Decision
    gates: tuple[GateVerdict, ...]

    @property
    def reason(self) -> str:
        """The sentence that explains the decision, built from the deciding gates."""
        deciding = {
            Decision.ROLLBACK: [
                g for g in self.gates if g.classification is Classification.PERSISTENT
            ],
            Decision.HOLD: [g for g in self.gates if g.result is GateResult.UNAVAILABLE],
            Decision.WAIT: [g for g in self.gates if g.result is not GateResult.PASS],
            Decision.PASS: list(self.gates),
        }[self.decision]
        return "; ".join(g.reason for g in deciding) or "no gates"

    @property
    def cleared(self) -> bool:
        """Whether every gate with ``detect`` has ruled its regression out: a step that
        has run its time passes only then."""
        return all(g.cleared is not False for g in self.gates)

    @property
    def uncleared(self) -> str:
        """Why the step may not pass yet, from the gates that have not cleared."""
        return "; ".join(g.reason for g in self.gates if g.cleared is False)


class Judge(Protocol):
    """Turns one gate's evidence and its recent results into a verdict."""

    def judge(self, gate: SloGate, evidence: Evidence, recent: Sequence[GateResult]) -> GateVerdict:
        """``recent`` are this gate's earlier results in the current step, oldest first."""


@dataclass(frozen=True)
class ThresholdJudge:
    """Bounds with confirmation: ``confirm`` breaches in a row (or, with ``within``, among
    the last ``within`` evaluations) are persistent."""

    confirm: int = 3
    within: int | None = None

    def judge(self, gate: SloGate, evidence: Evidence, recent: Sequence[GateResult]) -> GateVerdict:
        return judge_threshold(gate, evidence, recent, self.confirm, self.within)


@dataclass(frozen=True)
class SequentialJudge:
    """Confirms a regression only when the anytime-valid test says so (see sequential.py).

    Each evaluation's own window is still judged against the gate's bounds: a window
    beyond them is a transient breach until the test confirms it. The test runs on the
    release's counts, step by step, and leaves out each step's single worst window, so
    one bad interval (a blip) never confirms a regression by itself. Hard guards act at
    once. Without baseline traffic (e.g. after a blue-green switch) it falls back to
    ``confirm`` breaches in a row. A gate with ``detect`` also reports whether the
    clearance test has ruled that regression out yet.
    """

    alpha: float
    confirm: int = 3
    power: float = 0.95

    def judge(self, gate: SloGate, evidence: Evidence, recent: Sequence[GateResult]) -> GateVerdict:
        window = judge_threshold(gate, evidence, recent, self.confirm)
        step = evidence.step
        if window.result is GateResult.UNAVAILABLE or window.hard or step is None:
            return window
        verdict = self._test(gate, window, step)
        if verdict.result is GateResult.PASS and step.candidate_total < gate.min_step_requests:
            return replace(
                verdict,
                result=GateResult.NO_DATA,
                reason=f"{gate.name}: {step.candidate_total:g} candidate requests this step, "
                f"need {gate.min_step_requests}",
            )
        return verdict

    def _test(self, gate: SloGate, window: GateVerdict, step: StepCounts) -> GateVerdict:
        """The window's verdict, with persistence decided by the sequential test."""
        release = [*step.earlier, step]
        current = step.without_worst()
        if current.baseline_total <= 0 or current.candidate_total <= 0:
            # nothing to compare with yet: bounds and `confirm` decide. Clearance still
            # counts (all windows count for it): one window must not pass a step unchecked.
            if window.result is GateResult.BREACH:
                return window
            return self._clearance(gate, window, release)
        test = sequential_test(
            [s.without_worst().counts for s in release], margin=gate.margin, alpha=self.alpha
        )
        numbers = (
            f"e-value {test.e_value:.3g} vs {test.threshold:.3g}; candidate took "
            f"{test.bad_share:.0%} of bad events, at most {test.null_share:.0%} expected"
        )
        tested = replace(window, e_value=test.e_value, e_threshold=test.threshold)
        if test.confirmed and test.bad_share > test.null_share:
            return replace(
                tested,
                result=GateResult.BREACH,
                classification=Classification.PERSISTENT,
                reason=f"{gate.name}: regression confirmed: {numbers}",
            )
        if window.result is GateResult.BREACH:
            return replace(
                tested,
                classification=Classification.TRANSIENT,
                reason=f"{window.reason}; not confirmed: {numbers}",
            )
        return self._clearance(gate, tested, release)

    def _clearance(
        self, gate: SloGate, verdict: GateVerdict, release: Sequence[StepCounts]
    ) -> GateVerdict:
        """``verdict`` with whether the release's counts rule out a ``detect`` times
        regression yet; unchanged without ``detect`` or without traffic on both sides."""
        step = release[-1]
        if gate.detect is None or step.baseline_total <= 0 or step.candidate_total <= 0:
            return verdict
        clearance = clearance_test(
            [s.counts for s in release],
            detect=gate.detect,
            power=self.power,
            floor=gate.detect_floor,
        )
        regression = f"a {gate.detect:g}x regression" + (
            f" above {gate.detect_floor:g}" if gate.detect_floor is not None else ""
        )
        note = (
            f"{regression} ruled out" if clearance.confirmed else f"{regression} not yet ruled out"
        )
        return replace(
            verdict,
            clearance=clearance.e_value,
            cleared=clearance.confirmed,
            reason=f"{verdict.reason}; {note} (clearance {clearance.e_value:.3g} "
            f"of {clearance.threshold:.3g})",
        )


@dataclass(frozen=True)
class PolicyJudge:
    """Judges each gate the way its policy entry asks (``judge: threshold|sequential``)."""

    threshold: ThresholdJudge
    sequential: SequentialJudge

    def judge(self, gate: SloGate, evidence: Evidence, recent: Sequence[GateResult]) -> GateVerdict:
        chosen: Judge = self.sequential if gate.judge == "sequential" else self.threshold
        return chosen.judge(gate, evidence, recent)


def build_judge(stage: Stage, analysis: Analysis) -> PolicyJudge:
    """The stage's judge. ``alpha`` is split evenly over its sequential gates (each gate's
    test runs over the whole release), so the chance of any false rollback in a release
    stays within ``alpha``."""
    sequential = sum(1 for gate in stage.gates.slo if gate.judge == "sequential")
    return PolicyJudge(
        ThresholdJudge(analysis.confirm, analysis.confirm_within),
        SequentialJudge(analysis.alpha / max(1, sequential), analysis.confirm, analysis.power),
    )


def judge_threshold(
    gate: SloGate,
    evidence: Evidence,
    recent: Sequence[GateResult],
    confirm: int,
    within: int | None = None,
) -> GateVerdict:
    """The threshold rules in the module docstring, as one pure function."""
    candidate, baseline = evidence.candidate, evidence.baseline
    baseline_value = baseline.value if baseline.is_value else None

    def verdict(
        result: GateResult,
        reason: str,
        *,
        threshold: float | None = None,
        classification: Classification | None = None,
        hard: bool = False,
        min_requests: int | None = None,
    ) -> GateVerdict:
        return GateVerdict(
            gate.name,
            result,
            classification,
            candidate.value,
            baseline_value,
            threshold,
            hard,
            f"{gate.name}: {reason}",
            evidence.candidate_requests,
            min_requests=min_requests,
        )

    if MeasurementKind.PROVIDER_ERROR in (candidate.kind, baseline.kind):
        failed = candidate if candidate.kind is MeasurementKind.PROVIDER_ERROR else baseline
        return verdict(
            GateResult.UNAVAILABLE,
            f"analysis unavailable ({failed.detail})",
            classification=Classification.TRANSIENT,
        )
    if evidence.missing:
        return verdict(GateResult.NO_DATA, evidence.missing)
    if candidate.value is None:
        requests = evidence.candidate_requests
        too_few = gate.ratio is not None and requests is not None and requests < gate.min_requests
        return verdict(
            GateResult.NO_DATA,
            f"no data for the candidate ({candidate.detail})",
            min_requests=gate.min_requests if too_few else None,
        )
    value = candidate.value

    hard_bound = _hard_bound(gate, baseline_value)
    surely_above = _at_least(value, evidence.candidate_requests)
    if hard_bound is not None and surely_above > hard_bound:
        sureness = (
            f" (at least {surely_above:.4g} with 99% confidence over "
            f"{evidence.candidate_requests:g} requests)"
            if evidence.candidate_requests is not None
            else ""
        )
        return verdict(
            GateResult.BREACH,
            f"{value:.4g} exceeds the hard guard {hard_bound:.4g}{sureness}; rolling back at once",
            threshold=hard_bound,
            classification=Classification.PERSISTENT,
            hard=True,
        )

    lower, upper = _bounds(gate, baseline_value)
    if lower is None and upper is None:
        return verdict(GateResult.NO_DATA, "no baseline to compare with")
    below = lower is not None and value < lower
    bound = lower if below else upper
    if not below and (upper is None or value <= upper):
        if lower is None:
            shown = f"within {upper:.4g}"
        elif upper is None:
            shown = f"at or above {lower:.4g}"
        else:
            shown = f"within {lower:.4g}..{upper:.4g}"
        threshold = upper if upper is not None else lower
        return verdict(GateResult.PASS, f"{value:.4g} {shown}", threshold=threshold)
    assert bound is not None
    if within is None:
        breaches = 1 + _breaches_since_pass(recent)
        progress = f"breach {breaches} of {confirm} to confirm"
    else:
        breaches = 1 + _breaches_among(recent, within - 1)
        progress = f"{breaches} of the last {within} evaluations breached, {confirm} confirm"
    persistent = breaches >= confirm
    word = "below" if below else "above"
    baseline_note = f" (baseline {baseline_value:.4g})" if baseline_value is not None else ""
    return verdict(
        GateResult.BREACH,
        f"{value:.4g} {word} {bound:.4g}{baseline_note}, {progress}",
        threshold=bound,
        classification=Classification.PERSISTENT if persistent else Classification.TRANSIENT,
    )


def _bounds(gate: SloGate, baseline: float | None) -> tuple[float | None, float | None]:
    """The effective (lower, upper) bounds.

    With ``maxVsBaseline`` the upper bound is the larger of ``max`` and that multiple of
    the baseline: when both versions suffer (an outage downstream), the candidate is not
    blamed for what the baseline shows too. Without a baseline only ``max`` applies.
    """
    relative = (
        gate.max_vs_baseline * baseline
        if gate.max_vs_baseline is not None and baseline is not None
        else None
    )
    uppers = [b for b in (gate.max, relative) if b is not None]
    return gate.min, (max(uppers) if uppers else None)


_Z99 = 2.5758  # two-sided 99% normal quantile


def _at_least(ratio: float, requests: float | None) -> float:
    """What a hard guard compares: for a ratio of ``requests``, the lower end of its 99%
    Wilson interval, so a handful of unlucky requests cannot roll back at once; for a
    plain value, the value itself."""
    if requests is None or requests <= 0:
        return ratio
    z2n = _Z99 * _Z99 / requests
    spread = _Z99 * math.sqrt(ratio * (1 - ratio) / requests + z2n / (4 * requests))
    return max(0.0, (ratio + z2n / 2 - spread) / (1 + z2n))


def _hard_bound(gate: SloGate, baseline: float | None) -> float | None:
    """``hardMax``, or ``hardVsBaseline`` times a baseline above zero (a multiple of a
    spotless baseline would make every single bad event a hard breach)."""
    relative = gate.hard_vs_baseline * baseline if gate.hard_vs_baseline and baseline else None
    bounds = [b for b in (gate.hard_max, relative) if b is not None]
    return max(bounds) if bounds else None


def _breaches_among(results: Sequence[GateResult], last: int) -> int:
    """Breaches among the ``last`` evaluations that had evidence (no data and provider
    errors are skipped, as for breaches in a row)."""
    judged = [r for r in results if r in (GateResult.PASS, GateResult.BREACH)]
    return sum(r is GateResult.BREACH for r in judged[-last:]) if last > 0 else 0


def _breaches_since_pass(results: Sequence[GateResult]) -> int:
    """Breaches since the last pass. Evaluations without evidence (no data, provider
    error) neither confirm nor clear a breach: they are skipped, not counted."""
    count = 0
    for result in reversed(results):
        if result is GateResult.PASS:
            break
        count += result is GateResult.BREACH
    return count


def decide(verdicts: Sequence[GateVerdict]) -> StepVerdict:
    """Combine a step's gate verdicts: persistent breach > unavailable > wait > pass."""
    results = {v.result for v in verdicts}
    if any(v.classification is Classification.PERSISTENT for v in verdicts):
        decision = Decision.ROLLBACK
    elif GateResult.UNAVAILABLE in results:
        decision = Decision.HOLD
    elif results - {GateResult.PASS}:
        decision = Decision.WAIT
    else:
        decision = Decision.PASS
    return StepVerdict(decision, tuple(verdicts))


def ratio_evidence(bad: float, total: float, min_requests: int) -> Measurement:
    """bad/total as a measurement; fewer than ``min_requests`` is no data, not a pass."""
    if total < min_requests:
        return Measurement.no_data(f"{total:g} requests, need {min_requests}")
    return Measurement.of(bad / total)


def compares_with_baseline(gate: SloGate) -> bool:
    """Whether a gate's verdict depends on its baseline: sequential, or bounded relative to
    it. Only such gates query the baseline, and wait when its query matches nothing."""
    return (
        gate.judge == "sequential"
        or gate.max_vs_baseline is not None
        or gate.hard_vs_baseline is not None
    )


def ratio_window(gate: SloGate, window: Counts, step: StepCounts) -> Evidence:
    """A ratio gate's evidence for one judged window (candidate bad and total, baseline bad
    and total): both sides' ratios and the step's counts so far."""
    cand_bad, cand_n, base_bad, base_n = window
    return Evidence(
        candidate=ratio_evidence(cand_bad, cand_n, gate.min_requests),
        baseline=ratio_evidence(base_bad, base_n, 1)
        if base_n
        else Measurement.no_data("no baseline traffic"),
        candidate_requests=cand_n,
        baseline_requests=base_n,
        step=step,
    )
