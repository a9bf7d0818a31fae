"""Investigation, not the benchmark: how promgate's figures move with its free parameters.

Varies, one at a time, the sequential test's prior concentration (``PRIOR_CONCENTRATION``
in sidecar/analysis/sequential.py, set here through ``log_e_value``'s default), the
gates' ``margin``, ``minStepRequests`` and ``detect``, the policy's ``alpha`` and
``power``, and how long a step may wait for evidence, and prints false rollbacks and
inconclusive stops (A/A), detection of 2x errors in the 10% step and over the release,
the median time to detect and bad requests served for a few regressions, and how long
healthy releases take. Same streams (seed) for every variant. Run:
``.venv/bin/python benchmarks/decisions/sweep.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.decisions.promgate_judge import Outcome, PromgateJudge  # noqa: E402
from benchmarks.decisions.simulate import (  # noqa: E402
    Scenario,
    Streams,
    scenarios,
    seed_for,
    simulate,
)
from sidecar.analysis import sequential  # noqa: E402

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


def _run(streams: Streams, concentration: float, options: dict[str, Any]) -> Outcome:
    defaults = sequential.log_e_value.__defaults__
    sequential.log_e_value.__defaults__ = (concentration,)
    options = dict(options)
    extend = options.pop("extend_s", None)
    if extend is not None:
        streams = replace(streams, scenario=replace(streams.scenario, world=replace(
            streams.world, extend_s=extend)))  # fmt: skip
    try:
        return PromgateJudge(streams.world, **options).run(streams)
    finally:
        sequential.log_e_value.__defaults__ = defaults


def _outcomes(
    pool: ProcessPoolExecutor, streams: Streams, workers: int, c: float, options: dict[str, Any]
) -> Outcome:
    step = max(50, streams.runs // (2 * workers))
    futures = [
        pool.submit(_run, streams.subset(slice(i, i + step)), c, options)
        for i in range(0, streams.runs, step)
    ]
    return Outcome.concat([f.result() for f in futures])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000, help="A/A releases per variant")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--concentrations", default="5,10,20,50,100")
    parser.add_argument("--only-concentration", action="store_true")
    parser.add_argument("--traffic", default="", help="e.g. 50,100,200: 2x power per rps")
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
            ("margin=0.2", base, {"margin": 0.2}),
            ("minStepRequests=20", base, {"min_step_requests": 20}),
            ("minStepRequests=500", base, {"min_step_requests": 500}),
            ("alpha=0.05", base, {"alpha": 0.05}),
            ("no detect (fixed steps)", base, {"detect": None}),
            ("detect=1.5", base, {"detect": 1.5}),
            ("detect=3", base, {"detect": 3.0}),
            ("power=0.9", base, {"power": 0.9}),
            ("power=0.99", base, {"power": 0.99}),
            ("wait up to 10 min", base, {"extend_s": 600.0}),
            ("wait up to 30 min", base, {"extend_s": 1800.0}),
        ]
    started = time.perf_counter()
    print(
        "| variant | A/A false / inconclusive | A/A median length s | 2x in 10% step | 2x release "
        "| 1.25x / 1.5x release | median s 1.5x/2x/3x/10x/p99+10% | bad median 1.5x/2x/10x "
        "| blip rollbacks | 5x low traffic |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for label, c, options in variants:
            got = {n: _outcomes(pool, st, args.workers, c, options) for n, st in streams.items()}

            def rate(name: str, got: dict[str, Outcome] = got) -> str:
                return f"{np.mean(np.isfinite(got[name].detect_s)):.1%}"

            def median_s(name: str, got: dict[str, Outcome] = got) -> str:
                value = float(np.median(got[name].detect_s))
                return f"{value:.0f}" if np.isfinite(value) else "never"

            aa = got["aa"]
            times = "/".join(
                median_s(n) for n in ("err-1.5x", "err-2x", "err-3x", "err-10x", "p99+10%")
            )
            bad = "/".join(
                f"{np.median(got[n].bad):.0f}" for n in ("err-1.5x", "err-2x", "err-10x")
            )
            print(
                f"| {label} | {np.mean(np.isfinite(aa.detect_s)):.3%} / "
                f"{np.mean(aa.inconclusive):.2%} | {np.median(aa.end_s):.0f} | "
                f"{np.mean(got['err-2x'].first_step):.1%} | {rate('err-2x')} | "
                f"{rate('err-1.25x')} / {rate('err-1.5x')} | {times} | {bad} | "
                f"{rate('blip-cand')} | {rate('err-5x-low')} |",
                flush=True,
            )
        if args.traffic:
            traffic(pool, args, by_name["err-2x"])
    print(f"wall time {time.perf_counter() - started:.0f} s")
    return 0


def traffic(pool: ProcessPoolExecutor, args: argparse.Namespace, two_x: Scenario) -> None:
    """Detection of 2x errors within the 10% step as the traffic grows (product settings)."""
    print("\n| mean rps | bad events in the first 10 min (mean) | 2x in 10% step | median s |")
    print("|---|---|---|---|")
    for rps in (float(r) for r in args.traffic.split(",")):
        scenario = replace(two_x, world=replace(two_x.world, rps=rps))
        st = simulate(scenario, args.runs // 4, seed_for(args.seed, f"traffic-{rps:g}"))
        got = _outcomes(pool, st, args.workers, sequential.PRIOR_CONCENTRATION, {})
        per_step = st.world.per_step
        events = (st.cand_errors + st.base_errors)[:, :per_step].sum(axis=1).mean()
        print(
            f"| {rps:g} | {events:.0f} | {np.mean(got.first_step):.1%} | "
            f"{np.median(got.detect_s):.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
