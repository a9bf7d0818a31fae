"""The HTTP API on a real server, over a real controller, ledger and recorder."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client.parser import text_string_to_metric_families

from sidecar.actuators.proxy import ProxyActuator
from sidecar.analysis.prometheus import NullMetricsSource
from sidecar.api.app import build_api
from sidecar.api.auth import Principal, Role, TokenTable
from sidecar.client import ApiClient
from sidecar.domain.policy import parse_policy_text
from sidecar.domain.promotion import Promotion
from sidecar.engine.clock import SystemClock
from sidecar.engine.context import EngineContext
from sidecar.engine.controller import Controller
from sidecar.errors import ActuationError, AuthError, LedgerError, SettingsError
from sidecar.ledger.memory import MemoryLedger
from sidecar.telemetry.metrics import PrometheusRecorder
from sidecar.testing import RecordingActuator
from tests.conftest import HttpServer
from tests.support.manifests import manifest
from tests.support.processes import wait_until

POLICY = """
apiVersion: promgate/v1
kind: PromotionPolicy
metadata: {name: api-test}
version: "7"
analysis: {interval: 20ms, noDataTimeout: 1h, maxProviderHold: 1h}
stages:
  - name: dev            # judged on data that never comes: a canary waits at its first step
    strategy: {canary: {steps: [10, 50, 100], stepDuration: 1h}}
    gates:
      slo:
        - name: error-ratio
          ratio: {bad: 'sum(bad{digest="$digest"})', total: 'sum(total{digest="$digest"})'}
          max: 0.05
  - name: fast           # no SLO gates: each step passes once it has lasted 10ms
    strategy: {canary: {steps: [50, 100], stepDuration: 10ms}}
  - name: gated
    strategy: {canary: {steps: [50, 100], stepDuration: 1h}}
    gates:
      metadata: {maxVulnerabilities: {critical: 0}, requireProvenance: true}
  - name: prod
    requires: [fast]
    approval: {required: true}
    strategy: {canary: {steps: [50, 100], stepDuration: 10ms}}
"""

TOKENS = {
    Role.VIEWER: ("vera", "viewer-token-0123456789"),
    Role.PROMOTER: ("pat", "promoter-token-0123456789"),
    Role.APPROVER: ("amy", "approver-token-0123456789"),
    Role.ADMIN: ("root", "admin-token-0123456789"),
}
TOKEN_TABLE = TokenTable.from_pairs(
    (str(role), name, token) for role, (name, token) in TOKENS.items()
)
BODY_LIMIT = 64 * 1024
KEEPALIVE_S = 0.2


def auth(role: Role | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role][1]}"} if role else {}


class BrokenLedger(MemoryLedger):
    """A memory ledger whose reads fail with ``failure`` when set, as a broken store's would."""

    def __init__(self) -> None:
        super().__init__()
        self.failure: Exception | None = None

    async def list(self, **filters: Any) -> Sequence[Promotion]:
        if self.failure is not None:
            raise self.failure
        return await super().list(**filters)

    async def get(self, promotion_id: str) -> Promotion:
        if self.failure is not None:
            raise self.failure
        return await super().get(promotion_id)


@dataclass
class Api:
    """A running API and the parts behind it."""

    base_url: str
    session: aiohttp.ClientSession
    ledger: BrokenLedger
    actuator: Any

    async def call(
        self, method: str, path: str, role: Role | None = Role.ADMIN, **kwargs: Any
    ) -> tuple[int, Any, Any]:
        """(status, JSON body, headers) of one request made with ``role``'s token."""
        headers = {**auth(role), **kwargs.pop("headers", {})}
        async with self.session.request(method, path, headers=headers, **kwargs) as response:
            return response.status, await response.json(content_type=None), response.headers

    async def create(
        self, stage: str, role: Role | None = Role.PROMOTER, **fields: Any
    ) -> tuple[int, Any]:
        body = {"manifest": manifest(**fields), "stage": stage}
        status, data, _ = await self.call("POST", "/v1/promotions", role, json=body)
        return status, data

    async def wait_phase(self, promotion_id: str, *phases: str) -> dict[str, Any]:
        """Poll until the promotion reaches one of ``phases``; fail after a deadline."""
        body: dict[str, Any] = {}

        async def reached() -> bool:
            nonlocal body
            _, body, _ = await self.call("GET", f"/v1/promotions/{promotion_id}")
            return body["phase"] in phases

        try:
            await wait_until(reached, 10.0, what=f"{promotion_id} in {phases}", interval_s=0.02)
        except TimeoutError:
            raise AssertionError(f"{promotion_id} stuck in {body['phase']}") from None
        return dict(body)

    async def promoted(self, stage: str, **fields: Any) -> dict[str, Any]:
        status, body = await self.create(stage, **fields)
        assert status == 201, body
        return await self.wait_phase(body["id"], "promoted")

    async def progressing(self, stage: str = "dev") -> str:
        """A canary at its first step, behind a promoted first release; returns its id."""
        await self.promoted(stage)
        status, body = await self.create(stage, digest_char="b", tag="1.1.0", version="1.1.0")
        assert status == 201, body
        await self.wait_phase(body["id"], "progressing")
        return str(body["id"])

    async def awaiting_approval(self, **fields: Any) -> str:
        await self.promoted("fast", **fields)
        status, body = await self.create("prod", **fields)
        assert status == 201, body
        await self.wait_phase(body["id"], "awaiting_approval")
        return str(body["id"])

    def audit(self) -> list[tuple[str, str, str]]:
        """(actor, action, target) of every audited write that took effect."""
        return [
            (e.actor, e.action, e.target)
            for e in self.ledger.audit_entries
            if e.result == "applied"
        ]

    def attempts(self) -> list[tuple[str, str, str, str]]:
        """(actor, action, target, result) of every audited write attempt."""
        return [(e.actor, e.action, e.target, e.result) for e in self.ledger.audit_entries]


@dataclass
class Parts:
    """A started controller and what it is built from."""

    controller: Controller
    ledger: BrokenLedger
    actuator: Any
    recorder: PrometheusRecorder

    @classmethod
    async def build(cls, started: bool = True, actuator: Any = None) -> Parts:
        """``actuator`` defaults to a RecordingActuator."""
        ledger, recorder = BrokenLedger(), PrometheusRecorder()
        actuator = actuator if actuator is not None else RecordingActuator()
        controller = Controller(
            EngineContext(
                policy=parse_policy_text(POLICY, "test-policy"),
                ledger=ledger,
                actuator=actuator,
                source=NullMetricsSource(),
                recorder=recorder,
                tracer=TracerProvider().get_tracer("t"),
                clock=SystemClock(),
            )
        )
        if started:
            await controller.start()
        return cls(controller, ledger, actuator, recorder)

    def app(
        self, tokens: TokenTable = TOKEN_TABLE, keepalive_s: float = KEEPALIVE_S
    ) -> web.Application:
        return build_api(
            self.controller,
            tokens,
            self.recorder.registry,
            max_body_bytes=BODY_LIMIT,
            keepalive_s=keepalive_s,
        )


StartApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def start_api(http_server: HttpServer) -> AsyncIterator[StartApi]:
    """``await start(tokens=..., started=True)`` -> an Api on a real server."""
    controllers: list[Controller] = []
    async with contextlib.AsyncExitStack() as stack:

        async def start(
            tokens: TokenTable = TOKEN_TABLE, started: bool = True, actuator: Any = None
        ) -> Api:
            parts = await Parts.build(started, actuator)
            controllers.append(parts.controller)
            base_url = await http_server(parts.app(tokens))
            session = await stack.enter_async_context(aiohttp.ClientSession(base_url))
            return Api(base_url, session, parts.ledger, parts.actuator)

        yield start
        for controller in controllers:
            await controller.stop()


@pytest.fixture
async def api(start_api: StartApi) -> Api:
    return await start_api()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Captures promgate's and aiohttp's logs even where promgate's logger does not propagate."""
    loggers = [logging.getLogger(name) for name in ("promgate", "aiohttp")]
    for logger in loggers:
        logger.addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG)
    yield caplog
    for logger in loggers:
        logger.removeHandler(caplog.handler)


def error_of(body: Any) -> dict[str, Any]:
    error = body["error"]
    assert set(error) >= {"type", "message", "problems"}
    return dict(error)


def paths(body: Any) -> set[str]:
    return {p["path"] for p in error_of(body)["problems"]}


# --- creating and reading ---------------------------------------------------------------


async def test_create_answers_201_with_location_then_get_and_list_find_it(api: Api) -> None:
    """The first release of a stage has nothing to compare with, so it is promoted at once."""
    body = {"manifest": manifest(), "stage": "dev"}
    async with api.session.post(
        "/v1/promotions", json=body, headers=auth(Role.PROMOTER)
    ) as response:
        assert response.status == 201
        created = await response.json()
        assert response.headers["Location"] == f"/v1/promotions/{created['id']}"
    assert created["service"] == "demo" and created["stage"] == "dev"
    assert created["artifact"].endswith("@sha256:" + "a" * 64)
    promotion_id = created["id"]

    promoted = await api.wait_phase(promotion_id, "promoted")
    assert promoted["weight"] == 100 and promoted["baseline"] is None

    status, listed, _ = await api.call("GET", "/v1/promotions?service=demo&stage=dev", Role.VIEWER)
    assert status == 200 and [p["id"] for p in listed["items"]] == [promotion_id]
    _, active, _ = await api.call("GET", "/v1/promotions?stage=dev&active=true", Role.VIEWER)
    assert active["items"] == []
    _, ended, _ = await api.call("GET", "/v1/promotions?active=false", Role.VIEWER)
    assert [p["id"] for p in ended["items"]] == [promotion_id]
    assert api.audit() == [("pat", "create", promotion_id)]


async def test_second_release_becomes_a_canary_that_waits_for_data(api: Api) -> None:
    """With a stable release in place the next digest gets the first step's weight and waits."""
    first = await api.promoted("dev")
    status, body = await api.create("dev", digest_char="b", tag="1.1.0", version="1.1.0")
    assert status == 201 and body["phase"] == "progressing"
    canary = await api.wait_phase(body["id"], "progressing")
    assert canary["weight"] == 10 and canary["step_index"] == 0
    assert canary["baseline"] == first["artifact"]
    split = {b.role: b.weight for b in api.actuator.applied[-1].backends}
    assert split == {"stable": 90, "candidate": 10}
    await asyncio.sleep(0.1)  # several evaluations without data: it neither moves nor ends
    _, again, _ = await api.call("GET", f"/v1/promotions/{body['id']}", Role.VIEWER)
    assert again["phase"] == "progressing" and again["weight"] == 10


async def test_list_refuses_an_active_filter_that_is_not_a_boolean(api: Api) -> None:
    status, body, _ = await api.call("GET", "/v1/promotions?active=maybe", Role.VIEWER)
    assert status == 400 and paths(body) == {"active"}


# --- authentication and roles -----------------------------------------------------------


async def test_requests_without_a_valid_token_get_401_with_a_bearer_challenge(
    api: Api, logs: pytest.LogCaptureFixture
) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer not-a-known-token"},
        {"Authorization": "Basic x"},
    ):
        status, body, response_headers = await api.call(
            "GET", "/v1/promotions", None, headers=headers
        )
        assert status == 401, headers
        assert error_of(body)["type"] == "AuthError"
        assert response_headers["WWW-Authenticate"].startswith("Bearer")
        assert "not-a-known-token" not in json.dumps(body)
    assert "not-a-known-token" not in logs.text


async def test_each_role_may_do_what_the_roles_below_it_may(api: Api) -> None:
    """A viewer reads but cannot create; higher roles can; the 403 names the role needed."""
    assert (await api.call("GET", "/v1/promotions", Role.VIEWER))[0] == 200
    status, body = await api.create("dev", Role.VIEWER)
    assert status == 403
    message = error_of(body)["message"]
    assert "promoter" in message and "vera" in message
    assert (await api.create("dev", Role.APPROVER))[0] == 201
    assert [actor for actor, _, _ in api.audit()] == ["amy"]
    assert api.attempts()[0] == ("vera", "create", "promotions", "refused:403")


async def test_without_tokens_reads_are_anonymous_and_writes_are_refused(
    start_api: StartApi,
) -> None:
    api = await start_api(tokens=TokenTable())
    assert (await api.call("GET", "/v1/promotions", None))[0] == 200
    status, body = await api.create("dev", None)
    assert status == 401
    assert "PROMGATE_TOKENS_FILE" in error_of(body)["message"]
    assert api.attempts() == [("anonymous", "create", "promotions", "refused:401")]


def test_authenticate_checks_the_token_then_the_role() -> None:
    table = TokenTable.from_pairs([("approver", "amy", "s3cret-value")])
    expected = Principal("amy", Role.APPROVER)
    assert table.authenticate("Bearer s3cret-value", Role.APPROVER) == expected
    assert table.authenticate("bearer  s3cret-value ") == expected
    with pytest.raises(AuthError) as denied:
        table.authenticate("Bearer s3cret-value", Role.ADMIN)
    assert denied.value.status == 403 and "admin" in str(denied.value)
    assert "s3cret" not in repr(table)


# --- the tokens file --------------------------------------------------------------------


def test_tokens_file_skips_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# role name token\n\nviewer  vera  t-1\n  promoter pat t-2  \n")
    table = TokenTable.load(path)
    assert table.authenticate("Bearer t-2", Role.PROMOTER) == Principal("pat", Role.PROMOTER)
    assert table.authenticate("Bearer t-1") == Principal("vera", Role.VIEWER)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("viewer vera\n", "line 1: expected `<role> <name> <token>`, found 2"),
        ("# ok\nviewer vera hunter2 extra\n", "line 2: expected"),
        ("\nroot sam hunter2\n", "line 2: unknown role 'root'"),
        ("viewer a hunter2\nadmin b hunter2\n", "line 2: the token of 'b' is already used"),
        ("# nothing here\n", "holds no tokens"),
    ],
)
def test_tokens_file_errors_name_file_and_line_but_never_the_token(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "tokens"
    path.write_text(text)
    with pytest.raises(SettingsError) as error:
        TokenTable.load(path)
    assert expected in str(error.value)
    assert str(path) in str(error.value)
    assert "hunter2" not in str(error.value)


def test_a_missing_tokens_file_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="PROMGATE_TOKENS_FILE"):
        TokenTable.load(tmp_path / "absent")


# --- bad requests -----------------------------------------------------------------------


async def test_malformed_json_is_400_naming_line_and_column(api: Api) -> None:
    raw = b'{"stage": "dev",\n "manifest": }'
    status, body, _ = await api.call("POST", "/v1/promotions", Role.PROMOTER, data=raw)
    assert status == 400
    assert paths(body) == {"line 2 column 14"}
    assert "line 2 column 14" in error_of(body)["message"]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ([1, 2], {""}),
        ({"manifest": {}}, {"stage"}),
        ({"stage": "dev"}, {"manifest"}),
        ({"stage": "dev", "manifest": "x"}, {"manifest"}),
        ({"stage": 3, "manifest": {}}, {"stage"}),
        ({"stage": "dev", "manifest": {}, "upstream": "ftp://h/x"}, {"upstream"}),
        ({"stage": "dev", "manifest": {}, "upstream": "http://u:pw@h:1"}, {"upstream"}),
        ({"stage": "dev", "manifest": {}, "colour": "blue"}, {"colour"}),
        ({"stage": "dev", "manifest": {}, "backend": "a b"}, {"backend"}),
    ],
)
async def test_invalid_request_fields_are_400_with_their_paths(
    api: Api, payload: Any, expected: set[str]
) -> None:
    status, body, _ = await api.call("POST", "/v1/promotions", Role.PROMOTER, json=payload)
    assert status == 400
    assert paths(body) == expected
    assert "pw@" not in json.dumps(body)


async def test_an_upstream_url_is_kept(api: Api) -> None:
    body = {"manifest": manifest(), "stage": "dev", "upstream": "http://127.0.0.1:9001"}
    status, created, _ = await api.call("POST", "/v1/promotions", Role.PROMOTER, json=body)
    assert status == 201 and created["candidate_upstream"] == "http://127.0.0.1:9001"


async def test_the_backend_a_candidate_runs_in_is_kept(api: Api) -> None:
    """The backend named at creation is the candidate's; without one it gets a slot."""
    body = {"manifest": manifest(), "stage": "dev", "backend": "srv-a"}
    status, created, _ = await api.call("POST", "/v1/promotions", Role.PROMOTER, json=body)
    assert status == 201 and created["candidate_backend"] == "srv-a"


async def test_a_manifest_without_digest_is_400_saying_how_to_pin_it(api: Api) -> None:
    status, body = await api.create("dev", artifact="registry.example.com/demo:1.0.0")
    assert status == 400
    error = error_of(body)
    assert error["type"] == "ManifestError"
    [problem] = error["problems"]
    assert problem["path"] == "manifest.artifact"
    assert "has no digest" in problem["message"] and "crane digest" in problem["message"]


async def test_manifest_problems_carry_paths_from_the_body_root(api: Api) -> None:
    status, body = await api.create(
        "dev", build={"number": 1}, checks={"vulnerabilities": {"critical": -1}}, colour="blue"
    )
    assert status == 400
    assert paths(body) == {
        "manifest.build.id",
        "manifest.checks.vulnerabilities.critical",
        "manifest.colour",
    }
    assert all(p["fix"] for p in error_of(body)["problems"])


async def test_an_unknown_stage_is_400(api: Api) -> None:
    status, body = await api.create("nowhere")
    assert status == 400 and "nowhere" in error_of(body)["message"]


async def test_an_oversized_body_is_413_stating_the_limit(api: Api) -> None:
    big = {"manifest": manifest(), "stage": "dev", "pad": "x" * BODY_LIMIT}
    status, body, _ = await api.call("POST", "/v1/promotions", Role.PROMOTER, json=big)
    assert status == 413
    assert str(BODY_LIMIT) in error_of(body)["message"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit still holds
        for _ in range(BODY_LIMIT // 1024 + 8):
            yield b" " * 1024

    status, body, _ = await api.call("POST", "/v1/promotions", Role.PROMOTER, data=chunks())
    assert status == 413 and error_of(body)["type"] == "PayloadTooLarge"


async def test_unknown_ids_routes_and_methods_answer_json(api: Api) -> None:
    status, body, _ = await api.call("GET", "/v1/promotions/nope", Role.VIEWER)
    assert status == 404 and error_of(body)["type"] == "NotFoundError"
    status, body, _ = await api.call("GET", "/v1/nothing-here", Role.VIEWER)
    assert status == 404 and "/v1/nothing-here" in error_of(body)["message"]
    status, body, headers = await api.call("DELETE", "/v1/promotions")
    assert status == 405 and "GET" in headers["Allow"]
    assert (await api.call("POST", "/v1/promotions/nope/abort", Role.PROMOTER))[0] == 404


# --- refusals ---------------------------------------------------------------------------


async def test_a_moved_tag_is_409(api: Api) -> None:
    await api.promoted("dev", digest_char="a", tag="1.0.0")
    status, body = await api.create("dev", digest_char="b", tag="1.0.0")
    assert status == 409 and error_of(body)["type"] == "TagMutationError"


async def test_a_metadata_gate_refusal_is_422_naming_the_stored_record(api: Api) -> None:
    status, body = await api.create("gated", provenance=None)
    assert status == 422
    error = error_of(body)
    assert error["type"] == "MetadataGateError" and "provenance" in error["message"]
    refused_id = error["promotion_id"]
    _, stored, _ = await api.call("GET", f"/v1/promotions/{refused_id}", Role.VIEWER)
    assert stored["phase"] == "refused"
    assert api.attempts() == [("pat", "create", refused_id, "refused:422")]


async def test_a_second_promotion_while_one_is_active_is_409_naming_the_active_one(
    api: Api,
) -> None:
    """The conflict names the promotion still running, so a client can re-attach to it."""
    active_id = await api.progressing()
    status, body = await api.create("dev", digest_char="c", tag="1.2.0", version="1.2.0")
    assert status == 409 and error_of(body)["type"] == "ConflictError"
    assert error_of(body)["active_promotion_id"] == active_id
    assert "promotion_id" not in error_of(body)  # nothing was stored for the conflict


async def test_a_stage_out_of_order_is_422(api: Api) -> None:
    status, body = await api.create("prod")
    assert status == 422 and error_of(body)["type"] == "StageOrderError"
    assert error_of(body)["promotion_id"]


# --- people's commands ------------------------------------------------------------------


async def test_a_stage_that_requires_approval_waits_for_an_approver(api: Api) -> None:
    promotion_id = await api.awaiting_approval()
    path = f"/v1/promotions/{promotion_id}/approve"
    assert (await api.call("POST", path, Role.PROMOTER))[0] == 403
    status, approved, _ = await api.call("POST", path, Role.APPROVER)
    assert status == 200 and approved["approved_by"] == "amy"
    await api.wait_phase(promotion_id, "promoted")
    status, body, _ = await api.call("POST", path, Role.APPROVER)
    assert status == 409 and error_of(body)["type"] == "ConflictError"
    assert api.audit().count(("amy", "approve", promotion_id)) == 1


async def test_abort_sends_traffic_back_and_is_audited_once(api: Api) -> None:
    promotion_id = await api.progressing()
    path = f"/v1/promotions/{promotion_id}/abort"
    status, aborted, _ = await api.call("POST", path, Role.PROMOTER)
    assert status == 200 and aborted["phase"] == "aborted" and aborted["weight"] == 0
    assert [b.role for b in api.actuator.applied[-1].backends] == ["stable"]
    assert api.audit().count(("pat", "abort", promotion_id)) == 1
    assert (await api.call("POST", path, Role.PROMOTER))[0] == 409


async def test_rollback_of_a_promotion_ends_it_rolled_back(api: Api) -> None:
    promotion_id = await api.progressing()
    path = f"/v1/promotions/{promotion_id}/rollback"
    status, rolled, _ = await api.call("POST", path, Role.PROMOTER)
    assert status == 200 and rolled["phase"] == "rolled_back"
    assert ("pat", "rollback", promotion_id) in api.audit()


async def test_a_stage_rolls_back_to_its_previous_stable_digest(api: Api) -> None:
    first = await api.promoted("fast", digest_char="a", tag="1.0.0")
    second = await api.promoted("fast", digest_char="b", tag="1.1.0", version="1.1.0")
    history_path = "/v1/stages/fast/services/demo/history"
    _, history, _ = await api.call("GET", history_path, Role.VIEWER)
    assert [h["promotion_id"] for h in history["items"]] == [first["id"], second["id"]]

    path = "/v1/stages/fast/services/demo/rollback"
    assert (await api.call("POST", path, Role.VIEWER))[0] == 403
    status, body, _ = await api.call("POST", path, Role.PROMOTER)
    assert status == 200
    assert body["stable"]["artifact"] == first["artifact"]
    assert body["stable"]["promotion_id"] == first["id"]
    _, history, _ = await api.call("GET", history_path, Role.VIEWER)
    assert [h["promotion_id"] for h in history["items"]] == [first["id"]]
    assert ("pat", "rollback", "demo/fast") in api.audit()
    assert (await api.call("POST", path, Role.PROMOTER))[0] == 404


async def in_phase(api: Api, phase: str) -> str:
    """The id of a promotion in ``phase``, each from its own release of the demo service."""
    if phase == "awaiting_approval":
        return await api.awaiting_approval(digest_char="c", tag="3.0.0", version="3.0.0")
    if phase == "progressing":
        return await api.progressing()
    promotion_id = await api.progressing("fast" if phase == "promoted" else "dev")
    if phase == "aborted":
        assert (await api.call("POST", f"/v1/promotions/{promotion_id}/abort"))[0] == 200
    await api.wait_phase(promotion_id, phase)
    return promotion_id


COMMAND_OUTCOMES = [
    ("awaiting_approval", "approve", 200), ("awaiting_approval", "abort", 200),
    ("awaiting_approval", "rollback", 409),
    ("progressing", "approve", 409), ("progressing", "abort", 200),
    ("progressing", "rollback", 200),
    ("promoted", "approve", 409), ("promoted", "abort", 409), ("promoted", "rollback", 409),
    ("aborted", "approve", 409), ("aborted", "abort", 409), ("aborted", "rollback", 409),
]  # fmt: skip


@pytest.mark.parametrize(("phase", "command", "status"), COMMAND_OUTCOMES)
async def test_each_command_in_each_phase_applies_or_is_409_naming_the_phase(
    api: Api, phase: str, command: str, status: int
) -> None:
    """A command either applies (200, audited as applied) or is refused with a 409 whose
    message names the phase, leaving the promotion as it was (audited as refused)."""
    promotion_id = await in_phase(api, phase)
    audited = list(api.audit())
    attempts = list(api.attempts())
    _, before, _ = await api.call("GET", f"/v1/promotions/{promotion_id}")
    answered, body, _ = await api.call("POST", f"/v1/promotions/{promotion_id}/{command}")
    assert answered == status, body
    if status == 409:
        assert error_of(body)["type"] == "ConflictError"
        assert f"it is {phase}" in error_of(body)["message"]
        assert api.audit() == audited
        assert api.attempts() == [
            *attempts,
            (TOKENS[Role.ADMIN][0], command, promotion_id, "refused:409"),
        ]
        assert (await api.call("GET", f"/v1/promotions/{promotion_id}"))[1] == before
    else:
        assert api.audit() == [*audited, (TOKENS[Role.ADMIN][0], command, promotion_id)]


async def test_a_refused_rollback_while_awaiting_approval_leaves_it_approvable(api: Api) -> None:
    """Rolling back a promotion that awaits approval is 409 and changes nothing, so a
    later approval (200) moves it on to promoted."""
    promotion_id = await api.awaiting_approval()
    status, body, _ = await api.call("POST", f"/v1/promotions/{promotion_id}/rollback")
    assert status == 409, body
    assert "awaiting_approval" in error_of(body)["message"]
    assert "abort it instead" in error_of(body)["message"]
    status, approved, _ = await api.call(
        "POST", f"/v1/promotions/{promotion_id}/approve", Role.APPROVER
    )
    assert status == 200 and approved["approved_by"] == "amy"
    assert (await api.wait_phase(promotion_id, "promoted"))["approved_by"] == "amy"
    assert [a for a in api.audit() if a[2] == promotion_id] == [
        ("pat", "create", promotion_id),
        ("amy", "approve", promotion_id),
    ]


async def test_the_proxy_refuses_a_promotion_it_could_never_route(start_api: StartApi) -> None:
    """Under the built-in proxy, a candidate without an upstream, or a stage without a
    listener, is a 400 naming the field, and nothing is stored; a routable one is created."""
    proxy = ProxyActuator({"dev": ("127.0.0.1", 0)})
    await proxy.start()
    try:
        api = await start_api(actuator=proxy)
        status, body = await api.create("dev")
        assert status == 400, body
        assert paths(body) == {"upstream"}
        assert "no upstream" in error_of(body)["problems"][0]["message"]
        body = {"manifest": manifest(), "stage": "fast", "upstream": "http://127.0.0.1:9001"}
        status, refused, _ = await api.call("POST", "/v1/promotions", json=body)
        assert status == 400 and paths(refused) == {"stage"}, refused
        assert (await api.call("GET", "/v1/promotions"))[1]["items"] == []
        status, created, _ = await api.call("POST", "/v1/promotions", json={**body, "stage": "dev"})
        assert status == 201, created
    finally:
        await proxy.close()


# --- failures behind the API ------------------------------------------------------------


async def test_a_failed_actuation_is_502(api: Api) -> None:
    promotion_id = await api.progressing()
    api.actuator.error = ActuationError("proxy for dev is unreachable")
    status, body, _ = await api.call("POST", f"/v1/promotions/{promotion_id}/abort")
    assert status == 502 and "unreachable" in error_of(body)["message"]


async def test_ledger_failures_are_503_and_bugs_are_500_without_details(
    api: Api, logs: pytest.LogCaptureFixture
) -> None:
    api.ledger.failure = LedgerError("ledger.db is locked")
    status, body, _ = await api.call("GET", "/v1/promotions", Role.VIEWER)
    assert status == 503 and error_of(body)["type"] == "LedgerError"

    api.ledger.failure = RuntimeError("internal detail 42")
    status, body, _ = await api.call("GET", "/v1/promotions", Role.VIEWER)
    assert status == 500 and error_of(body)["type"] == "InternalError"
    assert "42" not in json.dumps(body)
    assert "internal detail 42" in logs.text  # the traceback is in the log, not the answer
    assert (await api.call("GET", "/healthz", None))[0] == 200


# --- event streams ----------------------------------------------------------------------


async def read_sse(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, str]]:
    """Yield each server-sent event, and each comment as ``{"comment": text}``, until EOF."""
    fields: dict[str, str] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith(":"):
            yield {"comment": line[1:].strip()}
        elif line:
            name, _, value = line.partition(": ")
            fields[name] = value
        elif fields:
            yield fields
            fields = {}


async def test_events_come_as_ndjson_by_default(api: Api) -> None:
    promoted = await api.promoted("dev")
    path = f"/v1/promotions/{promoted['id']}/events"
    async with api.session.get(path, headers=auth(Role.VIEWER)) as response:
        assert response.status == 200
        assert response.content_type == "application/x-ndjson"
        events = [json.loads(line) for line in (await response.text()).splitlines()]
    assert events[0]["kind"] == "created" and events[0]["promotion_id"] == promoted["id"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert "promoted" in {e["kind"] for e in events}

    async with api.session.get(path, params={"after": "1"}, headers=auth(Role.VIEWER)) as response:
        later = [json.loads(line) for line in (await response.text()).splitlines()]
    assert [e["seq"] for e in later] == [e["seq"] for e in events[1:]]
    status, body, _ = await api.call("GET", f"{path}?after=-1", Role.VIEWER)
    assert status == 400 and paths(body) == {"after"}
    assert (await api.call("GET", "/v1/promotions/nope/events", Role.VIEWER))[0] == 404


async def test_sse_follows_until_the_promotion_ends(api: Api) -> None:
    """A follower sees the canary's steps, then an abort made meanwhile, then the end."""
    promotion_id = await api.progressing()
    headers = {**auth(Role.VIEWER), "Accept": "text/event-stream"}
    events: list[dict[str, str]] = []
    aborted = False
    async with api.session.get(
        f"/v1/promotions/{promotion_id}/events", params={"follow": "1"}, headers=headers
    ) as response:
        assert response.content_type == "text/event-stream"
        async for event in read_sse(response):
            if "event" not in event:
                continue
            events.append(event)
            if event["event"] == "verdict" and not aborted:
                status, _, _ = await api.call("POST", f"/v1/promotions/{promotion_id}/abort")
                assert status == 200
                aborted = True
    kinds = [e["event"] for e in events]
    assert kinds[0] == "created" and "step" in kinds and "aborted" in kinds
    assert kinds.index("verdict") < kinds.index("aborted")
    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))
    assert {json.loads(e["data"])["promotion_id"] for e in events} == {promotion_id}


async def test_sse_resumes_after_last_event_id(api: Api) -> None:
    promoted = await api.promoted("dev")
    headers = {**auth(Role.VIEWER), "Accept": "text/event-stream", "Last-Event-ID": "2"}
    async with api.session.get(
        f"/v1/promotions/{promoted['id']}/events", headers=headers
    ) as response:
        ids = [int(e["id"]) async for e in read_sse(response) if "id" in e]
    assert ids and ids[0] == 3


async def test_an_idle_stream_sends_keepalives_and_ends_once_promoted(api: Api) -> None:
    promotion_id = await api.awaiting_approval()
    headers = {**auth(Role.VIEWER), "Accept": "text/event-stream"}
    kinds: list[str] = []
    async with api.session.get(
        f"/v1/promotions/{promotion_id}/events?follow=true", headers=headers
    ) as response:
        async for event in read_sse(response):
            if event.get("comment") == "keepalive" and "approved" not in kinds:
                assert (await api.call("POST", f"/v1/promotions/{promotion_id}/approve"))[0] == 200
                kinds.append("approved")
            elif "event" in event:
                kinds.append(event["event"])
    assert kinds.index("approved") < kinds.index("promoted")


async def test_a_client_leaving_a_stream_logs_no_error(
    api: Api, logs: pytest.LogCaptureFixture
) -> None:
    promotion_id = await api.awaiting_approval()
    path = f"/v1/promotions/{promotion_id}/events"
    async with aiohttp.ClientSession(api.base_url) as other:
        response = await other.get(path, params={"follow": "1"}, headers=auth(Role.VIEWER))
        await response.content.readline()
        response.close()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while not any(r.name == "aiohttp.access" and path in r.getMessage() for r in logs.records):
        assert loop.time() < deadline, "the stream handler did not notice the client left"
        await asyncio.sleep(0.05)
    assert not [r for r in logs.records if r.levelno >= logging.WARNING]
    assert (await api.call("GET", "/healthz", None))[0] == 200


# --- probes and metrics -----------------------------------------------------------------


async def test_health_readiness_and_metrics_need_no_token(api: Api, start_api: StartApi) -> None:
    await api.promoted("dev")
    status, body, _ = await api.call("GET", "/healthz", None)
    assert status == 200 and body == {"status": "ok"}
    assert (await api.call("GET", "/readyz", None))[0] == 200
    async with api.session.get("/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    outcome = (("outcome", "promoted"), ("service", "demo"), ("stage", "dev"))
    assert samples[("promgate_promotions_total", outcome)] == 1.0
    accept = {"Accept": "application/openmetrics-text; version=1.0.0"}
    async with api.session.get("/metrics", headers=accept) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert (await response.text()).rstrip().endswith("# EOF")

    unstarted = await start_api(started=False)
    assert (await unstarted.call("GET", "/readyz", None))[0] == 503
    assert (await unstarted.call("GET", "/healthz", None))[0] == 200


async def test_a_stream_reports_a_failure_in_band_and_ends(api: Api) -> None:
    """Once the stream has begun, an error arrives as an ``error`` event, not a broken body."""
    promotion_id = await api.awaiting_approval()
    headers = {**auth(Role.VIEWER), "Accept": "text/event-stream"}
    errors: list[dict[str, Any]] = []
    async with api.session.get(
        f"/v1/promotions/{promotion_id}/events?follow=1", headers=headers
    ) as response:
        async for event in read_sse(response):
            if event.get("comment") == "keepalive":
                api.ledger.failure = LedgerError("ledger.db is locked")
            elif event.get("event") == "error":
                errors.append(json.loads(event["data"]))
    assert [e["error"]["type"] for e in errors] == ["LedgerError"]


async def test_shutdown_ends_following_streams_at_once() -> None:
    """Streams do not hold the server up until their keepalive timeout."""
    parts = await Parts.build()
    runner = web.AppRunner(parts.app(keepalive_s=60.0), shutdown_timeout=30.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession(base_url) as session:
            api = Api(base_url, session, parts.ledger, parts.actuator)
            promotion_id = await api.awaiting_approval()
            async with session.get(
                f"/v1/promotions/{promotion_id}/events?follow=1", headers=auth(Role.VIEWER)
            ) as response:
                await response.content.readline()
                # Were the stream not woken, cleanup would wait for its 30 s shutdown timeout.
                await asyncio.wait_for(runner.cleanup(), 5.0)
                await response.read()
    finally:
        await runner.cleanup()
        await parts.controller.stop()


# --- hostile input: every refusal is JSON with a field path, nothing is a 5xx -------------


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


async def post_raw(api: Api, raw: bytes) -> tuple[int, Any]:
    status, body, _ = await api.call("POST", "/v1/promotions", Role.PROMOTER, data=raw)
    return status, body


@pytest.mark.parametrize(
    ("raw", "expected_path", "fragment"),
    [
        pytest.param(nested(1000).encode(), "", "nested too deeply", id="1000-deep"),
        pytest.param(nested(30_000).encode(), "", "nested too deeply", id="30000-deep"),
        pytest.param(
            b'{"stage": "dev", "manifest": {"build": ' + nested(200).encode() + b"}}",
            "manifest.build" + "[0]" * 30,
            "nested deeper than 32 levels",
            id="200-deep-in-a-field",
        ),
        pytest.param(
            b'{"stage": "dev", "manifest": {"build": {"number": ' + b"9" * 4301 + b"}}}",
            "manifest.build.number",
            "4301 digits",
            id="4301-digit-integer",
        ),
        pytest.param(
            b'{"stage": "dev", "manifest": {"version": -' + b"1" * 60_000 + b"}}",
            "manifest.version",
            "60001 digits",
            id="60000-digit-negative-integer",
        ),
        pytest.param(
            b'{"stage": "dev\\ud800", "manifest": {}}', "stage", "lone surrogate", id="surrogate"
        ),
    ],
)
async def test_hostile_bodies_are_400_naming_the_field(
    api: Api, raw: bytes, expected_path: str, fragment: str
) -> None:
    status, body = await post_raw(api, raw)
    assert status == 400, body
    problems = error_of(body)["problems"]
    assert [p["path"] for p in problems] == [expected_path]
    assert fragment in problems[0]["message"]


@pytest.mark.parametrize(
    ("query", "headers", "field"),
    [
        ({"after": str(2**63)}, {}, "after"),
        ({"after": "9" * 5000}, {}, "after"),
        ({}, {"Accept": "text/event-stream", "Last-Event-ID": str(2**63)}, "Last-Event-ID"),
        ({}, {"Accept": "text/event-stream", "Last-Event-ID": "1" * 4400}, "Last-Event-ID"),
        ({"limit": "0"}, {}, "limit"),
        ({"limit": "1" * 5000}, {}, "limit"),
        ({"limit": "5", "follow": "1"}, {}, "limit"),
    ],
)
async def test_event_cursors_beyond_64_bits_are_400_naming_the_parameter(
    api: Api, query: dict[str, str], headers: dict[str, str], field: str
) -> None:
    promoted = await api.promoted("dev")
    status, body, _ = await api.call(
        "GET", f"/v1/promotions/{promoted['id']}/events", params=query, headers=headers
    )
    assert status == 400, body
    assert paths(body) == {field}
    assert "9" * 100 not in json.dumps(body)  # the value is not echoed whole


async def test_the_largest_event_seq_is_accepted(api: Api) -> None:
    promoted = await api.promoted("dev")
    status, _, _ = await api.call(
        "GET", f"/v1/promotions/{promoted['id']}/events", params={"after": str(2**63 - 1)}
    )
    assert status == 200


async def test_long_urls_and_headers_get_json_errors(api: Api) -> None:
    """Beyond the API's limits but within aiohttp's, the answer is JSON naming the part."""
    status, body, _ = await api.call("GET", "/v1/promotions?service=" + "s" * 9000, Role.VIEWER)
    assert status == 414 and paths(body) == {"url"}
    status, body, _ = await api.call("POST", "/v1/promotions/" + "p" * 20_000 + "/abort")
    assert status == 414 and error_of(body)["type"] == "RequestTooLargeError"
    status, body, _ = await api.call(
        "GET", "/v1/promotions", Role.VIEWER, headers={"X-Padding": "x" * 9000}
    )
    assert status == 431 and paths(body) == {"X-Padding"}
    many = {f"X-Header-{i}": "1" for i in range(150)}
    status, body, _ = await api.call("GET", "/v1/promotions", Role.VIEWER, headers=many)
    assert status == 431 and paths(body) == {"headers"}


async def test_an_unknown_stage_is_400_at_path_stage_listing_the_known_ones(api: Api) -> None:
    status, body = await api.create("nowhere")
    assert status == 400
    [problem] = error_of(body)["problems"]
    assert problem["path"] == "stage"
    assert "dev, fast, gated, prod" in problem["fix"]
    status, body, _ = await api.call("GET", "/v1/stages/nowhere/services/demo/history")
    assert status == 400 and paths(body) == {"stage"}
    status, body = await api.create("s" * 50_000)
    assert status == 400 and paths(body) == {"stage"}
    assert "s" * 100 not in json.dumps(body)


# --- pagination ----------------------------------------------------------------------------


async def refused_records(api: Api, count: int) -> list[str]:
    """``count`` stored refusals (instant, terminal records), newest first."""
    ids = []
    for _ in range(count):
        status, body = await api.create("gated", provenance=None)
        assert status == 422, body
        ids.append(error_of(body)["promotion_id"])
    return ids[::-1]


async def test_the_list_is_paged_with_limit_and_cursor(api: Api) -> None:
    newest_first = await refused_records(api, 5)
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        status, page, _ = await api.call("GET", "/v1/promotions", Role.VIEWER, params=params)
        assert status == 200 and len(page["items"]) <= 2
        seen.extend(p["id"] for p in page["items"])
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == newest_first
    _, first, _ = await api.call("GET", "/v1/promotions", Role.VIEWER)
    assert [p["id"] for p in first["items"]] == newest_first and first["next"] is None


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "9" * 5000}, "limit"),
        ({"cursor": "nope"}, "cursor"),
        ({"cursor": "c" * 5000}, "cursor"),
    ],
)
async def test_bad_page_parameters_are_400_naming_them(
    api: Api, params: dict[str, str], field: str
) -> None:
    status, body, _ = await api.call("GET", "/v1/promotions", Role.VIEWER, params=params)
    assert status == 400 and paths(body) == {field}


async def test_events_can_be_read_a_page_at_a_time(api: Api) -> None:
    promoted = await api.promoted("dev")
    path = f"/v1/promotions/{promoted['id']}/events"
    async with api.session.get(path, headers=auth(Role.VIEWER)) as response:
        every = [json.loads(line)["seq"] for line in (await response.text()).splitlines()]
    assert len(every) >= 3
    async with api.session.get(
        path, params={"after": "1", "limit": "1"}, headers=auth(Role.VIEWER)
    ) as response:
        assert [json.loads(line)["seq"] for line in (await response.text()).splitlines()] == [2]


async def test_the_client_follows_the_cursor_through_every_page(api: Api) -> None:
    newest_first = await refused_records(api, 5)
    async with ApiClient(api.base_url, TOKENS[Role.VIEWER][1]) as client:
        listed = await client.list(page_size=2)
        capped = await client.list(limit=3, page_size=2)
    assert [p["id"] for p in listed] == newest_first
    assert [p["id"] for p in capped] == newest_first[:3]


# --- credentials in manifests ----------------------------------------------------------


async def test_manifest_credentials_are_stripped_with_a_warning(
    api: Api, logs: pytest.LogCaptureFixture
) -> None:
    build = {"id": "run-1", "url": "https://ci-bot:ghp_s3cret@ci.example.com/run/1"}
    source = {
        "repository": "https://x-access-token:ghs_s3cret@git.example.com/demo",
        "commit": "0123456789abcdef0123456789abcdef01234567",
    }
    status, created = await api.create("dev", build=build, source=source)
    assert status == 201
    assert {w["path"] for w in created["warnings"]} == {
        "manifest.build.url",
        "manifest.source.repository",
    }
    _, stored, _ = await api.call("GET", f"/v1/promotions/{created['id']}", Role.VIEWER)
    assert stored["manifest"]["build"]["url"] == "https://ci.example.com/run/1"
    assert stored["manifest"]["source"]["repository"] == "https://git.example.com/demo"
    _, listed, _ = await api.call("GET", "/v1/promotions", Role.VIEWER)
    events = await api.ledger.events(created["id"])
    for text in (json.dumps(created), json.dumps(listed), repr(events), logs.text):
        assert "s3cret" not in text
    assert "s3cret" not in json.dumps([p.to_dict() for p in await api.ledger.list()])


# --- the audit trail ---------------------------------------------------------------------


async def test_every_refused_write_attempt_is_audited_once(start_api: StartApi) -> None:
    """401, 403, 404, 405, 409, 400, 413, 414 and 422 each leave one row; reads leave none."""
    api = await start_api()
    promoted = await api.promoted("dev")
    big = {"manifest": manifest(), "stage": "dev", "pad": "x" * BODY_LIMIT}
    promotion_path = f"/v1/promotions/{promoted['id']}"
    attempts: list[tuple[str, str, Role | None, dict[str, Any], tuple[str, str, str, str]]] = [
        ("POST", "/v1/promotions", None, {"json": {}},
         ("anonymous", "create", "promotions", "refused:401")),
        ("POST", "/v1/promotions", Role.VIEWER, {"json": {}},
         ("vera", "create", "promotions", "refused:403")),
        ("POST", "/v1/promotions/nope/abort", Role.PROMOTER, {},
         ("pat", "abort", "nope", "refused:404")),
        ("POST", f"{promotion_path}/approve", Role.APPROVER, {},
         ("amy", "approve", promoted["id"], "refused:409")),
        ("POST", "/v1/promotions", Role.PROMOTER, {"json": {"stage": "dev"}},
         ("pat", "create", "promotions", "refused:400")),
        ("POST", "/v1/promotions", Role.PROMOTER, {"json": big},
         ("pat", "create", "promotions", "refused:413")),
        ("POST", "/v1/promotions/" + "p" * 9000 + "/abort", Role.PROMOTER, {},
         ("pat", "abort", "p" * 512, "refused:414")),
        ("DELETE", "/v1/promotions", Role.ADMIN, {},
         ("root", "DELETE /v1/promotions", "promotions", "refused:405")),
        ("POST", "/v1/stages/dev/services/demo/rollback", Role.PROMOTER, {},
         ("pat", "rollback", "demo/dev", "refused:404")),
    ]  # fmt: skip
    for method, path, role, kwargs, expected in attempts:
        before = len(api.attempts())
        status, _, _ = await api.call(method, path, role, **kwargs)
        assert status == int(expected[3].split(":")[1]), path[:60]
        assert api.attempts()[before:] == [expected], path[:60]
    status, body = await api.create("gated", provenance=None)
    assert status == 422
    assert api.attempts()[-1] == ("pat", "create", error_of(body)["promotion_id"], "refused:422")
    reasons = [e.reason for e in api.ledger.audit_entries if e.result != "applied"]
    assert all(reasons) and "role viewer" in reasons[1] and "nope" in reasons[2]

    before = len(api.attempts())
    for path in ("/v1/promotions", f"/v1/promotions/{promoted['id']}", "/v1/promotions/nope"):
        await api.call("GET", path, Role.VIEWER)
    assert len(api.attempts()) == before


async def test_admins_read_the_audit_trail_newest_first_in_pages(api: Api) -> None:
    await api.promoted("dev")
    await api.create("nowhere")
    assert (await api.call("GET", "/v1/audit", Role.APPROVER))[0] == 403
    status, page, _ = await api.call("GET", "/v1/audit", Role.ADMIN, params={"limit": "1"})
    assert status == 200
    [newest] = page["items"]
    assert (newest["actor"], newest["action"], newest["result"]) == ("pat", "create", "refused:400")
    assert "nowhere" in newest["reason"]
    _, rest, _ = await api.call("GET", "/v1/audit", Role.ADMIN, params={"cursor": page["next"]})
    assert [(e["action"], e["result"]) for e in rest["items"]] == [("create", "applied")]
    assert rest["next"] is None


# --- no input yields a 5xx: a bounded property test over writes and query parameters --------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=40)
    | st.sampled_from([2**63, -(2**63) - 1, "https://u:p@h/x", "\x00", "ﬀ" * 10]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
MANIFEST_FIELDS = st.sampled_from(
    ["service", "artifact", "version", "build", "source", "createdAt", "checks", "provenance",
     "compatibility", "config", "secrets", "apiVersion", "extra"]
)  # fmt: skip
HOSTILE_LITERALS = st.sampled_from(
    [nested(2000), "9" * 5000, "-" + "1" * 4400, '"\\udfff"', "1e999999", "NaN", '"\\u0000"']
)


@st.composite
def create_bodies(draw: st.DrawFn) -> bytes:
    """A request body: a valid manifest with one field replaced, a hostile literal in a
    field, arbitrary JSON, or arbitrary bytes."""
    kind = draw(st.sampled_from(["mutated", "literal", "json", "bytes"]))
    stage = draw(st.sampled_from(["dev", "gated", "prod", "nowhere", ""]) | st.text(max_size=8))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(JSON_VALUES)).encode()
    body = {"manifest": manifest(digest_char=draw(st.sampled_from("cdef"))), "stage": stage}
    field = draw(MANIFEST_FIELDS)
    if kind == "mutated":
        body["manifest"][field] = draw(JSON_VALUES)
        return json.dumps(body).encode()
    body["manifest"][field] = "LITERAL"
    return json.dumps(body).encode().replace(b'"LITERAL"', draw(HOSTILE_LITERALS).encode())


QUERIES = st.dictionaries(
    st.sampled_from(["limit", "cursor", "active", "service", "stage", "after"]),
    st.text(max_size=30) | st.sampled_from([str(2**63), "9" * 4400, "-1", "0", "1000"]),
    max_size=4,
)


def refusal_is_well_formed(status: int, body: Any) -> None:
    assert status < 500, body
    if status >= 400:
        error = error_of(body)
        assert all(isinstance(p["path"], str) for p in error["problems"])
        if status == 400:
            assert error["problems"], body


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure here is never a fluke
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=create_bodies(),
    query=QUERIES,
    segment=st.text(min_size=1, max_size=20),
    action=st.sampled_from(["approve", "abort", "rollback"]),
)
async def test_no_input_yields_a_server_error(
    api: Api, body: bytes, query: dict[str, str], segment: str, action: str
) -> None:
    refusal_is_well_formed(*(await post_raw(api, body)))
    status, listed, _ = await api.call("GET", "/v1/promotions", Role.VIEWER, params=query)
    refusal_is_well_formed(status, listed)
    quoted = quote(segment, safe="")
    status, answer, _ = await api.call("POST", f"/v1/promotions/{quoted}/{action}")
    refusal_is_well_formed(status, answer)
    status, answer, _ = await api.call("GET", f"/v1/stages/{quoted}/services/{quoted}/history")
    refusal_is_well_formed(status, answer)
    async with api.session.get(
        f"/v1/promotions/{quoted}/events", params=query, headers=auth(Role.VIEWER)
    ) as response:
        assert response.status < 500
