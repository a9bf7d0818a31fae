"""The promgate CLI, its API client and the progress view, against a real stand-in API server."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner
from rich.console import Console

from sidecar.cli import _short, cli
from sidecar.client import ApiClient
from sidecar.domain.artifact import ArtifactRef
from sidecar.domain.promotion import Phase, Promotion, PromotionEvent
from sidecar.errors import ConflictError, ProblemsError, PromgateError
from sidecar.local.processes import free_port
from sidecar.progress import ProgressView, follow, outcome_exit_code, summarize_gates
from tests.conftest import HttpServer

TOKEN = "tok-7f3a9c-never-print-me"
CANDIDATE = "registry.example.com/shop/checkout:1.5.0@sha256:" + "c" * 64
BASELINE = "registry.example.com/shop/checkout:1.4.2@sha256:" + "b" * 64

VALID_POLICY = """\
apiVersion: promgate/v1
kind: PromotionPolicy
metadata: {name: shop}
version: 7
stages:
  - name: staging
    strategy: {canary: {steps: [50, 100], stepDuration: 10s}}
  - name: production
    requires: [staging]
    strategy: {canary: {steps: [10, 25, 50, 100], stepDuration: 2m}}
    gates:
      slo:
        - name: error_rate
          ratio:
            bad: sum(increase(http_requests_total{version="$version",code=~"5.."}[$window]))
            total: sum(increase(http_requests_total{version="$version"}[$window]))
          maxVsBaseline: 1.5
          hardMax: 0.2
"""


def manifest(artifact: str = CANDIDATE) -> dict[str, Any]:
    """A valid release manifest as CI would write it."""
    return {
        "apiVersion": "promgate/v1",
        "service": "checkout",
        "artifact": artifact,
        "version": "1.5.0",
        "build": {"id": "run-4711"},
        "source": {"repository": "https://git.example.com/shop/checkout", "commit": "a" * 40},
        "createdAt": "2024-05-01T12:00:00Z",
    }


def gate(name: str, result: str, classification: str | None, value: float) -> dict[str, Any]:
    return {
        "gate": name,
        "result": result,
        "classification": classification,
        "value": value,
        "baseline": 0.01,
        "threshold": 0.015,
        "hard": False,
        "reason": f"{name} {value} vs 0.015",
        "requests": 400.0,
    }


FINALS: dict[str, dict[str, Any]] = {
    "promoted": {"phase": "promoted", "weight": 100, "step": 3, "reason": "all steps passed"},
    "rolled_back": {
        "phase": "rolled_back",
        "weight": 0,
        "step": 1,
        "decision": "rollback",
        "reason": "error_rate 0.08 vs 0.015, breached 3 evaluations in a row",
        "gates": [gate("error_rate", "breach", "persistent", 0.08)],
    },
    "aborted": {"phase": "aborted", "weight": 0, "step": 1, "reason": "aborted by alice"},
}


@dataclass
class StandInApi:
    """The few routes of the promgate API the CLI needs, with realistic JSON and SSE.

    ``drop_after`` cuts the first event stream after that event (``drop="reset"``: the
    connection dies as with a killed sidecar; ``"close"``: the stream ends as at a
    shutdown); the next ``starting_for`` requests then get 503, as while a sidecar
    restarts. ``final=None`` is a promotion that never ends.
    """

    final: str | None = "promoted"
    refuse: bool = False
    conflict: bool = False
    drop_after: int = 0
    drop: str = "reset"
    starting_for: int = 0
    unavailable: int = 0  # requests still to be answered with 503
    promotions: dict[str, Promotion] = field(default_factory=dict)
    created: list[dict[str, Any]] = field(default_factory=list)
    last_event_ids: list[str | None] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_post("/v1/promotions", self._create)
        app.router.add_get("/v1/promotions", self._list)
        app.router.add_get("/v1/promotions/{id}", self._get)
        app.router.add_get("/v1/promotions/{id}/events", self._events)
        return app

    def add(self, promotion_id: str, phase: Phase = Phase.PENDING) -> Promotion:
        promotion = Promotion(
            id=promotion_id,
            service="checkout",
            stage="production",
            artifact=ArtifactRef.parse(CANDIDATE),
            version="1.5.0",
            policy_version="7",
            strategy="canary",
            candidate_upstream="http://10.0.0.7:8080",
            manifest=manifest(),
            created_at=1714564800.0,
            updated_at=1714564800.0,
            phase=phase,
            baseline=ArtifactRef.parse(BASELINE),
            baseline_upstream="http://10.0.0.6:8080",
            baseline_version="1.4.2",
        )
        self.promotions[promotion_id] = promotion
        return promotion

    def script(self, promotion_id: str) -> list[dict[str, Any]]:
        progressing = {"phase": "progressing", "decision": "pass", "action": "set_weight"}
        steps = [
            ("created", {"phase": "pending", "weight": 0, "step": 0}),
            ("step", {**progressing, "weight": 10, "step": 0, "reason": "canary step 1: 10%"}),
            (
                "verdict",
                {
                    **progressing,
                    "weight": 10,
                    "step": 0,
                    "decision": "wait",
                    "action": "wait",
                    "reason": "error_rate 0.03 vs 0.015 (transient, 1 of 3)",
                    "gates": [gate("error_rate", "breach", "transient", 0.03)],
                },
            ),
            (
                "step",
                {
                    **progressing,
                    "weight": 25,
                    "step": 1,
                    "reason": "step 1 passed",
                    "gates": [gate("error_rate", "pass", None, 0.011)],
                },
            ),
        ]
        if self.final is not None:
            steps.append((self.final, FINALS[self.final]))
        return [
            PromotionEvent(promotion_id, seq, 1714564800.0 + seq, kind, data).to_dict()
            for seq, (kind, data) in enumerate(steps, start=1)
        ]

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.unavailable > 0:
            self.unavailable -= 1
            return web.json_response({"status": "starting"}, status=503)
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return error(401, "AuthError", "missing or unknown bearer token")
        response: web.StreamResponse = await handler(request)
        return response

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.created.append(body)
        if self.conflict:
            return error(
                409,
                "ConflictError",
                "promotion '4f2c8a1b9e07' is still active for service 'checkout' stage "
                "'production'; wait for it to finish or abort it before starting '77aa'",
                active_promotion_id="4f2c8a1b9e07",
            )
        if self.refuse:
            return error(
                422,
                "MetadataGateError",
                "checkout 1.5.0 refused by stage production: 2 critical vulnerabilities "
                "(at most 0 allowed)",
                promotion_id="9d8e7f6a5b4c",
            )
        promotion = self.add("4f2c8a1b9e07")
        return web.json_response(promotion.to_dict(), status=201)

    async def _list(self, request: web.Request) -> web.Response:
        items = [p.to_dict() for p in self.promotions.values()]
        return web.json_response({"items": items})

    async def _get(self, request: web.Request) -> web.Response:
        promotion = self.promotions.get(request.match_info["id"])
        if promotion is None:
            return error(404, "NotFoundError", "no promotion " + request.match_info["id"])
        return web.json_response(promotion.to_dict())

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """The script from Last-Event-ID (NDJSON: ``after``) on, framed as asked, as the
        real API does; the phase turns final before its event goes out."""
        promotion_id = request.match_info["id"]
        as_sse = "text/event-stream" in request.headers.get("Accept", "")
        last_event_id = (
            request.headers.get("Last-Event-ID") if as_sse else request.query.get("after")
        )
        self.last_event_ids.append(last_event_id)
        frame = sse if as_sse else (lambda event: json.dumps(event).encode() + b"\n")
        content_type = "text/event-stream" if as_sse else "application/x-ndjson"
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        for event in self.script(promotion_id):
            if event["seq"] <= int(last_event_id or 0):
                continue
            promotion = self.promotions[promotion_id]
            if event["kind"] == self.final and not promotion.phase.terminal:
                final = FINALS[self.final]
                self.promotions[promotion_id] = promotion.evolve(phase=Phase.PROGRESSING).evolve(
                    phase=Phase(final["phase"]), weight=final["weight"], reason=final["reason"]
                )
            await asyncio.sleep(0.02)
            await response.write(frame(event))
            if event["seq"] == self.drop_after and len(self.last_event_ids) == 1:
                self.unavailable = self.starting_for
                if self.drop == "reset":
                    assert request.transport is not None
                    request.transport.close()
                return response
        for _ in range(600 if self.final is None else 0):  # never ends: keepalives only
            await asyncio.sleep(0.1)
            await response.write(b": keepalive\n\n" if as_sse else b"\n")
        await response.write_eof()
        return response


def sse(event: dict[str, Any], kind: str | None = None) -> bytes:
    """One server-sent event as the promgate API frames it."""
    head = f"id: {event['seq']}\n" if "seq" in event else ""
    return f"{head}event: {kind or event['kind']}\ndata: {json.dumps(event)}\n\n".encode()


def error(status: int, kind: str, message: str, **extra: Any) -> web.Response:
    body = {"error": {"type": kind, "message": message, "problems": [], **extra}}
    return web.json_response(body, status=status)


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


async def promgate(*args: str, server: str, token: str = TOKEN) -> Run:
    """Run the real CLI in a child process so the stand-in server keeps serving meanwhile."""
    env = {**os.environ, "PROMGATE_SERVER": server, "PROMGATE_TOKEN": token}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecar.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    run = Run(process.returncode, stdout.decode(), stderr.decode())
    assert TOKEN not in run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    return run


@pytest.fixture
def manifest_file(tmp_path: Path) -> Path:
    path = tmp_path / "release.json"
    path.write_text(json.dumps(manifest(), indent=2))
    return path


# Local commands


def test_policy_check_accepts_a_valid_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(VALID_POLICY)
    result = CliRunner().invoke(cli, ["policy", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "ok: shop version 7, 2 stages"


def test_policy_check_lists_every_problem_with_file_path_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        VALID_POLICY.replace("[10, 25, 50, 100]", "[10, 5]").replace("maxVsBaseline", "maxVsBase")
    )
    result = CliRunner().invoke(cli, ["policy", "check", str(path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 2
    assert all(line.startswith(f"{path}: stages[1].") and "(fix: " in line for line in lines)
    assert any("stages[1].strategy.canary.steps" in line for line in lines)
    assert any("maxVsBase: unknown field" in line for line in lines)


async def test_serve_refuses_an_empty_ledger_file_with_how_to_restore(tmp_path: Path) -> None:
    """``promgate serve`` on a ledger file that exists but is empty exits 2 with one line
    naming the file, what is wrong and how to restore it, and never listens."""
    ledger = tmp_path / "ledger.db"
    ledger.write_bytes(b"")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMGATE_")}
    env.update(
        PROMGATE_POLICY=str(Path(__file__).parents[2] / "examples" / "policy.yaml"),
        PROMGATE_LISTEN=f"127.0.0.1:{free_port()}",
        PROMGATE_LEDGER_PATH=str(ledger),
        PROMGATE_ACTUATOR="none",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar.cli", "serve", env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:  # it served instead of refusing: stop it
            process.kill()
            await process.wait()
    message = stderr.decode()
    assert process.returncode == 2, message
    assert "Traceback" not in message
    assert f"promgate: cannot open ledger {ledger}: the file is empty (0 bytes" in message
    assert "backup" in message and ".recover" in message
    assert ledger.read_bytes() == b""


def test_schema_manifest_is_json_schema_requiring_the_artifact() -> None:
    result = CliRunner().invoke(cli, ["schema", "manifest"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert "artifact" in schema["required"]
    assert schema["$schema"].startswith("https://json-schema.org/")


def test_promote_refuses_a_manifest_without_digest_locally(tmp_path: Path) -> None:
    path = tmp_path / "release.json"
    path.write_text(json.dumps(manifest("registry.example.com/shop/checkout:1.5.0")))
    result = CliRunner().invoke(
        cli, ["promote", "--manifest", str(path), "--stage", "production", "--wait"]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("promgate: ")
    assert f"{path}: artifact: " in result.stderr
    assert "no digest" in result.stderr
    assert "crane digest" in result.stderr


def test_promote_names_the_file_and_line_of_malformed_json(tmp_path: Path) -> None:
    path = tmp_path / "release.json"
    path.write_text('{\n  "service": "checkout",\n  "version": 1.5.0\n}\n')
    result = CliRunner().invoke(cli, ["promote", "--manifest", str(path), "--stage", "staging"])
    assert result.exit_code == 2
    assert f"{path} is not JSON" in result.stderr
    assert "line 3 column" in result.stderr


@pytest.mark.parametrize(
    ("phase", "code"),
    [
        ("promoted", 0),
        ("rolled_back", 1),
        ("refused", 1),
        ("aborted", 3),
        ("inconclusive", 4),
        ("not_ready", 1),
        ("progressing", 2),
        ("awaiting_approval", 2),
        ("no-such-phase", 2),
    ],
)
def test_outcome_exit_code(phase: str, code: int) -> None:
    assert outcome_exit_code(phase) == code


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([], {}),
        (
            [{"kind": "created", "data": {"phase": "pending"}}],
            {},
        ),
        (
            [{"kind": "verdict", "data": {"gates": [gate("latency", "pass", None, 0.1)]}}],
            {"latency": {"transient": 0, "persistent": 0}},
        ),
        (
            [
                {"kind": "verdict", "data": {"gates": [gate("err", "breach", "transient", 1)]}},
                {"kind": "verdict", "data": {"gates": [gate("err", "breach", "transient", 1)]}},
                {"kind": "verdict", "data": {"gates": [gate("err", "no_data", None, 0)]}},
                {
                    "kind": "rolled_back",
                    "data": {
                        "gates": [
                            gate("err", "breach", "persistent", 1),
                            gate("p99", "unavailable", "transient", 0),
                        ]
                    },
                },
            ],
            {"err": {"transient": 2, "persistent": 1}, "p99": {"transient": 0, "persistent": 0}},
        ),
    ],
)
def test_summarize_gates(events: list[dict[str, Any]], expected: dict[str, Any]) -> None:
    assert summarize_gates(events) == expected


# Commands that talk to a (stand-in) promgate server


async def test_status_lists_promotions_and_shows_one(http_server: HttpServer) -> None:
    api = StandInApi()
    api.add("4f2c8a1b9e07", Phase.PROGRESSING)
    server = await http_server(api.app())
    listed = await promgate("status", server=server)
    assert listed.code == 0, listed.stderr
    assert "4f2c8a1b9e07" in listed.stdout
    assert "progressing" in listed.stdout
    one = await promgate("status", "4f2c8a1b9e07", "--json", server=server)
    assert one.code == 0, one.stderr
    assert json.loads(one.stdout)["artifact"] == CANDIDATE
    missing = await promgate("status", "000000000000", server=server)
    assert missing.code == 2
    assert missing.stderr == "promgate: no promotion 000000000000\n"


@pytest.mark.parametrize(("final", "code"), [("promoted", 0), ("rolled_back", 1), ("aborted", 3)])
async def test_promote_wait_exits_with_the_outcome(
    http_server: HttpServer, manifest_file: Path, final: str, code: int
) -> None:
    api = StandInApi(final=final)
    server = await http_server(api.app())
    run = await promgate(
        "promote", "--manifest", str(manifest_file), "--stage", "production", "--wait",
        "--upstream", "http://10.0.0.7:8080", server=server,
    )  # fmt: skip
    assert run.code == code, run.stderr
    assert api.created[0]["stage"] == "production"
    assert api.created[0]["upstream"] == "http://10.0.0.7:8080"
    assert api.created[0]["manifest"]["artifact"] == CANDIDATE
    lines = run.stdout.splitlines()
    assert lines[0] == "promotion 4f2c8a1b9e07"
    assert lines[1].startswith("checkout -> production: candidate 1.5.0 (cccccccccccc)")
    assert "step 2: weight 25%" in run.stdout
    assert "breach at 10%: error_rate 0.03 vs 0.015 (transient)" in run.stdout
    assert lines[-1] == f"{final}: {FINALS[final]['reason']}"


PROMOTE = ("promote", "--manifest", "{manifest}", "--stage", "production", "--wait")


def promote_args(manifest_file: Path, *extra: str) -> list[str]:
    return [arg.format(manifest=manifest_file) for arg in PROMOTE] + list(extra)


@pytest.mark.parametrize(
    ("drop", "final", "code"),
    [("reset", "promoted", 0), ("close", "rolled_back", 1), ("reset", "aborted", 3)],
)
async def test_promote_wait_rides_over_a_restart_of_the_sidecar(
    http_server: HttpServer, manifest_file: Path, drop: str, final: str, code: int
) -> None:
    """The stream dies mid-way (connection cut, or closed as at a shutdown) and the server
    answers 503 for a while: --wait reconnects with Last-Event-ID, shows every event's
    line exactly once, and exits with the promotion's outcome."""
    undisturbed = await promgate(
        *promote_args(manifest_file), server=await http_server(StandInApi(final=final).app())
    )
    api = StandInApi(final=final, drop_after=3, drop=drop, starting_for=3)
    run = await promgate(*promote_args(manifest_file), server=await http_server(api.app()))
    assert run.code == code, run.stderr
    assert api.last_event_ids == [None, "3"]
    lines = run.stdout.splitlines()
    lost = [line for line in lines if line.startswith("sidecar unreachable (")]
    assert len(lost) == 1 and lost[0].endswith("; reconnecting for up to 120s"), lines
    assert [line for line in lines if line not in lost] == undisturbed.stdout.splitlines()
    assert lines[-1] == f"{final}: {FINALS[final]['reason']}"


async def test_promote_wait_gives_up_on_a_sidecar_gone_too_long(
    http_server: HttpServer, manifest_file: Path
) -> None:
    """Past --reconnect-timeout the CLI exits 2, says the promotion may still run and how
    to re-attach: an unreachable sidecar is not an outcome."""
    api = StandInApi(drop_after=2, starting_for=10**6)
    server = await http_server(api.app())
    run = await promgate(*promote_args(manifest_file, "--reconnect-timeout", "1s"), server=server)
    assert run.code == 2, run.stderr
    assert run.stderr == (
        f"promgate: promgate server {server} has not answered for 1s (HTTP 503: "
        '{"status": "starting"}); promotion 4f2c8a1b9e07 may still be running: '
        "re-attach with `promgate status 4f2c8a1b9e07 --wait`\n"
    )
    assert "promoted" not in run.stdout


async def test_status_wait_reattaches_with_the_outcome_code(http_server: HttpServer) -> None:
    """status ID --wait follows a running promotion to its end, and answers at once with
    the outcome of one that has already ended."""
    running = StandInApi(final="rolled_back")
    running.add("4f2c8a1b9e07")
    followed = await promgate("status", "4f2c8a1b9e07", "--wait", server=await http_server(
        running.app()))  # fmt: skip
    assert followed.code == 1, followed.stderr
    assert followed.stdout.splitlines()[-1] == f"rolled_back: {FINALS['rolled_back']['reason']}"
    ended = StandInApi(final="aborted")
    ended.add("4f2c8a1b9e07", Phase.ABORTED)
    as_json = await promgate("status", "4f2c8a1b9e07", "--wait", "--json", server=await
                             http_server(ended.app()))  # fmt: skip
    assert as_json.code == 3, as_json.stderr
    assert json.loads(as_json.stdout)["phase"] == "aborted"


async def test_status_wait_stops_at_the_timeout_and_says_how_to_reattach(
    http_server: HttpServer,
) -> None:
    """--timeout is a deadline for following, not for the promotion: exit 5, which
    no outcome uses, and name the commands that re-attach or stop it."""
    api = StandInApi(final=None)
    api.add("4f2c8a1b9e07")
    server = await http_server(api.app())
    run = await promgate("status", "4f2c8a1b9e07", "--wait", "--timeout", "1s", server=server)
    assert run.code == 5, run.stderr
    assert run.stderr == (
        "promgate: promotion 4f2c8a1b9e07 did not end within --timeout 1s and goes on; "
        "re-attach with `promgate status 4f2c8a1b9e07 --wait`, or stop it with "
        "`promgate abort 4f2c8a1b9e07`\n"
    )
    assert "step 2: weight 25%" in run.stdout


async def test_wait_flags_need_wait_and_one_promotion(http_server: HttpServer) -> None:
    server = await http_server(StandInApi().app())
    listing = await promgate("status", "--wait", server=server)
    assert (listing.code, listing.stderr) == (
        2,
        "promgate: --wait follows one promotion: give its ID, e.g. status ID --wait\n",
    )
    no_wait = await promgate("status", "4f2c8a1b9e07", "--timeout", "1m", server=server)
    assert no_wait.code == 2 and "only apply with --wait" in no_wait.stderr
    bad = await promgate("status", "4f2c8a1b9e07", "--wait", "--timeout", "soon", server=server)
    assert bad.code == 2 and "'soon' is not a duration" in bad.stderr


async def test_promote_while_one_is_active_says_how_to_reattach(
    http_server: HttpServer, manifest_file: Path
) -> None:
    """Re-running promote for a release still in progress is refused (exit 1) with the
    command that follows the active one instead."""
    server = await http_server(StandInApi(conflict=True).app())
    run = await promgate(*promote_args(manifest_file), server=server)
    assert run.code == 1
    assert "'4f2c8a1b9e07' is still active" in run.stderr
    assert "follow it with `promgate status 4f2c8a1b9e07 --wait`" in run.stderr


async def test_promote_without_wait_prints_the_id(
    http_server: HttpServer, manifest_file: Path
) -> None:
    server = await http_server(StandInApi().app())
    run = await promgate(
        "promote", "--manifest", str(manifest_file), "--stage", "production", server=server
    )
    assert (run.code, run.stdout) == (0, "4f2c8a1b9e07\n")


async def test_refusal_exits_1_with_the_record_id(
    http_server: HttpServer, manifest_file: Path
) -> None:
    server = await http_server(StandInApi(refuse=True).app())
    run = await promgate(
        "promote", "--manifest", str(manifest_file), "--stage", "production", "--wait",
        server=server,
    )  # fmt: skip
    assert run.code == 1
    assert "2 critical vulnerabilities" in run.stderr
    assert "9d8e7f6a5b4c" in run.stderr


async def test_bad_token_exits_2(http_server: HttpServer) -> None:
    server = await http_server(StandInApi().app())
    run = await promgate("status", server=server, token="tok-wrong-one")
    assert run.code == 2
    assert run.stderr == "promgate: missing or unknown bearer token\n"
    assert "tok-wrong-one" not in run.stdout + run.stderr


async def test_unreachable_server_exits_2_naming_it(manifest_file: Path) -> None:
    server = f"http://127.0.0.1:{free_port()}"
    run = await promgate(
        "promote", "--manifest", str(manifest_file), "--stage", "production", server=server
    )
    assert run.code == 2
    assert run.stderr.startswith(f"promgate: promgate server {server} is unreachable")
    assert "promgate serve" in run.stderr


async def test_follow_redraws_a_panel_on_a_terminal(http_server: HttpServer) -> None:
    api = StandInApi(final="rolled_back")
    api.add("4f2c8a1b9e07")
    server = await http_server(api.app())
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)
    async with ApiClient(server, TOKEN) as client:
        final = await follow(client, "4f2c8a1b9e07", console, title="checkout 1.5.0")
    assert final["phase"] == "rolled_back"
    screen = out.getvalue()
    assert "checkout 1.5.0" in screen
    assert "value vs threshold" in screen
    assert "persistent" in screen
    assert "1.4.2  bbbbbbbbbbbb" in screen


async def test_client_maps_problems_and_conflicts(http_server: HttpServer) -> None:
    async def bad(request: web.Request) -> web.Response:
        problem = {"path": "stage", "message": "unknown stage 'prod'", "fix": "use production"}
        body = {
            "error": {"type": "InputError", "message": "invalid request", "problems": [problem]}
        }
        return web.json_response(body, status=400)

    async def busy(request: web.Request) -> web.Response:
        return error(409, "ConflictError", "promotion 1 is active", active_promotion_id="1")

    app = web.Application()
    app.router.add_post("/v1/promotions", bad)
    app.router.add_post("/v1/promotions/{id}/approve", busy)
    server = await http_server(app)
    async with ApiClient(server) as client:
        with pytest.raises(ProblemsError) as problems:
            await client.create(manifest(), "prod")
        assert "stage: unknown stage 'prod' (fix: use production)" in str(problems.value)
        with pytest.raises(ConflictError) as conflict:
            await client.approve("1")
        assert (conflict.value.active_id, conflict.value.promotion_id) == ("1", None)


async def test_stage_rollback_prints_from_and_to(http_server: HttpServer) -> None:
    history = [
        {"service": "checkout", "stage": "production", "artifact": artifact, "version": version,
         "upstream": f"http://10.0.0.{n}:8080", "promotion_id": f"p{n}", "promoted_at": 1.7e9 + n}
        for n, (artifact, version) in enumerate([(BASELINE, "1.4.2"), (CANDIDATE, "1.5.0")])
    ]  # fmt: skip

    async def read_history(request: web.Request) -> web.Response:
        return web.json_response({"items": history})

    async def roll_back(request: web.Request) -> web.Response:
        history.pop()
        return web.json_response({"stable": history[-1]})

    app = StandInApi().app()
    stage_path = "/v1/stages/production/services/checkout"
    app.router.add_get(f"{stage_path}/history", read_history)
    app.router.add_post(f"{stage_path}/rollback", roll_back)
    server = await http_server(app)
    listed = await promgate("history", "--service", "checkout", "--stage", "production",
                            server=server)  # fmt: skip
    assert listed.code == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    assert [row[2] for row in rows] == ["1.5.0", "1.4.2"]
    assert rows[0][3:] == [
        "registry.example.com/shop/checkout:1.5.0@sha256:cccccccccccc",
        "p1",
        "current",
    ]
    as_json = await promgate("history", "--service", "checkout", "--stage", "production",
                             "--json", server=server)  # fmt: skip
    assert json.loads(as_json.stdout) == history
    run = await promgate("rollback", "--service", "checkout", "--stage", "production",
                         server=server)  # fmt: skip
    assert run.code == 0, run.stderr
    assert run.stdout == f"checkout in production: 1.5.0 {CANDIDATE} -> 1.4.2 {BASELINE}\n"
    unclear = await promgate("rollback", "--service", "checkout", server=server)
    assert unclear.code == 2
    assert "--promotion ID, or both --service and --stage" in unclear.stderr


async def test_event_stream_skips_keepalives_and_reports_in_band_errors(
    http_server: HttpServer,
) -> None:
    async def events(request: web.Request) -> web.StreamResponse:
        assert request.headers["Accept"] == "text/event-stream"  # also as a first request
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        first = PromotionEvent("p1", 1, 1.0, "created", {"phase": "pending"}).to_dict()
        await response.write(sse(first) + b": keepalive\n\n")
        failure = {"error": {"type": "LedgerError", "message": "ledger is locked"}}
        await response.write(sse(failure, "error"))
        return response

    app = web.Application()
    app.router.add_get("/v1/promotions/{id}/events", events)
    server = await http_server(app)
    received: list[dict[str, Any]] = []
    async with ApiClient(server) as client:
        with pytest.raises(PromgateError, match="broke off: ledger is locked"):
            async for event in client.events("p1", follow=True):
                received.append(event)
    assert [e["kind"] for e in received] == ["created"]


def test_plain_progress_reports_a_hold_and_its_end() -> None:
    """In CI logs a Prometheus outage shows as a hold line and a line when it ends."""
    view = ProgressView(
        {"phase": "progressing", "weight": 25, "step_index": 0, "service": "demo"}, title="t"
    )
    hold = {"kind": "verdict", "data": {"decision": "hold", "reason": "analysis unavailable"}}
    lines = [view.apply(hold), view.apply(hold), view.apply({"kind": "verdict", "data": {
        "decision": "pass", "reason": "ok"}})]  # fmt: skip
    assert lines == [
        "[t] holding at 25%: analysis unavailable",
        None,
        "[t] analysis available again at 25%",
    ]


def test_panel_shows_e_values_of_sequential_gates() -> None:
    """Sequential gates carry an e-value (and, with detect, a clearance), and the panel
    shows them beside the classification."""
    view = ProgressView(
        {"id": "p1", "phase": "progressing", "weight": 10, "step_index": 0, "service": "demo",
         "stage": "prod", "version": "1.1.0", "artifact": "r@sha256:" + "a" * 64},
    )  # fmt: skip
    view.apply({"kind": "verdict", "data": {"decision": "wait", "gates": [
        {"gate": "errors", "result": "breach", "value": 0.3, "threshold": 0.05,
         "classification": "transient", "e_value": 12.5, "clearance": 0.125}]}})  # fmt: skip
    console = Console(file=io.StringIO(), width=120)
    console.print(view.render())
    screen = console.file.getvalue()  # type: ignore[attr-defined]
    assert "e-value" in screen and "12.5" in screen
    assert "clearance" in screen and "0.125" in screen


@pytest.mark.parametrize(
    ("artifact", "shown"),
    [
        pytest.param("app:1@sha256:" + "ab" * 32, "app:1@sha256:abababababab", id="sha256"),
        pytest.param("app:1@sha512:" + "cd" * 64, "app:1@sha512:cdcdcdcdcdcd", id="sha512"),
        pytest.param("", "", id="none"),
    ],
)
def test_tables_shorten_every_digest_algorithm(artifact: str, shown: str) -> None:
    """Tables show the first 12 hex characters of a digest, whatever its algorithm."""
    assert _short(artifact) == shown


def waiting_verdict(requests: float | None, reason: str = "") -> dict[str, Any]:
    """A verdict whose error_rate gate has too few requests (or, without them, no data)."""
    no_data = {"gate": "error_rate", "result": "no_data", "classification": None,
               "value": None, "requests": requests, "min_requests": 50 if requests else None,
               "reason": reason or f"error_rate: no data for the candidate ({requests:g} "
               "requests since the last judged reading, need 50)"}  # fmt: skip
    return {"kind": "verdict", "data": {"decision": "wait", "action": "wait",
            "gates": [no_data, gate("p99", "pass", None, 0.2)]}}  # fmt: skip


def test_plain_progress_shows_a_step_waiting_for_evidence() -> None:
    """Too few requests make a step wait: one line, with how far the evidence has come,
    the first time a step waits; windows that fill in turns within the step add none,
    and the next step that waits gets its own line."""
    view = ProgressView(
        {"phase": "progressing", "weight": 10, "step_index": 0, "service": "demo"}, title="t"
    )
    judged = {"kind": "verdict", "data": {"decision": "pass", "gates": [
        gate("error_rate", "pass", None, 0.01)]}}  # fmt: skip
    first = waiting_verdict(None, "error_rate: no data for the candidate (first reading)")
    next_step = {"kind": "step", "data": {"step": 1, "weight": 25, "reason": "step 1 passed"}}
    events = (first, judged, waiting_verdict(12), next_step, waiting_verdict(24), judged)
    lines = [view.apply(e) for e in events]
    assert lines == [
        "[t] waiting for evidence at 10%: error_rate: no data for the candidate (first reading)",
        None,
        None,
        "[t] step 2: weight 25%: step 1 passed",
        "[t] waiting for evidence at 25%: error_rate 24 of 50 requests",
        None,
    ]
    assert view.waiting == ""


def test_panel_shows_a_step_waiting_for_evidence() -> None:
    view = ProgressView(
        {"id": "p1", "phase": "progressing", "weight": 10, "step_index": 0, "service": "demo",
         "stage": "prod", "version": "1.1.0", "artifact": "r@sha256:" + "a" * 64},
    )  # fmt: skip
    view.apply(waiting_verdict(12))
    console = Console(file=io.StringIO(), width=120)
    console.print(view.render())
    assert "waiting: error_rate 12 of 50 requests" in console.file.getvalue()  # type: ignore[attr-defined]
