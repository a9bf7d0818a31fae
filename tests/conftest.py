"""Shared fixtures that start real processes and servers and always stop them."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from sidecar.analysis.prometheus import PrometheusSource
from tests.support.processes import (
    ManagedProcess,
    serve_app,
    start_demo_service,
    start_prometheus,
    wait_for_value,
)

ProcessStarter = Callable[..., Awaitable[tuple[ManagedProcess, str]]]
PrometheusFactory = ProcessStarter
DemoServiceFactory = ProcessStarter
HttpServer = Callable[[web.Application], Awaitable[str]]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A per-test directory for configs, data and process logs."""
    path = tmp_path / "work"
    path.mkdir()
    return path


@contextlib.asynccontextmanager
async def _stopping(start: ProcessStarter) -> AsyncIterator[ProcessStarter]:
    """``start``, with every process it started stopped on the way out."""
    started: list[ManagedProcess] = []

    async def start_and_keep(*args: object, **kwargs: object) -> tuple[ManagedProcess, str]:
        process, base_url = await start(*args, **kwargs)
        started.append(process)
        return process, base_url

    try:
        yield start_and_keep
    finally:
        for process in started:
            await process.stop()


@pytest.fixture
async def prometheus_factory(workdir: Path) -> AsyncIterator[PrometheusFactory]:
    """``await start(targets, scrape_interval_s=1.0)`` -> (process, base URL); stopped after."""
    async with _stopping(functools.partial(start_prometheus, workdir)) as start:
        yield start


@pytest.fixture
async def demo_service_factory(workdir: Path) -> AsyncIterator[DemoServiceFactory]:
    """``await start(version=..., digest=...)`` -> (process, URL); all stopped at teardown."""
    async with _stopping(functools.partial(start_demo_service, workdir)) as start:
        yield start


@pytest.fixture
async def time_source(prometheus_factory: PrometheusFactory) -> AsyncIterator[PrometheusSource]:
    """A source on a real Prometheus that scrapes nothing, once it answers ``time()``;
    closed after."""
    _, base_url = await prometheus_factory({})
    source = PrometheusSource(base_url, timeout_s=5.0, attempts=2, backoff_initial_s=0.05)
    try:
        await wait_for_value(source, "time()")
        yield source
    finally:
        await source.close()


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
