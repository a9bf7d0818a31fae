"""The webhook actuator against a real receiver that scripts its answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from sidecar.actuators.base import Backend, TrafficState
from sidecar.actuators.webhook import WebhookActuator, encode_state, sign, verify
from sidecar.errors import ActuationError, SettingsError
from tests.conftest import HttpServer

SECRET = b"s3cr3t-hmac-key-for-tests"

STATE = TrafficState(
    promotion_id="p-42",
    sequence=3,
    service="shop",
    stage="prod",
    backends=(
        Backend("sha256:" + "a" * 64, "http://127.0.0.1:9001", 80, "stable"),
        Backend("sha256:" + "b" * 64, "http://127.0.0.1:9002", 20, "candidate"),
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
