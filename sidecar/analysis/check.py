"""Checking a stage's SLO queries against a real Prometheus for one release.

Each gate's queries are rendered for the candidate and, for gates that compare with it,
the baseline, exactly as the analyzer renders them, and run once; the check reports how
many series each returned. A total or value query that matches nothing, or any query
that fails, is a problem: while that side serves traffic, the gate would have no
evidence. A bad-event query that matches nothing is only noted: a counter of bad events
has no series until the first one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from sidecar.analysis.analyzer import BASELINE, CANDIDATE, query_identity
from sidecar.analysis.judge import compares_with_baseline
from sidecar.analysis.queries import render
from sidecar.domain.policy import SloGate
from sidecar.errors import ProviderError, QueryError

CountSeries = Callable[[str], Awaitable[int]]


@dataclass(frozen=True)
class QueryCheck:
    """One rendered query of one gate for one side, and what it returned."""

    gate: str
    side: str  # candidate or baseline
    query: str  # bad, total or query
    promql: str
    series: int | None  # None when it failed
    error: str = ""

    @property
    def ok(self) -> bool:
        """Whether the gate can judge on it: it ran and (bad events aside) matched."""
        return self.series is not None and (self.series > 0 or self.query == "bad")

    @property
    def shown(self) -> str:
        if self.series is None:
            return f"error: {self.error}"
        note = ""
        if self.series == 0:
            note = " (no bad events yet, or a wrong query)" if self.query == "bad" else ""
            note = note or " (matched nothing: the gate would have no evidence)"
        return f"{self.series} series{note}"


async def check_queries(
    gates: Sequence[SloGate],
    candidate: Mapping[str, str],
    baseline: Mapping[str, str] | None,
    count: CountSeries,
) -> list[QueryCheck]:
    """Render and run every query of ``gates`` for each side, concurrently."""
    planned: list[tuple[SloGate, str, Mapping[str, str]]] = []
    for gate in gates:
        planned.append((gate, CANDIDATE, candidate))
        if baseline is not None and compares_with_baseline(gate):
            planned.append((gate, BASELINE, baseline))
    checks = await asyncio.gather(
        *(
            _check(gate, side, name, query_identity(gate, identity), count)
            for gate, side, identity in planned
            for name in (("bad", "total") if gate.ratio is not None else ("query",))
        )
    )
    return list(checks)


async def _check(
    gate: SloGate, side: str, name: str, identity: Mapping[str, str], count: CountSeries
) -> QueryCheck:
    ratio = {"bad": gate.ratio.bad, "total": gate.ratio.total} if gate.ratio else {}
    template = ratio.get(name) or gate.query or ""
    try:
        promql = render(template, identity)
    except QueryError as exc:
        return QueryCheck(gate.name, side, name, template, None, str(exc))
    try:
        return QueryCheck(gate.name, side, name, promql, await count(promql))
    except ProviderError as exc:
        return QueryCheck(gate.name, side, name, promql, None, str(exc))
