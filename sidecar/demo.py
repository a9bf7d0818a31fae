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
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.table import Table

from sidecar.analysis.prometheus import PrometheusSource
from sidecar.app import Sidecar
from sidecar.client import ApiClient
from sidecar.loadgen import LoadGenerator
from sidecar.localrun import ManagedProcess, free_port, start_prometheus, url_is_ok, wait_until
from sidecar.progress import follow, summarize_gates
from sidecar.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SERVICE_SCRIPT = ROOT / "examples" / "service" / "demo_service.py"
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


class DemoEnvironment:
    """The processes and the sidecar the demo runs against."""

    def __init__(self, workdir: Path, console: Console) -> None:
        self.workdir = workdir
        self.console = console
        self.processes: list[ManagedProcess] = []
        self.ports: dict[tuple[str, str], int] = {}
        self.loads: list[LoadGenerator] = []
        self.sidecar: Sidecar | None = None
        self.client: ApiClient | None = None
        self.prometheus_url = ""

    def service_url(self, version: str, stage: str) -> str:
        return f"http://127.0.0.1:{self.ports[(version, stage)]}"

    async def start(self) -> None:
        self.console.print("[bold]Starting[/] 8 example services, Prometheus and the sidecar …")
        for stage in STAGES:
            for version in VERSIONS:
                port = free_port()
                self.ports[(version, stage)] = port
                self.processes.append(
                    ManagedProcess(
                        [
                            sys.executable,
                            str(SERVICE_SCRIPT),
                            "--port",
                            str(port),
                            "--version",
                            version,
                            "--digest",
                            demo_digest(version),
                            "--error-rate",
                            "0.002",
                            "--latency-ms",
                            "20",
                        ],
                        self.workdir / "logs",
                        name=f"demo-{stage}-{version}",
                    ).start()
                )
        prometheus, self.prometheus_url = await start_prometheus(
            self.workdir,
            {stage: [f"127.0.0.1:{self.ports[(v, stage)]}" for v in VERSIONS] for stage in STAGES},
            scrape_interval_s=1.0,
            labels={stage: {"stage": stage} for stage in STAGES},
        )
        self.processes.append(prometheus)
        urls = [f"{self.service_url(v, s)}/healthz" for s in STAGES for v in VERSIONS]

        async def services_up() -> bool:
            return all(await asyncio.gather(*(url_is_ok(url) for url in urls)))

        await wait_until(services_up, 20, what="the example services to answer /healthz")
        token = secrets.token_urlsafe(24)
        tokens = self.workdir / "tokens"
        tokens.write_text(f"admin demo {token}\n")
        tokens.chmod(0o600)
        proxy_ports = {stage: free_port() for stage in STAGES}
        settings = Settings.load(
            policy=POLICY,
            listen=f"127.0.0.1:{free_port()}",
            prometheus_url=self.prometheus_url,
            ledger_path=self.workdir / "ledger.db",
            tokens_file=tokens,
            proxy_listen=",".join(f"{s}=127.0.0.1:{p}" for s, p in proxy_ports.items()),
        )
        self.sidecar = Sidecar(settings)
        await self.sidecar.start()
        self.client = ApiClient(f"http://{settings.listen}", token=token)
        await self._wait_for_first_scrape()
        for stage, port in proxy_ports.items():
            self.loads.append(self._load(f"http://127.0.0.1:{port}/", LOAD_RPS[stage]))
        self.loads.append(
            self._load(
                f"http://127.0.0.1:{proxy_ports['staging']}/",
                PREVIEW_RPS,
                {"X-Promgate-Preview": "1"},
            )
        )
        self.console.print(
            f"  Prometheus {self.prometheus_url} · API http://{settings.listen} · proxies "
            + ", ".join(f"{s} :{p}" for s, p in proxy_ports.items())
        )

    def _load(self, url: str, rate: float, headers: dict[str, str] | None = None) -> LoadGenerator:
        load = LoadGenerator(
            url,
            rate,
            max_seconds=MAX_DEMO_SECONDS,
            max_requests=int(rate * MAX_DEMO_SECONDS),
            headers=headers or {},
        )
        load.start()
        return load

    async def _wait_for_first_scrape(self) -> None:
        source = PrometheusSource(self.prometheus_url)
        expected = len(STAGES) * len(VERSIONS)

        async def all_up() -> bool:
            measured = await source.query('count(up{job=~"staging|production"} == 1)')
            return measured.value == expected

        try:
            await wait_until(all_up, 30, what="Prometheus to scrape every example service")
        finally:
            await source.close()

    async def stop(self) -> None:
        for load in self.loads:
            await load.stop()
        if self.client is not None:
            await self.client.close()
        if self.sidecar is not None:
            await self.sidecar.stop()
        for process in reversed(self.processes):
            await process.stop()


@contextlib.asynccontextmanager
async def demo_environment(console: Console) -> AsyncIterator[DemoEnvironment]:
    with tempfile.TemporaryDirectory(prefix="promgate-demo-") as tmp:
        env = DemoEnvironment(Path(tmp), console)
        try:
            await env.start()
            yield env
        finally:
            await env.stop()


async def promote(env: DemoEnvironment, version: str, stage: str, title: str) -> dict[str, Any]:
    assert env.client is not None
    created = await env.client.create(
        demo_manifest(version), stage, env.service_url(version, stage)
    )
    return await follow(env.client, created["id"], env.console, title=title)


async def inject_fault(env: DemoEnvironment, scenario: Scenario, promotion_id: str) -> None:
    """Blip: 1 s of 30% errors once the canary has traffic; regression: lasting errors and
    latency from the start."""
    assert env.client is not None
    url = env.service_url(scenario.version, "production") + "/admin/fault"
    if scenario.fault == "blip":

        async def has_traffic() -> bool:
            assert env.client is not None
            return int((await env.client.get(promotion_id))["weight"]) > 0

        await wait_until(has_traffic, 60, what="canary traffic", interval_s=0.2)
        await asyncio.sleep(3.0)
        fault: dict[str, float | None] = {"error_rate": 0.3, "latency_ms": 20, "duration_s": 1.0}
    else:
        fault = {"error_rate": 0.3, "latency_ms": 400, "duration_s": None}
    async with aiohttp.ClientSession() as session, session.post(url, json=fault) as response:
        response.raise_for_status()


async def run_scenario(env: DemoEnvironment, scenario: Scenario, number: int) -> Outcome:
    assert env.client is not None
    started = time.monotonic()
    env.console.rule(f"[bold]{number}. {scenario.title}[/]: {scenario.version}")
    staged = await promote(
        env, scenario.version, "staging", f"{scenario.version} → staging (blue-green)"
    )
    final, stage = staged, "staging"
    if staged["phase"] == "promoted":
        stage = "production"
        created = await env.client.create(
            demo_manifest(scenario.version), stage, env.service_url(scenario.version, stage)
        )
        fault = (
            asyncio.create_task(inject_fault(env, scenario, created["id"]))
            if scenario.fault != "none"
            else None
        )
        final = await follow(
            env.client,
            created["id"],
            env.console,
            title=f"{scenario.version} → production (canary)",
        )
        if fault is not None:
            fault.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fault
    counts = summarize_gates([e async for e in env.client.events(final["id"])])
    return Outcome(
        scenario,
        final["phase"],
        stage,
        time.monotonic() - started,
        sum(c["transient"] for c in counts.values()),
        sum(c["persistent"] for c in counts.values()),
        final.get("reason") or "",
    )


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
    if not SERVICE_SCRIPT.exists():
        console.print(f"promgate demo needs a source checkout: {SERVICE_SCRIPT} is missing")
        return 2
    started = time.monotonic()
    outcomes: list[Outcome] = []
    async with demo_environment(console) as env:
        console.rule("[bold]0. first release[/]: nothing to compare with, so it goes straight in")
        for stage in STAGES:
            await promote(env, VERSIONS[0], stage, f"{VERSIONS[0]} → {stage}")
        for number, scenario in enumerate(SCENARIOS, start=1):
            outcomes.append(await run_scenario(env, scenario, number))
    console.print(summary_table(outcomes))
    console.print(f"Finished in {time.monotonic() - started:.0f}s; every process stopped.")
    console.print(NEXT_STEPS)
    return 0 if all(o.phase == o.scenario.expected for o in outcomes) else 1
