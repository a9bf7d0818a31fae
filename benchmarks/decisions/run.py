"""Decision benchmark: false rollbacks, power, time to detect and bad requests served, for
promgate's sequential judge and Flagger-, Argo- and Kayenta-style judges on the same
simulated request streams (see README.md beside this file).

Run: ``make bench-decisions`` or
``.venv/bin/python benchmarks/decisions/run.py [--runs N] [--seed S] [--quick]``.
Writes benchmarks/out/decisions.{md,json,png}; prints the table and, last, one line per
judge: ``judge=<name> false_rollback_rate=<x> power_2x_10pct=<y> median_detect_s=<z>
bad_requests_median=<w>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import binom  # noqa: E402

from benchmarks.decisions.peers import (  # noqa: E402
    ArgoJudge,
    FlaggerJudge,
    KayentaJudge,
    PeerJudge,
    calibrate_bound,
)
from benchmarks.decisions.promgate_judge import Outcome, PromgateJudge  # noqa: E402
from benchmarks.decisions.simulate import (  # noqa: E402
    Scenario,
    Streams,
    World,
    reference_aa,
    scenarios,
    seed_for,
    simulate,
)

DEFAULT_SEED = 20_261
TARGET_FALSE_ROLLBACK = 0.01  # the goal's budget per release
FLAGGER_THRESHOLDS = (1, 2, 3, 5, 8)
ARGO_FAILURE_LIMITS = (0, 1, 2, 4, 7)
HEADLINE = "err-2x"  # a 2x error-ratio regression, first step at 10%
PROMGATE = "promgate"
FAMILIES = ("flagger", "argo", "kayenta")
TUNED = FAMILIES  # tuned to 1% false rollbacks per release
MATCHED = tuple(f"{f}-matched" for f in FAMILIES)  # tuned to promgate's measured rate
DEFAULTS = tuple(f"{f}-default" for f in FAMILIES)
JUDGES = (PROMGATE, *TUNED, *MATCHED, *DEFAULTS)
OUT = ROOT / "benchmarks" / "out"


@dataclass(frozen=True)
class Sizes:
    aa_runs: int  # A/A releases per judge
    runs: int  # releases of every other scenario
    calibration_runs: int  # separate A/A releases per world that the peers are tuned on
    selection_runs: int  # separate 2x releases that pick a peer's failure count


@dataclass
class Result:
    """One judge on one scenario, per release."""

    detect_s: np.ndarray  # seconds from the release's start to the rollback; inf if none
    first_step: np.ndarray  # rolled back during the first step
    bad: np.ndarray
    extra_bad: np.ndarray
    end_s: np.ndarray  # when the release ended: rollback, stop or promotion
    promoted: np.ndarray  # the candidate took all traffic at end_s
    inconclusive: float = 0.0
    extended: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=None, help="A/A releases (default 4000)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--quick", action="store_true", help="a few hundred runs, for a try")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    aa_runs = args.runs or (400 if args.quick else 4000)
    sizes = Sizes(
        aa_runs=aa_runs,
        runs=max(100, aa_runs // 4),
        calibration_runs=max(5_000, 10 * aa_runs),
        selection_runs=max(500, aa_runs // 2),
    )
    started = time.perf_counter()
    report = benchmark(sizes, args.seed, args.workers)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    report["workers"] = args.workers
    args.out.mkdir(parents=True, exist_ok=True)
    markdown = render(report)
    (args.out / "decisions.md").write_text(markdown, encoding="utf-8")
    (args.out / "decisions.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    plot(report, args.out / "decisions.png")
    print(markdown)
    print(f"wrote {args.out}/decisions.md, decisions.json, decisions.png")
    print(f"wall time {report['wall_s']:.1f} s ({args.workers} workers)")
    for line in machine_lines(report):
        print(line)
    return 0


def benchmark(sizes: Sizes, seed: int, workers: int) -> dict[str, Any]:
    found = scenarios()
    by_name = {s.name: s for s in found}
    streams = {
        s.name: simulate(s, sizes.aa_runs if s.name == "aa" else sizes.runs, seed_for(seed, s.name))
        for s in found
    }
    results: dict[str, dict[str, Result]] = {name: {} for name in streams}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending = {name: submit_promgate(pool, st, workers) for name, st in streams.items()}
        results["aa"][PROMGATE] = promgate_result(pending.pop("aa"))
        measured = float(np.mean(np.isfinite(results["aa"][PROMGATE].detect_s)))
        matched = max(measured, 1.0 / streams["aa"].runs)
        peers, calibration = tune_peers(found, sizes, seed, matched)
        for s in found:
            for judge_name, judge in peers[reference_aa(s, found).name].items():
                results[s.name][judge_name] = peer_result(judge, streams[s.name])
        for name, futures in pending.items():
            results[name][PROMGATE] = promgate_result(futures)
    judge = PromgateJudge(World())
    report: dict[str, Any] = {
        "seed": seed,
        "sizes": vars(sizes),
        "world": vars(World()) | {"slow_ratio": World().slow_ratio, "horizon_s": World().horizon_s},
        "promgate": {
            "alpha_policy": judge.analysis.alpha,
            "alpha_per_test": judge.alpha,
            "detect": judge.gates[0].detect,
            "power": judge.analysis.power,
            "gates": [g.name for g in judge.gates],
        },
        "target_false_rollback": TARGET_FALSE_ROLLBACK,
        "matched_false_rollback": matched,
        "calibration": calibration,
        "oracle": oracle(streams[HEADLINE], judge.alpha),
        "scenarios": [],
    }
    for s in found:
        entry: dict[str, Any] = {
            "name": s.name,
            "label": s.label,
            "kind": s.kind,
            "tuned_on": reference_aa(s, found).name,
            "runs": streams[s.name].runs,
            "judges": {},
        }
        for judge_name in JUDGES:
            entry["judges"][judge_name] = summarise(results[s.name][judge_name], s).figures
        report["scenarios"].append(entry)
    assert by_name[HEADLINE].world.steps[0] == 10
    report["goals"] = goals(report)
    return report


def submit_promgate(pool: ProcessPoolExecutor, streams: Streams, workers: int) -> list[Future[Any]]:
    chunk = max(25, math.ceil(streams.runs / (4 * workers)))
    return [
        pool.submit(_promgate_chunk, streams.subset(slice(i, i + chunk)))
        for i in range(0, streams.runs, chunk)
    ]


def _promgate_chunk(streams: Streams) -> Outcome:
    return PromgateJudge(streams.world).run(streams)


def promgate_result(futures: list[Future[Any]]) -> Result:
    outcome = Outcome.concat([f.result() for f in futures])
    return Result(
        outcome.detect_s,
        outcome.first_step,
        outcome.bad,
        outcome.extra_bad,
        outcome.end_s,
        np.isinf(outcome.detect_s) & ~outcome.inconclusive,
        inconclusive=float(np.mean(outcome.inconclusive)),
        extended=float(np.mean(outcome.extended)),
    )


def peer_result(judge: PeerJudge, streams: Streams) -> Result:
    at = judge.rollback_at(streams)
    bad, extra = streams.bad_served(at)
    times = detect_times(at, streams.world)
    end = np.where(np.isfinite(times), times, streams.world.budget_s)
    return Result(times, (at >= 0) & (at < streams.world.per_step), bad, extra, end, at < 0)


def candidates(family: str) -> list[PeerJudge]:
    if family == "flagger":
        return [FlaggerJudge(threshold=n) for n in FLAGGER_THRESHOLDS]
    if family == "argo":
        return [ArgoJudge(failure_limit=n) for n in ARGO_FAILURE_LIMITS]
    return [KayentaJudge()]


def tune_peers(
    found: list[Scenario], sizes: Sizes, seed: int, matched: float
) -> tuple[dict[str, dict[str, PeerJudge]], dict[str, Any]]:
    """Peers per world (the A/A scenario each scenario is tuned on): each peer's bound is
    set on separate A/A releases of that world so that at most ``target`` of them roll
    back, for two targets: 1% and promgate's measured A/A rate (``matched``). Flagger's
    threshold and Argo's failureLimit are picked among a few values, on the main world,
    by detection of a 2x regression in the first step on separate 2x releases."""
    by_name = {s.name: s for s in found}
    worlds = list(dict.fromkeys(reference_aa(s, found).name for s in found))
    selection = simulate(
        by_name[HEADLINE], sizes.selection_runs, seed_for(seed, "selection"), budget=False
    )
    per_step = selection.world.per_step
    targets = {"": TARGET_FALSE_ROLLBACK, "-matched": matched}
    chosen: dict[str, PeerJudge] = {}  # family + suffix -> count setting, from the main world
    peers: dict[str, dict[str, PeerJudge]] = {}
    info: dict[str, Any] = {"calibration_runs": sizes.calibration_runs, "worlds": {}}
    for world in worlds:
        aa = simulate(
            by_name[world], sizes.calibration_runs, seed_for(seed, f"cal-{world}"), budget=False
        )
        peers[world] = {}
        notes: dict[str, Any] = {}
        statistic = Statistics(aa)
        for family in FAMILIES:
            for suffix, target in targets.items():
                name = family + suffix
                options = candidates(family) if world == "aa" else [chosen[name]]
                tried = []
                for candidate in options:
                    stat = statistic(candidate)
                    bound = calibrate_bound(stat, target)
                    judge = replace_name(candidate.with_bound(bound), name)
                    row: dict[str, Any] = {
                        "judge": judge,
                        "setting": judge.describe(),
                        "calibration_false_rollback": float(np.mean(stat > bound)),
                    }
                    if len(options) > 1:
                        at = judge.rollback_at(selection)
                        row["selection_first_step_detection"] = float(
                            np.mean((at >= 0) & (at < per_step))
                        )
                        row["selection_median_detect_s"] = median_time(at, selection.world)
                    tried.append(row)
                best = max(
                    tried,
                    key=lambda t: (
                        t.get("selection_first_step_detection", 0.0),
                        -t.get("selection_median_detect_s", 0.0),
                    ),
                )
                chosen.setdefault(name, best["judge"])
                peers[world][name] = best["judge"]
                notes[name] = {
                    "target": target,
                    "bound": best["judge"].bound,
                    "chosen": best["setting"],
                    "calibration_false_rollback": best["calibration_false_rollback"],
                    "tried": [{k: v for k, v in t.items() if k != "judge"} for t in tried],
                }
            default = replace_name(candidates(family)[0], f"{family}-default")
            peers[world][default.name] = default
            notes[default.name] = {
                "chosen": default.describe(),
                "bound": default.bound,
                "calibration_false_rollback": float(np.mean(statistic(default) > default.bound)),
            }
        info["worlds"][world] = notes
    return peers, info


class Statistics:
    """Each peer setting's calibration statistic on one world's A/A releases, computed once
    (the bound aside, it does not depend on it)."""

    def __init__(self, aa: Streams) -> None:
        self.aa = aa
        self.known: dict[PeerJudge, np.ndarray] = {}

    def __call__(self, judge: PeerJudge) -> np.ndarray:
        key = replace_name(judge.with_bound(0.0), "")
        if key not in self.known:
            self.known[key] = judge.statistic(self.aa)
        return self.known[key]


def replace_name(judge: PeerJudge, name: str) -> PeerJudge:
    renamed: PeerJudge = dataclasses.replace(judge, name=name)  # type: ignore[type-var]
    return renamed


def oracle(streams: Streams, alpha_per_test: float) -> dict[str, float]:
    """What a single look could reach: an exact one-sided binomial test of the error
    counts at the end of the first step (as if its end were known in advance and only
    the error gate mattered), at promgate's per-test alpha and at 1%."""
    steps = streams.world.per_step
    cand = streams.cand_errors[:, :steps].sum(axis=1)
    bad = cand + streams.base_errors[:, :steps].sum(axis=1)
    n = streams.cand_total[:, :steps].sum(axis=1)
    rho = n / (n + streams.base_total[:, :steps].sum(axis=1))
    p = binom.sf(cand - 1, bad, rho)
    return {
        "per_test_alpha": float(np.mean(p < alpha_per_test)),
        "alpha_0.01": float(np.mean(p < 0.01)),
        "bad_events_first_step_mean": float(np.mean(bad)),
    }


def median_time(at: np.ndarray, world: World) -> float:
    return float(np.median(detect_times(at, world)))


def detect_times(at: np.ndarray, world: World) -> np.ndarray:
    """Seconds from the release's start to the rollback; inf when it never rolled back."""
    return np.where(at >= 0, (at + 1.0) * world.interval_s, np.inf)


def nearest_rank(values: np.ndarray, q: float) -> float:
    ordered = np.sort(values)
    return float(ordered[max(0, math.ceil(q * len(ordered)) - 1)])


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def summarise(result: Result, scenario: Scenario) -> Result:
    times = result.detect_s
    rolled = np.isfinite(times)
    low, high = wilson(int(rolled.sum()), len(times))
    result.figures = {
        "rollback_rate": float(rolled.mean()),
        "rollback_ci95": [low, high],
        "first_step_rate": float(np.mean(result.first_step)),
        "median_detect_s": _finite(float(np.median(times))),
        "p95_detect_s": _finite(nearest_rank(times, 0.95)),
        "bad_median": float(np.median(result.bad)),
        "bad_mean": float(np.mean(result.bad)),
        "extra_bad_median": float(np.median(result.extra_bad)),
        "horizon_bad_median": float(np.median(horizon_bad(result, scenario))),
        "median_end_s": float(np.median(result.end_s)),
        "p95_end_s": nearest_rank(result.end_s, 0.95),
        "inconclusive_rate": result.inconclusive,
        "extended_steps": result.extended,
    }
    return result


def horizon_bad(result: Result, scenario: Scenario) -> np.ndarray:
    """Bad requests served over the world's horizon: those served during the canary, plus,
    once promoted, the candidate's bad ratio on all traffic (at the mean rate) until the
    horizon. A rollback or a stop serves no more."""
    world = scenario.world
    after = np.maximum(0.0, world.horizon_s - result.end_s) * world.rps * scenario.bad_ratio()
    return result.bad + np.where(result.promoted, after, 0.0)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def figures(report: dict[str, Any], scenario: str, judge: str) -> dict[str, Any]:
    for entry in report["scenarios"]:
        if entry["name"] == scenario:
            found: dict[str, Any] = entry["judges"][judge]
            return found
    raise KeyError(scenario)


def goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's four goals, each with the measured figures and whether it is met. Peers
    are compared at equal false rollbacks (``-matched``: tuned on the scenario's world to
    promgate's measured A/A rate) and, more generously to them, at 1%."""
    pg = figures(report, "aa", PROMGATE)
    aa_names = [e["name"] for e in report["scenarios"] if e["kind"] == "aa"]
    worst = max(aa_names, key=lambda n: figures(report, n, PROMGATE)["rollback_rate"])
    headline = figures(report, HEADLINE, PROMGATE)
    regressions = [e["name"] for e in report["scenarios"] if e["kind"] == "regression"]
    oracle_power = report["oracle"]
    extend_min = report["world"]["extend_s"] / 60.0

    def time_of(name: str, judge: str) -> float:
        value = figures(report, name, judge)["median_detect_s"]
        return math.inf if value is None else float(value)

    def bad_of(name: str, judge: str, key: str = "bad_median") -> float:
        return float(figures(report, name, judge)[key])

    slower = {
        peer: [n for n in regressions if time_of(n, PROMGATE) > time_of(n, peer)]
        for peer in ("flagger-matched", "argo-matched", "flagger", "argo")
    }

    def listing(found: dict[str, list[str]]) -> str:
        return "; ".join(
            f"{peer}: {len(regressions) - len(names)}/{len(regressions)}"
            + (f" (not: {', '.join(names)})" if names else "")
            for peer, names in found.items()
        )

    def more_bad(key: str) -> dict[str, list[str]]:
        """Per peer, the regressions where promgate served more bad requests (``key``)."""
        return {
            peer: [n for n in regressions if bad_of(n, PROMGATE, key) > bad_of(n, peer, key)]
            for peer in (*MATCHED, *TUNED)
        }

    def bad_listing(key: str) -> str:
        parts = []
        for peer, names in more_bad(key).items():
            ours = {n: bad_of(n, PROMGATE, key) for n in regressions}
            fewer = sum(ours[n] < bad_of(n, peer, key) for n in regressions)
            equal = [n for n in regressions if ours[n] == bad_of(n, peer, key)]
            text = f"{peer}: fewer in {fewer}/{len(regressions)}"
            if equal:
                text += f", equal in {', '.join(equal)}"
            if names:
                text += ", MORE in " + ", ".join(
                    f"{n} ({ours[n]:.0f} vs {bad_of(n, peer, key):.0f})" for n in names
                )
            parts.append(text)
        return "; ".join(parts)

    horizon_min = report["world"]["horizon_s"] / 60.0
    more_in_horizon = more_bad("horizon_bad_median")
    return [
        {
            "goal": "false rollbacks <= 1% per release (A/A, all gates and looks)",
            "value": f"{pg['rollback_rate']:.2%} (95% CI up to {pg['rollback_ci95'][1]:.2%}); "
            f"worst A/A world {worst} "
            f"{figures(report, worst, PROMGATE)['rollback_rate']:.2%}",
            "met": all(figures(report, n, PROMGATE)["rollback_rate"] <= 0.01 for n in aa_names),
        },
        {
            "goal": ">= 95% detection of 2x errors within the 10% step (10 min on the peers' "
            f"clock; promgate's step may wait up to {extend_min:g} min more for evidence)",
            "value": f"{headline['first_step_rate']:.1%} in the 10% step, "
            f"{headline['inconclusive_rate']:.1%} stopped as inconclusive "
            f"({headline['rollback_rate']:.1%} rolled back over the release); one exact test "
            f"at the end of a 10 min step would reach {oracle_power['per_test_alpha']:.1%} at "
            f"the same alpha, {oracle_power['alpha_0.01']:.1%} at alpha 1%",
            "met": headline["first_step_rate"] >= 0.95,
        },
        {
            "goal": "median time to detect no worse than Flagger/Argo at equal false rollbacks",
            "value": f"2x: promgate {_fmt_time(time_of(HEADLINE, PROMGATE))}, "
            + ", ".join(
                f"{p} {_fmt_time(time_of(HEADLINE, p))}"
                for p in ("flagger-matched", "argo-matched")
            )
            + "; no worse in "
            + listing(slower),
            "met": not slower["flagger-matched"] and not slower["argo-matched"],
        },
        {
            "goal": "fewer bad requests served than every peer at equal false rollbacks, over "
            f"{horizon_min:g} min (a promoted candidate serves all traffic after)",
            "value": f"2x: promgate {bad_of(HEADLINE, PROMGATE, 'horizon_bad_median'):.0f}, "
            + ", ".join(f"{p} {bad_of(HEADLINE, p, 'horizon_bad_median'):.0f}" for p in MATCHED)
            + "; "
            + bad_listing("horizon_bad_median")
            + ". Counting the canary only: "
            + bad_listing("bad_median"),
            "met": not any(more_in_horizon[p] for p in MATCHED),
        },
    ]


def _fmt_time(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "never"
    return f"{value:.0f}s"


def _fmt_rate(value: float) -> str:
    if value == 0:
        return "0"
    return f"{value:.1%}" if value >= 0.001 else f"{value:.2%}"


def render(report: dict[str, Any]) -> str:
    world = report["world"]
    sizes = report["sizes"]
    pg = report["promgate"]
    worlds = report["calibration"]["worlds"]
    lines = [
        "# Decision benchmark",
        "",
        f"seed {report['seed']}; {sizes['aa_runs']} A/A releases, {sizes['runs']} per other "
        f"scenario; wall time {report.get('wall_s', 0):.0f} s on {report.get('workers', 1)} "
        "workers.",
        "",
        f"Release: steps {list(world['steps'])} % x {world['step_s']:g} s, one evaluation "
        f"every {world['interval_s']:g} s; {world['rps']:g} rps mean (+-{world['diurnal']:.0%} "
        f"diurnal), baseline errors {world['error_ratio']:.2%}, slow (> baseline p99) "
        f"{world['slow_ratio']:.2%}. promgate: the product's SequentialJudge and canary "
        f"strategy, alpha {pg['alpha_policy']:g} per release, {pg['alpha_per_test']:.5f} per "
        f"gate ({len(pg['gates'])} sequential gates, evidence carried over the steps); "
        f"`detect: {pg['detect']:g}` with power {pg['power']:g}: a step passes only once a "
        f"{pg['detect']:g}x regression is ruled out, so it may run up to "
        f"{world['extend_s']:g} s past its {world['step_s']:g} s (then it stops as "
        "inconclusive). The peers' steps are fixed.",
        "",
        "## Peer settings",
        "",
        f"Tuned on {report['calibration']['calibration_runs']} separate A/A releases of each "
        f"scenario's world: `flagger`, `argo`, `kayenta` to "
        f"{report['target_false_rollback']:.0%} false rollbacks per release, `-matched` to "
        f"promgate's measured A/A rate ({report['matched_false_rollback']:.2%}); counts "
        "picked on the main world. Cells: bound (k x usual ratio, or Kayenta's critical z) "
        "and the false-rollback rate on the calibration releases.",
        "",
        "| judge | setting (main world) | " + " | ".join(worlds) + " |",
        "|---|---|" + "---|" * len(worlds),
    ]
    for name in (*TUNED, *MATCHED, *DEFAULTS):
        cells = [
            f"{worlds[w][name]['bound']:.3g} "
            f"({_fmt_rate(worlds[w][name]['calibration_false_rollback'])})"
            for w in worlds
        ]
        lines.append(f"| {name} | {worlds['aa'][name]['chosen']} | " + " | ".join(cells) + " |")
    header = "| scenario | " + " | ".join(JUDGES) + " |"
    rule = "|---|" + "---|" * len(JUDGES)
    tables: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        (
            "Rollback rate (A/A and blips: false rollbacks; regressions: detection over the "
            "release, in brackets within the first step)",
            lambda f: (
                _fmt_rate(f["rollback_rate"])
                + (f" ({_fmt_rate(f['first_step_rate'])})" if f.get("_bad") else "")
            ),
        ),
        (
            "Time to detect from the release's start, median / p95 (never: not rolled back)",
            lambda f: f"{_fmt_time(f['median_detect_s'])} / {_fmt_time(f['p95_detect_s'])}",
        ),
        (
            "Bad requests (errors + slow) the candidate served until rollback (promgate: or "
            "an inconclusive stop), else over the whole canary: median (median beyond the "
            "baseline's ratios)",
            lambda f: f"{f['bad_median']:.0f} ({f['extra_bad_median']:.0f})",
        ),
        (
            "Bad requests served over the horizon: the canary's, plus all traffic's at the "
            "candidate's ratios from its promotion until the horizon (the longest release), "
            "median",
            lambda f: f"{f['horizon_bad_median']:.0f}",
        ),
        (
            "How long the release ran until rollback, stop or promotion: median / p95 (the "
            "peers' clock is fixed; promgate's steps wait for evidence)",
            lambda f: f"{_fmt_time(f['median_end_s'])} / {_fmt_time(f['p95_end_s'])}",
        ),
    ]
    for title, cell in tables:
        lines += ["", f"## {title}", "", header, rule]
        for entry in report["scenarios"]:
            bad = entry["kind"] == "regression"
            if title.startswith("Time") and not bad:
                continue
            cells = [cell(entry["judges"][j] | {"_bad": bad}) for j in JUDGES]
            lines.append(f"| {entry['label']} | " + " | ".join(cells) + " |")
    stopped = [
        f"{e['name']} {e['judges'][PROMGATE]['inconclusive_rate']:.1%}"
        for e in report["scenarios"]
        if e["judges"][PROMGATE]["inconclusive_rate"] > 0
    ]
    lines += [
        "",
        "promgate stopped as inconclusive (no data, or a regression not ruled out, for "
        "noDataTimeout): " + (", ".join(stopped) or "never") + ".",
        "",
        "## Goals",
        "",
        "| goal | measured | met |",
        "|---|---|---|",
    ]
    for goal in report["goals"]:
        lines.append(f"| {goal['goal']} | {goal['value']} | {'yes' if goal['met'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def machine_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for judge in JUDGES:
        aa = figures(report, "aa", judge)
        two = figures(report, HEADLINE, judge)
        median = two["median_detect_s"]
        lines.append(
            f"judge={judge} false_rollback_rate={aa['rollback_rate']:.4f} "
            f"power_2x_10pct={two['first_step_rate']:.4f} "
            f"median_detect_s={'inf' if median is None else f'{median:.0f}'} "
            f"bad_requests_median={two['horizon_bad_median']:.0f}"
        )
    return lines


def plot(report: dict[str, Any], path: Path) -> None:
    """Detection, time to detect and bad requests against the size of the regression."""
    by_name = {e["name"]: e for e in report["scenarios"]}
    errors = [(1.0, "aa")] + [
        (float(n[4:-1]), n) for n in by_name if n.startswith("err-") and n.count("-") == 1
    ]
    latency = [(0.0, "aa")] + [(float(n[4:-1]), n) for n in by_name if n.startswith("p99+")]
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    colours = {"promgate": "k", "flagger": "C0", "argo": "C1", "kayenta": "C2"}
    shown = [(PROMGATE, "-")] + [(j, "-") for j in MATCHED] + [(j, "--") for j in TUNED]
    panels = [
        (axes[0][0], errors, "rollback_rate", "rollback rate (at 1x: false)"),
        (axes[0][1], errors, "median_detect_s", "median time to detect (s)"),
        (axes[1][0], errors, "horizon_bad_median", "bad requests served over the horizon"),
        (axes[1][1], latency, "rollback_rate", "rollback rate (at 0%: false)"),
    ]
    for ax, xs, key, ylabel in panels:
        for judge, line in shown:
            values = [by_name[n]["judges"][judge][key] for _, n in xs]
            ys = [np.nan if v is None else v for v in values]
            colour = colours[judge.split("-")[0]]
            ax.plot([x for x, _ in xs], ys, color=colour, linestyle=line, marker="o", label=judge)
        ax.set_xlabel("p99 increase (%)" if xs is latency else "candidate error ratio (x baseline)")
        ax.set_ylabel(ylabel)
        if xs is errors:
            ax.set_xscale("log")
        if key == "horizon_bad_median":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(
        f"Decision benchmark, seed {report['seed']}: solid peers tuned to promgate's A/A "
        f"rate ({report['matched_false_rollback']:.2%}), dashed to "
        f"{report['target_false_rollback']:.0%}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
