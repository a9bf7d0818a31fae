"""promgate's own judge over simulated streams: the product code, not a re-implementation.

The policy below is parsed by ``parse_policy``; its stage's judge comes from
``build_judge`` (alpha split over the two sequential gates and the canary's steps) and
every evaluation calls ``PolicyJudge.judge`` -> ``SequentialJudge.judge`` (which calls
``judge_threshold`` and ``sequential_test``) with ``Evidence`` built as
``Analyzer._ratio`` builds it: the counter increase since the last judged reading
(not consumed while the candidate has fewer than ``minRequests`` or the reading is
missing), added to the step's ``StepCounts``, which restart with each step. The step's
verdicts are combined by the product's ``decide``. A rollback is ``Decision.ROLLBACK``;
``noDataTimeout`` of evaluations with a NO_DATA gate stops the release as inconclusive
(``strategies.base.guard``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.decisions.simulate import Streams, World
from sidecar.analysis.judge import (
    Decision,
    Evidence,
    GateResult,
    GateVerdict,
    PolicyJudge,
    StepCounts,
    build_judge,
    decide,
    ratio_window,
)
from sidecar.domain.measurement import Measurement
from sidecar.domain.policy import Analysis, SloGate, parse_policy

RECENT_LIMIT = 64  # as the analyzer keeps
ERROR_GATE, SLOW_GATE = "error-ratio", "slow-ratio"


def policy_dict(
    world: World,
    *,
    alpha: float = 0.01,
    margin: float = 0.0,
    min_step_requests: int = 100,
    confirm: int = 3,
) -> dict[str, Any]:
    """The benchmark's policy: the SLO gates of examples/policy.yaml, ``judge: sequential``,
    on a canary with the world's steps, evaluated every interval."""
    sequential = {"judge": "sequential", "margin": margin, "minStepRequests": min_step_requests}
    requests = 'sum(http_requests_total{stage="$stage", digest="$digest"})'
    return {
        "apiVersion": "promgate/v1",
        "kind": "PromotionPolicy",
        "metadata": {"name": "bench-decisions"},
        "version": "bench-1",
        "analysis": {
            "interval": f"{world.interval_s:g}s",
            "confirm": confirm,
            "noDataTimeout": f"{world.step_s:g}s",
            "alpha": alpha,
            "maxProviderHold": "5m",
        },
        "stages": [
            {
                "name": "production",
                "strategy": {
                    "canary": {"steps": list(world.steps), "stepDuration": f"{world.step_s:g}s"}
                },
                "gates": {
                    "slo": [
                        {
                            "name": ERROR_GATE,
                            "ratio": {
                                "bad": 'sum(http_requests_total{stage="$stage", '
                                'digest="$digest", code=~"5.."})',
                                "total": requests,
                            },
                            "max": 0.05,
                            "maxVsBaseline": 2,
                            "hardMax": 0.6,
                            "minRequests": 20,
                            **sequential,
                        },
                        {
                            "name": SLOW_GATE,
                            "ratio": {
                                "bad": f"{requests} - sum(http_request_duration_seconds_bucket"
                                '{stage="$stage", digest="$digest", le="0.25"})',
                                "total": requests,
                            },
                            "max": 0.05,
                            "maxVsBaseline": 2,
                            "minRequests": 20,
                            **sequential,
                        },
                    ]
                },
            }
        ],
    }


@dataclass
class Outcome:
    rollback_at: np.ndarray  # evaluation index of the rollback, -1 if none
    inconclusive_at: np.ndarray  # evaluation index it stopped as inconclusive, -1 if none
    extended: np.ndarray  # steps whose last evaluation was not a PASS (the product waits)


class PromgateJudge:
    """Drives the product's judge over streams, one release (run) at a time."""

    name = "promgate"

    def __init__(self, world: World, **options: Any) -> None:
        policy = parse_policy(policy_dict(world, **options), "bench-decisions")
        stage = policy.stage("production")
        self.analysis: Analysis = policy.analysis_for(stage)
        self.judge: PolicyJudge = build_judge(stage, self.analysis)
        self.gates: Sequence[SloGate] = tuple(stage.gates.slo)
        self.world = world

    @property
    def alpha(self) -> float:
        """The alpha of each sequential test (the policy's, split as the product splits it)."""
        return self.judge.sequential.alpha

    def run(self, streams: Streams) -> Outcome:
        rows = streams.runs
        outcome = Outcome(
            np.full(rows, -1), np.full(rows, -1), np.zeros(rows, dtype=np.int64)
        )  # fmt: skip
        for r in range(rows):
            at, inconclusive, extended = self.release(streams, r)
            outcome.rollback_at[r] = at
            outcome.inconclusive_at[r] = inconclusive
            outcome.extended[r] = extended
        return outcome

    def release(self, streams: Streams, r: int) -> tuple[int, int, int]:
        """(rollback evaluation or -1, inconclusive evaluation or -1, extended steps)."""
        world = self.world
        bad = {
            ERROR_GATE: (streams.cand_errors[r].tolist(), streams.base_errors[r].tolist()),
            SLOW_GATE: (streams.cand_slow[r].tolist(), streams.base_slow[r].tolist()),
        }
        cand_total = streams.cand_total[r].tolist()
        base_total = streams.base_total[r].tolist()
        missing = streams.missing[r].tolist()
        step_of = world.step_index().tolist()
        pending = {g.name: [0.0, 0.0, 0.0, 0.0] for g in self.gates}
        step: dict[str, StepCounts] = {}
        recent: dict[str, list[GateResult]] = {g.name: [] for g in self.gates}
        no_data_since: float | None = None
        extended = 0
        self.start_release()
        last = Decision.PASS
        for t in range(world.evaluations):
            now = (t + 1) * world.interval_s
            if t > 0 and step_of[t] != step_of[t - 1]:
                extended += last is not Decision.PASS
                step.clear()  # Analyzer.new_step()
                self.new_step()
            verdicts = []
            for gate in self.gates:
                held = pending[gate.name]
                cand_bad, base_bad = bad[gate.name]
                held[0] += cand_bad[t]
                held[1] += cand_total[t]
                held[2] += base_bad[t]
                held[3] += base_total[t]
                evidence = self._evidence(gate, held, step, missing[t])
                verdict = self.judge_gate(gate, evidence, recent[gate.name])
                recent[gate.name].append(verdict.result)
                del recent[gate.name][:-RECENT_LIMIT]
                verdicts.append(verdict)
            last = decide(verdicts).decision
            if last is Decision.ROLLBACK:
                return t, -1, extended
            if any(v.result is GateResult.NO_DATA for v in verdicts):
                no_data_since = now if no_data_since is None else no_data_since
                if now - no_data_since >= self.analysis.no_data_timeout:
                    return -1, t, extended
            else:
                no_data_since = None
        return -1, -1, extended

    def judge_gate(
        self, gate: SloGate, evidence: Evidence, recent: Sequence[GateResult]
    ) -> GateVerdict:
        """The product's verdict (``PolicyJudge.judge``); what-if variants override it."""
        return self.judge.judge(gate, evidence, recent)

    def start_release(self) -> None:
        """Hook for what-if variants with state per release; the product keeps none here."""

    def new_step(self) -> None:
        """Hook for what-if variants at a step change (the analyzer's ``new_step``)."""

    @staticmethod
    def _evidence(
        gate: SloGate, held: list[float], step: dict[str, StepCounts], gap: bool
    ) -> Evidence:
        """What ``Analyzer._ratio`` returns for the increase ``held`` since the last judged
        reading; consumes it (and adds it to the step's counts) when it is judged."""
        if gap:  # the counters' query found nothing: no data, nothing consumed
            return Evidence(
                candidate=Measurement.no_data("scrape gap"), baseline=Measurement.no_data()
            )
        cand_bad, cand_n, base_bad, base_n = held
        if cand_n < gate.min_requests:
            return Evidence(
                candidate=Measurement.no_data(
                    f"{cand_n:g} requests since the last judged reading, need {gate.min_requests}"
                ),
                baseline=Measurement.no_data(),
                candidate_requests=cand_n,
            )
        held[:] = [0.0, 0.0, 0.0, 0.0]
        counts = step[gate.name] = step.get(gate.name, StepCounts()).plus(
            cand_bad, cand_n, base_bad, base_n
        )
        return ratio_window(gate, (cand_bad, cand_n, base_bad, base_n), counts)
