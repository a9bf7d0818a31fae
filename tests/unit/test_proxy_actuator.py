"""The embedded proxy, driven through real sockets against real upstream servers."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from sidecar.actuators.base import Backend, TrafficState
from sidecar.actuators.proxy import ProxyActuator
from sidecar.errors import ActuationError, SettingsError
from tests.conftest import HttpServer
from tests.support.processes import free_port

HOST = "127.0.0.1"
STABLE = "sha256:" + "a" * 64
CANDIDATE = "sha256:" + "b" * 64
PREVIEW = "sha256:" + "c" * 64


@dataclass
class Upstream:
    """A real HTTP server that names itself in every answer and echoes what it got."""

    name: str
    url: str = ""
    release: asyncio.Event = field(default_factory=asyncio.Event)


def _upstream_app(upstream: Upstream) -> web.Application:
    async def name(_: web.Request) -> web.Response:
        return web.Response(text=upstream.name)

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "name": upstream.name,
                "method": request.method,
                "path_qs": request.path_qs,
                "body": (await request.read()).decode(),
                "headers": {k.lower(): v for k, v in request.headers.items()},
            },
            headers={"Keep-Alive": "timeout=7", "X-Upstream": upstream.name},
        )

    async def slow(_: web.Request) -> web.Response:
        await upstream.release.wait()
        return web.Response(text="late")

    async def broken(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"partial")
        assert request.transport is not None
        request.transport.close()
        return response

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/broken", broken)
    app.router.add_get("/slow", slow)
    app.router.add_get("/{tail:.*}", name)
    return app


@pytest.fixture
async def upstreams(http_server: HttpServer) -> AsyncIterator[dict[str, Upstream]]:
    servers = {"stable": Upstream("stable"), "candidate": Upstream("candidate")}
    servers["preview"] = Upstream("preview")
    for upstream in servers.values():
        upstream.url = await http_server(_upstream_app(upstream))
    yield servers
    for upstream in servers.values():  # before http_server's cleanup waits for them
        upstream.release.set()


@pytest.fixture
async def proxy() -> AsyncIterator[ProxyActuator]:
    actuator = ProxyActuator(
        {"prod": (HOST, 0), "staging": (HOST, 0)},
        metrics_listen=(HOST, 0),
        timeout_s=0.5,
        rng=random.Random(1234),
    )
    await actuator.start()
    yield actuator
    await actuator.close()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def _state(
    upstreams: dict[str, Upstream],
    stable: int,
    candidate: int,
    *,
    sequence: int = 1,
    promotion_id: str = "p-1",
    stage: str = "prod",
    preview: bool = False,
) -> TrafficState:
    return TrafficState(
        promotion_id=promotion_id,
        sequence=sequence,
        service="shop",
        stage=stage,
        backends=(
            Backend(STABLE, upstreams["stable"].url, stable, "stable"),
            Backend(CANDIDATE, upstreams["candidate"].url, candidate, "candidate"),
        ),
        preview=Backend(PREVIEW, upstreams["preview"].url, 0, "candidate") if preview else None,
    )


def _url(proxy: ProxyActuator, path: str = "/", stage: str = "prod") -> str:
    return f"http://{HOST}:{proxy.bound_port(stage)}{path}"


async def _names(
    client: aiohttp.ClientSession, url: str, count: int, *, concurrency: int = 25
) -> Counter[str]:
    """Send ``count`` GETs, ``concurrency`` at a time, within a hard time limit."""
    seen: Counter[str] = Counter()

    async def one() -> None:
        async with client.get(url) as response:
            assert response.status == 200
            seen[await response.text()] += 1

    async with asyncio.timeout(30):
        for start in range(0, count, concurrency):
            await asyncio.gather(*(one() for _ in range(min(concurrency, count - start))))
    return seen


async def test_all_traffic_goes_where_the_weights_say(
    proxy: ProxyActuator, upstreams: dict[str, Upstream], client: aiohttp.ClientSession
) -> None:
    await proxy.apply(_state(upstreams, 100, 0))
    assert await _names(client, _url(proxy), 50) == {"stable": 50}

    await proxy.apply(_state(upstreams, 0, 100, sequence=2))
    assert await _names(client, _url(proxy), 50) == {"candidate": 50}

    await proxy.apply(_state(upstreams, 100, 0, sequence=3))
    assert await _names(client, _url(proxy), 50) == {"stable": 50}
    assert proxy.routed("prod") == {STABLE: 100, CANDIDATE: 50}


async def test_a_30_70_split_holds_over_many_requests(
    proxy: ProxyActuator, upstreams: dict[str, Upstream], client: aiohttp.ClientSession
) -> None:
    await proxy.apply(_state(upstreams, 70, 30))
    seen = await _names(client, _url(proxy), 2000)
    assert seen.total() == 2000
    assert abs(seen["candidate"] / 2000 - 0.30) < 0.03
    assert proxy.routed("prod") == {STABLE: seen["stable"], CANDIDATE: seen["candidate"]}


async def test_stages_route_independently(
    proxy: ProxyActuator, upstreams: dict[str, Upstream], client: aiohttp.ClientSession
) -> None:
    await proxy.apply(_state(upstreams, 0, 100, stage="staging"))
    assert await _names(client, _url(proxy, stage="staging"), 10) == {"candidate": 10}
    async with client.get(_url(proxy)) as response:
        assert response.status == 503


async def test_preview_header_reaches_only_the_preview(
    proxy: ProxyActuator, upstreams: dict[str, Upstream], client: aiohttp.ClientSession
) -> None:
    await proxy.apply(_state(upstreams, 100, 0, preview=True))
    async with client.get(_url(proxy), headers={"X-Promgate-Preview": "1"}) as response:
        assert await response.text() == "preview"
    assert await _names(client, _url(proxy), 20) == {"stable": 20}

    await proxy.apply(_state(upstreams, 100, 0, sequence=2))
    async with client.get(_url(proxy), headers={"X-Promgate-Preview": "1"}) as response:
        assert response.status == 503
        assert "no preview" in (await response.json())["error"]


async def test_no_state_answers_503_naming_the_stage(
    proxy: ProxyActuator, client: aiohttp.ClientSession
) -> None:
    async with client.get(_url(proxy)) as response:
        assert response.status == 503
        assert (await response.json()) == {"error": "no traffic state is set for stage 'prod'"}


async def test_dead_upstream_answers_502(
    proxy: ProxyActuator, upstreams: dict[str, Upstream], client: aiohttp.ClientSession
) -> None:
    upstreams["stable"].url = f"http://{HOST}:{free_port()}"
    await proxy.apply(_state(upstreams, 100, 0))
    async with client.get(_url(proxy)) as response:
        assert response.status == 502
        assert "unreachable" in (await response.json())["error"]


async def test_slow_upstream_answers_504(
    proxy: ProxyActuator, upstreams: dict[str, Upstream], client: aiohttp.ClientSession
) -> None:
    await proxy.apply(_state(upstreams, 100, 0))
    async with client.get(_url(proxy, "/slow")) as response:
        assert response.status == 504
        assert "timed out" in (await response.json())["error"]


async def test_upstream_breaking_off_mid_body_is_not_passed_off_as_complete(
    proxy: ProxyActuator, upstreams: dict[str, Upstream], client: aiohttp.ClientSession
) -> None:
    await proxy.apply(_state(upstreams, 100, 0))
    async with client.get(_url(proxy, "/broken")) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


@pytest.mark.parametrize(
    ("stable", "candidate", "reason"),
    [(60, 30, "sum to 90"), (101, -1, "within 0..100"), (50, 60, "sum to 110")],
)
async def test_bad_weights_are_rejected(
    proxy: ProxyActuator,
    upstreams: dict[str, Upstream],
    stable: int,
    candidate: int,
    reason: str,
) -> None:
    with pytest.raises(ActuationError, match=reason):
        await proxy.apply(_state(upstreams, stable, candidate))


async def test_states_without_backends_or_listener_are_rejected(
    proxy: ProxyActuator, upstreams: dict[str, Upstream]
) -> None:
    empty = TrafficState("p-1", 1, "shop", "prod", backends=())
    with pytest.raises(ActuationError, match="no backends"):
        await proxy.apply(empty)
    with pytest.raises(ActuationError, match=r"'canary'.*\['prod', 'staging'\]"):
        await proxy.apply(_state(upstreams, 100, 0, stage="canary"))


async def test_stale_or_repeated_sequence_is_ignored(
    proxy: ProxyActuator, upstreams: dict[str, Upstream], client: aiohttp.ClientSession
) -> None:
    await proxy.apply(_state(upstreams, 100, 0, sequence=2))
    await proxy.apply(_state(upstreams, 0, 100, sequence=1))
    await proxy.restore(_state(upstreams, 0, 100, sequence=2))
    assert await _names(client, _url(proxy), 10) == {"stable": 10}

    await proxy.apply(_state(upstreams, 0, 100, sequence=1, promotion_id="p-2"))
    assert await _names(client, _url(proxy), 10) == {"candidate": 10}


async def test_metrics_endpoint_exposes_requests_and_current_weights(
    proxy: ProxyActuator, upstreams: dict[str, Upstream], client: aiohttp.ClientSession
) -> None:
    await proxy.apply(_state(upstreams, 100, 0))
    await _names(client, _url(proxy), 3)
    other = Backend("sha256:" + "d" * 64, upstreams["stable"].url, 100, "stable")
    await proxy.apply(TrafficState("p-1", 2, "shop", "prod", backends=(other,)))

    async with client.get(f"http://{HOST}:{proxy.metrics_port}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    assert (
        f'promgate_proxy_requests_total{{code="200",digest="{STABLE}",role="stable",stage="prod"}}'
        " 3.0" in text
    )
    assert f'promgate_proxy_request_duration_seconds_count{{digest="{STABLE}"' in text
    assert f'promgate_proxy_backend_weight{{digest="{other.digest}"' in text
    weight_lines = [line for line in text.splitlines() if line.startswith("promgate_proxy_backend")]
    assert not [line for line in weight_lines if STABLE in line or CANDIDATE in line]


async def test_method_query_and_body_are_forwarded(
    proxy: ProxyActuator, upstreams: dict[str, Upstream], client: aiohttp.ClientSession
) -> None:
    await proxy.apply(_state(upstreams, 100, 0))
    async with client.post(_url(proxy, "/echo?a=1&b=x%20y"), data=b'{"order": 7}') as response:
        echoed = await response.json()
    assert echoed["method"] == "POST"
    assert echoed["path_qs"] == "/echo?a=1&b=x%20y"
    assert echoed["body"] == '{"order": 7}'
    assert echoed["headers"]["x-forwarded-for"] == HOST
    assert echoed["headers"]["x-forwarded-host"] == f"{HOST}:{proxy.bound_port('prod')}"


async def test_expect_continue_is_answered_by_the_proxy(
    proxy: ProxyActuator, upstreams: dict[str, Upstream], client: aiohttp.ClientSession
) -> None:
    await proxy.apply(_state(upstreams, 100, 0))
    async with (
        asyncio.timeout(5),
        client.put(_url(proxy, "/echo"), data=b"payload", expect100=True) as response,
    ):
        assert (await response.json())["body"] == "payload"


async def test_hop_by_hop_headers_are_not_forwarded(
    proxy: ProxyActuator, upstreams: dict[str, Upstream], client: aiohttp.ClientSession
) -> None:
    await proxy.apply(_state(upstreams, 100, 0))
    sent = {
        "Connection": "keep-alive, X-Private-Hop",
        "X-Private-Hop": "1",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic c2VjcmV0",
        "X-End-To-End": "kept",
    }
    async with client.get(_url(proxy, "/echo"), headers=sent) as response:
        echoed = await response.json()
        assert response.headers["X-Upstream"] == "stable"
        assert "Keep-Alive" not in response.headers
    received = echoed["headers"]
    assert received["x-end-to-end"] == "kept"
    for name in ("x-private-hop", "keep-alive", "proxy-authorization"):
        assert name not in received


async def test_listener_settings_are_checked() -> None:
    with pytest.raises(SettingsError, match="no host"):
        ProxyActuator({"prod": ("", 0)})
    with pytest.raises(SettingsError, match="at least one stage"):
        ProxyActuator({})


async def test_closed_proxy_stops_listening(
    upstreams: dict[str, Upstream], client: aiohttp.ClientSession
) -> None:
    actuator = ProxyActuator({"prod": (HOST, 0)})
    await actuator.start()
    await actuator.apply(_state(upstreams, 100, 0))
    url = _url(actuator)
    await actuator.close()
    await actuator.close()
    with pytest.raises(aiohttp.ClientConnectionError):
        await _get_status(client, url)


async def _get_status(client: aiohttp.ClientSession, url: str) -> int:
    async with client.get(url) as response:
        return response.status
