"""The webhook actuator against a real receiver that scripts its answers."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import jsonschema
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from standardwebhooks import Webhook

from sidecar.actuators.base import Backend, TrafficState, traffic_state_schema
from sidecar.actuators.webhook import (
    WebhookActuator,
    encode_state,
    sign,
    signing_key,
    standard_signature,
    verify,
)
from sidecar.analysis.prometheus import NullMetricsSource
from sidecar.engine.context import EngineContext
from sidecar.engine.controller import Controller
from sidecar.errors import ActuationError, SettingsError
from sidecar.ledger.memory import MemoryLedger
from sidecar.telemetry.metrics import PrometheusRecorder
from sidecar.telemetry.tracing import traceparent_of
from sidecar.testing import FakeClock
from tests.conftest import HttpServer
from tests.support.manifests import manifest
from tests.support.policies import policy

SECRET = b"s3cr3t-hmac-key-for-tests"
WHSEC = "whsec_" + base64.b64encode(b"a standard webhooks key").decode()

STATE = TrafficState(
    promotion_id="p-42",
    sequence=3,
    service="shop",
    stage="prod",
    backends=(
        Backend("sha256:" + "a" * 64, "http://127.0.0.1:9001", 80, "stable", "blue"),
        Backend("sha256:" + "b" * 64, "http://127.0.0.1:9002", 20, "candidate", "green"),
    ),
)


@dataclass
class Receiver:
    """Answers each POST with the next scripted status (the last one repeats)."""

    statuses: list[int] = field(default_factory=lambda: [200])
    body: str = "ok"
    hang: bool = False
    url: str = ""
    requests: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((await request.read(), dict(request.headers)))
        if self.hang:
            await self.release.wait()
        status = self.statuses[min(len(self.requests), len(self.statuses)) - 1]
        return web.Response(status=status, text=self.body)


@pytest.fixture
async def receiver(http_server: HttpServer) -> AsyncIterator[Receiver]:
    recv = Receiver()
    app = web.Application()
    app.router.add_post("/hook", recv.handle)
    recv.url = f"{await http_server(app)}/hook"
    yield recv
    recv.release.set()  # before http_server's cleanup waits for a hanging answer


@pytest.fixture
async def actuator(receiver: Receiver) -> AsyncIterator[WebhookActuator]:
    webhook = WebhookActuator(
        receiver.url, secret=SECRET, timeout_s=0.5, attempts=3, backoff_s=0.01
    )
    yield webhook
    await webhook.close()


async def test_body_is_compact_sorted_json_and_signature_verifies(
    receiver: Receiver, actuator: WebhookActuator
) -> None:
    await actuator.apply(STATE)
    [(body, headers)] = receiver.requests
    assert body == json.dumps(STATE.to_dict(), sort_keys=True, separators=(",", ":")).encode()
    assert TrafficState.from_dict(json.loads(body)) == STATE
    assert headers["Content-Type"] == "application/json"
    jsonschema.validate(json.loads(body), traffic_state_schema())
    assert verify(body, SECRET, headers["X-Promgate-Signature"])
    assert not verify(body + b" ", SECRET, headers["X-Promgate-Signature"])
    assert not verify(body, b"other", headers["X-Promgate-Signature"])
    assert not verify(body, SECRET, None)


async def test_idempotency_key_and_sequence_headers(
    receiver: Receiver, actuator: WebhookActuator
) -> None:
    await actuator.apply(STATE)
    [(_, headers)] = receiver.requests
    assert headers["Idempotency-Key"] == "p-42:3"
    assert headers["X-Promgate-Sequence"] == "3"


async def test_unsigned_when_no_secret(receiver: Receiver) -> None:
    webhook = WebhookActuator(receiver.url, secret=None)
    try:
        await webhook.apply(STATE)
    finally:
        await webhook.close()
    [(_, headers)] = receiver.requests
    assert "X-Promgate-Signature" not in headers


async def test_retries_after_503_then_succeeds(
    receiver: Receiver, actuator: WebhookActuator
) -> None:
    receiver.statuses = [503, 503, 200]
    await actuator.apply(STATE)
    assert len(receiver.requests) == 3
    assert len({body for body, _ in receiver.requests}) == 1


async def test_gives_up_after_the_configured_attempts(
    receiver: Receiver, actuator: WebhookActuator
) -> None:
    receiver.statuses = [500]
    with pytest.raises(ActuationError, match=r"after 3 attempt\(s\): HTTP 500") as caught:
        await actuator.apply(STATE)
    assert len(receiver.requests) == 3
    assert not caught.value.permanent  # the receiver may recover: worth a later retry


async def test_409_means_already_applied(receiver: Receiver, actuator: WebhookActuator) -> None:
    receiver.statuses = [409]
    await actuator.apply(STATE)
    assert len(receiver.requests) == 1


async def test_400_fails_at_once_without_leaking_the_secret(
    receiver: Receiver, actuator: WebhookActuator
) -> None:
    receiver.statuses = [400]
    receiver.body = f"bad state; I was configured with {SECRET.decode()} " + "x" * 500
    with pytest.raises(ActuationError) as caught:
        await actuator.apply(STATE)
    message = str(caught.value)
    assert "HTTP 400" in message
    assert "<redacted>" in message
    assert message.endswith("...")
    assert SECRET.decode() not in message
    assert SECRET.decode() not in repr(actuator)
    assert len(receiver.requests) == 1
    assert caught.value.permanent  # the receiver refuses the state itself: never resend it


async def test_timeout_is_retried_then_reported(receiver: Receiver) -> None:
    receiver.hang = True
    webhook = WebhookActuator(
        receiver.url, secret=SECRET, timeout_s=0.2, attempts=2, backoff_s=0.01
    )
    try:
        async with asyncio.timeout(5):
            with pytest.raises(ActuationError, match=r"after 2 attempt\(s\): timed out"):
                await webhook.apply(STATE)
    finally:
        await webhook.close()
    assert len(receiver.requests) == 2


async def test_restore_sends_nothing(receiver: Receiver, actuator: WebhookActuator) -> None:
    await actuator.restore(STATE)
    assert receiver.requests == []


def test_sign_matches_the_documented_format() -> None:
    body = encode_state(STATE)
    signature = sign(body, SECRET)
    assert signature.startswith("sha256=")
    assert len(signature) == len("sha256=") + 64
    assert verify(body, SECRET, signature)
    assert not verify(body, SECRET, signature.upper())


def test_repr_hides_secret_and_url_credentials() -> None:
    webhook = WebhookActuator("https://user:pw@hooks.example/t?token=abc", secret=SECRET)
    text = repr(webhook)
    assert "pw" not in text
    assert "abc" not in text
    assert SECRET.decode() not in text
    assert "signed=True" in text


@pytest.mark.parametrize(
    ("url", "secret", "match"),
    [("ftp://x", None, "http"), ("http://h/", b"", "secret is empty")],
)
def test_bad_settings_are_rejected(url: str, secret: bytes | None, match: str) -> None:
    with pytest.raises(SettingsError, match=match):
        WebhookActuator(url, secret=secret)


async def test_signed_to_the_standard_webhooks_spec(
    receiver: Receiver, actuator: WebhookActuator
) -> None:
    """The standardwebhooks library itself verifies a state; an altered body, another
    key or an old timestamp do not verify."""
    before = int(time.time())
    await actuator.apply(STATE)
    [(body, headers)] = receiver.requests
    assert headers["webhook-id"] == headers["Idempotency-Key"] == "p-42:3"
    assert before <= int(headers["webhook-timestamp"]) <= time.time() + 1
    assert headers["webhook-signature"].startswith("v1,")
    assert TrafficState.from_dict(Webhook(SECRET).verify(body, headers)) == STATE
    assert verify(body, SECRET, headers)
    assert not verify(body.replace(b'"weight":20', b'"weight":90'), SECRET, headers)
    assert not verify(body, b"another key", headers)
    stale = int(headers["webhook-timestamp"]) - 600
    replayed = {
        **headers,
        "webhook-timestamp": str(stale),
        "webhook-signature": standard_signature(body, SECRET, "p-42:3", stale),
    }
    assert not verify(body, SECRET, replayed)
    assert not verify(body, SECRET, {**headers, "webhook-signature": "v1,not base64!"})
    assert not verify(body, SECRET, {**headers, "webhook-signature": "garbage"})


async def test_whsec_secret_is_the_base64_key(receiver: Receiver) -> None:
    """A ``whsec_<base64>`` secret (the Standard Webhooks form) signs with the decoded key,
    so a receiver built on the library verifies with the same string."""
    webhook = WebhookActuator(receiver.url, secret=WHSEC.encode())
    try:
        await webhook.apply(STATE)
    finally:
        await webhook.close()
    [(body, headers)] = receiver.requests
    assert TrafficState.from_dict(Webhook(WHSEC).verify(body, headers)) == STATE
    assert verify(body, WHSEC.encode(), headers)


@pytest.mark.parametrize("secret", [b"whsec_***", b"whsec_"])
def test_malformed_whsec_secret_is_refused_without_echo(secret: bytes) -> None:
    """A whsec_ secret that is not base64 (or holds nothing) is a settings error that
    does not repeat the secret."""
    with pytest.raises(SettingsError, match="whsec_") as caught:
        signing_key(secret)
    assert "***" not in str(caught.value)


async def test_each_attempt_is_signed_anew_with_the_same_id(
    receiver: Receiver, actuator: WebhookActuator
) -> None:
    """Retries keep ``webhook-id`` (so a receiver drops a repeat) and every attempt
    carries a signature that verifies."""
    receiver.statuses = [503, 200]
    await actuator.apply(STATE)
    assert [h["webhook-id"] for _, h in receiver.requests] == ["p-42:3", "p-42:3"]
    assert all(verify(body, SECRET, headers) for body, headers in receiver.requests)


async def test_traceparent_is_the_current_span(
    receiver: Receiver, actuator: WebhookActuator
) -> None:
    """The receiver gets the W3C ``traceparent`` of the span the state is applied under."""
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("promgate.actuate") as span:
        await actuator.apply(STATE)
    [(_, headers)] = receiver.requests
    assert headers["traceparent"] == traceparent_of(span)


USER, PASSWORD, TOKEN = "deploy-bot", "pa:ss/w0rd", "tok+en/42="
SECRET_URL_PARTS = (USER, PASSWORD, TOKEN, "pa%3Ass%2Fw0rd", "tok%2Ben%2F42%3D")


async def echoing_receiver(http_server: HttpServer, status: int) -> str:
    """A receiver that answers ``status`` with the request line and Authorization header it
    got, as a careless one would; the URL it returns carries user, password and token."""

    async def echo(request: web.Request) -> web.Response:
        got = f"bad request to {request.path_qs} with {request.headers.get('Authorization')}"
        return web.Response(status=status, text=got)

    app = web.Application()
    app.router.add_post("/hook", echo)
    base = await http_server(app)
    credentials = f"{USER}:pa%3Ass%2Fw0rd@"
    return base.replace("http://", f"http://{credentials}") + "/hook?token=tok%2Ben%2F42%3D&v=2"


def assert_no_url_secret(text: str) -> None:
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    for secret in (*SECRET_URL_PARTS, basic, SECRET.decode()):
        assert secret not in text, f"{secret!r} leaked into {text!r}"


@pytest.mark.parametrize("status", [400, 503])
async def test_echoed_url_credentials_are_redacted(http_server: HttpServer, status: int) -> None:
    """A receiver that echoes the URL's password, user, query token or the Basic
    Authorization header back never gets them into the error."""
    url = await echoing_receiver(http_server, status)
    webhook = WebhookActuator(url, secret=SECRET, attempts=2, backoff_s=0.01)
    try:
        with pytest.raises(ActuationError) as caught:
            await webhook.apply(STATE)
    finally:
        await webhook.close()
    message = str(caught.value)
    assert f"HTTP {status}: bad request to /hook?token=<redacted>&v=<redacted>" in message
    assert "with Basic <redacted>" in message
    assert_no_url_secret(message)
    assert caught.value.__cause__ is None


async def test_echoed_credentials_reach_no_ledger_log_or_trace(
    http_server: HttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The failed actuation's ledger event, log lines and span hold no URL secret."""
    url = await echoing_receiver(http_server, 400)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    ledger = MemoryLedger()
    webhook = WebhookActuator(url, secret=SECRET, attempts=1)
    controller = Controller(
        EngineContext(
            policy=policy(),
            ledger=ledger,
            actuator=webhook,
            source=NullMetricsSource(),
            recorder=PrometheusRecorder(),
            tracer=provider.get_tracer("test"),
            clock=FakeClock(),
        )
    )
    caplog.set_level(logging.DEBUG)
    try:
        created = await controller.create(
            manifest(digest_char="a", version="1.0.0"), "qa", upstream="http://127.0.0.1:9001"
        )
    finally:
        await controller.stop()
        await webhook.close()
    events = await ledger.events(created.id)
    failed = [e for e in events if e.kind == "actuation_failed"]
    assert failed and "HTTP 400" in failed[0].data["error"]
    assert_no_url_secret(json.dumps([e.to_dict() for e in events]))
    assert any(r.getMessage() == "actuation failed" for r in caplog.records)
    assert_no_url_secret("\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records))
    spans = exporter.get_finished_spans()
    assert any(event.name == "exception" for s in spans for event in s.events)
    assert_no_url_secret(json.dumps([json.loads(s.to_json()) for s in spans]))
