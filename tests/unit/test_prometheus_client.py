"""PrometheusSource against a real Prometheus and against real misbehaving HTTP servers."""

from __future__ import annotations

import asyncio
import string
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from sidecar.analysis.prometheus import NullMetricsSource, PrometheusSource
from sidecar.analysis.queries import render
from sidecar.domain.measurement import Measurement, MeasurementKind
from sidecar.errors import QueryError, SettingsError
from tests.conftest import HttpServer, PrometheusFactory
from tests.support.processes import (
    free_port,
    metric_value,
    serve_app,
    start_prometheus,
    wait_for_value,
)

ON_REAL_PROMETHEUS = pytest.mark.asyncio(loop_scope="module")
TRICKY_LABEL = 'quote " backslash \\ newline \n end'


def metrics_app() -> web.Application:
    """A scrape target with one plain series, four shards, a NaN and an awkward label."""
    registry = CollectorRegistry()
    Gauge("gate_single", "one series", registry=registry).set(42.5)
    shards = Gauge("gate_multi", "four series", ["shard"], registry=registry)
    for value, shard in enumerate("abcd", start=1):
        shards.labels(shard).set(value)
    Gauge("gate_nan", "not a number", registry=registry).set(float("nan"))
    Gauge("gate_tricky", "awkward label", ["name"], registry=registry).labels(TRICKY_LABEL).set(7)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


@dataclass
class Scraped:
    source: PrometheusSource
    base_url: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def scraped(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Scraped]:
    """One Prometheus for the module that has scraped the target at least once."""
    runner, target_url = await serve_app(metrics_app())
    workdir: Path = tmp_path_factory.mktemp("prometheus")
    process, base_url = await start_prometheus(
        workdir, {"gate": [target_url.removeprefix("http://")]}, scrape_interval_s=1.0
    )
    source = PrometheusSource(base_url, timeout_s=5.0, attempts=2, backoff_initial_s=0.05)
    try:
        await wait_for_value(source, 'gate_single{job="gate"}', timeout_s=30.0)
        yield Scraped(source, base_url)
    finally:
        await source.close()
        await process.stop()
        await runner.cleanup()


async def query_requests_with_code(base_url: str, code: str) -> float:
    """How many /api/v1/query requests Prometheus itself answered with ``code``."""
    async with aiohttp.ClientSession() as session, session.get(f"{base_url}/metrics") as resp:
        text = await resp.text()
    labels = {"code": code, "handler": "/api/v1/query"}
    return metric_value(text, "prometheus_http_requests_total", labels) or 0.0


@ON_REAL_PROMETHEUS
@pytest.mark.parametrize(
    ("promql", "expected"),
    [
        ('gate_single{job="gate"}', 42.5),
        ("sum(gate_multi)", 10.0),
        ('gate_multi{shard="c"}', 3.0),
        ("1+1", 2.0),
        ("scalar(gate_single) / 2", 21.25),
    ],
)
async def test_value(scraped: Scraped, promql: str, expected: float) -> None:
    assert await scraped.source.query(promql) == Measurement.of(expected)


@ON_REAL_PROMETHEUS
@pytest.mark.parametrize(
    ("promql", "detail"),
    [
        ('gate_single{job="nope"}', "empty result"),
        ("0/0", "query returned nan"),
        ("gate_nan", "query returned nan"),
        ("sum(gate_multi) / 0", "query returned inf"),
    ],
)
async def test_no_data(scraped: Scraped, promql: str, detail: str) -> None:
    measurement = await scraped.source.query(promql)
    assert measurement.kind is MeasurementKind.NO_DATA
    assert measurement.detail == detail


@ON_REAL_PROMETHEUS
async def test_bad_promql_is_a_provider_error_and_not_retried(scraped: Scraped) -> None:
    before = await query_requests_with_code(scraped.base_url, "400")

    measurement = await scraped.source.query("sum(rate(gate_single[1m])")

    assert measurement.kind is MeasurementKind.PROVIDER_ERROR
    assert "sum(rate(gate_single[1m])" in measurement.detail
    assert "bad_data" in measurement.detail
    assert "parse error" in measurement.detail  # Prometheus's own words
    assert await query_requests_with_code(scraped.base_url, "400") == before + 1


@ON_REAL_PROMETHEUS
async def test_more_than_one_series_must_be_aggregated(scraped: Scraped) -> None:
    measurement = await scraped.source.query("gate_multi")

    assert measurement.kind is MeasurementKind.PROVIDER_ERROR
    detail = measurement.detail
    assert "'gate_multi'" in detail
    assert "must aggregate to one series" in detail
    assert "got 4 series" in detail
    assert 'shard="a"' in detail and 'shard="c"' in detail
    assert 'shard="d"' not in detail and "and 1 more" in detail


@ON_REAL_PROMETHEUS
async def test_range_vector_is_refused(scraped: Scraped) -> None:
    measurement = await scraped.source.query("gate_single[1m]")
    assert measurement.kind is MeasurementKind.PROVIDER_ERROR
    assert "matrix" in measurement.detail


@ON_REAL_PROMETHEUS
async def test_rendered_injection_cannot_change_the_answer(scraped: Scraped) -> None:
    template = 'gate_single{job="$service"}'
    hostile = {"service": 'nope"} or vector(1) #'}
    unescaped = string.Template(template).substitute(hostile)
    assert (await scraped.source.query(unescaped)).is_value  # the attack works unescaped

    measurement = await scraped.source.query(render(template, hostile))

    assert measurement == Measurement.no_data("empty result")


@ON_REAL_PROMETHEUS
async def test_single_quoted_placeholder_is_refused_before_it_can_inject(
    scraped: Scraped,
) -> None:
    """Escaping covers double quotes only, so a single-quoted placeholder is refused."""
    template = "sum(gate_single{job='$version'})"
    hostile = {"version": "x'}) or vector(2) #"}
    unescaped = string.Template(template).substitute(hostile)
    assert await scraped.source.query(unescaped) == Measurement.of(2.0)  # it would inject

    with pytest.raises(QueryError, match="single-quoted"):
        render(template, hostile)


@ON_REAL_PROMETHEUS
async def test_escaped_label_value_reaches_prometheus_unchanged(scraped: Scraped) -> None:
    promql = render('gate_tricky{name="$version"}', {"version": TRICKY_LABEL})
    assert await scraped.source.query(promql) == Measurement.of(7.0)


async def test_is_ready_follows_the_process(prometheus_factory: PrometheusFactory) -> None:
    process, base_url = await prometheus_factory({})
    source = PrometheusSource(base_url, timeout_s=1.0)
    try:
        assert await source.is_ready()
        await process.stop()
        assert not await source.is_ready()
    finally:
        await source.close()


@dataclass
class Script:
    """A server that answers /api/v1/query from a list of (status, body) in order."""

    answers: list[tuple[int, dict[str, object] | str]]
    hits: int = 0
    authorization: str | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        self.authorization = request.headers.get("Authorization")
        status, body = self.answers[min(self.hits, len(self.answers)) - 1]
        if isinstance(body, str):
            return web.Response(status=status, text=body)
        return web.json_response(body, status=status)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v1/query", self.handle)
        return app


def vector(value: str) -> dict[str, object]:
    result = [{"metric": {}, "value": [1700000000.0, value]}]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


UNAVAILABLE = {"status": "error", "errorType": "unavailable", "error": "storage warming up"}


def fast_source(base_url: str, attempts: int = 3, timeout_s: float = 2.0) -> PrometheusSource:
    return PrometheusSource(
        base_url,
        timeout_s=timeout_s,
        attempts=attempts,
        backoff_initial_s=0.01,
        backoff_max_s=0.05,
    )


async def query_once(
    base_url: str, promql: str, attempts: int = 3, timeout_s: float = 2.0
) -> Measurement:
    """``promql`` asked once through a fresh :func:`fast_source`, closed afterwards."""
    source = fast_source(base_url, attempts=attempts, timeout_s=timeout_s)
    try:
        return await source.query(promql)
    finally:
        await source.close()


@pytest.mark.parametrize("status", [503, 500, 429])
async def test_transient_status_is_retried_until_it_succeeds(
    http_server: HttpServer, status: int
) -> None:
    script = Script([(status, UNAVAILABLE), (200, vector("0.25"))])
    assert await query_once(await http_server(script.app()), "sum(up)") == Measurement.of(0.25)
    assert script.hits == 2


async def test_persistent_503_gives_up_after_all_attempts(http_server: HttpServer) -> None:
    script = Script([(503, UNAVAILABLE)])
    measurement = await query_once(await http_server(script.app()), "sum(up)", attempts=3)
    assert script.hits == 3
    assert measurement.kind is MeasurementKind.PROVIDER_ERROR
    assert "'sum(up)'" in measurement.detail
    assert "HTTP 503" in measurement.detail
    assert "storage warming up" in measurement.detail
    assert "3 attempt(s)" in measurement.detail


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, {"status": "error", "errorType": "bad_data", "error": "parse error: x"}, "x"),
        (422, {"status": "error", "errorType": "execution", "error": "many-to-many"}, "many"),
        (404, "404 page not found", "HTTP 404"),
        (200, "<html>not prometheus</html>", "not prometheus"),
        (200, {"status": "success", "data": {"resultType": "string", "result": []}}, "string"),
    ],
)
async def test_permanent_failures_are_not_retried(
    http_server: HttpServer, status: int, body: dict[str, object] | str, expected: str
) -> None:
    script = Script([(status, body), (200, vector("1"))])
    measurement = await query_once(await http_server(script.app()), "up")
    assert script.hits == 1
    assert measurement.kind is MeasurementKind.PROVIDER_ERROR
    assert expected in measurement.detail


async def test_hanging_server_times_out(http_server: HttpServer) -> None:
    release = asyncio.Event()
    hits = 0

    async def hang(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        await release.wait()
        return web.json_response(vector("1"))

    app = web.Application()
    app.router.add_get("/api/v1/query", hang)
    try:
        measurement = await query_once(await http_server(app), "up", attempts=2, timeout_s=0.3)
    finally:
        release.set()
    assert measurement.kind is MeasurementKind.PROVIDER_ERROR
    assert "timeout" in measurement.detail
    assert "2 attempt(s)" in measurement.detail
    assert hits == 2


async def test_closed_port_is_a_provider_error() -> None:
    measurement = await query_once(f"http://127.0.0.1:{free_port()}", "up", attempts=2)
    assert measurement.kind is MeasurementKind.PROVIDER_ERROR
    assert "cannot reach Prometheus" in measurement.detail
    assert "2 attempt(s)" in measurement.detail


async def test_credentials_are_sent_but_never_shown(http_server: HttpServer) -> None:
    script = Script([(401, "bad password s3cr3t-pw for alice")])
    base_url = await http_server(script.app())
    with_credentials = base_url.replace("http://", "http://alice:s3cr3t-pw@")
    source = fast_source(with_credentials)
    unreachable = fast_source(f"http://alice:s3cr3t-pw@127.0.0.1:{free_port()}", attempts=1)
    try:
        measurement = await source.query("up")
        refused = await unreachable.query("up")
    finally:
        await source.close()
        await unreachable.close()
    assert script.authorization is not None and script.authorization.startswith("Basic ")
    assert source.display_url == base_url
    for result in (measurement, refused):
        assert result.kind is MeasurementKind.PROVIDER_ERROR
        assert "s3cr3t-pw" not in result.detail
        assert "alice" not in result.detail
    assert "HTTP 401" in measurement.detail


async def test_given_session_is_left_open() -> None:
    async with aiohttp.ClientSession() as session:
        source = PrometheusSource("http://127.0.0.1:9", session=session)
        await source.close()
        assert not session.closed


async def test_null_source_has_no_data() -> None:
    source = NullMetricsSource()
    assert await source.query("up") == Measurement.no_data("no metrics source configured")
    await source.close()


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("127.0.0.1:9090", {}),
        ("alice:pw@127.0.0.1:9090", {}),
        ("http://[::1", {}),
        ("ftp://127.0.0.1:9090", {}),
        ("http://127.0.0.1:9090", {"timeout_s": 0}),
        ("http://127.0.0.1:9090", {"attempts": 0}),
    ],
)
def test_bad_settings_are_refused(url: str, options: dict[str, float]) -> None:
    with pytest.raises(SettingsError) as caught:
        PrometheusSource(url, **options)
    assert "pw" not in str(caught.value)
