"""A whole promgate set-up on loopback: example services, Prometheus and the sidecar.

The demo and the benchmarks run against it. Each (version, stage) gets its own example
service process, scraped with a ``stage`` target label; the sidecar runs in-process
with its built-in proxy listening per stage. Everything stops in :meth:`stop`.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from sidecar.actuators.proxy import ProxyActuator
from sidecar.analysis.prometheus import PrometheusSource
from sidecar.app import Sidecar
from sidecar.client import ApiClient
from sidecar.errors import PromgateError
from sidecar.local.loadgen import LoadGenerator
from sidecar.local.processes import (
    ManagedProcess,
    free_port,
    start_prometheus,
    url_is_ok,
    wait_until,
)
from sidecar.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SERVICE_SCRIPT = ROOT / "examples" / "service" / "demo_service.py"
BASE_ERROR_RATE = "0.002"
BASE_LATENCY_MS = "20"


@dataclass
class LocalStack:
    """Start with :meth:`start`, always :meth:`stop`."""

    workdir: Path
    policy: Path
    stages: Sequence[str]
    versions: Sequence[str]
    digests: dict[str, str]
    scrape_interval_s: float = 1.0
    processes: list[ManagedProcess] = field(default_factory=list)
    loads: list[LoadGenerator] = field(default_factory=list)
    ports: dict[tuple[str, str], int] = field(default_factory=dict)
    proxy_ports: dict[str, int] = field(default_factory=dict)
    prometheus_url: str = ""
    api_url: str = ""
    _sidecar: Sidecar | None = None
    _client: ApiClient | None = None

    @property
    def client(self) -> ApiClient:
        assert self._client is not None, "start() first"
        return self._client

    @property
    def proxy(self) -> ProxyActuator:
        assert self._sidecar is not None, "start() first"
        actuator = self._sidecar.actuator
        assert isinstance(actuator, ProxyActuator), "the stack runs the built-in proxy"
        return actuator

    def service_url(self, version: str, stage: str) -> str:
        return f"http://127.0.0.1:{self.ports[(version, stage)]}"

    def proxy_url(self, stage: str) -> str:
        return f"http://127.0.0.1:{self.proxy_ports[stage]}/"

    async def start(self) -> None:
        if not SERVICE_SCRIPT.exists():
            raise PromgateError(f"a source checkout is needed: {SERVICE_SCRIPT} is missing")
        for stage in self.stages:
            for version in self.versions:
                self.processes.append(self._service(version, stage))
        prometheus, self.prometheus_url = await start_prometheus(
            self.workdir,
            {s: [f"127.0.0.1:{self.ports[(v, s)]}" for v in self.versions] for s in self.stages},
            scrape_interval_s=self.scrape_interval_s,
            labels={stage: {"stage": stage} for stage in self.stages},
        )
        self.processes.append(prometheus)
        urls = [f"{self.service_url(v, s)}/healthz" for s in self.stages for v in self.versions]

        async def services_up() -> bool:
            return all(await asyncio.gather(*(url_is_ok(url) for url in urls)))

        await wait_until(services_up, 30, what="the example services to answer /healthz")
        await self._start_sidecar()
        jobs = "|".join(self.stages)
        await self.wait_for_value(
            f'count(up{{job=~"{jobs}"}} == 1)', len(urls), "Prometheus to scrape every service"
        )

    def _service(self, version: str, stage: str) -> ManagedProcess:
        port = self.ports[(version, stage)] = free_port()
        argv = [sys.executable, str(SERVICE_SCRIPT), "--port", str(port), "--version", version,
                "--digest", self.digests[version], "--error-rate", BASE_ERROR_RATE,
                "--latency-ms", BASE_LATENCY_MS]  # fmt: skip
        return ManagedProcess(argv, self.workdir / "logs", name=f"svc-{stage}-{version}").start()

    async def _start_sidecar(self) -> None:
        token = secrets.token_urlsafe(24)
        tokens = self.workdir / "tokens"
        tokens.write_text(f"admin local {token}\n")
        tokens.chmod(0o600)
        self.proxy_ports = {stage: free_port() for stage in self.stages}
        settings = Settings.load(
            policy=self.policy,
            listen=f"127.0.0.1:{free_port()}",
            prometheus_url=self.prometheus_url,
            ledger_path=self.workdir / "ledger.db",
            tokens_file=tokens,
            proxy_listen=",".join(f"{s}=127.0.0.1:{p}" for s, p in self.proxy_ports.items()),
        )
        self._sidecar = Sidecar(settings)
        await self._sidecar.start()
        self.api_url = f"http://{settings.listen}"
        self._client = ApiClient(self.api_url, token=token)

    async def wait_for_value(self, query: str, expected: float, what: str) -> None:
        """Poll Prometheus until ``query`` yields ``expected``."""
        source = PrometheusSource(self.prometheus_url)

        async def seen() -> bool:
            return (await source.query(query)).value == expected

        try:
            await wait_until(seen, 30, what=what, interval_s=0.2)
        finally:
            await source.close()

    def load(
        self, stage: str, rate: float, seconds: float, headers: dict[str, str] | None = None
    ) -> LoadGenerator:
        """Start bounded load through the stage's proxy; stopped with the stack."""
        generator = LoadGenerator(
            self.proxy_url(stage),
            rate,
            max_seconds=seconds,
            max_requests=int(rate * seconds) + 1,
            headers=headers or {},
        )
        generator.start()
        self.loads.append(generator)
        return generator

    async def fault(self, version: str, stage: str, fault: dict[str, float | None]) -> None:
        """Make one example service fail or slow down (see examples/service)."""
        url = f"{self.service_url(version, stage)}/admin/fault"
        async with aiohttp.ClientSession() as session, session.post(url, json=fault) as answer:
            answer.raise_for_status()

    async def stop(self) -> None:
        for load in self.loads:
            await load.stop()
        if self._client is not None:
            await self._client.close()
        if self._sidecar is not None:
            await self._sidecar.stop()
        for process in reversed(self.processes):
            await process.stop()
