"""The README's HAProxy worked example, end to end: a real HAProxy with two servers, its
Prometheus exporter scraped by a real Prometheus, the example receiver driving its
runtime API, the sidecar with the webhook actuator, and the example policy with short
timings. Releases alternate between the two servers, so each release's stable is the
server the previous candidate was deployed to.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from sidecar.actuators.webhook import standard_signature
from sidecar.analysis.prometheus import PrometheusSource
from sidecar.local.loadgen import LoadGenerator
from tests.e2e.conftest import Stack, bounded, demo_digest, gates_of
from tests.support.processes import (
    REPO_ROOT,
    ManagedProcess,
    free_port,
    launch_demo_service,
    start_prometheus,
    wait_answering,
    wait_for_value,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("haproxy") is None and not os.environ.get("CI"),
        reason="needs haproxy on PATH (`make test` installs it)",
    ),
]

EXAMPLE = REPO_ROOT / "examples" / "haproxy"
STAGE = "production"
LOAD_RPS = 50.0
LOAD_MAX_SECONDS = 240.0
PROMOTE_TIMEOUT_S = 90.0
RELEASES = {"1.0.0": 0.0, "1.1.0": 0.0, "1.2.0": 0.1, "1.3.0": 0.0}  # version -> error rate


def _runtime_api() -> Any:
    """The example receiver's HAProxy runtime API client, to read weights back."""
    spec = importlib.util.spec_from_file_location("haproxy_receiver", EXAMPLE / "receiver.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.HaproxyWeights


def short_policy(path: Path) -> Path:
    """examples/haproxy/policy.yaml with its gates unchanged and its timings short."""
    policy = yaml.safe_load((EXAMPLE / "policy.yaml").read_text())
    policy["analysis"] = {
        "interval": "1s",
        "confirm": 3,
        "noDataTimeout": "20s",
        "maxProviderHold": "60s",
    }
    stage = policy["stages"][0]
    stage["strategy"]["canary"] = {"steps": [20, 50], "stepDuration": "4s"}
    errors = stage["gates"]["slo"][0]
    # 100 candidate responses a step (10 s at 20% of 50 rps): enough for the sequential test
    # to convict a 10% failure rate in the first steps every time, not only in most runs
    errors.update(minRequests=10, minStepRequests=100)
    del errors["detect"], errors["detectFloor"]  # positive evidence takes minutes to gather
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


@dataclass
class Server:
    """One fixed HAProxy server (blue or green) and the release deployed to it."""

    name: str
    port: int
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class HaproxyStack(Stack):
    """The sidecar with the webhook actuator aimed at the example receiver, judging on a
    Prometheus that scrapes HAProxy; it has no example services of its own."""

    def __init__(self, workdir: Path) -> None:
        policy = short_policy(workdir / "policy.yaml")
        super().__init__(workdir, versions={STAGE: []}, prometheus=False, policy=policy)
        self.servers = {name: Server(name, free_port()) for name in ("blue", "green")}
        self.frontend = f"http://127.0.0.1:{free_port()}"
        self.metrics_port = free_port()
        self.receiver_url = f"http://127.0.0.1:{free_port()}"
        self.secret_file = workdir / "webhook-secret"
        self.secret_file.write_text(f"whsec_{base64.b64encode(secrets.token_bytes(24)).decode()}\n")
        self.secret_file.chmod(0o600)
        self.processes: list[ManagedProcess] = []
        self.weights = _runtime_api()(str(workdir / "haproxy.sock"), "app", ["blue", "green"])

    def sidecar_env(self, **overrides: str) -> dict[str, str]:
        return super().sidecar_env(
            PROMGATE_ACTUATOR="webhook",
            PROMGATE_WEBHOOK_URL=f"{self.receiver_url}/traffic",
            PROMGATE_WEBHOOK_SECRET_FILE=str(self.secret_file),
            **overrides,
        )

    async def start(self) -> HaproxyStack:
        config = (EXAMPLE / "haproxy.cfg").read_text()
        for old, new in {
            "127.0.0.1:8080": self.frontend.removeprefix("http://"),
            "127.0.0.1:8404": f"127.0.0.1:{self.metrics_port}",
            "127.0.0.1:9001": f"127.0.0.1:{self.servers['blue'].port}",
            "127.0.0.1:9002": f"127.0.0.1:{self.servers['green'].port}",
        }.items():
            assert old in config, old
            config = config.replace(old, new)
        (self.workdir / "haproxy.cfg").write_text(config)
        haproxy = self._start(["haproxy", "-db", "-f", "haproxy.cfg"], "haproxy")
        metrics = f"http://127.0.0.1:{self.metrics_port}/metrics"
        await wait_answering(haproxy, metrics, 15, what="HAProxy's exporter")
        receiver = self._start(
            [sys.executable, str(EXAMPLE / "receiver.py"),
             "--listen", self.receiver_url.removeprefix("http://"), "--socket", "haproxy.sock",
             "--backend", "app", "--servers", "blue,green",
             "--secret-file", str(self.secret_file)],
            "receiver",
        )  # fmt: skip
        await wait_answering(receiver, f"{self.receiver_url}/healthz", 15, what="the receiver")
        self.prometheus, self.prometheus_url = await start_prometheus(
            self.workdir, {"haproxy": [f"127.0.0.1:{self.metrics_port}"]}, scrape_interval_s=1.0
        )
        self.processes.append(self.prometheus)
        await self.start_sidecar()
        return self

    def _start(self, argv: list[str], name: str) -> ManagedProcess:
        process = ManagedProcess(argv, self.logs, name=name, cwd=self.workdir).start()
        self.processes.append(process)
        return process

    async def deploy(self, server: str, version: str) -> Server:
        """Replace whatever runs in ``server`` with ``version`` (its error rate from RELEASES)."""
        slot = self.servers[server]
        if slot.process is not None:
            await slot.process.stop()
        slot.process = launch_demo_service(
            self.logs,
            port=slot.port,
            version=version,
            digest=demo_digest(version),
            error_rate=RELEASES[version],
            latency_ms=20.0,
            name=f"{server}-{version}",
        )
        self.processes.append(slot.process)
        await wait_answering(slot.process, f"{slot.url}/healthz", 15, what=f"{version}")
        return slot

    async def promote(self, version: str, server: str) -> tuple[int, dict[str, Any]]:
        """Deploy ``version`` to ``server``, then ``promgate promote --backend --wait``."""
        slot = await self.deploy(server, version)
        result = await self.cli(
            "promote", "--manifest", str(self.manifest_file(version)), "--stage", STAGE,
            "--upstream", slot.url, "--backend", server, "--wait",
            timeout_s=PROMOTE_TIMEOUT_S,
        )  # fmt: skip
        [promotion] = [
            p for p in await self.client.list(service="demo", stage=STAGE)
            if p["version"] == version
        ]  # fmt: skip
        return result.code, promotion

    async def weight(self, server: str) -> int:
        """The server's current weight, read back from HAProxy's runtime API."""
        answer: str = await self.weights.command(f"get weight app/{server}")
        return int(answer.split(maxsplit=1)[0])

    async def stop(self) -> None:
        await super().stop()
        for process in reversed(self.processes):
            if process.running:
                await process.stop()


@pytest.fixture
async def haproxy_stack(workdir: Path) -> AsyncIterator[HaproxyStack]:
    stack = HaproxyStack(workdir)
    try:
        yield await stack.start()
    finally:
        await stack.stop()


@bounded(240)
async def test_haproxy_promotes_rolls_back_and_keeps_working_on_the_next_release(
    haproxy_stack: HaproxyStack,
) -> None:
    """Healthy 1.1.0 on green is promoted over 1.0.0 on blue; 1.2.0 failing 10% of
    requests on blue is rolled back; healthy 1.3.0 on blue is promoted over 1.1.0, the
    previous candidate, now the stable on green."""
    stack = haproxy_stack
    code, first = await stack.promote("1.0.0", "blue")
    assert (code, first["phase"]) == (0, "promoted"), first
    assert (await stack.weight("blue"), await stack.weight("green")) == (100, 0)

    load = LoadGenerator(
        stack.frontend + "/",
        LOAD_RPS,
        max_seconds=LOAD_MAX_SECONDS,
        max_requests=int(LOAD_RPS * LOAD_MAX_SECONDS),
    )
    load.start()
    stack.loads.append(load)
    source = PrometheusSource(stack.prometheus_url)
    try:
        await wait_for_value(
            source, 'sum(haproxy_server_http_responses_total{proxy="app",server="blue"}) > 0'
        )
    finally:
        await source.close()

    code, healthy = await stack.promote("1.1.0", "green")
    assert (code, healthy["phase"]) == (0, "promoted"), healthy
    assert (healthy["candidate_backend"], healthy["baseline_backend"]) == ("green", "blue")
    assert (await stack.weight("blue"), await stack.weight("green")) == (0, 100)
    judged = [g for _, g in gates_of(await stack.events(healthy["id"])) if g["value"] is not None]
    assert {g["gate"] for g in judged} == {"error-ratio", "response-time"}
    assert any(g["baseline"] is not None for g in judged), "the stable server was measured"

    code, failing = await stack.promote("1.2.0", "blue")
    assert (code, failing["phase"]) == (1, "rolled_back"), failing
    assert "error-ratio" in failing["reason"], failing["reason"]
    assert (failing["candidate_backend"], failing["baseline_backend"]) == ("blue", "green")
    assert (await stack.weight("blue"), await stack.weight("green")) == (0, 100)

    code, next_release = await stack.promote("1.3.0", "blue")
    assert (code, next_release["phase"]) == (0, "promoted"), next_release
    assert next_release["baseline"] == healthy["artifact"]
    assert (next_release["candidate_backend"], next_release["baseline_backend"]) == (
        "blue",
        "green",
    )
    assert (await stack.weight("blue"), await stack.weight("green")) == (100, 0)
    stats = await load.stop()
    assert stats.statuses[503] == 0, f"HAProxy had no server to route to: {stats.statuses}"


@bounded(60)
async def test_the_example_receiver_refuses_unsigned_and_replayed_states(
    haproxy_stack: HaproxyStack,
) -> None:
    """A state moves HAProxy's weights only when signed with the shared secret, recently,
    and only once."""
    state = {
        "promotion_id": "p1", "sequence": 1, "service": "demo", "stage": STAGE,
        "preview": None,
        "backends": [{"digest": demo_digest("9.9.9"), "upstream": "", "weight": 100,
                      "role": "candidate", "backend": "green", "retain_until": None}],
    }  # fmt: skip
    body = json.dumps(state).encode()
    secret = haproxy_stack.secret_file.read_bytes().strip()

    def signed(at: int) -> dict[str, str]:
        signature = standard_signature(body, secret, "p1:1", at)
        return {"webhook-id": "p1:1", "webhook-timestamp": str(at), "webhook-signature": signature}

    now = int(time.time())
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        for headers, status in (({}, 401), (signed(now - 600), 401), (signed(now), 200),
                                (signed(now), 409)):  # fmt: skip
            async with session.post(
                f"{haproxy_stack.receiver_url}/traffic", data=body, headers=headers
            ) as response:
                assert response.status == status, (headers, await response.text())
            if status == 401:
                assert await haproxy_stack.weight("green") == 0
    assert (await haproxy_stack.weight("blue"), await haproxy_stack.weight("green")) == (0, 100)
