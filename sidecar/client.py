"""An async client of the promgate HTTP API that raises promgate's own errors."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from sidecar.errors import (
    AuthError,
    ConflictError,
    InputError,
    NotFoundError,
    Problem,
    ProblemsError,
    PromgateError,
    RefusedError,
)

DEFAULT_SERVER = "http://127.0.0.1:8480"
MAX_PAGE = 1000  # the most items the server sends per page

Json = dict[str, Any]
Items = list[Json]


def _segment(text: str) -> str:
    return quote(text, safe="")


class ApiClient:
    """One HTTP session to a promgate server; close it with :meth:`close` or ``async with``."""

    def __init__(
        self, server: str | None = None, token: str | None = None, *, timeout_s: float = 30.0
    ) -> None:
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
        self._stream_timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s)
        self._session: aiohttp.ClientSession | None = None

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

    async def get(self, promotion_id: str) -> Json:
        """One promotion."""
        return await self._json("GET", f"/v1/promotions/{_segment(promotion_id)}")

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
        params = {"after": str(after)}
        if follow:
            params["follow"] = "1"
        path = f"/v1/promotions/{_segment(promotion_id)}/events"
        async with self._send("GET", path, params=params, stream=True) as resp:
            async for line in resp.content:
                if not line.strip():
                    continue  # keepalive
                event = self._decode(line)
                if "error" in event and "seq" not in event:
                    message = (event["error"] or {}).get("message") or "unknown error"
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
        async with self._send(method, path, params=params, body=body) as response:
            return self._decode(await response.read())

    @contextlib.asynccontextmanager
    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Json | None = None,
        stream: bool = False,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send one request; error statuses and transport failures become promgate errors."""
        if self._session is None:
            headers = {"Accept": "application/json"}
            if self._token:
                headers["Authorization"] = f"Bearer {self._token}"
            self._session = aiohttp.ClientSession(headers=headers, timeout=self._timeout)
        try:
            async with self._session.request(
                method,
                self.server + path,
                params=params,
                json=body,
                timeout=self._stream_timeout if stream else self._timeout,
            ) as response:
                if response.status >= 400:
                    raise self._error(response.status, await response.read())
                yield response
        except (aiohttp.ClientError, TimeoutError) as exc:
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

    def _unreachable(self, why: str) -> PromgateError:
        return PromgateError(
            f"promgate server {self.server} is unreachable ({why}); start it with "
            "`promgate serve`, or point --server / PROMGATE_SERVER at a running one"
        )

    def _error(self, status: int, raw: bytes) -> PromgateError:
        """The promgate error for an error response ``{"error": {type, message, problems}}``."""
        try:
            body = json.loads(raw)
            error = body["error"] if isinstance(body, dict) else None
        except (ValueError, KeyError):
            error = None
        if not isinstance(error, dict):
            text = raw.decode("utf-8", "replace").strip()[:200]
            error = {"message": f"HTTP {status}" + (f": {text}" if text else "")}
        message = str(error.get("message") or f"HTTP {status}")
        if status >= 500:
            return self._unreachable(f"HTTP {status}: {message}")
        if status in (401, 403):
            return AuthError(message, status=status)
        if status == 404:
            return NotFoundError(message)
        if status in (409, 422):
            refused = ConflictError(message) if status == 409 else RefusedError(message)
            promotion_id = error.get("promotion_id")
            refused.promotion_id = str(promotion_id) if promotion_id else None
            return refused
        problems = [
            Problem(str(p.get("path", "")), str(p.get("message", "")), str(p.get("fix") or ""))
            for p in error.get("problems") or []
            if isinstance(p, dict)
        ]
        return ProblemsError(message, problems) if problems else InputError(message)


def _describe(exc: BaseException) -> str:
    """A short reason for a transport failure, without URLs or headers."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.os_error.strerror or "cannot connect"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
