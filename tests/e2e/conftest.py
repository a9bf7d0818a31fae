"""End-to-end fixtures: real example services, a real Prometheus and the sidecar as a process.

A :class:`Stack` starts, for one or two stages, one example service per version, a
Prometheus that scrapes them every second with a ``stage`` target label, and
``python -m sidecar.cli serve`` configured only through ``PROMGATE_*`` variables (ledger
and tokens in the test's workdir, one proxy listener per stage, or the webhook actuator).
Tests drive it with the ``promgate`` CLI as a subprocess and read it through the API.
Everything runs on 127.0.0.1, every wait has a deadline, every load is bounded, and the
``stack`` fixture stops every process it started, also when the test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import random
import secrets
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sidecar.actuators.webhook import SEQUENCE_HEADER, verify
from sidecar.analysis.prometheus import PrometheusSource
from sidecar.client import ApiClient
from sidecar.local.demo import demo_digest, demo_manifest
from sidecar.local.loadgen import LoadGenerator
from tests.support.processes import (
    REPO_ROOT,
    ManagedProcess,
    free_port,
    launch_demo_service,
    serve_app,
    start_prometheus,
    url_is_ok,
    wait_answering,
    wait_until,
)

__all__ = ["E2E_POLICY", "Stack", "bounded", "demo_digest", "demo_manifest", "gates_of"]

E2E_POLICY = REPO_ROOT / "examples" / "e2e-policy.yaml"
SERVICE = "demo"
LOAD_MAX_SECONDS = 150.0  # no load outlives this, whatever a test does
PROMOTE_TIMEOUT_S = 90.0
BASE_LATENCY_MS = 20.0
REGRESSION = {"error_rate": 0.3, "latency_ms": 400, "duration_s": None}


def bounded(seconds: float) -> Callable[[Callable[..., Awaitable[None]]], Any]:
    """Fail an async test that runs longer than ``seconds`` (fixture set-up excluded)."""

    def decorate(test: Callable[..., Awaitable[None]]) -> Any:
        @functools.wraps(test)
        async def run(*args: Any, **kwargs: Any) -> None:
            budget = asyncio.timeout(seconds)
            try:
                async with budget:
                    await test(*args, **kwargs)
            except TimeoutError:
                if budget.expired():
                    pytest.fail(f"{test.__name__} exceeded its budget of {seconds:g}s")
                raise

        return run

    return decorate


def past_progressing(promotion: dict[str, Any]) -> bool:
    """Ended, or (blue-green) switched to post-promotion analysis."""
    return promotion["phase"] not in ("pending", "progressing")


def gates_of(events: Iterable[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(event, gate verdict) for every gate verdict the events carry."""
    return [(e, g) for e in events for g in (e.get("data") or {}).get("gates") or []]


@dataclass
class Service:
    """One example service process serving ``version`` in ``stage``."""

    version: str
    stage: str
    port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def fault(self, **fault: Any) -> dict[str, Any]:
        """POST /admin/fault: e.g. ``error_rate=0.3, latency_ms=400, duration_s=None``."""
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.post(f"{self.url}/admin/fault", json=fault) as response,
        ):
            body: dict[str, Any] = await response.json()
            assert response.status == 200, body
            return body


@dataclass(frozen=True)
class CliResult:
    """One finished ``promgate`` command."""

    argv: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (
            f"$ promgate {' '.join(self.argv)}\nexit {self.code}\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


@dataclass
class Delivery:
    """One POST the webhook receiver accepted."""

    promotion_id: str
    sequence: int
    idempotency_key: str
    sequence_header: str
    state: dict[str, Any]


class WebhookReceiver:
    """A real webhook receiver: verifies each body's signature and records what it receives.

    It also plays the load balancer the webhook drives: ``state[stage]`` is the newest
    traffic state, which :class:`WeightedLoad` routes by.
    """

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.deliveries: list[Delivery] = []
        self.rejected: list[str] = []
        self.unavailable: dict[int, int] = {}  # sequence -> POSTs still to answer with 503
        self.refused: list[tuple[str, int]] = []  # (promotion, sequence) answered 503
        self.state: dict[str, dict[str, Any]] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/traffic", self._receive)
        self._runner, base_url = await serve_app(app)
        self.url = f"{base_url}/traffic"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(body, self.secret, request.headers):
            self.rejected.append(f"bad signature on {body[:120]!r}")
            return web.json_response({"error": "bad signature"}, status=401)
        state = json.loads(body)
        if self.unavailable.get(int(state["sequence"]), 0) > 0:
            self.unavailable[int(state["sequence"])] -= 1
            self.refused.append((state["promotion_id"], int(state["sequence"])))
            return web.json_response({"error": "receiver briefly unavailable"}, status=503)
        self.deliveries.append(
            Delivery(
                promotion_id=state["promotion_id"],
                sequence=int(state["sequence"]),
                idempotency_key=request.headers.get("Idempotency-Key", ""),
                sequence_header=request.headers.get(SEQUENCE_HEADER, ""),
                state=state,
            )
        )
        current = self.state.get(state["stage"])
        # Apply only newer states of a promotion, as the Idempotency-Key invites.
        if (
            current is None
            or current["promotion_id"] != state["promotion_id"]
            or int(current["sequence"]) < int(state["sequence"])
        ):
            self.state[state["stage"]] = state
        return web.json_response({"applied": True})

    def sequences(self, promotion_id: str) -> list[int]:
        return [d.sequence for d in self.deliveries if d.promotion_id == promotion_id]


def receiver_routing(receiver: WebhookReceiver, stage: str) -> Callable[[], str | None]:
    """Pick each request's upstream by weight from the receiver's current state, as a
    router driven by the webhook would."""
    rng = random.Random()

    def pick() -> str | None:
        state = receiver.state.get(stage)
        live = [b for b in (state or {}).get("backends", []) if b["weight"] > 0]
        if not live:
            return None
        backend = rng.choices(live, weights=[b["weight"] for b in live])[0]
        return str(backend["upstream"]).rstrip("/") + "/"

    return pick


async def start_example_services(
    logs: Path, versions: dict[str, Sequence[str]]
) -> dict[tuple[str, str], Service]:
    """One example service per (version, stage), each serving its version's demo digest;
    returns once every one answers /healthz."""
    services: dict[tuple[str, str], Service] = {}
    for stage, stage_versions in versions.items():
        for version in stage_versions:
            port = free_port()
            process = launch_demo_service(
                logs,
                port=port,
                version=version,
                digest=demo_digest(version),
                latency_ms=BASE_LATENCY_MS,
                name=f"service-{stage}-{version}",
            )
            services[(version, stage)] = Service(version, stage, port, process)

    async def all_healthy() -> bool:
        for s in services.values():
            if not s.process.running:
                raise RuntimeError(f"service {s.version} exited:\n{s.process.log_tail()}")
        checks = [url_is_ok(f"{s.url}/healthz") for s in services.values()]
        return all(await asyncio.gather(*checks))

    await wait_until(all_healthy, 20, what="the example services to answer /healthz")
    return services


async def wait_scraped(
    prometheus_url: str, jobs: Iterable[str], expected: int, timeout_s: float = 30.0
) -> None:
    """Until Prometheus has ``expected`` targets of ``jobs`` up."""
    source = PrometheusSource(prometheus_url)
    pattern = "|".join(jobs)

    async def all_up() -> bool:
        measured = await source.query(f'count(up{{job=~"{pattern}"}} == 1)')
        return measured.value == expected

    try:
        await wait_until(all_up, timeout_s, what="Prometheus to scrape every example service")
    finally:
        await source.close()


async def wait_promotion(
    client: ApiClient,
    promotion_id: str,
    predicate: Callable[[dict[str, Any]], bool],
    timeout_s: float,
    what: str,
) -> dict[str, Any]:
    """Poll the promotion through ``client`` until ``predicate(promotion)``; returns it."""
    last: dict[str, Any] = {}

    async def matches() -> bool:
        nonlocal last
        last = await client.get(promotion_id)
        return predicate(last)

    try:
        await wait_until(matches, timeout_s, what=what, interval_s=0.1)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; last state: {_brief(last)}") from None
    return last


class Stack:
    """Example services, Prometheus and the sidecar process for one test; see the module doc."""

    def __init__(
        self,
        workdir: Path,
        *,
        versions: dict[str, Sequence[str]],
        prometheus: bool = True,
        receiver: WebhookReceiver | None = None,
        policy: Path = E2E_POLICY,
    ) -> None:
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.versions = versions  # stage -> versions served there
        self.with_prometheus = prometheus
        self.receiver = receiver
        self.policy = policy
        self.services: dict[tuple[str, str], Service] = {}
        self.prometheus: ManagedProcess | None = None
        self.prometheus_url = f"http://127.0.0.1:{free_port()}"  # unreachable until started
        self.sidecar: ManagedProcess | None = None
        self.api_port = free_port()
        self.proxy_ports = {stage: free_port() for stage in versions}
        self.token = secrets.token_urlsafe(24)
        self.client = ApiClient(self.api_url, self.token)
        self.loads: list[LoadGenerator] = []
        self._cli_runs = 0
        self._cli_processes: set[asyncio.subprocess.Process] = set()
        self._background: set[asyncio.Task[Any]] = set()

    # ---- addresses -------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def proxy_url(self, stage: str) -> str:
        return f"http://127.0.0.1:{self.proxy_ports[stage]}"

    def service(self, version: str, stage: str) -> Service:
        return self.services[(version, stage)]

    # ---- start and stop --------------------------------------------------------------

    async def start(self) -> Stack:
        """Services and Prometheus (when asked for), then the sidecar; returns when it is ready."""
        await self._start_services()
        if self.with_prometheus:
            targets = {
                stage: [self.service(v, stage).target for v in versions]
                for stage, versions in self.versions.items()
            }
            self.prometheus, self.prometheus_url = await start_prometheus(
                self.workdir,
                targets,
                scrape_interval_s=1.0,
                labels={stage: {"stage": stage} for stage in self.versions},
            )
        await self.start_sidecar()
        return self

    async def _start_services(self) -> None:
        self.services = await start_example_services(self.logs, self.versions)

    def sidecar_env(self, **overrides: str) -> dict[str, str]:
        """The sidecar's environment: the caller's, minus any PROMGATE_*, plus ours."""
        tokens = self.workdir / "tokens"
        if not tokens.exists():
            tokens.write_text(f"admin e2e {self.token}\n")
            tokens.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROMGATE_")}
        env.update(
            PROMGATE_POLICY=str(self.policy),
            PROMGATE_LISTEN=f"127.0.0.1:{self.api_port}",
            PROMGATE_PROMETHEUS_URL=self.prometheus_url,
            PROMGATE_PROMETHEUS_TIMEOUT_S="2",
            PROMGATE_LEDGER="sqlite",
            PROMGATE_LEDGER_PATH=str(self.workdir / "ledger.db"),
            PROMGATE_TOKENS_FILE=str(tokens),
            PROMGATE_PROXY_LISTEN=",".join(
                f"{stage}=127.0.0.1:{port}" for stage, port in self.proxy_ports.items()
            ),
            PROMGATE_LOG_LEVEL="info",
        )
        if self.receiver is not None:
            secret_file = self.workdir / "webhook-secret"
            secret_file.write_bytes(self.receiver.secret + b"\n")
            secret_file.chmod(0o600)
            env.update(
                PROMGATE_ACTUATOR="webhook",
                PROMGATE_WEBHOOK_URL=self.receiver.url,
                PROMGATE_WEBHOOK_SECRET_FILE=str(secret_file),
            )
        else:
            env["PROMGATE_ACTUATOR"] = "proxy"
        env.update(overrides)
        return env

    def sidecar_argv(self) -> list[str]:
        return [sys.executable, "-m", "sidecar.cli", "serve"]

    async def start_sidecar(self) -> None:
        """Start ``promgate serve`` on the stack's ports and ledger; wait until /readyz."""
        if self.sidecar is not None and self.sidecar.running:
            raise RuntimeError("the sidecar is already running")
        self.sidecar = ManagedProcess(
            self.sidecar_argv(),
            self.logs,
            name="sidecar",
            env=self.sidecar_env(),
            cwd=self.workdir,
        ).start()
        await wait_answering(
            self.sidecar,
            f"{self.api_url}/readyz",
            20,
            what="the sidecar to be ready",
            request_timeout_s=1.0,
        )

    async def kill_sidecar(self) -> int:
        """SIGKILL the sidecar, as a crash would; returns its exit status."""
        assert self.sidecar is not None
        status = await self.sidecar.kill()
        await self.client.close()  # its pooled connections died with the server
        self.client = ApiClient(self.api_url, self.token)
        return status

    async def stop_prometheus(self) -> None:
        assert self.prometheus is not None
        await self.prometheus.stop()

    async def restart_prometheus(self) -> None:
        """Start Prometheus again with the same argv: same port, config and data directory."""
        assert self.prometheus is not None and not self.prometheus.running
        self.prometheus = ManagedProcess(
            self.prometheus.argv, self.prometheus.log_path.parent, name="prometheus"
        ).start()
        await wait_answering(
            self.prometheus,
            f"{self.prometheus_url}/-/ready",
            30,
            what="the restarted Prometheus to be ready",
        )

    async def stop(self) -> None:
        """Stop everything this stack started, in reverse order; never raises."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for process in list(self._cli_processes):
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        for load in self.loads:
            await load.stop()
        await self.client.close()
        processes = [self.sidecar, self.prometheus, *(s.process for s in self.services.values())]
        for managed in processes:
            if managed is not None and managed.running:
                await managed.stop()
        if self.receiver is not None:
            await self.receiver.stop()

    # ---- load and observation --------------------------------------------------------

    def start_load(self, stage: str, rate: float, *, preview: bool = False) -> LoadGenerator:
        """Bounded load through the stage's proxy listener (preview: only the preview slot)."""
        headers = {"X-Promgate-Preview": "1"} if preview else {}
        return self._load(self.proxy_url(stage) + "/", rate, headers)

    def start_weighted_load(self, stage: str, rate: float) -> LoadGenerator:
        """Bounded load routed by the webhook receiver's current state for ``stage``."""
        assert self.receiver is not None
        return self._load(receiver_routing(self.receiver, stage), rate, {})

    def _load(
        self, target: str | Callable[[], str | None], rate: float, headers: dict[str, str]
    ) -> LoadGenerator:
        load = LoadGenerator(
            target,
            rate,
            max_seconds=LOAD_MAX_SECONDS,
            max_requests=int(rate * LOAD_MAX_SECONDS),
            headers=headers,
        )
        load.start()
        self.loads.append(load)
        return load

    async def wait_scraped(self, timeout_s: float = 30.0) -> None:
        """Until Prometheus has scraped every example service once."""
        await wait_scraped(self.prometheus_url, self.versions, len(self.services), timeout_s)

    async def sample(self, stage: str, count: int = 40) -> Counter[str]:
        """Send ``count`` live requests through the stage's proxy; bodies by number seen."""
        bodies: Counter[str] = Counter()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            for _ in range(count):
                async with session.get(self.proxy_url(stage) + "/") as response:
                    text = (await response.text()).strip()
                    bodies[text if response.status == 200 else f"{response.status} {text}"] += 1
        return bodies

    async def sidecar_metrics(self) -> str:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(f"{self.api_url}/metrics") as response,
        ):
            return await response.text()

    async def events(self, promotion_id: str) -> list[dict[str, Any]]:
        return [event async for event in self.client.events(promotion_id)]

    async def wait_promotion(
        self,
        promotion_id: str,
        predicate: Callable[[dict[str, Any]], bool],
        timeout_s: float,
        what: str,
    ) -> dict[str, Any]:
        """Poll the promotion until ``predicate(promotion)``; returns that promotion."""
        return await wait_promotion(self.client, promotion_id, predicate, timeout_s, what)

    async def wait_event(
        self,
        promotion_id: str,
        predicate: Callable[[dict[str, Any]], bool],
        timeout_s: float,
        what: str,
        after: int = 0,
    ) -> dict[str, Any]:
        """Poll the event log until an event with seq > ``after`` matches; returns it."""
        found: list[dict[str, Any]] = []

        async def seen() -> bool:
            found[:] = [e for e in await self.events(promotion_id) if e["seq"] > after]
            return any(predicate(e) for e in found)

        await wait_until(seen, timeout_s, what=what, interval_s=0.2)
        return next(e for e in found if predicate(e))

    async def active_promotion(self, stage: str, timeout_s: float = 15.0) -> str:
        """The id of the active promotion of the demo service in ``stage``, once there is one."""
        found: list[dict[str, Any]] = []

        async def any_active() -> bool:
            found[:] = await self.client.list(service=SERVICE, stage=stage, active=True)
            return bool(found)

        await wait_until(any_active, timeout_s, what=f"an active promotion in {stage}")
        return str(found[0]["id"])

    # ---- releases --------------------------------------------------------------------

    def manifest_file(self, version: str, **overrides: Any) -> Path:
        """A release manifest for ``version`` (``demo_manifest``) written to a file."""
        data = demo_manifest(version)
        data.update(overrides)
        path = self.workdir / f"manifest-{version}-{len(list(self.workdir.glob('manifest-*')))}"
        path = path.with_suffix(".json")
        path.write_text(json.dumps(data, indent=2))
        return path

    async def seed(self, stage: str, version: str) -> dict[str, Any]:
        """Make ``version`` the first stable release of ``stage`` (no analysis: nothing to
        compare with)."""
        created = await self.client.create(
            demo_manifest(version), stage, self.service(version, stage).url
        )
        return await self.wait_promotion(
            created["id"],
            lambda p: p["phase"] == "promoted",
            15,
            f"the first release {version} of {stage} to be promoted",
        )

    async def cli(self, *args: str, timeout_s: float = PROMOTE_TIMEOUT_S) -> CliResult:
        """Run ``promgate ARGS`` with PROMGATE_SERVER/PROMGATE_TOKEN; output goes to files."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROMGATE_")}
        env.update(PROMGATE_SERVER=self.api_url, PROMGATE_TOKEN=self.token)
        return await self._run([*_promgate_command(), *args], args, env, timeout_s)

    async def serve_until_exit(self, timeout_s: float = 30.0) -> CliResult:
        """Run ``python -m sidecar.cli serve`` with the stack's environment, expecting it to
        exit by itself (it must refuse to start); a sidecar that serves is killed and fails."""
        return await self._run(self.sidecar_argv(), ("serve",), self.sidecar_env(), timeout_s)

    async def _run(
        self, argv: list[str], args: Sequence[str], env: dict[str, str], timeout_s: float
    ) -> CliResult:
        """Run one promgate command to its end, its output in logs/cli-N.out and .err."""
        self._cli_runs += 1
        stem = self.logs / f"cli-{self._cli_runs}"
        self.logs.mkdir(parents=True, exist_ok=True)
        out_path, err_path = stem.with_suffix(".out"), stem.with_suffix(".err")
        with out_path.open("wb") as out, err_path.open("wb") as err:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                cwd=self.workdir,
            )
        self._cli_processes.add(process)
        try:
            async with asyncio.timeout(timeout_s):
                code = await process.wait()
        except TimeoutError:
            process.send_signal(signal.SIGKILL)
            await process.wait()
            raise TimeoutError(
                f"promgate {' '.join(args)} did not finish within {timeout_s:g}s; "
                f"output so far:\n{out_path.read_text()}\n{err_path.read_text()}"
            ) from None
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            self._cli_processes.discard(process)
        return CliResult(tuple(args), code, out_path.read_text(), err_path.read_text())

    def cli_in_background(self, *args: str) -> asyncio.Task[CliResult]:
        """``cli(*args)`` as a task the stack cancels (and whose process it kills) at stop."""
        task = asyncio.create_task(self.cli(*args))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _promote_args(self, version: str, stage: str) -> list[str]:
        return ["promote", "--manifest", str(self.manifest_file(version)), "--stage", stage,
                "--upstream", self.service(version, stage).url]  # fmt: skip

    def promote_in_background(self, version: str, stage: str) -> asyncio.Task[CliResult]:
        """``promgate promote --manifest F --stage S --upstream URL --wait``, running."""
        return self.cli_in_background(*self._promote_args(version, stage), "--wait")

    async def start_promotion(self, version: str, stage: str) -> str:
        """``promgate promote`` without waiting; the new promotion's id."""
        created = await self.cli(*self._promote_args(version, stage))
        assert created.code == 0, created
        return created.stdout.strip()

    # ---- sockets ---------------------------------------------------------------------

    def listening_addresses(self) -> dict[str, set[str]]:
        """Every TCP address a process of this stack listens on, by process name (Linux)."""
        listening = _listening_sockets()
        result: dict[str, set[str]] = {}
        processes = [self.sidecar, self.prometheus, *(s.process for s in self.services.values())]
        for managed in processes:
            if managed is None or not managed.running:
                continue
            inodes = _socket_inodes(managed.pid)
            result[managed.name] = {addr for inode, addr in listening if inode in inodes}
        return result


def _promgate_command() -> list[str]:
    """The installed ``promgate`` console script beside this interpreter, else ``-m``."""
    script = Path(sys.executable).with_name("promgate")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sidecar.cli"]


def _brief(promotion: dict[str, Any]) -> str:
    keys = ("id", "phase", "step_index", "weight", "reason", "classification")
    return json.dumps({k: promotion.get(k) for k in keys})


def _listening_sockets() -> list[tuple[str, str]]:
    """(inode, "host:port") of every listening TCP socket in this network namespace."""
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with contextlib.suppress(FileNotFoundError), open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state != "0A":  # LISTEN
                    continue
                address, port = local.split(":")
                found.append((inode, f"{_decode_address(address, width)}:{int(port, 16)}"))
    return found


def _decode_address(hex_address: str, width: int) -> str:
    if width == 8:
        return ".".join(str(b) for b in reversed(bytes.fromhex(hex_address)))
    words = [bytes.fromhex(hex_address[i : i + 8])[::-1].hex() for i in range(0, 32, 8)]
    return "[" + "".join(words) + "]"


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    return inodes


StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def stack_factory(workdir: Path) -> AsyncIterator[StackFactory]:
    """``await make(versions={stage: [...]}, ...)`` -> a started Stack; all stopped after."""
    stacks: list[Stack] = []

    async def make(**options: Any) -> Stack:
        stack = Stack(workdir, **options)
        stacks.append(stack)
        return await stack.start()

    yield make
    for stack in reversed(stacks):
        await stack.stop()


@pytest.fixture
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    """A started webhook receiver on 127.0.0.1 with a fresh secret; stopped after."""
    receiver = WebhookReceiver(secrets.token_bytes(32).hex().encode())
    await receiver.start()
    yield receiver
    await receiver.stop()
