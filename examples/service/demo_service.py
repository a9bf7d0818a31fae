"""An example HTTP service to release with promgate: it answers, fails and slows on demand.

Run: ``python examples/service/demo_service.py --port 8081 --version v2 --digest sha256:...``
(binds 127.0.0.1 only). Every path except ``/metrics``, ``/healthz`` and ``/admin/*``
answers "hello from VERSION" after the configured latency, or 500 at the configured
error rate. ``POST /admin/fault`` overrides both for a while, so a demo or test can make
a candidate go bad and watch the gate roll it back.

Metrics (its own registry, so nothing else leaks in):
``demo_requests_total{version,digest,code}`` and
``demo_request_duration_seconds{version,digest}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import time
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
JITTER = 0.1  # standard deviation of the latency, as a fraction of it
MAX_LATENCY_MS = 60_000.0
FAULT_FIELDS = ("error_rate", "latency_ms", "duration_s")


@dataclass(frozen=True)
class Behaviour:
    """How requests are answered: the share that fail and the mean latency."""

    error_rate: float
    latency_ms: float


@dataclass(frozen=True)
class Fault:
    """A behaviour that replaces the configured one until ``expires_at`` (monotonic) or forever."""

    behaviour: Behaviour
    duration_s: float | None
    expires_at: float | None


class FaultInputError(ValueError):
    """A fault request field is invalid; ``field`` goes back to the caller with the 400."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def parse_fault(payload: object, base: Behaviour) -> tuple[Behaviour, float | None]:
    """Validate a fault request; a field left out keeps the service's configured value."""
    if not isinstance(payload, dict):
        raise FaultInputError("body", "must be a JSON object")
    for key in payload:
        if key not in FAULT_FIELDS:
            raise FaultInputError(key, f"unknown field; known: {', '.join(FAULT_FIELDS)}")
    error_rate = _number(payload, "error_rate", base.error_rate)
    if not 0.0 <= error_rate <= 1.0:
        raise FaultInputError("error_rate", "must be between 0 and 1")
    latency_ms = _number(payload, "latency_ms", base.latency_ms)
    if not 0.0 <= latency_ms <= MAX_LATENCY_MS:
        raise FaultInputError("latency_ms", f"must be between 0 and {MAX_LATENCY_MS:g}")
    duration_s: float | None = None
    if payload.get("duration_s") is not None:
        duration_s = _number(payload, "duration_s", 0.0)
        if duration_s <= 0:
            raise FaultInputError("duration_s", "must be positive, or null for no end")
    return Behaviour(error_rate, latency_ms), duration_s


def _number(payload: dict[str, object], field: str, default: float) -> float:
    value = payload.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FaultInputError(field, f"must be a finite number, got {json.dumps(value)}")
    return float(value)


class DemoService:
    """The service's state: its identity, configured behaviour, current fault and metrics."""

    def __init__(self, version: str, digest: str, base: Behaviour) -> None:
        self.version = version
        self.digest = digest
        self.base = base
        self.fault: Fault | None = None
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "demo_requests",
            "Requests answered, by version, digest and status code.",
            ["version", "digest", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "demo_request_duration_seconds",
            "Time to answer a request, by version and digest.",
            ["version", "digest"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        # Series that exist from the first scrape let rate() and increase() see the first
        # failure; a series born with its first increment loses that increment.
        for code in ("200", "500"):
            self.requests.labels(version, digest, code)
        self.duration.labels(version, digest)

    def current_fault(self) -> Fault | None:
        """The fault in force now; an expired one is dropped here."""
        fault = self.fault
        if (
            fault is not None
            and fault.expires_at is not None
            and time.monotonic() >= fault.expires_at
        ):
            self.fault = None
            return None
        return fault

    def behaviour(self) -> Behaviour:
        fault = self.current_fault()
        return fault.behaviour if fault is not None else self.base

    def fault_state(self) -> dict[str, object]:
        fault = self.current_fault()
        behaviour = fault.behaviour if fault is not None else self.base
        remaining = None
        if fault is not None and fault.expires_at is not None:
            remaining = round(max(0.0, fault.expires_at - time.monotonic()), 3)
        return {
            "version": self.version,
            "active": fault is not None,
            "error_rate": behaviour.error_rate,
            "latency_ms": behaviour.latency_ms,
            "duration_s": fault.duration_s if fault is not None else None,
            "remaining_s": remaining,
            "configured": {"error_rate": self.base.error_rate, "latency_ms": self.base.latency_ms},
        }

    async def serve(self, request: web.Request) -> web.Response:
        """Answer ordinary traffic with the current behaviour, and count it."""
        if request.path == "/metrics" or request.path.startswith("/admin/"):
            raise web.HTTPNotFound()
        started = time.perf_counter()
        behaviour = self.behaviour()
        mean_s = behaviour.latency_ms / 1000
        await asyncio.sleep(max(0.0, random.gauss(mean_s, mean_s * JITTER)))
        failed = random.random() < behaviour.error_rate
        code = 500 if failed else 200
        self.requests.labels(self.version, self.digest, str(code)).inc()
        self.duration.labels(self.version, self.digest).observe(time.perf_counter() - started)
        word = "error" if failed else "hello"
        return web.Response(status=code, text=f"{word} from {self.version}\n")

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": self.version, "digest": self.digest})

    async def get_fault(self, request: web.Request) -> web.Response:
        return web.json_response(self.fault_state())

    async def set_fault(self, request: web.Request) -> web.Response:
        """Install a fault from the JSON body; a bad field gets a 400 that names it."""
        try:
            payload = json.loads(await request.text())
        except ValueError:
            return _bad_request(FaultInputError("body", "is not valid JSON"))
        try:
            behaviour, duration_s = parse_fault(payload, self.base)
        except FaultInputError as exc:
            return _bad_request(exc)
        expires_at = None if duration_s is None else time.monotonic() + duration_s
        self.fault = Fault(behaviour, duration_s, expires_at)
        return web.json_response(self.fault_state())

    async def clear_fault(self, request: web.Request) -> web.Response:
        self.fault = None
        return web.json_response(self.fault_state())


def _bad_request(exc: FaultInputError) -> web.Response:
    return web.json_response({"error": exc.message, "field": exc.field}, status=400)


def build_app(service: DemoService) -> web.Application:
    """Routes; the catch-all comes last so the fixed paths win."""
    app = web.Application()
    app.router.add_get("/metrics", service.metrics)
    app.router.add_get("/healthz", service.healthz)
    app.router.add_get("/admin/fault", service.get_fault)
    app.router.add_post("/admin/fault", service.set_fault)
    app.router.add_delete("/admin/fault", service.clear_fault)
    app.router.add_route("*", "/{tail:.*}", service.serve)
    return app


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _latency(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= MAX_LATENCY_MS:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_LATENCY_MS:g}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--version", required=True, help="version label, e.g. v2")
    parser.add_argument("--digest", required=True, help="image digest label, sha256:...")
    parser.add_argument("--error-rate", type=_rate, default=0.0, help="share of 500s, 0..1")
    parser.add_argument("--latency-ms", type=_latency, default=5.0, help="mean latency")
    args = parser.parse_args(argv)
    service = DemoService(args.version, args.digest, Behaviour(args.error_rate, args.latency_ms))
    web.run_app(build_app(service), host="127.0.0.1", port=args.port, access_log=None)


if __name__ == "__main__":
    main()
