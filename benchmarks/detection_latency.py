"""Detection latency: how long a bad canary keeps receiving traffic after it goes bad.

One Prometheus (1 s scrapes), one in-process sidecar with the built-in proxy, bounded
production-like load through the proxy, and one example service per release. Each run
promotes a fresh candidate release; during its first canary step, at a random moment
(seeded; printed) the candidate starts failing 30% of its requests for good. Measured,
from the proxy's own request counters (``ProxyActuator.routed``), polled every 20 ms:

    detection = (moment the proxy routed its last request to the candidate)
                - (moment the fault was sent to the candidate)

The last-routed moment is the first poll that saw the candidate's final count, so it
errs late by at most one poll. For comparison each run also shows when the sidecar
decided the rollback and when the actuation was applied (its event log, wall clock).
See benchmarks/README.md. Run: ``make bench-latency`` or
``.venv/bin/python benchmarks/detection_latency.py [--runs N] [--seed S]``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar.client import TERMINAL_KINDS, ApiClient
from sidecar.domain.policy import Analysis, load_policy
from sidecar.errors import PromgateError
from sidecar.local.demo import demo_digest, demo_manifest
from sidecar.local.processes import wait_until
from sidecar.local.stack import ROOT, LocalStack

POLICY = Path(__file__).resolve().with_name("latency-policy.yaml")
REFERENCE_POLICY = ROOT / "examples" / "policy.yaml"
STAGE = "production"
STABLE_VERSION = "1.0.0"
SCRAPE_INTERVAL_S = 1.0
LOAD_RPS = 200.0
FAULT: dict[str, float | None] = {"error_rate": 0.3, "duration_s": None}  # latency unchanged
FAULT_OFFSET_S = (1.0, 6.0)  # after the candidate's first request
ROLLBACK_DEADLINE_S = 30.0
POLL_S = 0.02
PHASE_POLL_S = 0.1
SETTLE_S = 0.5  # after the rollback is seen, the count must stay put this long


def candidate_version(number: int) -> str:
    return f"2.0.{number}"


@dataclass
class RunResult:
    number: int
    version: str
    offset_s: float
    detection_s: float | None = None  # fault -> last request routed to the candidate
    decided_s: float | None = None  # fault -> rolled_back event
    applied_s: float | None = None  # fault -> rollback actuation event
    after_fault: int = 0  # requests routed to the candidate after the fault
    reason: str = ""
    failure: str | None = None


async def start_stack(workdir: Path, runs: int) -> LocalStack:
    """One stable and one candidate release per run, the stable one already promoted and
    carrying bounded load through the proxy."""
    versions = [STABLE_VERSION, *(candidate_version(n) for n in range(1, runs + 1))]
    stack = LocalStack(workdir, POLICY, [STAGE], versions, {v: demo_digest(v) for v in versions},
                       scrape_interval_s=SCRAPE_INTERVAL_S)  # fmt: skip
    await stack.start()
    first = await stack.client.create(
        demo_manifest(STABLE_VERSION), STAGE, stack.service_url(STABLE_VERSION, STAGE)
    )
    if first["phase"] != "promoted":
        raise RuntimeError(f"the first release did not go straight in: {first['phase']}")
    # Load lasts as long as the worst case of every run, and no longer.
    stack.load(STAGE, LOAD_RPS, 60.0 + runs * (FAULT_OFFSET_S[1] + ROLLBACK_DEADLINE_S + 10.0))
    # The stable release's traffic must be in Prometheus before the first baseline.
    await stack.wait_for_value(
        f'count(demo_requests_total{{stage="{STAGE}", digest="{demo_digest(STABLE_VERSION)}", '
        'code="200"} > 0)', 1, "Prometheus to see the stable release's traffic")  # fmt: skip
    return stack


def routed_to(stack: LocalStack, digest: str) -> int:
    return stack.proxy.routed(STAGE).get(digest, 0)


async def watch_phase(client: ApiClient, promotion_id: str, seen: dict[str, Any]) -> None:
    """Record the first terminal phase of the promotion and when it was seen (monotonic)."""
    while True:
        promotion = await client.get(promotion_id)
        if promotion["phase"] in TERMINAL_KINDS:
            seen.update(phase=promotion["phase"], reason=promotion.get("reason") or "")
            seen["at"] = time.monotonic()
            return
        await asyncio.sleep(PHASE_POLL_S)


async def measure(stack: LocalStack, result: RunResult, promotion_id: str, injected: float) -> None:
    """Poll the proxy's count for the candidate until the promotion ended and it settled."""
    digest = demo_digest(result.version)
    start_count = last_count = routed_to(stack, digest)
    last_change = injected
    seen: dict[str, Any] = {}
    watcher = asyncio.create_task(watch_phase(stack.client, promotion_id, seen))
    deadline = injected + ROLLBACK_DEADLINE_S
    try:
        while True:
            now = time.monotonic()
            count = routed_to(stack, digest)
            if count != last_count:
                last_count, last_change = count, now
            if watcher.done():
                watcher.result()  # an API failure ends the run here
                if now - seen["at"] >= SETTLE_S:
                    break
            if now > deadline:
                result.failure = (
                    f"no rollback within {ROLLBACK_DEADLINE_S:g}s of the fault "
                    f"({last_count - start_count} requests reached the candidate since)"
                )
                return
            await asyncio.sleep(POLL_S)
    finally:
        watcher.cancel()
    result.after_fault = last_count - start_count
    result.reason = seen["reason"]
    if seen["phase"] != "rolled_back":
        result.failure = f"ended {seen['phase']} instead of rolled_back: {seen['reason']}"
        return
    result.detection_s = last_change - injected


async def event_times(client: ApiClient, promotion_id: str) -> tuple[float | None, float | None]:
    """Wall-clock times of the rolled_back event and of the actuation that followed it."""
    decided = applied = None
    async for event in client.events(promotion_id):
        if event["kind"] == "rolled_back":
            decided = event["at"]
        elif event["kind"] == "actuation" and decided is not None and applied is None:
            applied = event["at"]
    return decided, applied


async def run_once(stack: LocalStack, number: int, rng: random.Random) -> RunResult:
    version = candidate_version(number)
    digest = demo_digest(version)
    result = RunResult(number, version, rng.uniform(*FAULT_OFFSET_S))
    created = await stack.client.create(
        demo_manifest(version), STAGE, stack.service_url(version, STAGE)
    )
    promotion_id = created["id"]

    async def has_traffic() -> bool:
        return routed_to(stack, digest) > 0

    await wait_until(has_traffic, 10, what=f"traffic to {version}", interval_s=POLL_S)
    await asyncio.sleep(result.offset_s)  # the random moment is the point: not a wait for state
    promotion = await stack.client.get(promotion_id)
    if promotion["phase"] != "progressing" or promotion["step_index"] != 0:
        result.failure = (
            f"not in canary step 1 when the fault was due: phase {promotion['phase']}, "
            f"step index {promotion['step_index']}, reason {promotion.get('reason')!r}"
        )
        await abort(stack.client, promotion_id)
        return result
    injected_wall, injected = time.time(), time.monotonic()
    await stack.fault(version, STAGE, FAULT)
    await measure(stack, result, promotion_id, injected)
    if result.failure is not None:
        await abort(stack.client, promotion_id)
        return result
    decided, applied = await event_times(stack.client, promotion_id)
    result.decided_s = decided - injected_wall if decided is not None else None
    result.applied_s = applied - injected_wall if applied is not None else None
    return result


async def abort(client: ApiClient, promotion_id: str) -> None:
    """Stop a promotion that did not end by itself, so the next run can start."""
    try:
        await client.abort(promotion_id)
    except PromgateError as exc:  # it may have ended meanwhile
        print(f"    (abort of {promotion_id}: {exc})")


def nearest_rank(values: Sequence[float], percent: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(percent / 100 * len(ordered))) - 1]


def seconds(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:6.2f}"


def print_run(result: RunResult) -> None:
    head = f"run {result.number:2d}  {result.version:<7} fault at +{result.offset_s:4.2f}s"
    if result.failure is not None:
        print(f"{head}  FAILED: {result.failure}")
        return
    gates = "; ".join(part.split(" above")[0] for part in result.reason.split("; "))
    print(
        f"{head}  last routed {seconds(result.detection_s)}s  "
        f"decided {seconds(result.decided_s)}s  applied {seconds(result.applied_s)}s  "
        f"{result.after_fault:4d} req after fault  [{gates}]"
    )


def print_summary(results: list[RunResult]) -> None:
    ok = [r for r in results if r.failure is None]
    rows = {
        "last request routed": [r.detection_s for r in ok if r.detection_s is not None],
        "rollback decided": [r.decided_s for r in ok if r.decided_s is not None],
        "rollback applied": [r.applied_s for r in ok if r.applied_s is not None],
    }
    print()
    print(f"seconds from fault to ...    {'median':>7} {'p95':>7} {'min':>7} {'max':>7}")
    for name, values in rows.items():
        if not values:
            print(f"{name:<28} {'n/a':>7}")
            continue
        cells = (
            statistics.median(values),
            nearest_rank(values, 95),
            min(values),
            max(values),
        )
        print(f"{name:<28} " + " ".join(f"{v:7.2f}" for v in cells))
    print(f"runs: {len(results)}, rolled back in time: {len(ok)}, failed: {len(results) - len(ok)}")


def check_policy() -> Analysis:
    """The benchmark policy must judge exactly like the product's example production stage."""
    bench, reference = load_policy(POLICY), load_policy(REFERENCE_POLICY)
    gates = bench.stage(STAGE).gates.slo
    if gates != reference.stage(STAGE).gates.slo:
        raise SystemExit(f"{POLICY}: SLO gates differ from {REFERENCE_POLICY}'s {STAGE} stage")
    analysis = bench.analysis_for(bench.stage(STAGE))
    if (analysis.confirm, analysis.alpha) != (Analysis().confirm, Analysis().alpha):
        raise SystemExit(f"{POLICY}: confirm and alpha must be the product defaults")
    return analysis


async def main_async(runs: int, seed: int) -> int:
    analysis = check_policy()
    canary = load_policy(POLICY).stage(STAGE).strategy.canary
    assert canary is not None
    rng = random.Random(seed)
    print(
        f"seed={seed} runs={runs} load={LOAD_RPS:g} rps canary={canary.steps[0]}% "
        f"scrape={SCRAPE_INTERVAL_S:g}s interval={analysis.interval:g}s "
        f"confirm={analysis.confirm} alpha={analysis.alpha:g} fault={FAULT} "
        f"at +{FAULT_OFFSET_S[0]:g}..{FAULT_OFFSET_S[1]:g}s after the candidate's first request"
    )
    started = time.monotonic()
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="promgate-bench-") as tmp:
        stack = await start_stack(Path(tmp), runs)
        try:
            print(f"set-up done in {time.monotonic() - started:.1f}s")
            for number in range(1, runs + 1):
                result = await run_once(stack, number, rng)
                results.append(result)
                print_run(result)
        finally:
            await stack.stop()
    print_summary(results)
    print(f"wall time {time.monotonic() - started:.1f}s; every process stopped")
    detection = [r.detection_s for r in results if r.detection_s is not None]
    if detection:
        median, p95 = f"{statistics.median(detection):.2f}", f"{nearest_rank(detection, 95):.2f}"
    else:
        median = p95 = "nan"
    print(f"detection_median_s={median} detection_p95_s={p95} runs={len(detection)}")
    return 1 if any(r.failure is not None for r in results) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=12, help="candidate releases (default 12)")
    parser.add_argument("--seed", type=int, default=None, help="RNG seed (default: random)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    return asyncio.run(main_async(args.runs, seed))


if __name__ == "__main__":
    sys.exit(main())
