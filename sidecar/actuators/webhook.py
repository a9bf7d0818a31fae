"""Delegates traffic shifting to a receiver the user runs, over a signed HTTP POST.

The receiver (a load balancer script, a service mesh controller) gets each traffic state
as JSON (its schema: ``promgate schema traffic``), signed to the Standard Webhooks spec:
``webhook-id`` (the ``Idempotency-Key``, the same on every retry), ``webhook-timestamp``
and ``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``), so a
receiver can refuse a forged, altered or replayed state. ``traceparent`` carries the
actuation span, so the receiver's work joins the promotion's trace.

2xx means applied, 409 means "already applied"; 5xx, 429, timeouts and connection
errors are retried with backoff; any other status is a refusal that is not retried.
Nothing secret (the signing key, the URL's user, password or query values) reaches an
error message, even when the receiver echoes it back.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import aiohttp
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from standardwebhooks import Webhook, WebhookVerificationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)
from yarl import URL

from sidecar.actuators.base import TrafficState
from sidecar.errors import ActuationError, Problem, SettingsError
from sidecar.redaction import REDACTED, credential_forms

_log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Promgate-Signature"
"""Deprecated: ``sha256=<hex HMAC of the body>``, without replay protection. Still sent
beside the Standard Webhooks headers for this version; check ``webhook-signature``."""
SEQUENCE_HEADER = "X-Promgate-Sequence"
_SIGNATURE_PREFIX = "sha256="
_SECRET_PREFIX = b"whsec_"
_REDACTED = REDACTED.encode()
_BODY_EXCERPT_BYTES = 200
_MAX_BACKOFF_S = 10.0
_TRACE_CONTEXT = TraceContextTextMapPropagator()


def signing_key(secret: bytes) -> bytes:
    """The HMAC key a secret stands for: ``whsec_<base64>`` (the Standard Webhooks form)
    is decoded, anything else is used as it is."""
    if not secret.startswith(_SECRET_PREFIX):
        return secret
    encoded = secret[len(_SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded + b"=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise SettingsError(
            "the webhook secret starts with whsec_ but the rest is not base64; "
            "give whsec_<base64 key> or a raw key without the prefix"
        ) from None
    if not key:
        raise SettingsError("the webhook secret whsec_ holds an empty key")
    return key


_TRANSIENT_4XX = frozenset({408, 425})  # request timeout, too early: worth another try


def sign(body: bytes, secret: bytes) -> str:
    """The deprecated ``X-Promgate-Signature`` value for ``body``: ``sha256=<hex HMAC>``."""
    return _SIGNATURE_PREFIX + hmac.new(signing_key(secret), body, hashlib.sha256).hexdigest()


def standard_signature(body: bytes, secret: bytes, webhook_id: str, timestamp: int) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``."""
    at = datetime.fromtimestamp(timestamp, tz=UTC)
    return Webhook(signing_key(secret)).sign(webhook_id, at, body.decode())


def verify(body: bytes, secret: bytes, headers: Mapping[str, str] | str | None) -> bool:
    """Whether a receiver may trust ``body``; constant-time.

    Given a request's ``headers``, this checks ``webhook-signature`` against
    ``webhook-id`` and a ``webhook-timestamp`` at most five minutes away (Standard
    Webhooks). Given one header value, it checks the deprecated ``X-Promgate-Signature``.
    """
    if headers is None:
        return False
    if isinstance(headers, str):
        return hmac.compare_digest(sign(body, secret).encode(), headers.encode("utf-8", "replace"))
    try:
        Webhook(signing_key(secret)).verify(body, dict(headers), json_parse=False)
    except (WebhookVerificationError, ValueError):  # ValueError: a malformed signature
        return False
    return True


def encode_state(state: TrafficState) -> bytes:
    """The exact bytes that are sent and signed: compact JSON with sorted keys."""
    return json.dumps(state.to_dict(), sort_keys=True, separators=(",", ":")).encode()


class _RetryableStatusError(Exception):
    """The receiver answered with a status worth trying again (5xx, 429)."""


_RETRYABLE = (_RetryableStatusError, aiohttp.ClientError, TimeoutError)


class WebhookActuator:
    """POSTs every traffic state to ``url``, retrying transient failures with backoff.

    ``secret`` signs the states (raw bytes, or ``whsec_<base64>``); None sends them
    unsigned. ``backoff_s`` scales the jittered exponential wait between attempts.
    """

    def __init__(
        self,
        url: str,
        *,
        secret: bytes | None,
        timeout_s: float = 5.0,
        attempts: int = 3,
        session: aiohttp.ClientSession | None = None,
        backoff_s: float = 0.5,
    ) -> None:
        parsed = URL(url)
        if parsed.scheme not in {"http", "https"} or not parsed.host:
            raise SettingsError("the webhook URL must be an absolute http(s) URL")
        if secret is not None and not secret:
            raise SettingsError("the webhook secret is empty; give a real one or none at all")
        if timeout_s <= 0:
            raise SettingsError(f"webhook timeout must be positive, got {timeout_s}")
        if attempts < 1:
            raise SettingsError(f"webhook attempts must be at least 1, got {attempts}")
        self._url = parsed
        self._secret = secret
        hidden = _secrets_of(parsed, secret)  # also checks a whsec_ secret's form
        self._longest_secret = max(map(len, hidden), default=0)
        self._hidden = re.compile(b"|".join(map(re.escape, hidden))) if hidden else None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._session = session
        self._owns_session = session is None

    def __repr__(self) -> str:
        return f"WebhookActuator(url={self._display_url!r}, signed={self._secret is not None})"

    @property
    def _display_url(self) -> str:
        """The URL without credentials or query, which may carry tokens, for messages."""
        return str(self._url.with_user(None).with_query(None).with_fragment(None))

    def check(self, state: TrafficState) -> Sequence[Problem]:
        """Nothing: the receiver decides what a state needs (it may route without upstreams)."""
        return ()

    async def start(self) -> None:
        """The session opens lazily on the first POST."""

    async def apply(self, state: TrafficState) -> None:
        """Deliver ``state``; a 2xx, or a 409 meaning "already applied", is success."""
        body = encode_state(state)
        key = f"{state.promotion_id}:{state.sequence}"
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": key,
            "webhook-id": key,
            SEQUENCE_HEADER: str(state.sequence),
        }
        _TRACE_CONTEXT.inject(headers)  # the current span: the engine's actuation span
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(body, self._secret)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_random_exponential(multiplier=self._backoff_s, max=_MAX_BACKOFF_S),
            retry=retry_if_exception_type(_RETRYABLE),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._post(body, self._timestamped(body, key, headers))
        except _RETRYABLE as exc:
            # no cause: a client error's text may hold the URL, and traces keep the chain
            raise ActuationError(
                f"webhook {self._display_url} did not accept traffic state "
                f"{state.promotion_id}#{state.sequence} after {self._attempts} attempt(s): "
                f"{_describe(exc)}"
            ) from None

    def _timestamped(self, body: bytes, key: str, headers: dict[str, str]) -> dict[str, str]:
        """The headers of one attempt: each is signed anew with its own timestamp."""
        if self._secret is None:
            return headers
        now = int(time.time())
        return {
            **headers,
            "webhook-timestamp": str(now),
            "webhook-signature": standard_signature(body, self._secret, key, now),
        }

    async def restore(self, state: TrafficState) -> None:
        """Nothing to do: the receiver keeps its own state across promgate restarts."""

    async def close(self) -> None:
        """Close the HTTP session, unless the caller passed one in and still owns it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, body: bytes, headers: dict[str, str]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.post(
            self._url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False
        ) as response:
            if 200 <= response.status < 300:
                return
            if response.status == 409:
                _log.info("webhook receiver reports the state as already applied")
                return
            # Read past the excerpt by the longest secret so an echoed secret is whole.
            limit = _BODY_EXCERPT_BYTES + self._longest_secret + 1
            excerpt = self._redact(await _read_prefix(response, limit))
            message = f"HTTP {response.status}: {excerpt}"
            if response.status >= 500 or response.status == 429:
                raise _RetryableStatusError(message)
            # any other 4xx: the receiver refuses this state as it is, so resending cannot help
            raise ActuationError(
                f"webhook {self._display_url} refused the state with {message}",
                permanent=response.status not in _TRANSIENT_4XX,
            )

    def _redact(self, raw: bytes) -> str:
        """A short, printable excerpt of a response body, with every secret masked."""
        if self._hidden is not None:  # one pass: a mask is never masked again
            raw = self._hidden.sub(_REDACTED, raw)
        text = raw[:_BODY_EXCERPT_BYTES].decode("utf-8", "replace")
        return text + ("..." if len(raw) > _BODY_EXCERPT_BYTES else "")

    def _log_retry(self, state: RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        _log.warning(
            "webhook attempt %d of %d failed (%s); retrying",
            state.attempt_number,
            self._attempts,
            _describe(error) if error is not None else "unknown error",
        )


def _secrets_of(url: URL, secret: bytes | None) -> list[bytes]:
    """Every form in which a secret could come back in a receiver's answer, longest first:
    the signing secret, and the URL's user, password and query values, decoded and as
    sent, and the ``Authorization: Basic`` value made of the user and password."""
    found: set[str | bytes] = {*credential_forms(url), *url.query.values()}
    found |= {part.partition("=")[2] for part in url.raw_query_string.split("&")}
    if url.user is not None:
        basic = f"{url.user}:{url.password or ''}".encode()
        found.add(base64.b64encode(basic))
    if secret is not None:
        key = signing_key(secret)
        found |= {secret, secret.removeprefix(_SECRET_PREFIX), key, base64.b64encode(key)}
    forms = {s.encode() if isinstance(s, str) else s for s in found}
    return sorted((s for s in forms if s), key=len, reverse=True)


async def _read_prefix(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """Up to ``limit`` bytes of the body; a single read may return fewer than are coming."""
    prefix = bytearray()
    while len(prefix) < limit and (chunk := await response.content.read(limit - len(prefix))):
        prefix += chunk
    return bytes(prefix)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _RetryableStatusError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return type(exc).__name__
