"""Composes a sidecar from settings: ledger, actuator, metrics source, engine and API."""

from __future__ import annotations

import asyncio
import contextlib
import signal

from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider

from sidecar.actuators.base import TrafficActuator
from sidecar.actuators.factory import ActuatorSettings, build_actuator
from sidecar.analysis.prometheus import PrometheusSource
from sidecar.api.app import build_api
from sidecar.api.auth import TokenTable
from sidecar.domain.policy import load_policy
from sidecar.engine.clock import Clock, SystemClock
from sidecar.engine.context import EngineContext
from sidecar.engine.controller import Controller
from sidecar.ledger.factory import build_ledger
from sidecar.settings import Settings, parse_address, parse_stage_addresses
from sidecar.telemetry.logging import get_logger
from sidecar.telemetry.metrics import PrometheusRecorder
from sidecar.telemetry.tracing import build_tracer_provider

_log = get_logger("sidecar")


class Sidecar:
    """One running promgate: call :meth:`start`, then :meth:`stop` (always)."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.policy = load_policy(settings.policy)
        self.recorder = PrometheusRecorder()
        self.tokens = (
            TokenTable.load(settings.tokens_file) if settings.tokens_file else TokenTable()
        )
        self.tracer_provider: TracerProvider = build_tracer_provider(settings.otlp_endpoint)
        self.actuator: TrafficActuator = build_actuator(
            ActuatorSettings(
                kind=settings.actuator,
                proxy_listen=parse_stage_addresses(settings.proxy_listen),
                proxy_metrics_listen=(
                    parse_address(settings.proxy_metrics_listen)
                    if settings.proxy_metrics_listen
                    else None
                ),
                webhook_url=settings.webhook_url,
                webhook_secret=settings.webhook_secret(),
            ),
            registry=self.recorder.registry,
        )
        self.source = PrometheusSource(
            settings.prometheus_url,
            bearer_token_file=settings.prometheus_bearer_token_file,
            timeout_s=settings.prometheus_timeout_s,
            attempts=settings.prometheus_attempts,
        )
        self.ledger = build_ledger(settings.ledger, str(settings.ledger_path))
        self.controller = Controller(
            EngineContext(
                policy=self.policy,
                ledger=self.ledger,
                actuator=self.actuator,
                source=self.source,
                recorder=self.recorder,
                tracer=self.tracer_provider.get_tracer("promgate"),
                clock=clock or SystemClock(),
            )
        )
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        await self.ledger.open()
        await self.actuator.start()
        await self.controller.start()
        app = build_api(
            self.controller,
            self.tokens,
            self.recorder.registry,
            max_body_bytes=self.settings.max_body_bytes,
        )
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        host, port = parse_address(self.settings.listen)
        await web.TCPSite(self._runner, host, port).start()
        _log.info(
            "promgate serving",
            extra={
                "listen": self.settings.listen,
                "policy": str(self.settings.policy),
                "policy_version": self.policy.version,
                "actuator": self.settings.actuator,
            },
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self.controller.stop()
        await self.actuator.close()
        await self.source.close()
        await self.ledger.close()
        await asyncio.to_thread(self.tracer_provider.shutdown)


async def serve(settings: Settings) -> None:
    """Run a sidecar until SIGINT or SIGTERM; active promotions resume on the next start."""
    sidecar = Sidecar(settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stopping.set)
    await sidecar.start()
    try:
        await stopping.wait()
    finally:
        await sidecar.stop()
