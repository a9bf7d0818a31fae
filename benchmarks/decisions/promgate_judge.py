"""promgate's own judge over simulated streams: the product code, not a re-implementation.

The policy below is parsed by ``parse_policy``; its stage's judge comes from
``build_judge`` (alpha split over the two sequential gates) and its strategy from
``build_strategy``. Every evaluation calls ``PolicyJudge.judge`` ->
``SequentialJudge.judge`` (which calls ``judge_threshold``, ``sequential_test`` and
``clearance_test``) with ``Evidence`` built as ``Analyzer._ratio`` builds it: the counter
increase since the last judged reading (not consumed while the candidate has fewer than
``minRequests`` or the reading is missing; both gates count the same requests, so they
reach it together, as the analyzer requires), added to the step's ``StepCounts``, which
carry over to the next step as ``Analyzer.new_step`` does. The verdicts are combined by
``decide``, and ``track_evidence`` and the canary strategy's ``next_action`` say what
happens next, as in the engine's runner: the step goes on, the next step starts, the
release rolls back, stops as inconclusive or is promoted. So a step lasts as long as the
product would make it last, within the simulated block of evaluations per step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.decisions.simulate import Streams, World
from sidecar.analysis.analyzer import RECENT_LIMIT
from sidecar.analysis.judge import (
    Evidence,
    GateResult,
    PolicyJudge,
    StepCounts,
    build_judge,
    decide,
    ratio_window,
)
from sidecar.domain.artifact import ArtifactRef
from sidecar.domain.measurement import Measurement
from sidecar.domain.policy import Analysis, SloGate, parse_policy
from sidecar.domain.promotion import Phase, Promotion
from sidecar.strategies.base import ActionKind, Strategy, track_evidence
from sidecar.strategies.factory import build_strategy

ERROR_GATE, SLOW_GATE = "error-ratio", "slow-ratio"
_SIDES = {  # each gate's bad counts: (candidate, baseline)
    ERROR_GATE: ("cand_errors", "base_errors"),
    SLOW_GATE: ("cand_slow", "base_slow"),
}


def policy_dict(
    world: World,
    *,
    alpha: float = 0.01,
    margin: float = 0.0,
    min_step_requests: int = 100,
    confirm: int = 3,
    detect: float | None = 2.0,
    power: float = 0.95,
) -> dict[str, Any]:
    """The benchmark's policy: the SLO gates of examples/policy.yaml, ``judge: sequential``,
    on a canary with the world's steps, evaluated every interval."""
    sequential: dict[str, Any] = {
        "judge": "sequential",
        "margin": margin,
        "minStepRequests": min_step_requests,
    }
    if detect is not None:
        sequential["detect"] = detect
    requests = 'sum(http_requests_total{stage="$stage", digest="$digest"})'
    return {
        "apiVersion": "promgate/v1",
        "kind": "PromotionPolicy",
        "metadata": {"name": "bench-decisions"},
        "version": "bench-1",
        "analysis": {
            "interval": f"{world.interval_s:g}s",
            "confirm": confirm,
            "noDataTimeout": f"{world.extend_s:g}s",
            "alpha": alpha,
            "power": power,
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
    """Per release (run): how it ended and what the candidate served until then."""

    detect_s: np.ndarray  # seconds from the release's start to the rollback; inf if none
    first_step: np.ndarray  # rolled back during the first step
    inconclusive: np.ndarray  # stopped as inconclusive (traffic back, release not blamed)
    bad: np.ndarray  # candidate's bad requests until it ended (promoted: the whole canary)
    extra_bad: np.ndarray  # the same beyond the baseline's ratios
    end_s: np.ndarray  # when it ended: rollback, stop or promotion
    extended: np.ndarray  # steps that ran past stepDuration

    @classmethod
    def concat(cls, outcomes: Sequence[Outcome]) -> Outcome:
        return cls(
            **{
                f.name: np.concatenate([getattr(o, f.name) for o in outcomes])
                for f in dataclasses.fields(cls)
            }
        )


_ENDS = {ActionKind.ROLLBACK, ActionKind.INCONCLUSIVE, ActionKind.ABORT, ActionKind.PROMOTE}


class PromgateJudge:
    """Drives the product's judge and strategy over streams, one release (run) at a time."""

    name = "promgate"

    def __init__(self, world: World, **options: Any) -> None:
        policy = parse_policy(policy_dict(world, **options), "bench-decisions")
        stage = policy.stage("production")
        self.analysis: Analysis = policy.analysis_for(stage)
        self.judge: PolicyJudge = build_judge(stage, self.analysis)
        self.strategy: Strategy = build_strategy(stage, self.analysis)
        self.gates: Sequence[SloGate] = tuple(stage.gates.slo)
        self.world = world

    @property
    def alpha(self) -> float:
        """The alpha of each sequential test (the policy's, split as the product splits it)."""
        return self.judge.sequential.alpha

    def run(self, streams: Streams) -> Outcome:
        rows = [self.release(streams, r) for r in range(streams.runs)]
        return Outcome(*(np.asarray(column) for column in zip(*rows, strict=True)))

    def release(
        self, streams: Streams, r: int
    ) -> tuple[float, bool, bool, float, float, float, int]:
        """One release: the fields of :class:`Outcome` for run ``r``."""
        world = self.world
        cells = {name: array[r].tolist() for name, array in streams.blocks.items()}
        promotion = _promotion(world)
        pending = {g.name: [0.0, 0.0, 0.0, 0.0] for g in self.gates}
        counts: dict[str, StepCounts] = {}
        recent: dict[str, list[GateResult]] = {g.name: [] for g in self.gates}
        bad = expected = now = 0.0
        step = extended = 0
        t = 0  # evaluation within the step's block
        kind = ActionKind.WAIT

        def cell(name: str) -> float:
            return float(cells[name][step][t])

        while t < streams.block:
            now += world.interval_s
            bad += cell("cand_errors") + cell("cand_slow")
            expected += cell("expected_bad")
            verdicts = []
            for gate in self.gates:
                held = pending[gate.name]
                cand_bad, base_bad = _SIDES[gate.name]
                held[0] += cell(cand_bad)
                held[1] += cell("cand_total")
                held[2] += cell(base_bad)
                held[3] += cell("base_total")
                evidence = self._evidence(gate, held, counts, bool(cells["missing"][step][t]))
                verdict = self.judge.judge(gate, evidence, recent[gate.name])
                recent[gate.name].append(verdict.result)
                del recent[gate.name][:-RECENT_LIMIT]
                verdicts.append(verdict)
            step_verdict = decide(verdicts)
            tracked = track_evidence(promotion, step_verdict, now)
            action = self.strategy.next_action(tracked, step_verdict, now)
            kind = action.kind
            if kind in _ENDS:
                break
            if kind is ActionKind.SET_WEIGHT:
                extended += t + 1 > world.per_step
                counts = {name: c.next_step() for name, c in counts.items()}
                step, t = step + 1, 0
                promotion = dataclasses.replace(
                    tracked, step_index=step, weight=action.weight or 0, step_started_at=now
                )
                continue
            promotion = tracked
            t += 1
        else:  # the step's simulated budget ran out first: the release goes no further
            kind = ActionKind.INCONCLUSIVE
        rolled_back = kind is ActionKind.ROLLBACK
        return (
            now if rolled_back else float("inf"),
            rolled_back and step == 0,
            kind in (ActionKind.INCONCLUSIVE, ActionKind.ABORT),
            bad,
            bad - expected,
            now,
            extended + (t + 1 > world.per_step),
        )

    @staticmethod
    def _evidence(
        gate: SloGate, held: list[float], counts: dict[str, StepCounts], gap: bool
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
        step = counts[gate.name] = counts.get(gate.name, StepCounts()).plus(
            cand_bad, cand_n, base_bad, base_n
        )
        return ratio_window(gate, (cand_bad, cand_n, base_bad, base_n), step)


def _promotion(world: World) -> Promotion:
    """A promotion at its first step, as the engine starts one."""
    return Promotion(
        id="bench",
        service="bench",
        stage="production",
        artifact=ArtifactRef("bench/service", "sha256:" + "0" * 64),
        version="candidate",
        policy_version="bench-1",
        strategy="canary",
        candidate_upstream="",
        manifest={},
        created_at=0.0,
        phase=Phase.PROGRESSING,
        weight=world.steps[0],
        step_started_at=0.0,
    )
