"""A bounded open-loop load generator for the demo and the benchmarks (loopback only).

Requests start at a fixed rate whatever the latency, as real users do; every run is
bounded both in time and in the number of requests, and in-flight requests are capped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

_LOOPBACK = ("127.", "localhost", "[::1]", "::1")


@dataclass
class LoadStats:
    """Answers by status (0 for a connection error), plus what went to which version."""

    statuses: Counter[int] = field(default_factory=Counter)
    bodies: Counter[str] = field(default_factory=Counter)


@dataclass
class LoadGenerator:
    """Sends ``rate`` requests per second until stopped or a bound is hit.

    ``target`` is a URL, or a function that picks each request's URL (None skips that
    request), for load that follows a routing decision made elsewhere.
    """

    target: str | Callable[[], str | None]
    rate: float
    max_seconds: float
    max_requests: int
    headers: dict[str, str] = field(default_factory=dict)
    max_in_flight: int = 200
    stats: LoadStats = field(default_factory=LoadStats)
    _task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.target, str):
            _require_loopback(self.target)
        if self.rate <= 0 or self.max_seconds <= 0 or self.max_requests <= 0:
            raise ValueError("rate, max_seconds and max_requests must all be positive")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"load {self.target}")

    async def stop(self) -> LoadStats:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return self.stats

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        limit = asyncio.Semaphore(self.max_in_flight)
        timeout = aiohttp.ClientTimeout(total=5)
        pending: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(timeout=timeout) as session:
            started = loop.time()
            try:
                for index in range(self.max_requests):
                    due = started + index / self.rate
                    if due - started > self.max_seconds:
                        break
                    await asyncio.sleep(max(0.0, due - loop.time()))
                    url = self.target if isinstance(self.target, str) else self.target()
                    if url is None:
                        continue
                    _require_loopback(url)
                    await limit.acquire()
                    task = asyncio.create_task(self._one(session, url, limit))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
            finally:
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)

    async def _one(
        self, session: aiohttp.ClientSession, url: str, limit: asyncio.Semaphore
    ) -> None:
        try:
            async with session.get(url, headers=self.headers) as response:
                body = await response.text()
                self.stats.statuses[response.status] += 1
                if response.status == 200:
                    self.stats.bodies[body.strip()] += 1
        except (aiohttp.ClientError, TimeoutError):
            self.stats.statuses[0] += 1
        finally:
            limit.release()


def _require_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if not host.startswith(_LOOPBACK) and host not in _LOOPBACK:
        raise ValueError(f"load is only sent to loopback addresses, not {host!r}")
