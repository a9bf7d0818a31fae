"""`promgate demo`: three releases of an example service, judged on a real Prometheus.

Starts Prometheus, four versions of the example service per stage, the sidecar with the
built-in proxy and bounded load, then promotes: a healthy release, one with a single
short error blip (transient: still promoted) and one with a sustained regression
(persistent: rolled back). Everything runs on 127.0.0.1 and is stopped at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sidecar.local.processes import wait_until
from sidecar.local.stack import ROOT, LocalStack
from sidecar.progress import follow, summarize_gates

POLICY = ROOT / "examples" / "policy.yaml"
STAGES = ("staging", "production")
VERSIONS = ("1.0.0", "1.1.0", "1.2.0", "1.3.0")
LOAD_RPS = {"production": 60.0, "staging": 25.0}
PREVIEW_RPS = 20.0
MAX_DEMO_SECONDS = 300.0


def demo_digest(version: str) -> str:
    return "sha256:" + hashlib.sha256(f"promgate-demo:{version}".encode()).hexdigest()


def demo_manifest(version: str) -> dict[str, Any]:
    """A complete release manifest, as a CI pipeline would hand it over."""
    digest = demo_digest(version)
    commit = hashlib.sha1(version.encode()).hexdigest()  # an example commit id
    return {
        "apiVersion": "promgate/v1",
        "service": "demo",
        "artifact": f"registry.example.com/shop/demo:{version}@{digest}",
        "version": version,
        "build": {
            "id": f"build-{version}",
            "number": int(version.replace(".", "")),
            "url": f"https://ci.example.com/shop/demo/builds/{version}",
        },
        "source": {
            "repository": "https://git.example.com/shop/demo",
            "commit": commit,
            "ref": "refs/heads/main",
        },
        "createdAt": datetime.now(UTC).isoformat(),
        "checks": {
            "vulnerabilities": {"critical": 0, "high": 0, "medium": 2, "low": 5},
            "tests": {"passed": 412, "failed": 0, "skipped": 3},
        },
        "compatibility": {"postgres": ["14", "15"]},
        "secrets": [{"name": "db-password", "ref": "k8s://shop/demo-db#password"}],
    }


@dataclass
class Scenario:
    title: str
    version: str
    fault: str  # "none", "blip" or "regression"
    expected: str


SCENARIOS = (
    Scenario("healthy release", VERSIONS[1], "none", "promoted"),
    Scenario("one short error blip", VERSIONS[2], "blip", "promoted"),
    Scenario("sustained regression", VERSIONS[3], "regression", "rolled_back"),
)


@dataclass
class Outcome:
    scenario: Scenario
    phase: str
    stage: str
    seconds: float
    transient: int
    persistent: int
    reason: str


@contextlib.asynccontextmanager
async def demo_stack(console: Console) -> AsyncIterator[LocalStack]:
    """The demo's services, Prometheus, sidecar and load; all stopped on the way out."""
    with tempfile.TemporaryDirectory(prefix="promgate-demo-") as tmp:
        stack = LocalStack(
            Path(tmp), POLICY, STAGES, VERSIONS, {v: demo_digest(v) for v in VERSIONS}
        )
        console.print("[bold]Starting[/] 8 example services, Prometheus and the sidecar …")
        try:
            await stack.start()
            for stage in STAGES:
                stack.load(stage, LOAD_RPS[stage], MAX_DEMO_SECONDS)
            stack.load("staging", PREVIEW_RPS, MAX_DEMO_SECONDS, {"X-Promgate-Preview": "1"})
            console.print(
                f"  Prometheus {stack.prometheus_url} · API {stack.api_url} · proxies "
                + ", ".join(f"{s} :{p}" for s, p in stack.proxy_ports.items())
            )
            yield stack
        finally:
            await stack.stop()


async def promote(
    stack: LocalStack,
    console: Console,
    version: str,
    stage: str,
    title: str,
    *,
    scenario: Scenario | None = None,
) -> dict[str, Any]:
    """Release ``version`` to ``stage`` and follow it to its end, injecting the fault of
    ``scenario`` (if any) meanwhile."""
    created = await stack.client.create(
        demo_manifest(version), stage, stack.service_url(version, stage)
    )
    if scenario is None or scenario.fault == "none":
        return await follow(stack.client, created["id"], console, title=title)
    fault = asyncio.create_task(inject_fault(stack, scenario, created["id"]))
    final = await follow(stack.client, created["id"], console, title=title)
    fault.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await fault
    return final


async def inject_fault(stack: LocalStack, scenario: Scenario, promotion_id: str) -> None:
    """Blip: 1.5 s of 50% errors a few seconds into the canary; regression: lasting errors
    and latency from the start."""
    if scenario.fault == "blip":

        async def has_traffic() -> bool:
            return int((await stack.client.get(promotion_id))["weight"]) > 0

        await wait_until(has_traffic, 60, what="canary traffic", interval_s=0.2)
        await asyncio.sleep(3.0)  # part of the story: the blip comes after a clean start
        await stack.fault(
            scenario.version, "production", {"error_rate": 0.5, "latency_ms": 20, "duration_s": 1.5}
        )
    else:
        await stack.fault(
            scenario.version,
            "production",
            {"error_rate": 0.3, "latency_ms": 400, "duration_s": None},
        )


async def run_scenario(
    stack: LocalStack, console: Console, scenario: Scenario, number: int
) -> Outcome:
    started = time.monotonic()
    version = scenario.version
    console.rule(f"[bold]{number}. {scenario.title}[/]: {version}")
    final = await promote(stack, console, version, "staging", f"{version} → staging (blue-green)")
    stage = "staging"
    if final["phase"] == "promoted":
        stage = "production"
        title = f"{version} → production (canary)"
        final = await promote(stack, console, version, stage, title, scenario=scenario)
    counts = summarize_gates([e async for e in stack.client.events(final["id"])])
    return Outcome(
        scenario, final["phase"], stage, time.monotonic() - started,
        sum(c["transient"] for c in counts.values()),
        sum(c["persistent"] for c in counts.values()),
        final.get("reason") or "",
    )  # fmt: skip


def summary_table(outcomes: list[Outcome]) -> Table:
    table = Table(title="promgate demo: summary")
    for column in (
        "scenario",
        "version",
        "stage",
        "outcome",
        "transient",
        "persistent",
        "time",
        "reason",
    ):
        table.add_column(column, overflow="fold")
    colours = {"promoted": "green", "rolled_back": "red"}
    for o in outcomes:
        ok = o.phase == o.scenario.expected
        table.add_row(
            o.scenario.title,
            o.scenario.version,
            o.stage,
            f"[{colours.get(o.phase, 'yellow')}]{o.phase}[/]" + ("" if ok else " (unexpected)"),
            str(o.transient),
            str(o.persistent),
            f"{o.seconds:.0f}s",
            o.reason[:160],
        )
    return table


NEXT_STEPS = """[bold]Where to look next[/]
  promgate policy check examples/policy.yaml   the policy the demo ran under
  promgate serve --policy examples/policy.yaml run the sidecar yourself (README: Running it)
  promgate promote --manifest examples/manifests/release.json --stage staging --wait
  dashboards/, alerts/                         dashboard and alert rules on promgate_* metrics
"""


async def run_demo(console: Console | None = None) -> int:
    """Run the demo end to end; 0 when every scenario ended as expected."""
    console = console or Console()
    started = time.monotonic()
    outcomes: list[Outcome] = []
    async with demo_stack(console) as stack:
        console.rule("[bold]0. first release[/]: nothing to compare with, so it goes straight in")
        for stage in STAGES:
            await promote(stack, console, VERSIONS[0], stage, f"{VERSIONS[0]} → {stage}")
        for number, scenario in enumerate(SCENARIOS, start=1):
            outcomes.append(await run_scenario(stack, console, scenario, number))
    console.print(summary_table(outcomes))
    console.print(f"Finished in {time.monotonic() - started:.0f}s; every process stopped.")
    console.print(NEXT_STEPS)
    return 0 if all(o.phase == o.scenario.expected for o in outcomes) else 1
