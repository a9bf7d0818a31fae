"""Delegates traffic shifting to a receiver the user runs, over a signed HTTP POST.

The receiver (a service mesh controller, a load balancer script) gets each traffic
state as JSON. An HMAC signature proves the state came from promgate, and the
``Idempotency-Key`` lets the receiver drop a state it has already applied.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Sequence

import aiohttp
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

_log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Promgate-Signature"
SEQUENCE_HEADER = "X-Promgate-Sequence"
_SIGNATURE_PREFIX = "sha256="
_BODY_EXCERPT_BYTES = 200
_MAX_BACKOFF_S = 10.0
_TRANSIENT_4XX = frozenset({408, 425})  # request timeout, too early: worth another try


def sign(body: bytes, secret: bytes) -> str:
    """The ``X-Promgate-Signature`` value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return _SIGNATURE_PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: bytes, header: str | None) -> bool:
    """Whether ``header`` signs ``body`` with ``secret``; constant-time, for receivers."""
    if header is None:
        return False
    expected = sign(body, secret).encode()
    return hmac.compare_digest(expected, header.encode("utf-8", "replace"))


def encode_state(state: TrafficState) -> bytes:
    """The exact bytes that are sent and signed: compact JSON with sorted keys."""
    return json.dumps(state.to_dict(), sort_keys=True, separators=(",", ":")).encode()


class _RetryableStatusError(Exception):
    """The receiver answered with a status worth trying again (5xx, 429)."""


_RETRYABLE = (_RetryableStatusError, aiohttp.ClientError, TimeoutError)


class WebhookActuator:
    """POSTs every traffic state to ``url``, retrying transient failures with backoff.

    ``backoff_s`` scales the jittered exponential wait between attempts.
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
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": f"{state.promotion_id}:{state.sequence}",
            SEQUENCE_HEADER: str(state.sequence),
        }
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
                    await self._post(body, headers)
        except _RETRYABLE as exc:
            raise ActuationError(
                f"webhook {self._display_url} did not accept traffic state "
                f"{state.promotion_id}#{state.sequence} after {self._attempts} attempt(s): "
                f"{_describe(exc)}"
            ) from exc

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
            # Read past the excerpt by the secret's length so an echoed secret is whole.
            limit = _BODY_EXCERPT_BYTES + len(self._secret or b"") + 1
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
        """A short, printable excerpt of a response body, with the secret masked if echoed."""
        if self._secret is not None:
            raw = raw.replace(self._secret, b"<redacted>")
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
