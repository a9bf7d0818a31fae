"""The shared Prometheus client meets a faulty Prometheus and a real one.

Real loopback servers play a Prometheus that hangs, fails with 5xx, rate-limits with
``Retry-After``, rejects the query, answers garbage or is not there at all. Every fault
is met through both callers of the client: the live path (instant queries) and replay
(range queries). Each test's URL carries credentials and the fake servers echo them
back, so every message is also checked for them. A real Prometheus behind basic auth
checks the rest: credentials sent, chunked range queries, rejected PromQL.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import pytest_asyncio
import yaml
from aiohttp import web

from sidecar.analysis.prometheus import PrometheusSource
from sidecar.analysis.prometheus_http import PrometheusClient, Sample, Series, retry_after_s
from sidecar.domain.measurement import Measurement, MeasurementKind
from sidecar.errors import (
    ProviderError,
    ProviderHTTPError,
    ProviderTimeoutError,
    QueryError,
    SettingsError,
)
from sidecar.local.processes import ManagedProcess, prometheus_binary
from sidecar.replay import HistoricalSource
from sidecar.testing import FakeClock
from tests.conftest import HttpServer
from tests.support.processes import free_port, metric_value, wait_until

USER, PASSWORD = "ops-reader", "s3cr3t-pw-7Qx"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
T0 = 1_700_000_000.0
UNAVAILABLE = {
    "status": "error",
    "errorType": "unavailable",
    "error": f"storage warming up (saw {USER}:{PASSWORD})",  # a server that echoes secrets
}
BAD_DATA = {"status": "error", "errorType": "bad_data", "error": f"parse error near {PASSWORD}"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def with_credentials(base_url: str, user: str = USER, password: str = PASSWORD) -> str:
    return base_url.replace("http://", f"http://{user}:{password}@")


# --- a scripted Prometheus --------------------------------------------------------------------


@dataclass
class Scripted:
    """Answers both query endpoints with ``steps`` in order (the last one repeats), and
    records when each request came and the Authorization it carried."""

    steps: Sequence[Handler]
    hits: list[float] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(asyncio.get_running_loop().time())
        self.authorizations.append(request.headers.get("Authorization"))
        return await self.steps[min(len(self.hits), len(self.steps)) - 1](request)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v1/query", self.handle)
        app.router.add_get("/api/v1/query_range", self.handle)
        return app


def answer(
    status: int, body: dict[str, Any] | str, headers: dict[str, str] | None = None
) -> Handler:
    async def respond(request: web.Request) -> web.StreamResponse:
        if isinstance(body, str):
            return web.Response(status=status, text=body, headers=headers)
        return web.json_response(body, status=status, headers=headers)

    return respond


def success(value: str = "0.25") -> Handler:
    """A well-formed answer shaped for the endpoint asked: a vector or a matrix."""

    async def respond(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("query_range"):
            values = [[T0, value], [T0 + 1, value]]
            data = {"resultType": "matrix", "result": [{"metric": {"job": "x"}, "values": values}]}
        else:
            data = {"resultType": "vector", "result": [{"metric": {}, "value": [T0, value]}]}
        return web.json_response({"status": "success", "data": data})

    return respond


def hang(release: asyncio.Event) -> Handler:
    async def respond(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return await success()(request)

    return respond


@dataclass(frozen=True)
class Via:
    """One caller of the client: what it asks and what a healthy answer becomes."""

    name: str
    call: Callable[[PrometheusClient], Awaitable[object]]
    healthy: object


VIAS = [
    Via("live", lambda client: client.instant("sum(up)"), [Sample({}, 0.25)]),
    Via(
        "replay",
        lambda client: client.range("sum(up)", T0, T0 + 1, 1.0),
        [Series({"job": "x"}, [(T0, 0.25), (T0 + 1, 0.25)])],
    ),
]


@pytest.fixture(params=VIAS, ids=lambda via: via.name)
def via(request: pytest.FixtureRequest) -> Via:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., PrometheusClient]]:
    """``make(base_url, **options)``: a client with fast backoff and credentials in its
    URL, closed after the test."""
    made: list[PrometheusClient] = []

    def make(base_url: str, **options: Any) -> PrometheusClient:
        settings = {"timeout_s": 2.0, "backoff_initial_s": 0.01, "backoff_max_s": 0.05}
        made.append(PrometheusClient(with_credentials(base_url), **{**settings, **options}))
        return made[-1]

    yield make
    for client in made:
        await client.close()


async def failure(via: Via, client: PrometheusClient) -> ProviderError:
    """The error ``via`` raises on ``client``, checked to carry no credential."""
    with pytest.raises(ProviderError) as caught:
        await via.call(client)
    message = str(caught.value)
    assert PASSWORD not in message and USER not in message, message
    return caught.value


# --- faults, through both paths -----------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_a_transient_status_is_retried_until_it_succeeds(
    http_server: HttpServer, clients: Callable[..., PrometheusClient], via: Via, status: int
) -> None:
    """A 5xx or a 429 without Retry-After is retried after a short backoff."""
    script = Scripted([answer(status, UNAVAILABLE), success()])
    client = clients(await http_server(script.app()))

    assert await via.call(client) == via.healthy
    assert len(script.hits) == 2
    assert script.authorizations == [BASIC, BASIC]


async def test_a_persistent_503_gives_up_after_every_attempt(
    http_server: HttpServer, clients: Callable[..., PrometheusClient], via: Via
) -> None:
    """The last error is reported with Prometheus's own words and the attempts made."""
    script = Scripted([answer(503, UNAVAILABLE)])
    client = clients(await http_server(script.app()), attempts=3)

    error = await failure(via, client)

    assert type(error) is ProviderHTTPError
    assert "answered HTTP 503: unavailable: storage warming up" in str(error)
    assert "(gave up after 3 attempt(s))" in str(error)
    assert len(script.hits) == 3


async def test_retry_after_is_waited_for(
    http_server: HttpServer, clients: Callable[..., PrometheusClient], via: Via
) -> None:
    """A 429's Retry-After, not the 50 ms backoff, sets when the next attempt comes."""
    script = Scripted([answer(429, UNAVAILABLE, {"Retry-After": "1"}), success()])
    client = clients(await http_server(script.app()))

    assert await via.call(client) == via.healthy
    assert len(script.hits) == 2
    assert script.hits[1] - script.hits[0] >= 0.95


async def test_a_retry_after_beyond_the_timeout_ends_the_retries(
    http_server: HttpServer, clients: Callable[..., PrometheusClient], via: Via
) -> None:
    """Waiting an hour inside one evaluation helps nobody: give up now, say why."""
    script = Scripted([answer(429, UNAVAILABLE, {"Retry-After": "3600"}), success()])
    client = clients(await http_server(script.app()), attempts=3)

    error = await failure(via, client)

    assert type(error) is ProviderHTTPError
    assert "answered HTTP 429 and asked to wait 3600s" in str(error)
    assert "(gave up after 1 attempt(s))" in str(error)
    assert len(script.hits) == 1


async def test_a_hanging_prometheus_times_out_on_every_attempt(
    http_server: HttpServer, clients: Callable[..., PrometheusClient], via: Via
) -> None:
    release = asyncio.Event()
    script = Scripted([hang(release)])
    client = clients(await http_server(script.app()), attempts=2, timeout_s=0.3)
    try:
        error = await failure(via, client)
    finally:
        release.set()

    assert type(error) is ProviderTimeoutError
    assert "did not answer within the 0.3s timeout (gave up after 2 attempt(s))" in str(error)
    assert len(script.hits) == 2


@pytest.mark.parametrize("status", [400, 422])
async def test_a_rejected_query_is_a_query_error_and_not_retried(
    http_server: HttpServer, clients: Callable[..., PrometheusClient], via: Via, status: int
) -> None:
    script = Scripted([answer(status, BAD_DATA), success()])
    client = clients(await http_server(script.app()))

    error = await failure(via, client)

    assert type(error) is QueryError
    assert f"Prometheus rejected the query (HTTP {status}): bad_data: parse error" in str(error)
    assert len(script.hits) == 1


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (answer(200, '{"status": "success", "data": '), "without a successful result"),
        (answer(200, "<html>a login page</html>"), "<html>a login page</html>"),
        (answer(200, {"status": "success"}), "has no data object"),
        (success("many"), "is not [timestamp, number]"),
        (answer(401, f"bad password {PASSWORD} for {USER}"), "answered HTTP 401: bad password"),
    ],
    ids=["truncated-json", "not-json", "no-data", "not-a-number", "unauthorized"],
)
async def test_a_malformed_answer_is_a_provider_error_and_not_retried(
    http_server: HttpServer,
    clients: Callable[..., PrometheusClient],
    via: Via,
    step: Handler,
    expected: str,
) -> None:
    """Another attempt would get the same garbage; the message quotes some of it."""
    script = Scripted([step, success()])
    client = clients(await http_server(script.app()))

    error = await failure(via, client)

    assert not isinstance(error, QueryError | ProviderTimeoutError)
    assert expected in str(error)
    assert len(script.hits) == 1


async def test_a_refused_connection_is_retried_then_named(
    clients: Callable[..., PrometheusClient], via: Via
) -> None:
    port = free_port()  # nothing listens there
    client = clients(f"http://127.0.0.1:{port}", attempts=2)

    error = await failure(via, client)

    assert type(error) is ProviderError
    assert str(error).startswith(f"cannot reach Prometheus at http://127.0.0.1:{port}: ")
    assert str(error).endswith("(gave up after 2 attempt(s))")
    assert not await client.is_ready()


async def test_a_range_needs_a_positive_step(clients: Callable[..., PrometheusClient]) -> None:
    client = clients("http://127.0.0.1:9")
    with pytest.raises(QueryError, match="step > 0"):
        await client.range("up", T0, T0 + 10, 0)


# --- a bearer token file ---------------------------------------------------------------------

TOKEN_1, TOKEN_2 = "tok-1-8dK2mZ", "tok-2-Yq7wLp"


async def test_a_bearer_token_file_is_sent_reread_and_never_shown(
    http_server: HttpServer, via: Via, tmp_path: Path
) -> None:
    """Each request carries the file's token as it is then: a rotated token is used at
    once, and a server that echoes it back does not get it into the message."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN_1 + "\n")
    script = Scripted([success(), answer(401, f"token {TOKEN_2} is not allowed here")])
    url = await http_server(script.app())
    client = PrometheusClient(url, bearer_token_file=token_file, attempts=1)
    try:
        assert await via.call(client) == via.healthy
        token_file.write_text(TOKEN_2)
        error = await failure(via, client)
        token_file.unlink()
        gone = await failure(via, client)
    finally:
        await client.close()

    assert script.authorizations == [f"Bearer {TOKEN_1}", f"Bearer {TOKEN_2}"]
    assert type(error) is ProviderHTTPError
    assert str(error) == (
        f"Prometheus at {url} answered HTTP 401: token <redacted> is not allowed here"
    )
    assert f"cannot read the Prometheus bearer token file {token_file}" in str(gone)
    assert len(script.hits) == 2  # the missing file is found before any request


@pytest.mark.parametrize(
    ("content", "url", "expected"),
    [
        (None, "http://127.0.0.1:9", "No such file or directory"),
        ("  \n", "http://127.0.0.1:9", "the file must hold one token"),
        (f"{TOKEN_1}\n{TOKEN_2}\n", "http://127.0.0.1:9", "the file must hold one token"),
        (TOKEN_1, with_credentials("http://127.0.0.1:9"), "use one of them"),
    ],
    ids=["missing", "empty", "two-lines", "and-a-password"],
)
def test_a_bad_bearer_token_file_is_refused_at_once(
    tmp_path: Path, content: str | None, url: str, expected: str
) -> None:
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)
    with pytest.raises(SettingsError) as caught:
        PrometheusClient(url, bearer_token_file=token_file)
    message = str(caught.value)
    assert expected in message
    for secret in (TOKEN_1, TOKEN_2, PASSWORD, USER):
        assert secret not in message


# --- the callers above the client ---------------------------------------------------------------


async def test_the_live_source_holds_on_a_fault_and_recovers(http_server: HttpServer) -> None:
    """A 503 that recovers within the attempts is a value; one that persists is a
    provider error (hold), never no data, and names no credential."""
    script = Scripted([answer(503, UNAVAILABLE), success("0.5"), answer(503, UNAVAILABLE)])
    source = PrometheusSource(
        with_credentials(await http_server(script.app())), attempts=2, backoff_initial_s=0.01
    )
    try:
        recovered = await source.query("up")
        held = await source.query("up")
    finally:
        await source.close()

    assert recovered == Measurement.of(0.5)
    assert held.kind is MeasurementKind.PROVIDER_ERROR
    assert "HTTP 503" in held.detail and PASSWORD not in held.detail and USER not in held.detail


async def test_replay_holds_on_a_rejected_query_and_retries_a_5xx(
    http_server: HttpServer, clients: Callable[..., PrometheusClient]
) -> None:
    """Replay fetches each query once: a 5xx is retried inside that fetch; a rejected
    query is a provider error for every ask (the replay holds), naming the window."""
    script = Scripted([answer(502, UNAVAILABLE), success(), answer(400, BAD_DATA)])
    client = clients(await http_server(script.app()))
    clock = FakeClock(T0 + 1)
    source = HistoricalSource(client, clock, start=T0, end=T0 + 1, step=1.0, lead_s=0)

    assert await source.query("first") == Measurement.of(0.25)
    rejected = await source.query("second")

    assert rejected.kind is MeasurementKind.PROVIDER_ERROR
    assert rejected.detail.startswith(
        "query 'second': cannot read 2023-11-14T22:13:20Z .. 2023-11-14T22:13:21Z: "
        "Prometheus rejected the query (HTTP 400): bad_data: parse error near <redacted>"
    )
    assert await source.query("second") == rejected
    assert len(script.hits) == 3


# --- Retry-After, as a table ----------------------------------------------------------------------

NOW = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("1", 1.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("Wed, 01 May 2024 12:00:30 GMT", 30.0),
        ("Wed, 01 May 2024 11:59:00 GMT", 0.0),  # already past: retry now
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
    ],
)
def test_retry_after_header(header: str, expected: float | None) -> None:
    assert retry_after_s(header, NOW) == expected


# --- a real Prometheus behind basic auth ----------------------------------------------------------

ON_REAL_PROMETHEUS = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Guarded:
    """A real Prometheus that asks for basic auth; ``url`` carries no credentials."""

    url: str
    client: PrometheusClient


def web_config(directory: Path) -> Path:
    """Prometheus's own web config requiring USER/PASSWORD (bcrypt, lowest cost: fast)."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    path = directory / "web.yml"
    path.write_text(yaml.safe_dump({"basic_auth_users": {USER: hashed}}))
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def guarded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Guarded]:
    home = tmp_path_factory.mktemp("guarded-prometheus")
    (home / "prometheus.yml").write_text("global: {scrape_interval: 1s}\n")
    port = free_port()
    process = ManagedProcess(
        [
            prometheus_binary(),
            f"--config.file={home / 'prometheus.yml'}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--web.config.file={web_config(home)}",
        ],
        home,
        name="prometheus",
    ).start()
    url = f"http://127.0.0.1:{port}"
    client = PrometheusClient(with_credentials(url), timeout_s=5.0, backoff_initial_s=0.05)
    try:
        await wait_until(client.is_ready, 30.0, what=f"prometheus at {url} to be ready")
        yield Guarded(url, client)
    finally:
        await client.close()
        await process.stop()


async def requests_answered(guarded: Guarded, handler: str, code: str) -> float:
    """How many requests to ``handler`` Prometheus itself answered with ``code``."""
    async with (
        aiohttp.ClientSession(headers={"Authorization": BASIC}) as session,
        session.get(f"{guarded.url}/metrics") as response,
    ):
        text = await response.text()
    labels = {"code": code, "handler": handler}
    return metric_value(text, "prometheus_http_requests_total", labels) or 0.0


async def counted(guarded: Guarded, handler: str, code: str, expected: float) -> float:
    """Prometheus counts a request just after answering it: poll briefly for ``expected``."""
    seen = 0.0

    async def reached() -> bool:
        nonlocal seen
        seen = await requests_answered(guarded, handler, code)
        return seen >= expected

    await wait_until(reached, 5.0, what=f"{expected} {code} answers of {handler}")
    return seen


@ON_REAL_PROMETHEUS
async def test_both_paths_read_a_guarded_prometheus(guarded: Guarded) -> None:
    """The live source and a replay's historical source, each with credentials in the
    URL, get their numbers; an instant query as of a past time answers for that time."""
    live = PrometheusSource(with_credentials(guarded.url))
    at = float(int(time.time()) - 600)
    replayed = HistoricalSource(
        PrometheusClient(with_credentials(guarded.url)),
        FakeClock(at + 5),
        start=at,
        end=at + 10,
        step=1.0,
        lead_s=0,
    )
    try:
        assert await live.query("sum(vector(3))") == Measurement.of(3.0)
        assert await replayed.query("time()") == Measurement.of(at + 5)
        assert await guarded.client.instant("time()", at=at) == [Sample({}, at)]
    finally:
        await live.close()
        await replayed.close()


@ON_REAL_PROMETHEUS
async def test_a_wrong_password_is_refused_and_never_shown(guarded: Guarded) -> None:
    wrong = PrometheusClient(with_credentials(guarded.url, password="not-it-42"), attempts=1)
    try:
        for call in (wrong.instant("up"), wrong.range("up", T0, T0 + 1, 1.0)):
            with pytest.raises(ProviderHTTPError) as caught:
                await call
            assert f"Prometheus at {guarded.url} answered HTTP 401" in str(caught.value)
            assert "not-it-42" not in str(caught.value) and USER not in str(caught.value)
        assert not await wrong.is_ready()
    finally:
        await wrong.close()


@ON_REAL_PROMETHEUS
async def test_a_long_range_is_fetched_in_chunks_and_merged(guarded: Guarded) -> None:
    """Three hours at 1 s is 10,801 points, over Prometheus's 11,000 per series limit
    with headroom: two requests, one merged series, every point once."""
    end = float(int(time.time()) - 60)
    start = end - 3 * 3600
    before = await requests_answered(guarded, "/api/v1/query_range", "200")

    [series] = await guarded.client.range("time()", start, end, 1.0)

    assert series.labels == {}
    assert series.points == [(start + n, start + n) for n in range(3 * 3600 + 1)]
    after = await counted(guarded, "/api/v1/query_range", "200", before + 2)
    assert after == before + 2


@pytest.mark.parametrize(
    ("handler", "ask"),
    [
        ("/api/v1/query", lambda client, q: client.instant(q)),
        ("/api/v1/query_range", lambda client, q: client.range(q, T0, T0 + 60, 15.0)),
    ],
    ids=["live", "replay"],
)
@ON_REAL_PROMETHEUS
async def test_bad_promql_is_a_query_error_asked_once(
    guarded: Guarded,
    handler: str,
    ask: Callable[[PrometheusClient, str], Awaitable[object]],
) -> None:
    before = await requests_answered(guarded, handler, "400")

    with pytest.raises(QueryError) as caught:
        await ask(guarded.client, "sum(rate(up[1m])")

    assert "rejected the query (HTTP 400): bad_data:" in str(caught.value)
    assert "parse error" in str(caught.value)  # Prometheus's own words
    assert await counted(guarded, handler, "400", before + 1) == before + 1


@ON_REAL_PROMETHEUS
async def test_a_range_selector_is_refused_as_an_instant_answer(guarded: Guarded) -> None:
    with pytest.raises(QueryError, match="matrix result; a gate needs an instant vector"):
        await guarded.client.instant("vector(1)[1m:]")
