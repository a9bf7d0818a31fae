"""The Kubernetes actuator: deploys each release by digest and moves traffic with the
router the stage names (an HTTPRoute's weights, or a Service's selector).

Level-triggered: every apply reads what is there, writes only the difference, and a
repeated state writes nothing. Traffic never moves to a workload that is not ready: the
release's Deployment is rolled out and waited for first; one that misses ``readyTimeout``
is scaled back to zero, the router is left as it was, and :class:`CandidateNotReadyError`
carries the reason Kubernetes gave.

Canary: the candidate runs in ``<deployment>-candidate`` (a copy of the stable
Deployment's spec, with its own pod labels) behind the candidate Service; promotion rolls
the digest into the stable Deployment and waits for it before traffic returns there, then
scales the candidate to zero; a rollback moves traffic first and tidies up after.
Blue-green: each backend (slot) runs in ``<deployment>-<backend>``; the idle slot keeps
the prior digest until the state's ``retain_until``, then is scaled to zero.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sidecar.actuators.base import Backend, TrafficState
from sidecar.actuators.kubernetes.routes import route_traffic
from sidecar.actuators.kubernetes.selector import Services
from sidecar.actuators.kubernetes.workloads import (
    COPY_OF,
    ROLE,
    SLOT,
    Release,
    Workloads,
    copy_of,
    image_of,
    selector_of,
    with_release,
)
from sidecar.actuators.kubernetes.writes import call
from sidecar.domain.kubernetes import (
    CANDIDATE_SUFFIX,
    KubernetesTarget,
    candidate_workload,
    name_problem,
    side_names,
    slot_service,
    slot_workload,
)
from sidecar.errors import ActuationError, CandidateNotReadyError, Problem
from sidecar.kube.api import DEPLOYMENT, KubeApi, Object
from sidecar.telemetry.logging import get_logger

if TYPE_CHECKING:
    from sidecar.domain.policy import PromotionPolicy
    from sidecar.engine.clock import Clock


_log = get_logger("actuator")


@dataclass(frozen=True)
class StageTarget:
    """A stage's Kubernetes target and the strategy that decides how it is used."""

    target: KubernetesTarget
    strategy: str
    """``canary`` or ``blue_green``, as the stage's policy says."""


def stage_targets(policy: PromotionPolicy) -> dict[str, StageTarget]:
    """The Kubernetes target of every stage of ``policy`` that has one."""
    return {
        stage.name: StageTarget(stage.kubernetes, stage.strategy.kind)
        for stage in policy.stages
        if stage.kubernetes is not None
    }


def _side(state: TrafficState, role: str) -> Backend | None:
    return next((b for b in state.backends if b.role == role), None)


def _serving(backends: Sequence[Backend], now: float) -> list[Backend]:
    """The backends still to run at ``now``: all but those whose ``retain_until`` passed."""
    return [b for b in backends if b.retain_until is None or b.retain_until > now]


def _release(backend: Backend, state: TrafficState) -> Release:
    return Release(backend.image, backend.digest, backend.version, state.promotion_id)


def candidate_labels(selector: Mapping[str, str]) -> dict[str, str]:
    """The candidate's pod labels: each of the stable selector's values with ``-candidate``
    (so the stable Service does not pick the candidate's pods), and its role."""
    labels = {key: f"{value}-{CANDIDATE_SUFFIX}"[:63] for key, value in selector.items()}
    return {**labels, ROLE: CANDIDATE_SUFFIX}


def slot_labels(selector: Mapping[str, str], backend: str) -> dict[str, str]:
    """A blue-green slot's pod labels: the base selector and the slot."""
    return {**selector, SLOT: backend}


class KubernetesActuator:
    """Routes each stage through its :class:`StageTarget`. ``api`` belongs to the caller,
    who closes it; this actuator closes only its own timers."""

    def __init__(
        self,
        api: KubeApi,
        targets: Mapping[str, StageTarget],
        default_namespace: str,
        clock: Clock,
        *,
        poll_s: float = 1.0,
    ) -> None:
        self._api = api
        self._targets = dict(targets)
        self._namespace = default_namespace
        self._clock = clock
        self._workloads = Workloads(api, clock, poll_s=poll_s)
        self._services = Services(api)
        self._locks: dict[str, asyncio.Lock] = {}
        self._current: dict[str, TrafficState] = {}
        # per stage, the (promotion, sequence) whose candidate never became ready
        self._not_ready: dict[str, tuple[tuple[str, int], CandidateNotReadyError]] = {}
        self._timers: dict[str, asyncio.Task[None]] = {}

    def check(self, state: TrafficState) -> Sequence[Problem]:
        """A stage without a target, a release without a pinned image, or a backend whose
        derived object names Kubernetes would refuse."""
        placed = self._targets.get(state.stage)
        if placed is None:
            return [
                Problem(
                    "stage",
                    f"stage {state.stage!r} has no kubernetes target",
                    f"add a kubernetes block to stage {state.stage} in the policy",
                )
            ]
        problems: list[Problem] = []
        sides = [*state.backends, *([state.preview] if state.preview else [])]
        for index, backend in enumerate(sides):
            where = f"backends[{index}]" if index < len(state.backends) else "preview"
            if not backend.image:
                problems.append(
                    Problem(
                        f"{where}.image",
                        "the release has no image pinned by digest",
                        "promote it again with a manifest whose artifact has a digest",
                    )
                )
            if placed.strategy == "canary":
                continue
            names = side_names(placed.target, placed.strategy, backend.role, backend.backend)
            for name in (names.workload, names.service):
                what = name_problem(name, "the slot's object name")
                if what is not None:
                    problems.append(
                        Problem(
                            f"{where}.backend",
                            what,
                            "name the backend with lowercase letters, digits and '-'",
                        )
                    )
        return problems

    async def start(self) -> None:
        """Nothing to open: the API client is the caller's."""

    async def apply(self, state: TrafficState) -> None:
        """Deploy and route ``state``; a state whose candidate never became ready fails the
        same way again without waiting a second time."""
        failed = self._not_ready.get(state.stage)
        if failed is not None and failed[0] == (state.promotion_id, state.sequence):
            raise failed[1]
        placed = self._targets.get(state.stage)
        if placed is None:
            raise ActuationError(
                f"kubernetes: stage {state.stage!r} has no kubernetes target in the policy",
                permanent=True,
            )
        namespace = placed.target.namespace_or(self._namespace)
        async with self._locks.setdefault(state.stage, asyncio.Lock()):
            try:
                if placed.strategy == "canary":
                    await self._canary(namespace, placed.target, state)
                else:
                    await self._blue_green(namespace, placed.target, state)
            except CandidateNotReadyError as exc:
                self._not_ready[state.stage] = ((state.promotion_id, state.sequence), exc)
                raise
            self._current[state.stage] = state
        self._schedule_retention(namespace, placed.target, state)

    async def restore(self, state: TrafficState) -> None:
        """Take up a state applied before a restart: its retention timer runs again; the
        cluster already holds the rest, and the next apply re-reads it."""
        placed = self._targets.get(state.stage)
        if placed is None:
            return
        self._current[state.stage] = state
        self._schedule_retention(placed.target.namespace_or(self._namespace), placed.target, state)

    async def close(self) -> None:
        """Stop the retention timers (the next start restores them)."""
        timers = list(self._timers.values())
        self._timers.clear()
        for timer in timers:
            timer.cancel()
        for timer in timers:
            with contextlib.suppress(asyncio.CancelledError):
                await timer

    async def _canary(self, namespace: str, target: KubernetesTarget, state: TrafficState) -> None:
        route = target.router.http_route
        if route is None:
            raise ActuationError(
                "kubernetes: a canary needs router.httpRoute in the stage's kubernetes target",
                permanent=True,
            )
        stable, candidate = _side(state, "stable"), _side(state, "candidate")
        copy_name = candidate_workload(target)
        services = (route.stable_service, route.canary_service)
        if candidate is not None and stable is not None:
            base = await self._workloads.get(namespace, target.deployment)
            labels = candidate_labels(selector_of(base))
            desired = with_release(
                copy_of(base, copy_name, labels), target.container, _release(candidate, state)
            )
            await self._workloads.ensure(namespace, desired)
            await self._services.select(namespace, services[1], labels, like=services[0])
            try:
                await self._workloads.wait_ready(namespace, copy_name, target.ready_timeout)
            except CandidateNotReadyError:
                await self._workloads.scale_to_zero(namespace, copy_name)
                raise
            weights = {services[0]: stable.weight, services[1]: candidate.weight}
            await route_traffic(self._api, namespace, route, weights)
            return
        back = {services[0]: 100, services[1]: 0}
        if candidate is not None:  # promoted: the stable Deployment takes the digest first
            await self._roll_stable(namespace, target, _release(candidate, state), candidate=True)
        await route_traffic(self._api, namespace, route, back)
        await self._workloads.scale_to_zero(namespace, copy_name)
        if stable is not None:  # back to stable: its digest, if it had moved on
            await self._roll_stable(namespace, target, _release(stable, state), candidate=False)

    async def _roll_stable(
        self, namespace: str, target: KubernetesTarget, release: Release, *, candidate: bool
    ) -> None:
        """Roll ``release`` into the stable Deployment and wait for it; when it does not
        become ready, put the pod template back as it was."""
        name = target.deployment
        before = await self._workloads.get(namespace, name)
        if image_of(before, target.container) == release.image:
            return
        await self._workloads.edit(
            namespace, name, lambda d: with_release(d, target.container, release), current=before
        )
        try:
            await self._workloads.wait_ready(namespace, name, target.ready_timeout)
        except CandidateNotReadyError as exc:
            template = before["spec"]["template"]
            await self._workloads.edit(namespace, name, lambda d: _with_template(d, template))
            if candidate:
                raise
            raise ActuationError(
                f"kubernetes: the stable release did not become ready again: {exc.reason}"
            ) from None

    async def _blue_green(
        self, namespace: str, target: KubernetesTarget, state: TrafficState
    ) -> None:
        base = await self._workloads.get(namespace, target.deployment)
        selector = selector_of(base)
        keep = _serving(
            [*state.backends, *([state.preview] if state.preview else [])], self._clock.now()
        )
        for backend in sorted(keep, key=lambda b: b.role != "candidate"):
            await self._run_slot(namespace, target, base, backend, state)
        live = max(state.backends, key=lambda b: b.weight)
        candidate = _side(state, "candidate") or state.preview
        preview = state.preview.backend if state.preview else None
        if target.router.http_route is not None:
            route = target.router.http_route
            for backend in keep:
                await self._services.select(
                    namespace,
                    slot_service(route, backend.backend),
                    slot_labels(selector, backend.backend),
                    like=route.stable_service,
                )
            # the stable Service itself selects the base Deployment's pods: once slots serve,
            # it gets none of the traffic
            weights = {
                route.stable_service: 0,
                **{slot_service(route, b.backend): b.weight for b in state.backends},
            }
            await route_traffic(
                self._api,
                namespace,
                route,
                weights,
                preview=slot_service(route, preview) if preview else None,
                rest_prefix=f"{route.stable_service}-",
            )
        else:
            service = target.router.service
            assert service is not None  # the router holds exactly one of the two
            if candidate is not None:
                labels = slot_labels(selector, candidate.backend)
                await self._services.select(namespace, service.preview, labels, like=service.name)
            live_labels = slot_labels(selector, live.backend)
            await self._services.select(namespace, service.name, live_labels, like=service.name)
        running = {slot_workload(target, b.backend) for b in keep}
        await self._stop_copies(namespace, target, running)

    async def _run_slot(
        self,
        namespace: str,
        target: KubernetesTarget,
        base: Object,
        backend: Backend,
        state: TrafficState,
    ) -> None:
        """Run ``backend``'s release in its slot and wait for it to be ready."""
        name = slot_workload(target, backend.backend)
        labels = slot_labels(selector_of(base), backend.backend)
        desired = with_release(
            copy_of(base, name, labels),
            target.container,
            _release(backend, state),
        )
        await self._workloads.ensure(namespace, desired)
        try:
            await self._workloads.wait_ready(namespace, name, target.ready_timeout)
        except CandidateNotReadyError as exc:
            if backend.role != "candidate":
                raise ActuationError(
                    f"kubernetes: slot {name} of the stable release is not ready: {exc.reason}"
                ) from None
            await self._workloads.scale_to_zero(namespace, name)
            raise

    async def _stop_copies(
        self, namespace: str, target: KubernetesTarget, running: set[str]
    ) -> None:
        """Scale to zero every copy of the base Deployment that no longer serves."""
        copies = await call(
            self._api.list(DEPLOYMENT, namespace, labels={COPY_OF: target.deployment}),
            DEPLOYMENT,
            namespace,
            target.deployment,
        )
        for deployment in copies:
            name = deployment["metadata"]["name"]
            if name not in running and deployment.get("spec", {}).get("replicas", 1) != 0:
                await self._workloads.scale_to_zero(namespace, name, current=deployment)

    def _schedule_retention(
        self, namespace: str, target: KubernetesTarget, state: TrafficState
    ) -> None:
        """Scale the slot kept for a switch-back to zero once its ``retain_until`` passes,
        unless another state has been applied to the stage by then."""
        kept = [b for b in state.backends if b.retain_until is not None]
        previous = self._timers.pop(state.stage, None)
        if previous is not None:
            previous.cancel()
        if not kept:
            return
        until = min(b.retain_until or 0.0 for b in kept)

        async def expire() -> None:
            await self._clock.sleep(max(until - self._clock.now(), 0.0))
            async with self._locks.setdefault(state.stage, asyncio.Lock()):
                if self._current.get(state.stage) != state:
                    return
                serving = _serving(state.backends, self._clock.now())
                running = {slot_workload(target, b.backend) for b in serving}
                try:
                    await self._stop_copies(namespace, target, running)
                except ActuationError as exc:  # the next promotion's apply tidies up
                    _log.warning(
                        "could not stop the slot kept for a switch-back",
                        extra={"stage": state.stage, "error": str(exc)},
                    )

        self._timers[state.stage] = asyncio.create_task(
            expire(), name=f"promgate-retain-{state.stage}"
        )


def _with_template(deployment: Object, template: object) -> Object:
    deployment["spec"]["template"] = template
    return deployment
