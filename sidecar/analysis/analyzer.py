"""Runs one evaluation of a step's SLO gates: queries concurrently, then judges.

Ratio gates read counters and judge their increase between good readings (the rules are
in counters.py: a gap in the readings never produces evidence). When the candidate has
served fewer than ``minRequests`` since the last judged window, the window stays open,
so evidence accumulates across evaluations instead of being thrown away. The ratio gates
are judged together, once every one of them has enough: were each to judge on its own,
two gates a request apart could take turns at lacking data, and the step would never see
all of its gates judged at once.

A gate that compares with its baseline (sequential, ``maxVsBaseline``, ``hardVsBaseline``)
queries it; one that does not, does not. While the baseline serves traffic, a baseline
query that matches nothing is a broken query, not a baseline without traffic: the gate
has no evidence (it waits, and the log names the query) rather than being judged without
its baseline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from opentelemetry import trace

from sidecar.analysis.counters import PairReading, RatioCounters
from sidecar.analysis.judge import (
    Evidence,
    GateResult,
    GateVerdict,
    Judge,
    StepCounts,
    StepVerdict,
    compares_with_baseline,
    decide,
    ratio_window,
)
from sidecar.analysis.prometheus import MetricsSource
from sidecar.analysis.queries import render
from sidecar.analysis.sequential import Counts
from sidecar.domain.measurement import Measurement, MeasurementKind
from sidecar.domain.policy import SloGate
from sidecar.errors import QueryError
from sidecar.telemetry.logging import get_logger

Identity = Mapping[str, str]
_log = get_logger("analysis")
RECENT_LIMIT = 64  # results kept per gate: enough for any `confirmWithin`
CANDIDATE, BASELINE = "candidate", "baseline"


class Queried(NamedTuple):
    """One query as it was sent, and what it yielded."""

    promql: str
    measurement: Measurement


@dataclass(frozen=True)
class _Window:
    """A ratio gate's events on each side since its window opened."""

    counts: Counts  # candidate bad, total, baseline bad, total
    min_requests: int

    @property
    def enough(self) -> bool:
        return self.counts[1] >= self.min_requests


@dataclass
class Analyzer:
    """Evaluates gates for one promotion; keeps counter readings and recent results."""

    source: MetricsSource
    judge: Judge
    gates: Sequence[SloGate]
    tracer: trace.Tracer
    _counters: dict[str, RatioCounters] = field(default_factory=dict)  # by ratio gate
    _recent: dict[str, list[GateResult]] = field(default_factory=dict)
    _step: dict[str, StepCounts] = field(default_factory=dict)
    _gaps: set[tuple[str, str, str]] = field(default_factory=set)  # (gate, side, query) logged

    def evidence(self) -> dict[str, Any]:
        """The sequential tests' counts so far, as JSON, to be saved with the promotion."""
        return {name: counts.to_json() for name, counts in self._step.items()}

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Resume from :meth:`evidence`; counts that cannot be read start over (which only
        makes the tests more cautious), and the log says so. Gates the policy no longer
        has are dropped."""
        known = {gate.name for gate in self.gates}
        try:
            self._step = {
                name: StepCounts.from_json(data) for name, data in saved.items() if name in known
            }
        except (AttributeError, TypeError, ValueError, KeyError) as problem:
            _log.warning("stored evidence unreadable, the sequential tests start over: %s", problem)
            self._step = {}

    def counters(self) -> dict[str, Any]:
        """The ratio gates' last good counter readings and open windows, as JSON, to be
        saved with the promotion: after a restart the traffic served meanwhile is judged."""
        return {name: counters.to_json() for name, counters in self._counters.items()}

    def restore_counters(self, saved: Mapping[str, Any]) -> None:
        """Resume from :meth:`counters`. Readings that cannot be read are dropped (counting
        starts again at the next reading, as on a first start), and the log says so."""
        ratio = {gate.name for gate in self.gates if gate.ratio is not None}
        try:
            self._counters = {
                name: RatioCounters.from_json(data) for name, data in saved.items() if name in ratio
            }
        except (AttributeError, TypeError, ValueError) as problem:
            _log.warning("stored counter readings unreadable, counting starts again: %s", problem)
            self._counters = {}

    def new_step(self) -> None:
        """Each step's counts are kept apart (a new traffic share), and carried over."""
        self._step = {name: counts.next_step() for name, counts in self._step.items()}

    async def evaluate(
        self,
        candidate: Identity,
        baseline: Identity | None,
        parent: Any = None,
        *,
        baseline_serves: bool = True,
    ) -> StepVerdict:
        """Measure and judge every gate once; a gate's failure never hides the others.

        ``baseline_serves`` says whether the baseline takes live traffic now (not after a
        blue-green switch): only then is a baseline query that matches nothing a fault.
        """
        with self.tracer.start_as_current_span("promgate.evaluate", context=parent) as span:
            measured = await asyncio.gather(
                *(self._measure(gate, candidate, baseline, baseline_serves) for gate in self.gates)
            )
            ready = all(m.enough for _, m in measured if isinstance(m, _Window))
            verdicts = [
                self._judge(gate, gate_span, measurement, ready)
                for gate, (gate_span, measurement) in zip(self.gates, measured, strict=True)
            ]
            step = decide(verdicts)
            span.set_attribute("promgate.decision", step.decision.value)
            return step

    async def _measure(
        self, gate: SloGate, candidate: Identity, baseline: Identity | None, baseline_serves: bool
    ) -> tuple[trace.Span, Evidence | _Window]:
        """Query one gate; its span stays open until :meth:`_judge` has its verdict."""
        span = self.tracer.start_span("promgate.gate")
        span.set_attribute("promgate.gate.name", gate.name)
        compared = baseline if baseline is not None and compares_with_baseline(gate) else None
        with trace.use_span(span, end_on_exit=False):
            if gate.ratio is not None:
                return span, await self._ratio(gate, candidate, compared, baseline_serves)
            return span, await self._value(gate, candidate, compared, baseline_serves)

    def _judge(
        self, gate: SloGate, span: trace.Span, measured: Evidence | _Window, ready: bool
    ) -> GateVerdict:
        try:
            evidence = (
                self._window(gate, measured, ready) if isinstance(measured, _Window) else measured
            )
            recent = self._recent.setdefault(gate.name, [])
            verdict = self.judge.judge(gate, evidence, recent)
            recent.append(verdict.result)
            del recent[:-RECENT_LIMIT]
            _annotate(span, verdict)
            return verdict
        finally:
            span.end()

    async def _value(
        self, gate: SloGate, candidate: Identity, baseline: Identity | None, baseline_serves: bool
    ) -> Evidence:
        assert gate.query is not None
        ours, theirs = await asyncio.gather(
            self._query(gate.query, query_identity(gate, candidate)),
            self._query(gate.query, query_identity(gate, baseline)) if baseline else _no_baseline(),
        )
        missing = ""
        if baseline and baseline_serves and theirs.measurement.matched_nothing:
            missing = self._gap(gate, BASELINE, "", "matched nothing", theirs.promql)
        else:
            self._gaps.discard((gate.name, BASELINE, ""))
        return Evidence(ours.measurement, theirs.measurement, missing=missing)

    async def _ratio(
        self, gate: SloGate, candidate: Identity, baseline: Identity | None, baseline_serves: bool
    ) -> Evidence | _Window:
        assert gate.ratio is not None
        sides = {CANDIDATE: candidate, **({BASELINE: baseline} if baseline else {})}
        answers = await asyncio.gather(
            *(
                self._query(template, identity)
                for identity in sides.values()
                for template in (gate.ratio.bad, gate.ratio.total)
            )
        )
        queried = {side: (answers[2 * i], answers[2 * i + 1]) for i, side in enumerate(sides)}
        if (
            BASELINE in queried
            and not baseline_serves
            and queried[BASELINE][1].measurement.matched_nothing
        ):
            del queried[BASELINE]  # no baseline traffic at all, e.g. after a blue-green switch
        counters = self._counters.get(gate.name, RatioCounters({}))
        reading = counters.read(
            {side: (bad.measurement, total.measurement) for side, (bad, total) in queried.items()}
        )
        self._counters[gate.name] = reading.counters
        gaps = [
            self._gap(gate, side, read.query, read.why, _promql(queried[side], read))
            for side, read in reading.gaps.items()
        ]
        for side in reading.reads.keys() - reading.gaps.keys():
            self._gaps -= {(gate.name, side, "bad"), (gate.name, side, "total")}
        failed = [
            q.measurement
            for pair in queried.values()
            for q in pair
            if q.measurement.kind is MeasurementKind.PROVIDER_ERROR
        ]
        if failed:
            return Evidence(candidate=failed[0], baseline=failed[0])
        if gaps:
            return _missing("; ".join(gaps))
        window = reading.window
        if window is None:
            return _missing(reading.why)
        cand_bad, cand_n = window[CANDIDATE]
        base_bad, base_n = window.get(BASELINE, (0.0, 0.0))
        return _Window((cand_bad, cand_n, base_bad, base_n), gate.min_requests)

    def _gap(self, gate: SloGate, side: str, query: str, why: str, promql: str) -> str:
        """The reason for a gap in a gate's readings; logged once until it has passed."""
        reason = f"{side} {query + ' ' if query else ''}query {why}: {promql}"
        key = (gate.name, side, query)
        if key not in self._gaps:
            self._gaps.add(key)
            context = {"gate": gate.name, "side": side, "query": promql}
            _log.warning("%s: %s", gate.name, reason, extra=context)
        return reason

    def _window(self, gate: SloGate, window: _Window, ready: bool) -> Evidence:
        """A ratio gate's evidence: its window, judged when every ratio gate has enough
        requests, else no data while the requests accumulate."""
        cand_n = window.counts[1]
        if not ready:
            why = (
                f"{cand_n:g} requests since the last judged reading, need {gate.min_requests}"
                if not window.enough
                else f"{cand_n:g} requests; waiting for the other ratio gates' windows"
            )
            return Evidence(
                candidate=Measurement.no_data(why),
                baseline=Measurement.no_data(),
                candidate_requests=cand_n,
            )
        self._counters[gate.name] = self._counters[gate.name].judged()
        step = self._step[gate.name] = self._step.get(gate.name, StepCounts()).plus(*window.counts)
        return ratio_window(gate, window.counts, step)

    async def _query(self, template: str, identity: Identity) -> Queried:
        try:
            promql = render(template, identity)
        except QueryError as exc:
            return Queried(template, Measurement.provider_error(str(exc)))
        with self.tracer.start_as_current_span("promgate.prometheus.query") as span:
            span.set_attribute("db.system.name", "prometheus")
            span.set_attribute("db.query.text", promql)
            span.set_attribute("promgate.role", identity.get("role", ""))
            measurement = await self.source.query(promql)
            span.set_attribute("promgate.measurement", measurement.kind.value)
            if measurement.value is not None:
                span.set_attribute("promgate.value", measurement.value)
            return Queried(promql, measurement)


def query_identity(gate: SloGate, identity: Identity) -> dict[str, str]:
    """What a side's queries of ``gate`` are rendered with: value queries get ``$window``."""
    return {**identity, "window": f"{gate.window:g}s"} if gate.query is not None else {**identity}


def _missing(why: str) -> Evidence:
    return Evidence(Measurement.no_data(why), Measurement.no_data(), missing=why)


def _promql(pair: tuple[Queried, Queried], read: PairReading) -> str:
    """The query a gap is about: bad or total (both when it is about the pair)."""
    bad, total = pair
    by_name = {"bad": bad.promql, "total": total.promql}
    return by_name.get(read.query, f"{bad.promql} / {total.promql}")


async def _no_baseline() -> Queried:
    return Queried("", Measurement.no_data("no baseline"))


def _annotate(span: trace.Span, verdict: GateVerdict) -> None:
    span.set_attribute("promgate.gate.result", verdict.result.value)
    if verdict.classification is not None:
        span.set_attribute("promgate.gate.classification", verdict.classification.value)
    for key, value in (
        ("value", verdict.value),
        ("threshold", verdict.threshold),
        ("baseline", verdict.baseline),
        ("requests", verdict.requests),
    ):
        if value is not None:
            span.set_attribute(f"promgate.gate.{key}", value)
