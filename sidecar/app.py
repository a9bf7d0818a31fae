"""Composes a sidecar from settings: ledger, actuator, metrics source, engine and API.

With leader election on, the API serves at once (reads, and 503 for writes), and the
controller runs only while this replica holds the Lease: started (restore, then resume
every active promotion) when the lease is acquired, stopped when it is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal

from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider

from sidecar.actuators.base import TrafficActuator
from sidecar.actuators.factory import ActuatorSettings, build_actuator
from sidecar.actuators.kubernetes import stage_targets
from sidecar.analysis.prometheus import PrometheusSource
from sidecar.api.app import build_api
from sidecar.api.auth import TokenTable
from sidecar.domain.policy import load_policy
from sidecar.engine.clock import Clock, SystemClock
from sidecar.engine.context import EngineContext
from sidecar.engine.controller import Controller
from sidecar.errors import PromgateError, SettingsError
from sidecar.kube.api import KubeApi
from sidecar.kube.client import connect, default_namespace
from sidecar.kube.intake import PromotionIntake
from sidecar.leadership.base import AlwaysLeader, Leadership
from sidecar.leadership.lease import LeaseLeadership
from sidecar.ledger.factory import build_ledger
from sidecar.settings import Settings, parse_address, parse_stage_addresses
from sidecar.telemetry.logging import get_logger
from sidecar.telemetry.metrics import PrometheusRecorder
from sidecar.telemetry.tracing import build_tracer_provider

_log = get_logger("sidecar")
INTAKE_INTERVAL_S = 2.0
"""How often the leader looks for Promotion objects applied with kubectl."""


class Sidecar:
    """One running promgate: call :meth:`start`, then :meth:`stop` (always)."""

    def __init__(
        self, settings: Settings, *, clock: Clock | None = None, kube: KubeApi | None = None
    ) -> None:
        """``kube``: the Kubernetes API, needed when a setting uses it (see :func:`needs_kube`);
        the sidecar closes it on stop."""
        self.settings = settings
        self.kube = kube
        self.namespace = (
            settings.kube_namespace or default_namespace(settings.kubeconfig) if kube else "default"
        )
        self.leadership = self._leadership(clock)
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
                kube_targets=stage_targets(self.policy),
                kube_namespace=self.namespace,
            ),
            registry=self.recorder.registry,
            kube=kube,
            clock=clock,
        )
        self.source = PrometheusSource(
            settings.prometheus_url,
            bearer_token_file=settings.prometheus_bearer_token_file,
            timeout_s=settings.prometheus_timeout_s,
            attempts=settings.prometheus_attempts,
        )
        self.ledger = build_ledger(
            settings.ledger,
            str(settings.ledger_path),
            kube=kube,
            namespace=self.namespace,
            policy=self.policy,
        )
        self.controller = Controller(
            EngineContext(
                policy=self.policy,
                ledger=self.ledger,
                actuator=self.actuator,
                source=self.source,
                recorder=self.recorder,
                tracer=self.tracer_provider.get_tracer("promgate"),
                clock=clock or SystemClock(),
                may_act=self.leadership.may_act,
                kube_namespace=self.namespace,
            )
        )
        self.intake = (
            PromotionIntake(kube, self.namespace, self.controller)
            if kube is not None and settings.ledger == "kubernetes"
            else None
        )
        self._intake_task: asyncio.Task[None] | None = None
        self.leadership.on_change(self._lead_or_follow)
        self._runner: web.AppRunner | None = None

    def _leadership(self, clock: Clock | None) -> Leadership:
        settings = self.settings
        if not settings.elects_leader:
            return AlwaysLeader(settings.identity)
        if self.kube is None:
            raise SettingsError(
                "setting leader_election (PROMGATE_LEADER_ELECTION) needs the Kubernetes API; "
                "run in a cluster or set kubeconfig (PROMGATE_KUBECONFIG)"
            )
        return LeaseLeadership(
            self.kube,
            self.namespace,
            settings.lease_name,
            settings.identity,
            duration_s=settings.lease_duration_s,
            renew_s=settings.lease_renew_deadline_s,
            retry_s=settings.lease_retry_period_s,
            clock=clock,
        )

    async def _lead_or_follow(self, leading: bool) -> None:
        """Run the controller exactly while leading; a start that fails (the ledger did not
        answer) is tried again while the lease lasts, and raised where nobody else leads."""
        self.recorder.leading(self.settings.identity, leading)
        if not leading:
            await self._stop_intake()
            await self.controller.stop()
            return
        while self.leadership.may_act():
            try:
                await self.controller.start()
                self._start_intake()
                return
            except PromgateError as exc:
                await self.controller.stop()
                if not self.settings.elects_leader:
                    raise
                _log.error(
                    "could not resume promotions; trying again",
                    extra={"error": str(exc), "identity": self.settings.identity},
                )
                await asyncio.sleep(self.settings.lease_retry_period_s)

    def _start_intake(self) -> None:
        """Take in Promotion objects people apply, while this replica leads."""
        if self.intake is not None and self._intake_task is None:
            self._intake_task = asyncio.create_task(
                self.intake.run(INTAKE_INTERVAL_S), name="promotion-intake"
            )

    async def _stop_intake(self) -> None:
        task, self._intake_task = self._intake_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def start(self) -> None:
        await self.ledger.open()
        await self.actuator.start()
        self.recorder.leading(self.settings.identity, False)
        await self.leadership.start()  # the only replica there is: starts the controller now
        app = build_api(
            self.controller,
            self.tokens,
            self.recorder.registry,
            max_body_bytes=self.settings.max_body_bytes,
            leadership=self.leadership,
            retry_after_s=math.ceil(self.settings.lease_retry_period_s),
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
                "leader_election": self.settings.elects_leader,
                "identity": self.settings.identity,
            },
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self._stop_intake()
        await self.leadership.close()  # stops the controller, then hands the lease over
        await self.controller.stop()
        await self.actuator.close()
        await self.source.close()
        await self.ledger.close()
        if self.kube is not None:
            await self.kube.close()
        await asyncio.to_thread(self.tracer_provider.shutdown)


def needs_kube(settings: Settings) -> bool:
    """Whether any part the settings pick talks to the Kubernetes API."""
    return settings.elects_leader or "kubernetes" in (settings.ledger, settings.actuator)


async def serve(settings: Settings) -> None:
    """Run a sidecar until SIGINT or SIGTERM; active promotions resume on the next start."""
    kube = await connect(settings.kubeconfig) if needs_kube(settings) else None
    try:
        sidecar = Sidecar(settings, kube=kube)
    except BaseException:
        if kube is not None:
            await kube.close()
        raise
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
