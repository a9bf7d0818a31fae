"""The HTTP API: thin handlers over the Controller, bearer-token roles, one error mapping.

Every error a client can cause comes back as ``{"error": {"type", "message", "problems"}}``
with the status its kind calls for, and each problem names its field path (``""`` for the
body as a whole); anything unexpected is a 500 whose traceback is logged and never
returned. Every write attempt (any method but GET/HEAD/OPTIONS), refused ones included, is
audited with who, what, on which target, and how it ended.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, replace
from typing import Any, TypeVar
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sidecar.actuators.base import BACKEND_NAME
from sidecar.api.auth import Principal, Role, TokenTable
from sidecar.domain.manifest import credential_paths
from sidecar.domain.policy import MAX_NAME
from sidecar.domain.promotion import Promotion, PromotionEvent, StableRelease
from sidecar.domain.validation import MAX_INTEGER, json_problems, parse_int, problems_from
from sidecar.engine.controller import Controller
from sidecar.errors import (
    ActuationError,
    AuthError,
    ConflictError,
    InputError,
    LedgerError,
    ManifestError,
    NotFoundError,
    NotLeaderError,
    Problem,
    PromgateError,
    RefusedError,
    RequestError,
    RequestTooLargeError,
    TagMutationError,
)
from sidecar.leadership.base import AlwaysLeader, Leadership
from sidecar.redaction import redact
from sidecar.telemetry.logging import get_logger

_log = get_logger("api")

_GRACE_S = 0.5  # after a terminal phase, how long to wait for trailing events
_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"0", "false", "no"})
_CHALLENGE = 'Bearer realm="promgate"'
_READS = frozenset({"GET", "HEAD", "OPTIONS"})

MAX_URL_BYTES = 8192  # request target (path and query)
MAX_HEADER_BYTES = 8192  # one header's name plus value
MAX_HEADERS = 100
# aiohttp's own parser limits sit above ours, so a request between the two still reaches
# the app and gets a JSON answer; beyond them aiohttp answers a plain-text 400 itself.
_PARSER_LIMITS = {"max_line_size": 65536, "max_field_size": 65536, "max_headers": 256}
DEFAULT_PAGE = 100
MAX_PAGE = 1000
_EVENT_PAGE = 500  # events read from the ledger at a time while streaming
_AUDIT_TEXT = 512  # characters of an audit row's action, target or reason
_ACTIONS = {"rollback-stage": "rollback"}  # route name -> audited action, where they differ

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")


class _CreateRequest(BaseModel):
    """The body of ``POST /v1/promotions``; the manifest is validated by the engine."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    manifest: dict[str, Any]
    stage: str = Field(min_length=1, max_length=MAX_NAME)
    upstream: str | None = Field(default=None, max_length=2048)
    backend: str | None = Field(default=None, pattern=BACKEND_NAME)

    @field_validator("upstream")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value:
            try:
                url = urlsplit(value)
                ok = url.scheme in ("http", "https") and bool(url.hostname) and url.port != 0
            except ValueError:
                ok = False
            if not ok:
                raise ValueError("must be an http(s) URL, e.g. http://127.0.0.1:9001")
            if url.username or url.password:
                raise ValueError("must not carry credentials; the ledger stores it as is")
        return value


def build_api(
    controller: Controller,
    tokens: TokenTable,
    registry: CollectorRegistry,
    *,
    max_body_bytes: int = 1 << 20,
    keepalive_s: float = 15.0,
    leadership: Leadership | None = None,
    retry_after_s: int = 2,
) -> web.Application:
    """The aiohttp application; ``keepalive_s`` is the idle time before a stream keepalive.

    Only the leader takes writes: elsewhere every write is a 503 with ``Retry-After``
    (``retry_after_s``) that names the leader; reads are served from the shared ledger.
    """
    api = _Api(
        controller,
        tokens,
        registry,
        keepalive_s,
        leadership=leadership or AlwaysLeader(),
        retry_after_s=retry_after_s,
    )
    app = web.Application(
        client_max_size=max_body_bytes,
        middlewares=[_leader_only(api), _audit_writes(api), _errors, _within_limits],
        handler_args=_PARSER_LIMITS,
    )
    app.on_shutdown.append(api.close_streams)
    # write routes are named by the action their audit rows record
    app.router.add_post("/v1/promotions", api.create, name="create")
    app.router.add_get("/v1/promotions", api.list_promotions)
    app.router.add_get("/v1/promotions/{id}", api.get_promotion, name="promotion")
    app.router.add_get("/v1/promotions/{id}/events", api.events)
    app.router.add_post("/v1/promotions/{id}/approve", api.approve, name="approve")
    app.router.add_post("/v1/promotions/{id}/abort", api.abort, name="abort")
    app.router.add_post("/v1/promotions/{id}/rollback", api.rollback, name="rollback")
    app.router.add_post(
        "/v1/stages/{stage}/services/{service}/rollback", api.rollback_stage, name="rollback-stage"
    )
    app.router.add_get("/v1/stages/{stage}/services/{service}/history", api.history)
    app.router.add_get("/v1/audit", api.audit_trail)
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/readyz", api.readyz)
    app.router.add_get("/metrics", api.metrics)
    return app


class _Api:
    """The handlers; each checks the caller's role, then asks the Controller."""

    def __init__(
        self,
        controller: Controller,
        tokens: TokenTable,
        registry: CollectorRegistry,
        keepalive_s: float,
        *,
        leadership: Leadership,
        retry_after_s: int,
    ) -> None:
        self.controller = controller
        self.tokens = tokens
        self.registry = registry
        self.keepalive_s = keepalive_s
        self._streaming: list[str] = []  # promotion ids with an open event stream
        self._closing = False
        self.leadership = leadership
        self.retry_after_s = retry_after_s  # seconds a refused write waits before its retry

    def takes_writes(self) -> bool:
        """Whether this replica leads and its controller has resumed every promotion."""
        return self.leadership.may_act() and self.controller.ready

    def not_leader(self) -> NotLeaderError:
        """Why this replica refuses a write, naming the leader."""
        leader = self.leadership.leader
        if self.leadership.may_act():
            why = "this replica leads but is still resuming promotions; retry in a moment"
        elif leader:
            why = f"this replica does not lead; {leader} does: retry, or send it to the leader"
        else:
            why = "no replica leads right now (an election is under way); retry"
        return NotLeaderError(why, leader=leader, retry_after_s=self.retry_after_s)

    def _principal(self, request: web.Request, needed: Role) -> Principal:
        return self.tokens.authenticate(request.headers.get("Authorization"), needed)

    def actor(self, request: web.Request) -> str:
        """The name audit rows record: the token's owner, or anonymous if it has none."""
        try:
            return self.tokens.identify(request.headers.get("Authorization")).name
        except AuthError:
            return "anonymous"

    async def audit(self, actor: str, action: str, target: str, result: str, reason: str) -> None:
        ledger, now = self.controller.ctx.ledger, self.controller.ctx.clock.now()
        await ledger.audit(actor, action, target, now, result=result, reason=reason)

    async def create(self, request: web.Request) -> web.Response:
        principal = self._principal(request, Role.PROMOTER)
        body = _parse_create(await _read_json(request))
        try:
            promotion = await self.controller.create(
                body.manifest,
                body.stage,
                upstream=body.upstream or "",
                backend=body.backend,
                actor=principal.name,
            )
        except ManifestError as exc:
            raise _within("manifest", exc) from None
        location = request.app.router["promotion"].url_for(id=promotion.id)
        answer = promotion.to_dict()
        stripped = [f"manifest.{path}" for path in credential_paths(body.manifest)]
        if stripped:
            _log.warning(
                "credentials removed from manifest URLs",
                extra={"promotion": promotion.id, "fields": stripped},
            )
            answer["warnings"] = [
                {"path": path, "message": "credentials removed from this URL; never send any"}
                for path in stripped
            ]
        return web.json_response(answer, status=201, headers={"Location": str(location)})

    async def list_promotions(self, request: web.Request) -> web.Response:
        self._principal(request, Role.VIEWER)
        query = request.query
        limit = _limit(query.get("limit"))
        cursor = _cursor(query.get("cursor"))
        try:
            promotions = await self.controller.list(
                service=query.get("service") or None,
                stage=query.get("stage") or None,
                active=_flag(query.get("active"), "active"),
                limit=limit + 1,
                after=cursor,
            )
        except NotFoundError:
            raise _bad_cursor() from None
        return _page(promotions, limit, Promotion.to_dict, lambda p: p.id)

    async def audit_trail(self, request: web.Request) -> web.Response:
        """The audit trail for admins, newest first, paged like the promotion list."""
        self._principal(request, Role.ADMIN)
        limit = _limit(request.query.get("limit"))
        before = _count(request.query.get("cursor"), "cursor") or None
        entries = await self.controller.ctx.ledger.audit_trail(limit=limit + 1, before=before)
        return _page(entries, limit, asdict, lambda e: str(e.id))

    async def get_promotion(self, request: web.Request) -> web.Response:
        self._principal(request, Role.VIEWER)
        promotion = await self.controller.get(request.match_info["id"])
        return web.json_response(promotion.to_dict())

    async def approve(self, request: web.Request) -> web.Response:
        principal = self._principal(request, Role.APPROVER)
        promotion = await self.controller.approve(request.match_info["id"], principal.name)
        return web.json_response(promotion.to_dict())

    async def abort(self, request: web.Request) -> web.Response:
        principal = self._principal(request, Role.PROMOTER)
        promotion = await self.controller.abort(request.match_info["id"], principal.name)
        return web.json_response(promotion.to_dict())

    async def rollback(self, request: web.Request) -> web.Response:
        principal = self._principal(request, Role.PROMOTER)
        promotion = await self.controller.abort(
            request.match_info["id"], principal.name, rollback=True
        )
        return web.json_response(promotion.to_dict())

    async def rollback_stage(self, request: web.Request) -> web.Response:
        principal = self._principal(request, Role.PROMOTER)
        info = request.match_info
        stable = await self.controller.rollback_stage(
            info["service"], info["stage"], principal.name
        )
        return web.json_response({"stable": _stable_dict(stable)})

    async def history(self, request: web.Request) -> web.Response:
        self._principal(request, Role.VIEWER)
        info = request.match_info
        history = await self.controller.stable_history(info["service"], info["stage"])
        return web.json_response({"items": [_stable_dict(s) for s in history]})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready to serve: the leader once its controller started, a follower at once (it
        serves reads); the body says which role and who leads."""
        leader = self.leadership.leader
        if not self.leadership.may_act():
            return web.json_response({"status": "ready", "role": "follower", "leader": leader})
        if self.controller.ready:
            return web.json_response({"status": "ready", "role": "leader", "leader": leader})
        return web.json_response({"status": "starting", "role": "leader"}, status=503)

    async def metrics(self, request: web.Request) -> web.Response:
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(self.registry), headers={"Content-Type": content_type})

    async def events(self, request: web.Request) -> web.StreamResponse:
        """The event log as SSE or NDJSON; with ``follow`` it streams until the end."""
        self._principal(request, Role.VIEWER)
        promotion_id = request.match_info["id"]
        await self.controller.get(promotion_id)  # 404 before the stream starts
        sse = "text/event-stream" in request.headers.get("Accept", "")
        after = _count(request.query.get("after"), "after")
        if sse and "Last-Event-ID" in request.headers:
            after = max(after, _count(request.headers["Last-Event-ID"], "Last-Event-ID"))
        follow = bool(_flag(request.query.get("follow"), "follow"))
        limit = _limit(request.query.get("limit"), default=None)
        if limit is not None and follow:
            raise RequestError(
                "limit and follow exclude each other",
                [Problem("limit", "a followed stream has no limit", "drop limit or follow")],
            )
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream" if sse else "application/x-ndjson",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        self._streaming.append(promotion_id)
        try:
            await self._stream(response, promotion_id, after, follow, sse, limit=limit)
        except ConnectionError:  # the client went away; nothing is wrong
            pass
        except Exception as exc:  # headers are sent: report in-band, then end the stream
            status, body, _ = _describe(exc, request)
            _log_failure(exc, status, request.method, request.path)
            with contextlib.suppress(ConnectionError):
                await response.write(_frame(sse, "error", body))
        finally:
            self._streaming.remove(promotion_id)
        return response

    async def _stream(
        self,
        response: web.StreamResponse,
        promotion_id: str,
        after: int,
        follow: bool,
        sse: bool,
        *,
        limit: int | None,
    ) -> None:
        async def send(events: Sequence[PromotionEvent]) -> int:
            for event in events:
                await response.write(_frame(sse, event.kind, event.to_dict(), event.seq))
            return events[-1].seq if events else after

        left = MAX_INTEGER if limit is None else limit
        while left > 0:  # the log so far, a page at a time, so memory stays bounded
            page = await self.controller.events(promotion_id, after, min(_EVENT_PAGE, left))
            after, left = await send(page), left - len(page)
            if len(page) < _EVENT_PAGE:
                break
        while follow and not self._closing:
            if (await self.controller.get(promotion_id)).phase.terminal:
                await self.controller.wait_finished(promotion_id)
                while events := await self.controller.wait_events(promotion_id, after, _GRACE_S):
                    after = await send(events)
                return
            events = await self.controller.wait_events(promotion_id, after, self.keepalive_s)
            if events:
                after = await send(events)
            else:
                await response.write(b": keepalive\n\n" if sse else b"\n")

    async def close_streams(self, app: web.Application) -> None:
        """On shutdown, wake every waiting stream so it ends now rather than at its timeout."""
        self._closing = True
        for promotion_id in set(self._streaming):
            self.controller.ctx.bus.notify(promotion_id)


def _leader_only(api: _Api) -> Any:
    """A middleware that answers every write a follower gets with 503, before any audit
    row or handler: the leader records and carries out the retried request."""

    @web.middleware
    async def leader_only(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in _READS or api.takes_writes():
            return await handler(request)
        status, body, headers = _describe(api.not_leader(), request)
        return web.json_response(body, status=status, headers=headers)

    return leader_only


def _audit_writes(api: _Api) -> Any:
    """A middleware that records one audit row per write attempt, whatever its outcome."""

    @web.middleware
    async def audit_writes(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in _READS:
            return await handler(request)
        response = await handler(request)  # the error middleware inside makes every outcome one
        action, target = _audit_subject(request, response)
        result, reason = _audit_outcome(response)
        try:
            await api.audit(api.actor(request), action, target, result, reason)
        except PromgateError as exc:  # the write's outcome stands; the gap must be seen
            _log.error(
                "audit row not recorded",
                extra={"action": action, "target": target, "result": result, "error": str(exc)},
            )
        return response

    return audit_writes


def _audit_subject(request: web.Request, response: web.StreamResponse) -> tuple[str, str]:
    """(action, target): the route's name and what it acts on."""
    route = request.match_info.route
    info = request.match_info
    action = _ACTIONS.get(route.name or "", route.name) or f"{request.method} {request.path}"
    if "id" in info:
        target = info["id"]
    elif "service" in info:
        target = f"{info['service']}/{info['stage']}"
    else:  # a create names the promotion it stored, even a refused one
        body = _json_of(response)
        error = body.get("error")
        stored = error.get("promotion_id") if isinstance(error, dict) else body.get("id")
        target = str(stored) if stored else "promotions"
    return action[:_AUDIT_TEXT], target[:_AUDIT_TEXT]


def _audit_outcome(response: web.StreamResponse) -> tuple[str, str]:
    """(result, reason): ``applied``, or refused/failed with the status and the message."""
    if response.status < 400:
        return "applied", ""
    error = _json_of(response).get("error")
    message = error.get("message") if isinstance(error, dict) else None
    kind = "refused" if response.status < 500 else "failed"
    return f"{kind}:{response.status}", redact(str(message or ""))[:_AUDIT_TEXT]


def _json_of(response: web.StreamResponse) -> dict[str, Any]:
    body = response.body if isinstance(response, web.Response) else None
    try:
        data = json.loads(body) if isinstance(body, bytes) else None
    except ValueError:
        data = None
    return data if isinstance(data, dict) else {}


@web.middleware
async def _within_limits(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuses a URL or header beyond the API's limits before any handler reads it."""
    target = len(request.raw_path.encode())
    if target > MAX_URL_BYTES:
        raise RequestTooLargeError(
            "request URL is too long",
            [Problem("url", f"{target} bytes; the limit is {MAX_URL_BYTES}", "send a shorter URL")],
            status=414,
        )
    if len(request.raw_headers) > MAX_HEADERS:
        raise RequestTooLargeError(
            "request has too many headers",
            [Problem("headers", f"{len(request.raw_headers)}; the limit is {MAX_HEADERS}", "")],
            status=431,
        )
    for name, value in request.raw_headers:
        size = len(name) + len(value)
        if size > MAX_HEADER_BYTES:
            where = name.decode("latin-1")[:64]
            raise RequestTooLargeError(
                f"request header {where} is too large",
                [Problem(where, f"{size} bytes; the limit is {MAX_HEADER_BYTES}", "shorten it")],
                status=431,
            )
    return await handler(request)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Maps every exception to a JSON error response; nothing escapes to aiohttp."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        status, body, headers = _describe(exc, request)
    except Exception as exc:
        status, body, headers = _describe(exc, request)
        _log_failure(exc, status, request.method, request.path)
    return web.json_response(body, status=status, headers=headers)


def _log_failure(exc: Exception, status: int, method: str, path: str) -> None:
    """Server-side failures are logged; our own errors need no traceback, others do."""
    if status < 500:
        return
    where = {"method": method, "path": path}
    if isinstance(exc, PromgateError):
        _log.warning("request failed", extra={**where, "error": str(exc)})
    else:
        _log.error("request failed", extra=where, exc_info=exc)


def _describe(exc: Exception, request: web.Request) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The status, JSON body and headers that tell a client what went wrong."""
    status, kind, message, headers = _classify(exc, request)
    error: dict[str, Any] = {
        "type": kind,
        "message": message,
        "problems": [
            {"path": p.path, "message": p.message, "fix": p.fix}
            for p in getattr(exc, "problems", ())
        ],
    }
    if isinstance(exc, RefusedError) and exc.promotion_id is not None:
        error["promotion_id"] = exc.promotion_id
    if isinstance(exc, ConflictError) and exc.active_id is not None:
        error["active_promotion_id"] = exc.active_id
    if isinstance(exc, NotLeaderError):
        error["leader"] = exc.leader
    return status, {"error": error}, headers


def _classify(exc: Exception, request: web.Request) -> tuple[int, str, str, dict[str, str]]:
    kind = type(exc).__name__
    if isinstance(exc, web.HTTPException):
        return _classify_http(exc, request)
    if isinstance(exc, NotLeaderError):
        return 503, kind, str(exc), {"Retry-After": str(exc.retry_after_s)}
    if isinstance(exc, AuthError):
        headers = {"WWW-Authenticate": _CHALLENGE} if exc.status == 401 else {}
        return exc.status, kind, str(exc), headers
    if isinstance(exc, PromgateError):
        return _status(exc), kind, str(exc), {}
    return 500, "InternalError", "internal error; the server log has the details", {}


def _status(exc: PromgateError) -> int:
    if isinstance(exc, RequestTooLargeError):
        return exc.status
    if isinstance(exc, InputError):
        return 400
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError | TagMutationError):
        return 409
    if isinstance(exc, RefusedError):
        return 422
    if isinstance(exc, ActuationError):
        return 502
    if isinstance(exc, LedgerError):
        return 503
    return 500


def _classify_http(
    exc: web.HTTPException, request: web.Request
) -> tuple[int, str, str, dict[str, str]]:
    if exc.status == 404:
        message = f"no such route: {request.method} {request.path}"
        return 404, "NotFoundError", message, {}
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        message = f"{request.method} is not allowed on {request.path}; use {allowed}"
        return 405, "MethodNotAllowed", message, {"Allow": allowed}
    if exc.status == 413:
        message = f"request body is larger than the limit of {request.client_max_size} bytes"
        return 413, "PayloadTooLarge", message, {}
    return exc.status, type(exc).__name__, exc.reason, {}


async def _read_json(request: web.Request) -> Any:
    """The parsed body; malformed JSON is a 400 that says where it breaks."""
    limit = request.client_max_size
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    raw = await request.read()
    if not raw.strip():
        raise RequestError(
            "request body is empty", [Problem("", "no JSON body", "send a JSON object")]
        )
    try:
        data = json.loads(raw, parse_int=parse_int)
    except UnicodeDecodeError:
        raise RequestError(
            "request body is not UTF-8", [Problem("", "not UTF-8 text", "send UTF-8 JSON")]
        ) from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise RequestError(
            f"request body is not valid JSON at {where}: {exc.msg}",
            [Problem(where, exc.msg, "fix the JSON")],
        ) from None
    except RecursionError:  # the parser recurses per level; the walk below does not
        raise RequestError(
            "request body is nested too deeply",
            [Problem("", "nested too deeply to parse", "flatten the data")],
        ) from None
    problems = json_problems(data)
    if problems:
        raise RequestError("request body is invalid", problems)
    return data


def _parse_create(data: Any) -> _CreateRequest:
    if not isinstance(data, dict):
        raise RequestError(
            "request body is invalid",
            [Problem("", "must be a JSON object", 'send {"manifest": {...}, "stage": "name"}')],
        )
    try:
        return _CreateRequest.model_validate(data)
    except ValidationError as exc:
        problems = problems_from(exc, "request", 'send {"manifest": {...}, "stage": "name"}')
        raise RequestError("request body is invalid", problems) from None


def _within(prefix: str, exc: ManifestError) -> ManifestError:
    """The same error with field paths from the request body's root, e.g. ``manifest.build``."""
    problems = [
        replace(p, path=f"{prefix}.{p.path}" if p.path else prefix, file="") for p in exc.problems
    ]
    return ManifestError(f"{prefix} is invalid", problems)


def _flag(value: str | None, name: str) -> bool | None:
    if value is None or value == "":
        return None
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise RequestError(
        f"query parameter {name} is invalid",
        [Problem(name, f"{value!r} is not a boolean", "use true or false")],
    )


def _count(value: str | None, name: str) -> int:
    """A whole number that fits SQLite's 64-bit integers (an event seq or an audit id)."""
    if value is None or value == "":
        return 0
    if not (value.isascii() and value.isdigit()) or len(value) > 19 or int(value) > MAX_INTEGER:
        raise RequestError(
            f"{name} is invalid",
            [
                Problem(
                    name,
                    f"{value[:32]!r} is not a whole number from 0 to {MAX_INTEGER}",
                    "use a seq or cursor promgate returned, e.g. 0",
                )
            ],
        )
    return int(value)


def _limit(value: str | None, default: int | None = DEFAULT_PAGE) -> Any:
    """A page size from 1 to MAX_PAGE, or ``default`` when absent."""
    if value is None or value == "":
        return default
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value[:5]) <= MAX_PAGE:
        raise RequestError(
            "limit is invalid",
            [Problem("limit", f"{value[:32]!r} is not from 1 to {MAX_PAGE}", "e.g. limit=100")],
        )
    return int(value)


def _page(
    items: Sequence[T], limit: int, to_json: Callable[[T], Any], cursor_of: Callable[[T], str]
) -> web.Response:
    """One page of a list read with ``limit + 1`` items: the extra one says a next page
    exists, and ``next`` is the cursor that reads it."""
    page = items[:limit]
    more = len(items) > limit
    return web.json_response(
        {"items": [to_json(item) for item in page], "next": cursor_of(page[-1]) if more else None}
    )


def _cursor(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if len(value) > 64:
        raise _bad_cursor()
    return value


def _bad_cursor() -> RequestError:
    return RequestError(
        "cursor is invalid",
        [Problem("cursor", "not a cursor this list returned", "pass the `next` of a page")],
    )


def _frame(sse: bool, kind: str, body: Any, seq: int | None = None) -> bytes:
    """One stream item: an SSE event (``id`` only with a seq), else an NDJSON line."""
    data = json.dumps(body, separators=(",", ":"))
    if not sse:
        return f"{data}\n".encode()
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {kind}\ndata: {data}\n\n".encode()


def _stable_dict(stable: StableRelease) -> dict[str, Any]:
    return {**asdict(stable), "artifact": str(stable.artifact)}
