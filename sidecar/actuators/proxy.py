"""The embedded weighted reverse proxy: the default actuator when nothing else routes.

One listener per stage forwards each request to a backend picked by weight from that
stage's current :class:`TrafficState`. A routing table is an immutable value swapped
in one assignment, so a request sees either the old split or the new one, never a mix.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate

import aiohttp
from aiohttp import HttpVersion11, web
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from yarl import URL

from sidecar.actuators.base import Backend, TrafficState
from sidecar.errors import ActuationError, Problem, SettingsError

_log = logging.getLogger(__name__)

PREVIEW_HEADER = "X-Promgate-Preview"

# Headers that describe one connection, not the message (RFC 9110 section 7.6.1).
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_CHUNK_BYTES = 64 * 1024
_NO_BACKEND = "none"

_Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class _Route:
    """An applied state plus what picking a backend needs, computed once per swap."""

    state: TrafficState
    live: tuple[Backend, ...]  # backends with weight > 0
    cum_weights: tuple[int, ...]

    @classmethod
    def of(cls, state: TrafficState) -> _Route:
        live = tuple(b for b in state.backends if b.weight > 0)
        return cls(state, live, tuple(accumulate(b.weight for b in live)))


class _Metrics:
    """The proxy's own series, so traffic actually served can be checked against the plan."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "promgate_proxy_requests",
            "Requests answered by the promgate proxy, by chosen backend and status code.",
            ["stage", "role", "digest", "code"],
            registry=registry,
        )
        self.duration = Histogram(
            "promgate_proxy_request_duration_seconds",
            "Time from receiving a request to the end of its forwarded response.",
            ["stage", "role", "digest"],
            registry=registry,
        )
        self.weight = Gauge(
            "promgate_proxy_backend_weight",
            "Percent of live traffic each backend is meant to receive.",
            ["stage", "role", "digest"],
            registry=registry,
        )


def _state_problems(state: TrafficState) -> list[Problem]:
    """Why the proxy can never route ``state``; paths name the state's field at fault."""
    where = f"traffic state {state.promotion_id}#{state.sequence} for stage {state.stage!r}"
    if not state.backends:
        return [Problem("backends", f"{where} has no backends", "give at least one")]
    problems = []
    for backend in (*state.backends, *([state.preview] if state.preview else [])):
        if not 0 <= backend.weight <= 100:
            problems.append(
                Problem(
                    "weight",
                    f"{backend.role} {backend.digest} in {where} has weight {backend.weight}",
                    "weights must be within 0..100",
                )
            )
        url = URL(backend.upstream)
        if url.scheme not in {"http", "https"} or not url.host:
            has = "an upstream that is not an absolute http(s) URL"
            if not backend.upstream:
                has = "no upstream"
            problems.append(
                Problem(
                    "upstream",
                    f"{backend.role} {backend.digest} in {where} has {has}; the proxy "
                    "forwards live traffic to it",
                    f"give the {backend.role}'s base URL, e.g. http://127.0.0.1:9001",
                )
            )
    total = sum(b.weight for b in state.backends)
    if total != 100:
        problems.append(
            Problem("weight", f"backend weights of {where} sum to {total}", "make them sum to 100")
        )
    return problems


def _forward_headers(request: web.BaseRequest) -> CIMultiDict[str]:
    """The request headers an upstream should see: end-to-end ones plus X-Forwarded-*."""
    headers = _end_to_end(request.headers)
    headers.popall("Host", None)
    headers.popall("Expect", None)  # answered here, before the body is read
    forwarded_for = [*request.headers.getall("X-Forwarded-For", []), request.remote or ""]
    headers["X-Forwarded-For"] = ", ".join(v for v in forwarded_for if v)
    headers["X-Forwarded-Host"] = request.host
    headers["X-Forwarded-Proto"] = request.scheme
    return headers


def _end_to_end(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """Drop hop-by-hop headers, including any the Connection header names."""
    named = {
        token.strip().lower()
        for value in headers.getall("Connection", [])
        for token in value.split(",")
    }
    drop = _HOP_BY_HOP | named
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in drop)


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _check_address(name: str, address: tuple[str, int]) -> None:
    """Refuse an empty host: aiohttp would read it as every interface, silently."""
    host, port = address
    if not host:
        raise SettingsError(
            f"listen address for {name} has no host; name one explicitly, e.g. 127.0.0.1"
        )
    if not 0 <= port <= 65535:
        raise SettingsError(f"listen port for {name} is {port}; use 0..65535 (0 = any free)")


async def _relay(
    request: web.BaseRequest,
    upstream: aiohttp.ClientResponse,
    response: web.StreamResponse,
    backend: Backend,
) -> None:
    """Stream the upstream body to the client, telling upstream and client failures apart."""
    try:
        await response.prepare(request)
        while chunk := await _read_upstream(request, upstream, backend):
            await response.write(chunk)
    except ConnectionResetError:
        _log.debug("client left before the response from %s %s ended", backend.role, backend.digest)


async def _read_upstream(
    request: web.BaseRequest, upstream: aiohttp.ClientResponse, backend: Backend
) -> bytes:
    """The next body chunk, or b"" at the end or when the upstream broke off mid-body."""
    try:
        return await upstream.content.read(_CHUNK_BYTES)
    except (aiohttp.ClientError, TimeoutError) as exc:
        _log.warning(
            "upstream %s %s broke off its response: %s",
            backend.role,
            backend.digest,
            type(exc).__name__,
        )
        # The status line is already sent; closing the connection is the only way left
        # to tell the client that the body is incomplete.
        if request.transport is not None:
            request.transport.close()
        return b""


class ProxyActuator:
    """Routes each stage's listener by that stage's latest applied traffic state.

    ``registry`` defaults to a private registry so several proxies can coexist in one
    process; pass the sidecar's registry to publish the series alongside its own.
    """

    def __init__(
        self,
        listen: Mapping[str, tuple[str, int]],
        *,
        metrics_listen: tuple[str, int] | None = None,
        registry: CollectorRegistry | None = None,
        timeout_s: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        if not listen:
            raise SettingsError("the proxy needs at least one stage to listen for")
        for stage, address in listen.items():
            _check_address(f"stage {stage!r}", address)
        if metrics_listen is not None:
            _check_address("proxy metrics", metrics_listen)
        if timeout_s <= 0:
            raise SettingsError(f"proxy timeout must be positive, got {timeout_s}")
        self._listen = dict(listen)
        self._metrics_listen = metrics_listen
        self._registry = registry if registry is not None else CollectorRegistry()
        self._metrics = _Metrics(self._registry)
        self._timeout_s = timeout_s
        self._rng = rng if rng is not None else random.Random()
        self._routes: dict[str, _Route] = {}
        self._routed: dict[str, dict[str, int]] = {stage: {} for stage in self._listen}
        self._runners: dict[str, web.BaseRunner] = {}
        self._metrics_runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"ProxyActuator(stages={sorted(self._listen)})"

    async def start(self) -> None:
        """Open one listener per stage (and the metrics one), or none if any fails."""
        if self._session is not None:
            raise ActuationError("the proxy is already started")
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self._timeout_s, sock_read=self._timeout_s
            ),
            auto_decompress=False,  # pass encoded bodies through byte for byte
            cookie_jar=aiohttp.DummyCookieJar(),  # one client's cookies never reach another
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        )
        try:
            for stage, (host, port) in self._listen.items():
                runner = web.ServerRunner(
                    web.Server(self._handler_for(stage)), shutdown_timeout=self._timeout_s
                )
                self._runners[stage] = runner
                await runner.setup()
                await web.TCPSite(runner, host, port).start()
            if self._metrics_listen is not None:
                app = web.Application()
                app.router.add_get("/metrics", self._serve_metrics)
                self._metrics_runner = web.AppRunner(app)
                await self._metrics_runner.setup()
                host, port = self._metrics_listen
                await web.TCPSite(self._metrics_runner, host, port).start()
        except OSError as exc:
            await self.close()
            raise ActuationError(f"the proxy could not open its listeners: {exc}") from exc

    def bound_port(self, stage: str) -> int:
        """The port a stage's listener really bound, which differs when 0 was asked for."""
        runner = self._runners.get(stage)
        if runner is None or not runner.addresses:
            raise ActuationError(f"stage {stage!r} has no started listener")
        return int(runner.addresses[0][1])

    @property
    def metrics_port(self) -> int | None:
        """The metrics listener's real port, or None when it is not configured or started."""
        if self._metrics_runner is None or not self._metrics_runner.addresses:
            return None
        return int(self._metrics_runner.addresses[0][1])

    def routed(self, stage: str) -> Mapping[str, int]:
        """Requests sent per digest on ``stage`` since start, to see where traffic went."""
        if stage not in self._routed:
            raise KeyError(f"stage {stage!r} is not proxied; configured: {sorted(self._listen)}")
        return dict(self._routed[stage])

    def check(self, state: TrafficState) -> Sequence[Problem]:
        """A listener for the stage, and upstreams and weights the proxy can route."""
        if state.stage not in self._listen:
            return [
                Problem(
                    "stage",
                    f"the proxy has no listener for stage {state.stage!r}; "
                    f"configured stages: {sorted(self._listen)}",
                    f"add {state.stage}=HOST:PORT to PROMGATE_PROXY_LISTEN and restart",
                )
            ]
        return _state_problems(state)

    async def apply(self, state: TrafficState) -> None:
        """Swap ``state.stage``'s routing table, unless the state is not newer."""
        self._swap(state)

    async def restore(self, state: TrafficState) -> None:
        """The proxy keeps nothing across restarts, so restoring is the same swap."""
        self._swap(state)

    async def close(self) -> None:
        """Stop every listener, then the upstream session; safe to call twice."""
        runners = [*self._runners.values()]
        if self._metrics_runner is not None:
            runners.append(self._metrics_runner)
        self._runners.clear()
        self._metrics_runner = None
        for runner in runners:
            await runner.cleanup()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _swap(self, state: TrafficState) -> None:
        problems = self.check(state)
        if problems:
            raise ActuationError("; ".join(str(p) for p in problems), permanent=True)
        current = self._routes.get(state.stage)
        if current is not None and current.state.covers(state):
            _log.debug(
                "ignoring traffic state %s#%d for stage %s: #%d is already applied",
                state.promotion_id,
                state.sequence,
                state.stage,
                current.state.sequence,
            )
            return
        self._routes[state.stage] = _Route.of(state)
        self._publish_weights(current, state)
        _log.info(
            "stage %s now routes %s",
            state.stage,
            ", ".join(f"{b.role} {b.digest}={b.weight}%" for b in state.backends),
        )

    def _publish_weights(self, previous: _Route | None, state: TrafficState) -> None:
        weights: dict[tuple[str, str, str], int] = {}
        for b in state.backends:
            key: tuple[str, str, str] = (state.stage, b.role, b.digest)
            weights[key] = weights.get(key, 0) + b.weight
        if previous is not None:
            stale = {(state.stage, b.role, b.digest) for b in previous.state.backends}
            for key in stale - weights.keys():
                self._metrics.weight.remove(*key)
        for key, weight in weights.items():
            self._metrics.weight.labels(*key).set(weight)

    def _pick(self, stage: str, request: web.BaseRequest) -> Backend | web.Response:
        route = self._routes.get(stage)
        if route is None:
            return _json_error(503, f"no traffic state is set for stage {stage!r}")
        if request.headers.get(PREVIEW_HEADER) == "1":
            if route.state.preview is None:
                return _json_error(503, f"no preview for stage {stage!r}")
            return route.state.preview
        return self._rng.choices(route.live, cum_weights=route.cum_weights)[0]

    def _handler_for(self, stage: str) -> _Handler:
        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            started = time.perf_counter()
            picked = self._pick(stage, request)
            if isinstance(picked, web.Response):
                self._metrics.requests.labels(stage, _NO_BACKEND, _NO_BACKEND, picked.status).inc()
                return picked
            if request.version >= HttpVersion11 and (
                request.headers.get("Expect", "").lower() == "100-continue"
            ):
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            counts = self._routed[stage]
            counts[picked.digest] = counts.get(picked.digest, 0) + 1
            response = await self._forward(request, picked)
            labels = (stage, picked.role, picked.digest)
            self._metrics.requests.labels(*labels, response.status).inc()
            self._metrics.duration.labels(*labels).observe(time.perf_counter() - started)
            return response

        return handle

    async def _forward(self, request: web.BaseRequest, backend: Backend) -> web.StreamResponse:
        assert self._session is not None, "handlers only run while the proxy is started"
        target = URL(backend.upstream.rstrip("/") + request.rel_url.raw_path_qs, encoded=True)
        try:
            upstream = await self._session.request(
                request.method,
                target,
                headers=_forward_headers(request),
                data=request.content if request.body_exists else None,
                allow_redirects=False,
            )
        except TimeoutError:
            _log.warning("upstream %s %s timed out", backend.role, backend.digest)
            return _json_error(504, f"upstream {backend.role} timed out")
        except aiohttp.ClientError as exc:
            _log.warning(
                "upstream %s %s unreachable: %s", backend.role, backend.digest, type(exc).__name__
            )
            return _json_error(502, f"upstream {backend.role} is unreachable")
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            response.headers.extend(_end_to_end(upstream.headers))
            await _relay(request, upstream, response, backend)
        return response

    async def _serve_metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self._registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )
