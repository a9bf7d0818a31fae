"""An async client of the promgate HTTP API that raises promgate's own errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type
from yarl import URL

from sidecar.domain.promotion import Phase
from sidecar.errors import (
    AuthError,
    ConflictError,
    InputError,
    NotFoundError,
    NotLeaderError,
    Problem,
    ProblemsError,
    PromgateError,
    RefusedError,
    UnreachableError,
)

DEFAULT_SERVER = "http://127.0.0.1:8480"
MAX_PAGE = 1000  # the most items the server sends per page
RECONNECT_S = 120.0  # how long a watch waits for a server that stopped answering
LEADER_WAIT_S = 30.0  # how long a write waits for a replica that leads (a failover)
TERMINAL_KINDS = frozenset(phase.value for phase in Phase if phase.terminal)
_RECONNECT_FIRST_S = 0.25  # backoff between tries: doubles up to the maximum
_RECONNECT_MAX_S = 2.0
_STREAM_IDLE_S = 60.0  # the server sends a keepalive every 15 s: this much silence is a dead link

Json = dict[str, Any]
Items = list[Json]


def _segment(text: str) -> str:
    return quote(text, safe="")


class ApiClient:
    """One HTTP session to a promgate server; close it with :meth:`close` or ``async with``."""

    def __init__(
        self,
        server: str | None = None,
        token: str | None = None,
        *,
        timeout_s: float = 30.0,
        leader_wait_s: float = LEADER_WAIT_S,
    ) -> None:
        """``leader_wait_s``: how long a write answered "not the leader" is tried again."""
        url = URL(server or os.environ.get("PROMGATE_SERVER") or DEFAULT_SERVER)
        if url.user is not None or url.password is not None:
            raise InputError(
                f"server URL {url.with_user(None)} carries credentials; remove them and pass a "
                "token with --token-file or PROMGATE_TOKEN"
            )
        if url.scheme not in ("http", "https") or not url.host:
            raise InputError(f"server URL {server!r} is not http(s)://host:port")
        self.server = str(url).rstrip("/")
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeout_s, sock_read=_STREAM_IDLE_S
        )
        self._session: aiohttp.ClientSession | None = None
        self.leader_wait_s = leader_wait_s

    def __repr__(self) -> str:
        return f"ApiClient(server={self.server!r})"

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session; the client cannot be used afterwards."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def create(
        self,
        manifest: Json,
        stage: str,
        upstream: str | None = None,
        backend: str | None = None,
    ) -> Json:
        """Start a promotion of ``manifest`` into ``stage``; the candidate serves ``upstream``
        from the slot ``backend``."""
        body: Json = {"manifest": manifest, "stage": stage}
        if upstream is not None:
            body["upstream"] = upstream
        if backend is not None:
            body["backend"] = backend
        return await self._json("POST", "/v1/promotions", body=body)

    async def get(self, promotion_id: str, *, reconnect_s: float = 0.0) -> Json:
        """One promotion; asked again with backoff while the server does not answer, for
        up to ``reconnect_s``."""
        path = f"/v1/promotions/{_segment(promotion_id)}"
        result: Json = await _Outage(reconnect_s).retrying()(self._json, "GET", path)
        return result

    async def list(
        self,
        *,
        service: str | None = None,
        stage: str | None = None,
        active: bool | None = None,
        limit: int | None = None,
        page_size: int = MAX_PAGE,
    ) -> Items:
        """Promotions newest first, optionally only those of a service, a stage, or only
        active ones; at most ``limit`` of them, fetched ``page_size`` per request."""
        params = {"service": service, "stage": stage}
        query = {k: v for k, v in params.items() if v}
        if active is not None:
            query["active"] = "1" if active else "0"
        items: Items = []
        while limit is None or len(items) < limit:
            wanted = page_size if limit is None else min(page_size, limit - len(items))
            data = await self._json("GET", "/v1/promotions", params={**query, "limit": str(wanted)})
            items.extend(data["items"])
            cursor = data.get("next")
            if not cursor or not data["items"]:  # the server's last page
                break
            query["cursor"] = str(cursor)
        return items

    async def events(
        self, promotion_id: str, after: int = 0, follow: bool = False
    ) -> AsyncGenerator[Json, None]:
        """A promotion's events with ``seq > after``; with ``follow``, until it ends."""
        async with self._event_stream(promotion_id, after, follow) as events:
            async for event in events:
                yield event

    async def watch(
        self,
        promotion_id: str,
        on_event: Callable[[Json], None],
        *,
        reconnect_s: float = RECONNECT_S,
        on_lost: Callable[[str], None] | None = None,
    ) -> Json:
        """Hand each of a promotion's events to ``on_event`` until it ends; return its
        final state.

        A restarting server (connection refused or reset, HTTP 5xx such as the 503 of one
        that is starting) does not end the watch: it reconnects with ``Last-Event-ID`` set
        to the last event seen, so no event is lost or handed over twice. ``on_lost`` hears
        why, once per outage. UnreachableError once the server has not answered for
        ``reconnect_s``.
        """
        seen = 0
        outage = _Outage(reconnect_s, on_lost)

        async def connect() -> Json:
            nonlocal seen
            async with self._event_stream(promotion_id, seen, follow=True) as events:
                outage.answered()
                async for event in events:
                    seen = int(event["seq"])
                    on_event(event)
                    if event.get("kind") in TERMINAL_KINDS:
                        break
            promotion = await self.get(promotion_id)
            if not Phase(promotion["phase"]).terminal:  # the server closed it: shutting down
                raise UnreachableError("the event stream ended", why="the event stream ended")
            return promotion

        try:
            result: Json = await outage.retrying()(connect)
        except UnreachableError as exc:
            raise UnreachableError(
                f"promgate server {self.server} has not answered for {reconnect_s:g}s ({exc.why})",
                why=exc.why,
            ) from None
        return result

    @contextlib.asynccontextmanager
    async def _event_stream(
        self, promotion_id: str, after: int, follow: bool
    ) -> AsyncIterator[AsyncIterator[Json]]:
        """The server-sent event stream, open (its status checked) once entered."""
        headers = {"Accept": "text/event-stream"}
        if after:
            headers["Last-Event-ID"] = str(after)
        path = f"/v1/promotions/{_segment(promotion_id)}/events"
        params = {"follow": "1"} if follow else None
        async with self._send("GET", path, params=params, headers=headers, stream=True) as resp:
            yield self._stream_events(resp.content)

    async def _stream_events(self, lines: AsyncIterable[bytes]) -> AsyncIterator[Json]:
        async for kind, data in _server_sent(lines):
            event = self._decode(data.encode())
            if kind == "error":
                message = (event.get("error") or {}).get("message") or "unknown error"
                raise PromgateError(f"the event stream from {self.server} broke off: {message}")
            yield event

    async def approve(self, promotion_id: str) -> Json:
        """Let a promotion that awaits approval move traffic."""
        return await self._json("POST", f"/v1/promotions/{_segment(promotion_id)}/approve")

    async def abort(self, promotion_id: str) -> Json:
        """Stop a promotion and return traffic to the stable release."""
        return await self._json("POST", f"/v1/promotions/{_segment(promotion_id)}/abort")

    async def rollback(self, promotion_id: str) -> Json:
        """Roll a promotion back to its baseline."""
        return await self._json("POST", f"/v1/promotions/{_segment(promotion_id)}/rollback")

    async def rollback_stage(self, service: str, stage: str) -> Json:
        """Go back one stable digest of ``service`` in ``stage``; returns the new stable."""
        data = await self._json("POST", f"{self._service_path(service, stage)}/rollback")
        stable: Json = data["stable"]
        return stable

    async def history(self, service: str, stage: str) -> Items:
        """Stable releases of ``service`` in ``stage``, oldest first."""
        data = await self._json("GET", f"{self._service_path(service, stage)}/history")
        items: Items = data["items"]
        return items

    @staticmethod
    def _service_path(service: str, stage: str) -> str:
        return f"/v1/stages/{_segment(stage)}/services/{_segment(service)}"

    async def _json(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Json | None = None,
    ) -> Json:
        """One request; a write a follower refused (503, nothing done) is sent again after
        its ``Retry-After`` until a replica that leads takes it, for ``leader_wait_s``."""
        deadline = time.monotonic() + self.leader_wait_s
        while True:
            try:
                async with self._send(method, path, params=params, body=body) as response:
                    return self._decode(await response.read())
            except NotLeaderError as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._no_leader(exc) from None
                await asyncio.sleep(min(max(exc.retry_after_s, 0.1), left))

    def _no_leader(self, error: NotLeaderError) -> NotLeaderError:
        leader = f"{error.leader} leads" if error.leader else "no replica leads yet"
        return NotLeaderError(
            f"promgate server {self.server} did not take the write within "
            f"{self.leader_wait_s:g} s: it does not lead, and {leader}; send the request to "
            "the leader (a Service in front of all replicas reaches it on a retry) or try "
            "again once an election ends",
            leader=error.leader,
            retry_after_s=error.retry_after_s,
        )

    @contextlib.asynccontextmanager
    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Json | None = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send one request; error statuses and transport failures become promgate errors."""
        if self._session is None:
            defaults = {"Accept": "application/json"}
            if self._token:
                defaults["Authorization"] = f"Bearer {self._token}"
            self._session = aiohttp.ClientSession(headers=defaults, timeout=self._timeout)
        try:
            async with self._session.request(
                method,
                self.server + path,
                params=params,
                json=body,
                headers=headers,
                timeout=self._stream_timeout if stream else self._timeout,
            ) as response:
                if response.status >= 400:
                    retry_after = response.headers.get("Retry-After", "")
                    raise self._error(response.status, await response.read(), retry_after)
                yield response
        except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
            raise self._unreachable(_describe(exc)) from None

    def _decode(self, raw: bytes) -> Json:
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise PromgateError(
                f"{self.server} did not answer with a JSON object; is it a promgate server?"
            )
        return data

    def _unreachable(self, why: str) -> UnreachableError:
        return UnreachableError(
            f"promgate server {self.server} is unreachable ({why}); start it with "
            "`promgate serve`, or point --server / PROMGATE_SERVER at a running one",
            why=why,
        )

    def _error(self, status: int, raw: bytes, retry_after: str = "") -> PromgateError:
        """The promgate error for an error response ``{"error": {type, message, problems}}``."""
        try:
            body = json.loads(raw)
            error = body["error"] if isinstance(body, dict) else None
        except (ValueError, KeyError):
            error = None
        http = f"HTTP {status}"
        if not isinstance(error, dict):
            text = raw.decode("utf-8", "replace").strip()[:200]
            error = {"message": http + (f": {text}" if text else "")}
        message = str(error.get("message") or http)
        if status == 503 and error.get("type") == "NotLeaderError":
            leader = error.get("leader")
            wait = int(retry_after) if retry_after.isdigit() else 1
            return NotLeaderError(
                message, leader=str(leader) if leader else None, retry_after_s=wait
            )
        if status >= 500:
            return self._unreachable(message if message.startswith(http) else f"{http}: {message}")
        if status in (401, 403):
            return AuthError(message, status=status)
        if status == 404:
            return NotFoundError(message)
        if status in (409, 422):
            refused = ConflictError(message) if status == 409 else RefusedError(message)
            promotion_id = error.get("promotion_id")
            refused.promotion_id = str(promotion_id) if promotion_id else None
            if isinstance(refused, ConflictError):
                active_id = error.get("active_promotion_id")
                refused.active_id = str(active_id) if active_id else None
            return refused
        problems = [
            Problem(str(p.get("path", "")), str(p.get("message", "")), str(p.get("fix") or ""))
            for p in error.get("problems") or []
            if isinstance(p, dict)
        ]
        return ProblemsError(message, problems) if problems else InputError(message)


class _Outage:
    """Since when the server has not answered, as a retry policy: give up once it has
    been silent for ``budget_s``; the budget and the backoff start afresh whenever it
    answers again, so one watch rides over any number of restarts."""

    def __init__(self, budget_s: float, on_lost: Callable[[str], None] | None = None) -> None:
        self.budget_s = budget_s
        self.on_lost = on_lost
        self.since: float | None = None
        self.failures = 0

    def answered(self) -> None:
        self.since, self.failures = None, 0

    def retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            retry=retry_if_exception_type(UnreachableError),
            after=self._failed,
            wait=self._pause,
            stop=self._over,
            reraise=True,
        )

    def _failed(self, state: RetryCallState) -> None:
        self.failures += 1
        if self.since is None:
            self.since = time.monotonic()
            error = state.outcome.exception() if state.outcome else None
            if self.on_lost is not None and isinstance(error, UnreachableError):
                self.on_lost(error.why)

    def _pause(self, state: RetryCallState) -> float:
        backoff = _RECONNECT_FIRST_S * 2.0 ** (self.failures - 1)
        return max(0.0, min(backoff, _RECONNECT_MAX_S, self._left()))

    def _over(self, state: RetryCallState) -> bool:
        return self._left() <= 0

    def _left(self) -> float:
        since = time.monotonic() if self.since is None else self.since
        return since + self.budget_s - time.monotonic()


async def _server_sent(lines: AsyncIterable[bytes]) -> AsyncIterator[tuple[str, str]]:
    """(event type, data) of each server-sent event; comments (keepalives) are skipped."""
    kind = "message"
    data: list[str] = []
    async for raw in lines:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield kind, "\n".join(data)
            kind, data = "message", []
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)


def _describe(exc: BaseException) -> str:
    """A short reason for a transport failure, without URLs or headers."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.os_error.strerror or "cannot connect"
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return "connection lost"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
