"""Investigation, not the benchmark: how promgate's figures move with its free parameters.

Varies, one at a time, the sequential test's prior concentration (``PRIOR_CONCENTRATION``
in sidecar/analysis/sequential.py, set here through ``log_e_value``'s default), the
gates' ``margin``, ``minStepRequests`` and the policy's ``alpha``, and prints false
rollbacks (A/A), detection of 2x errors in the 10% step and over the release, and the
median time to detect and bad requests served for a few regressions. Same streams
(seed) for every variant. Run: ``.venv/bin/python benchmarks/decisions/sweep.py``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.decisions.promgate_judge import PromgateJudge  # noqa: E402
from benchmarks.decisions.simulate import (  # noqa: E402
    Scenario,
    Streams,
    World,
    scenarios,
    seed_for,
    simulate,
)
from sidecar.analysis import sequential  # noqa: E402
from sidecar.analysis.judge import (  # noqa: E402
    Evidence,
    GateResult,
    GateVerdict,
    SequentialJudge,
)
from sidecar.domain.policy import SloGate  # noqa: E402


class CarryOver(PromgateJudge):
    """What-if, not the product: each gate's e-value carries over from step to step (the
    product of the steps' e-values is still a test supermartingale under the null), so
    alpha is split over the gates only, not over the steps."""

    def __init__(self, world: World, **options: Any) -> None:
        super().__init__(world, **options)
        self.gate_alpha = self.analysis.alpha / len(self.gates)
        self.carried: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def start_release(self) -> None:
        self.carried, self.last = {}, {}

    def new_step(self) -> None:
        for name, log_e in self.last.items():
            self.carried[name] = self.carried.get(name, 0.0) + log_e
        self.last = {}

    def judge_gate(
        self, gate: SloGate, evidence: Evidence, recent: Sequence[GateResult]
    ) -> GateVerdict:
        carried = max(-700.0, min(self.carried.get(gate.name, 0.0), 700.0))
        judge = SequentialJudge(self.gate_alpha * math.exp(carried), self.analysis.confirm)
        verdict = judge.judge(gate, evidence, recent)
        if verdict.e_value is not None:
            self.last[gate.name] = math.log(max(verdict.e_value, 1e-300))
        return verdict


WATCHED = (
    "aa",
    "err-1.25x",
    "err-1.5x",
    "err-2x",
    "err-3x",
    "err-10x",
    "p99+10%",
    "blip-cand",
    "err-5x-low",
)


def _run(streams: Streams, concentration: float, options: dict[str, Any]) -> np.ndarray:
    defaults = sequential.log_e_value.__defaults__
    sequential.log_e_value.__defaults__ = (concentration,)
    options = dict(options)
    kind = CarryOver if options.pop("carry_over", False) else PromgateJudge
    try:
        return kind(streams.world, **options).run(streams).rollback_at
    finally:
        sequential.log_e_value.__defaults__ = defaults


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000, help="A/A releases per variant")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--concentrations", default="5,10,20,50,100,200,500")
    parser.add_argument("--only-concentration", action="store_true")
    parser.add_argument("--traffic", default="", help="e.g. 100,150,200: 2x power per rps")
    args = parser.parse_args()
    by_name = {s.name: s for s in scenarios()}
    streams = {
        name: simulate(
            by_name[name], args.runs if name == "aa" else args.runs // 4, seed_for(args.seed, name)
        )
        for name in WATCHED
    }
    base = sequential.PRIOR_CONCENTRATION
    variants: list[tuple[str, float, dict[str, Any]]] = [
        (f"c={c}", float(c), {}) for c in args.concentrations.split(",")
    ]
    if not args.only_concentration:
        variants += [
            ("margin=0.1", base, {"margin": 0.1}),
            ("margin=0.2", base, {"margin": 0.2}),
            ("margin=0.25", base, {"margin": 0.25}),
            (
                "examples/policy.yaml: margin 0.2, minStepRequests 50",
                base,
                {"margin": 0.2, "min_step_requests": 50},
            ),
            ("minStepRequests=20", base, {"min_step_requests": 20}),
            ("minStepRequests=500", base, {"min_step_requests": 500}),
            ("alpha=0.05", base, {"alpha": 0.05}),
            ("what-if: e-values carried over steps", base, {"carry_over": True}),
        ]
    started = time.perf_counter()
    print(
        "| variant | A/A false | 2x in 10% step | 2x release | 1.25x / 1.5x release | median s "
        "1.5x/2x/3x/10x/p99+10% | bad median 1.5x/2x/10x | blip rollbacks | 5x low traffic |"
    )
    print("|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for label, c, options in variants:
            futures = {}
            for name, st in streams.items():
                step = max(50, st.runs // (2 * args.workers))
                futures[name] = [
                    pool.submit(_run, st.subset(slice(i, i + step)), c, options)
                    for i in range(0, st.runs, step)
                ]
            at = {n: np.concatenate([f.result() for f in fs]) for n, fs in futures.items()}
            per_step = streams["err-2x"].world.per_step
            interval = streams["err-2x"].world.interval_s

            def median_s(
                name: str, at: dict[str, np.ndarray] = at, interval: float = interval
            ) -> str:
                times = np.where(at[name] >= 0, (at[name] + 1) * interval, np.inf)
                value = float(np.median(times))
                return f"{value:.0f}" if np.isfinite(value) else "never"

            bad = "/".join(
                f"{np.median(streams[n].bad_served(at[n])[0]):.0f}"
                for n in ("err-1.5x", "err-2x", "err-10x")
            )
            two = at["err-2x"]
            times = "/".join(
                median_s(n) for n in ("err-1.5x", "err-2x", "err-3x", "err-10x", "p99+10%")
            )
            print(
                f"| {label} | {np.mean(at['aa'] >= 0):.3%} | "
                f"{np.mean((two >= 0) & (two < per_step)):.1%} | {np.mean(two >= 0):.1%} | "
                f"{np.mean(at['err-1.25x'] >= 0):.1%} / {np.mean(at['err-1.5x'] >= 0):.1%} | "
                f"{times} | {bad} | {np.mean(at['blip-cand'] >= 0):.1%} | "
                f"{np.mean(at['err-5x-low'] >= 0):.1%} |",
                flush=True,
            )
        if args.traffic:
            traffic(pool, args, by_name["err-2x"])
    print(f"wall time {time.perf_counter() - started:.0f} s")
    return 0


def traffic(pool: ProcessPoolExecutor, args: argparse.Namespace, two_x: Scenario) -> None:
    """Detection of 2x errors within the 10% step as the traffic grows (product settings)."""
    print("\n| mean rps | bad events in the 10% step (mean) | 2x in 10% step | median s |")
    print("|---|---|---|---|")
    for rps in (float(r) for r in args.traffic.split(",")):
        scenario = replace(two_x, world=replace(two_x.world, rps=rps))
        st = simulate(scenario, args.runs // 4, seed_for(args.seed, f"traffic-{rps:g}"))
        step = max(50, st.runs // (2 * args.workers))
        futures = [
            pool.submit(_run, st.subset(slice(i, i + step)), sequential.PRIOR_CONCENTRATION, {})
            for i in range(0, st.runs, step)
        ]
        at = np.concatenate([f.result() for f in futures])
        per_step = st.world.per_step
        events = (st.cand_errors + st.base_errors)[:, :per_step].sum(axis=1).mean()
        times = np.where(at >= 0, (at + 1) * st.world.interval_s, np.inf)
        print(
            f"| {rps:g} | {events:.0f} | {np.mean((at >= 0) & (at < per_step)):.1%} | "
            f"{np.median(times):.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
