"""Shared fixtures that start real processes and servers and always stop them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import pytest
from aiohttp import web

from tests.support.processes import ManagedProcess, serve_app, start_demo_service, start_prometheus

PrometheusFactory = Callable[..., Awaitable[tuple[ManagedProcess, str]]]
DemoServiceFactory = Callable[..., Awaitable[tuple[ManagedProcess, str]]]
HttpServer = Callable[[web.Application], Awaitable[str]]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A per-test directory for configs, data and process logs."""
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
async def prometheus_factory(workdir: Path) -> AsyncIterator[PrometheusFactory]:
    """``await start(targets, scrape_interval_s=1.0)`` -> (process, base URL); stopped after."""
    started: list[ManagedProcess] = []

    async def start(
        targets: Mapping[str, list[str]], scrape_interval_s: float = 1.0
    ) -> tuple[ManagedProcess, str]:
        process, base_url = await start_prometheus(workdir, targets, scrape_interval_s)
        started.append(process)
        return process, base_url

    yield start
    for process in started:
        await process.stop()


@pytest.fixture
async def demo_service_factory(workdir: Path) -> AsyncIterator[DemoServiceFactory]:
    """``await start(version=..., digest=...)`` -> (process, URL); all stopped at teardown."""
    started: list[ManagedProcess] = []

    async def start(
        *, version: str, digest: str, error_rate: float = 0.0, latency_ms: float = 5.0
    ) -> tuple[ManagedProcess, str]:
        process, base_url = await start_demo_service(
            workdir, version=version, digest=digest, error_rate=error_rate, latency_ms=latency_ms
        )
        started.append(process)
        return process, base_url

    yield start
    for process in started:
        await process.stop()


@pytest.fixture
async def http_server() -> AsyncIterator[HttpServer]:
    """``await serve(app)`` -> base URL of a real server on 127.0.0.1, in the test's loop."""
    runners: list[web.AppRunner] = []

    async def serve(app: web.Application) -> str:
        runner, base_url = await serve_app(app)
        runners.append(runner)
        return base_url

    yield serve
    for runner in runners:
        await runner.cleanup()
