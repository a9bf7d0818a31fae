"""The contract API server: aiohttp routes over the store, with token auth, a write log
and fault hooks, on 127.0.0.1 and an ephemeral port."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from aiohttp import web

from sidecar.kube.api import DEPLOYMENT, POD, Kind, Object
from tests.kubeapi import selectors
from tests.kubeapi.errors import ApiError
from tests.kubeapi.resources import SCHEMAS_DIR, Registry, Resource
from tests.kubeapi.rollout import Rollouts
from tests.kubeapi.store import Store
from tests.kubeapi.validation import Validator

MAX_BODY_BYTES = 3 << 20
"""The real API server's request size limit."""
OPEN_PATHS = ("/version", "/healthz", "/readyz")
"""Served without a token, as a real cluster serves them to anyone."""
VERSION = {"major": "1", "minor": "30", "gitVersion": "v1.30.0", "platform": "linux/amd64"}
_OBJECT_PATH = re.compile(
    r"^/(?:api|apis/(?P<group>[^/]+))/(?P<version>[^/]+)/namespaces/(?P<namespace>[^/]+)"
    r"/(?P<plural>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<subresource>[^/]+))?)?$"
)


@dataclass(frozen=True)
class Write:
    """One accepted write over HTTP, as the client sent it."""

    method: str
    plural: str
    namespace: str
    name: str
    subresource: str
    body: Any
    at: float = field(default_factory=time.monotonic)
    """``time.monotonic()`` when the server accepted it."""


@dataclass
class _Fault:
    method: str
    path: re.Pattern[str]
    status: int
    times: int


class ContractApiServer:
    """Enforces the parts of the Kubernetes API contract promgate relies on; see the
    package docstring. Use as ``async with ContractApiServer() as server``."""

    def __init__(self, *, rollout_delay_s: float = 0.2, schemas_dir: Path = SCHEMAS_DIR) -> None:
        self._registry = Registry.default(schemas_dir)
        self._store = Store(Validator().check)
        self._rollouts = Rollouts(
            self._store,
            self._registry.of(DEPLOYMENT),
            self._registry.of(POD),
            delay_s=rollout_delay_s,
        )
        self.token = secrets.token_urlsafe(24)
        """The bearer token every request but /version must carry."""
        self.writes: list[Write] = []
        self._faults: list[_Fault] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> ContractApiServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Listen on 127.0.0.1 with a kernel-chosen port; sets ``url``."""
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._guard])
        app.router.add_route("*", "/{path:.*}", self._dispatch)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def close(self) -> None:
        """Stop rollouts in flight and the listener."""
        await self._rollouts.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig whose one context reaches this server with its token."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "contract", "cluster": {"server": self.url}}],
            "users": [{"name": "promgate", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "contract",
                    "context": {"cluster": "contract", "user": "promgate", "namespace": namespace},
                }
            ],
            "current-context": "contract",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def seed(self, obj: Object) -> Object:
        """Create or overwrite ``obj`` (any resourceVersion), validated as an HTTP write is;
        not logged in ``writes``. Its namespace defaults to ``default``."""
        resource = self._registry.by_type(obj.get("apiVersion", ""), obj.get("kind", ""))
        namespace = obj.get("metadata", {}).get("namespace", "default")
        stored = self._store.overwrite(resource, namespace, obj)
        self._written(resource, stored)
        return stored

    def object(self, kind: Kind, namespace: str, name: str) -> Object | None:
        """A copy of the stored object, or ``None``."""
        return self._store.find(self._registry.of(kind), namespace, name)

    def objects(self, kind: Kind, namespace: str) -> list[Object]:
        """Copies of every stored object of ``kind`` in ``namespace``, by name."""
        return self._store.list(self._registry.of(kind), namespace, lambda _: True)

    def writes_of(self, kind: Kind, name: str | None = None) -> list[Write]:
        """The accepted writes to objects of ``kind`` (named ``name``)."""
        return [
            w for w in self.writes if w.plural == kind.plural and (name is None or w.name == name)
        ]

    def fail(self, method: str, path_regex: str, *, status: int = 500, times: int = 1) -> None:
        """The next ``times`` requests with ``method`` (``*`` for any) whose path matches
        ``path_regex`` get a ``status`` Status answer and change nothing."""
        self._faults.append(_Fault(method.upper(), re.compile(path_regex), status, times))

    def rollout(self, image_substring: str, behaviour: str = "ready") -> None:
        """How Deployments whose pod template uses a matching image roll out from their next
        spec change on: ready, never, ImagePullBackOff, CrashLoopBackOff or Unschedulable."""
        self._rollouts.set(image_substring, behaviour)

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            if request.path not in OPEN_PATHS:
                sent = request.headers.get("Authorization", "")
                if not secrets.compare_digest(sent.encode(), f"Bearer {self.token}".encode()):
                    raise ApiError(401, "Unauthorized")
            self._injected_fault(request)
            return await handler(request)
        except ApiError as error:
            return web.json_response(error.body(), status=error.code)

    def _injected_fault(self, request: web.Request) -> None:
        for fault in self._faults:
            if (
                fault.times > 0
                and fault.method in ("*", request.method)
                and fault.path.search(request.path)
            ):
                fault.times -= 1
                raise ApiError(fault.status, f"injected failure: {request.method} {request.path}")

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET" and request.path == "/version":
            return web.json_response(VERSION)
        if request.method == "GET" and request.path in ("/healthz", "/readyz"):
            return web.Response(text="ok")
        match = _OBJECT_PATH.match(request.path)
        resource = match and self._registry.find(
            match["group"] or "", match["version"], match["plural"]
        )
        if not match or resource is None:
            raise ApiError(404, "the server could not find the requested resource")
        namespace, name, subresource = (
            match["namespace"],
            match["name"] or "",
            match["subresource"] or "",
        )
        if subresource and (subresource != "status" or not resource.status_subresource):
            raise ApiError(404, "the server could not find the requested resource")
        if "watch" in request.query:
            raise ApiError(400, "watch is not served: poll with GET instead")
        answer = await self._serve(request, resource, namespace, name, subresource)
        return web.json_response(answer, status=201 if request.method == "POST" else 200)

    async def _serve(
        self, request: web.Request, resource: Resource, namespace: str, name: str, subresource: str
    ) -> Object:
        method = request.method
        if method == "GET" and name:
            return self._store.get(resource, namespace, name)
        if method == "GET":
            return self._list(resource, namespace, request.query.get("labelSelector", ""))
        body = await _body(request)
        if method == "POST" and not name:
            stored = self._store.create(resource, namespace, body)
        elif method == "PUT" and name:
            stored = self._store.replace(resource, namespace, name, body, status=bool(subresource))
        elif method == "DELETE" and name and not subresource:
            stored = self._store.delete(
                resource, namespace, name, resource_version=_precondition(body)
            )
        else:
            raise ApiError(
                405, f"{method} is not served here: promgate writes with POST, PUT and DELETE"
            )
        self.writes.append(
            Write(
                method,
                resource.kind.plural,
                namespace,
                stored["metadata"]["name"],
                subresource,
                body,
            )
        )
        if method == "DELETE":
            if resource.kind == DEPLOYMENT:
                self._rollouts.deleted(stored)
            return _deleted(resource, stored)
        if not subresource:
            self._written(resource, stored)
        return stored

    def _list(self, resource: Resource, namespace: str, selector: str) -> Object:
        items = self._store.list(resource, namespace, selectors.parse(selector))
        if resource.schema is None:
            for item in items:  # a built-in list's items carry no apiVersion or kind
                item.pop("apiVersion", None)
                item.pop("kind", None)
        return {
            "apiVersion": resource.kind.api_version,
            "kind": f"{resource.kind.kind}List",
            "metadata": {"resourceVersion": self._store.resource_version},
            "items": items,
        }

    def _written(self, resource: Resource, stored: Object) -> None:
        if resource.kind == DEPLOYMENT:
            self._rollouts.written(stored)


async def _body(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise _too_large()
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _too_large() from None
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError as error:
        raise ApiError(400, f"the request body is not JSON: {error}") from None


def _too_large() -> ApiError:
    return ApiError(413, f"Request entity too large: limit is {MAX_BODY_BYTES}")


def _precondition(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    value = (body.get("preconditions") or {}).get("resourceVersion")
    return str(value) if value is not None else None


def _deleted(resource: Resource, stored: Object) -> Object:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {
            "name": stored["metadata"]["name"],
            "group": resource.kind.group,
            "kind": resource.kind.plural,
            "uid": stored["metadata"]["uid"],
        },
    }
