"""Runs one evaluation of a step's SLO gates: queries concurrently, then judges.

Ratio gates read counters and judge their increase since the last reading that was
judged. When the candidate has served fewer than ``minRequests`` since then, the reading
is not consumed, so evidence accumulates across evaluations instead of being thrown away.
The ratio gates consume their windows together, once every one of them has enough: were
each to judge on its own, two gates a request apart could take turns at lacking data,
and the step would never see all of its gates judged at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from sidecar.analysis.judge import (
    Evidence,
    GateResult,
    GateVerdict,
    Judge,
    StepCounts,
    StepVerdict,
    counter_increase,
    decide,
    ratio_window,
)
from sidecar.analysis.prometheus import MetricsSource
from sidecar.analysis.queries import render
from sidecar.domain.measurement import Measurement, MeasurementKind
from sidecar.domain.policy import SloGate
from sidecar.errors import QueryError
from sidecar.telemetry.logging import get_logger

Identity = Mapping[str, str]
_log = get_logger("analysis")
RECENT_LIMIT = 64  # results kept per gate: enough for any `confirmWithin`


@dataclass(frozen=True)
class _Window:
    """A ratio gate's counter readings and their increase since its last judged window."""

    readings: Sequence[Measurement]  # candidate bad, total (and baseline bad, total)
    counts: tuple[float, float, float, float]
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
    # the last judged (bad, total) reading of each (gate, role) of the ratio gates
    _counters: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    _recent: dict[str, list[GateResult]] = field(default_factory=dict)
    _step: dict[str, StepCounts] = field(default_factory=dict)

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

    def new_step(self) -> None:
        """Each step's counts are kept apart (a new traffic share), and carried over."""
        self._step = {name: counts.next_step() for name, counts in self._step.items()}

    async def evaluate(
        self, candidate: Identity, baseline: Identity | None, parent: Any = None
    ) -> StepVerdict:
        """Measure and judge every gate once; a gate's failure never hides the others."""
        with self.tracer.start_as_current_span("promgate.evaluate", context=parent) as span:
            measured = await asyncio.gather(
                *(self._measure(gate, candidate, baseline) for gate in self.gates)
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
        self, gate: SloGate, candidate: Identity, baseline: Identity | None
    ) -> tuple[trace.Span, Evidence | _Window]:
        """Query one gate; its span stays open until :meth:`_judge` has its verdict."""
        span = self.tracer.start_span("promgate.gate")
        span.set_attribute("promgate.gate.name", gate.name)
        with trace.use_span(span, end_on_exit=False):
            if gate.ratio is not None:
                return span, await self._ratio(gate, candidate, baseline)
            return span, await self._value(gate, candidate, baseline)

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
        self, gate: SloGate, candidate: Identity, baseline: Identity | None
    ) -> Evidence:
        assert gate.query is not None
        window = {"window": f"{gate.window:g}s"}
        measured = await asyncio.gather(
            self._query(gate.query, {**candidate, **window}),
            self._query(gate.query, {**baseline, **window}) if baseline else _no_baseline(),
        )
        return Evidence(candidate=measured[0], baseline=measured[1])

    async def _ratio(
        self, gate: SloGate, candidate: Identity, baseline: Identity | None
    ) -> Evidence | _Window:
        assert gate.ratio is not None
        queries = [self._query(gate.ratio.bad, candidate), self._query(gate.ratio.total, candidate)]
        if baseline:
            queries += [
                self._query(gate.ratio.bad, baseline),
                self._query(gate.ratio.total, baseline),
            ]
        readings = await asyncio.gather(*queries)
        failed = [m for m in readings if m.kind is MeasurementKind.PROVIDER_ERROR]
        if failed:
            return Evidence(candidate=failed[0], baseline=failed[0])
        cand_bad, cand_total, cand_n = self._increase(gate, "candidate", readings[0], readings[1])
        base_bad, _, base_n = (
            self._increase(gate, "baseline", readings[2], readings[3])
            if baseline
            else (0.0, Measurement.no_data(), None)
        )
        if cand_n is None:
            return Evidence(candidate=cand_total, baseline=Measurement.no_data())
        return _Window(readings, (cand_bad, cand_n, base_bad, base_n or 0.0), gate.min_requests)

    def _window(self, gate: SloGate, window: _Window, ready: bool) -> Evidence:
        """A ratio gate's evidence: its window, judged and consumed when every ratio gate
        has enough requests, else no data while the requests accumulate."""
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
        self._consume(gate, "candidate", window.readings[0], window.readings[1])
        if len(window.readings) == 4:
            self._consume(gate, "baseline", window.readings[2], window.readings[3])
        step = self._step[gate.name] = self._step.get(gate.name, StepCounts()).plus(*window.counts)
        return ratio_window(gate, window.counts, step)

    def _increase(
        self, gate: SloGate, role: str, bad: Measurement, total: Measurement
    ) -> tuple[float, Measurement, float | None]:
        """(bad increase, total measurement, total increase or None before a first reading).

        An empty ``bad`` result means no bad event was ever recorded: it counts as zero.
        """
        if total.value is None:
            return 0.0, total, None
        last = self._counters.get((gate.name, role))
        if last is None:
            self._consume(gate, role, bad, total)
            return 0.0, Measurement.no_data("first reading; counting starts now"), None
        last_bad, last_total = last
        return (
            counter_increase(last_bad, bad.value or 0.0),
            total,
            counter_increase(last_total, total.value),
        )

    def _consume(self, gate: SloGate, role: str, bad: Measurement, total: Measurement) -> None:
        if total.value is not None:
            self._counters[(gate.name, role)] = (bad.value or 0.0, total.value)

    async def _query(self, template: str, identity: Identity) -> Measurement:
        try:
            promql = render(template, identity)
        except QueryError as exc:
            return Measurement.provider_error(str(exc))
        with self.tracer.start_as_current_span("promgate.prometheus.query") as span:
            span.set_attribute("db.system.name", "prometheus")
            span.set_attribute("db.query.text", promql)
            span.set_attribute("promgate.role", identity.get("role", ""))
            measurement = await self.source.query(promql)
            span.set_attribute("promgate.measurement", measurement.kind.value)
            if measurement.value is not None:
                span.set_attribute("promgate.value", measurement.value)
            return measurement


async def _no_baseline() -> Measurement:
    return Measurement.no_data("no baseline")


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
