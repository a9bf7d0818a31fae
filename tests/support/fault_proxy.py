"""A loopback HTTP front for a real Prometheus that can make some queries come back empty."""

from __future__ import annotations

from collections.abc import Sequence

import aiohttp
from aiohttp import web

from tests.support.processes import serve_app

EMPTY_VECTOR = {"status": "success", "data": {"resultType": "vector", "result": []}}


class FaultyPrometheus:
    """Forwards every request to ``upstream``, except that while ``emptying`` is set,
    an instant query containing every one of its strings is answered with an empty
    vector, as a partial Prometheus fault would (the other queries still answer)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.emptying: Sequence[str] = ()
        self.emptied: list[str] = []  # the queries answered empty
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> str:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._forward)
        self._runner, self.url = await serve_app(app)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        query = request.query.get("query", "")
        hit = all(part in query for part in self.emptying)
        if self.emptying and request.path == "/api/v1/query" and hit:
            self.emptied.append(query)
            return web.json_response(EMPTY_VECTOR)
        assert self._session is not None
        async with self._session.request(
            request.method,
            self.upstream + request.rel_url.path_qs,
            data=await request.read(),
            headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
        ) as answer:
            body = await answer.read()
            return web.Response(status=answer.status, body=body, content_type=answer.content_type)
