"""Admits releases, runs one task per active promotion, and carries out people's commands.

Admission refuses a release before any traffic moves when its identity or metadata break
a rule; refusals are stored too, so every decision can be explained later.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Sequence
from typing import Any

from sidecar.domain.manifest import ReleaseManifest
from sidecar.domain.metadata_gates import metadata_failures
from sidecar.domain.policy import Stage
from sidecar.domain.promotion import (
    COMMAND_TARGETS,
    SLOTS,
    Command,
    Phase,
    Promotion,
    PromotionEvent,
    StableRelease,
    command_refusal,
)
from sidecar.engine.context import EngineContext
from sidecar.engine.runner import PromotionRunner
from sidecar.engine.traffic import ROUTED_PHASES, candidate_backend, candidate_traffic
from sidecar.errors import (
    ActuationError,
    ConflictError,
    MetadataGateError,
    NotFoundError,
    Problem,
    RefusedError,
    RequestError,
    StageOrderError,
    TagMutationError,
)
from sidecar.ledger.base import Transaction
from sidecar.telemetry.logging import get_logger
from sidecar.telemetry.tracing import (
    link_from_traceparent,
    release_attributes,
    traceparent_of,
)

_log = get_logger("controller")
_RETRY_TICK_S = 1.0  # how often the retrier looks for failed actuations that are due


class Controller:
    """The engine's front door; the API and CLI talk only to this."""

    def __init__(self, ctx: EngineContext) -> None:
        self.ctx = ctx
        self._tasks: dict[str, asyncio.Task[Promotion]] = {}
        self._runners: dict[str, PromotionRunner] = {}
        self._retrier: asyncio.Task[None] | None = None
        self._commands = asyncio.Lock()  # people's commands, one at a time: no lost update
        self._started = False

    @property
    def ready(self) -> bool:
        return self._started

    async def start(self) -> None:
        """Restore every actuator's last split, finish actuations a crash interrupted,
        then resume every active promotion."""
        for state in await self.ctx.ledger.all_traffic():
            await self.ctx.actuator.restore(state)
        await self._finish_interrupted_actuations()
        self._retrier = asyncio.create_task(self._retry_unapplied(), name="actuation-retry")
        for promotion in await self.ctx.ledger.list(active=True):
            await self.ctx.event(
                promotion,
                "resumed",
                {
                    "phase": promotion.phase.value,
                    "step": promotion.step_index,
                    "weight": promotion.weight,
                },
            )
            _log.info(
                "resuming promotion",
                extra={"promotion": promotion.id, "step": promotion.step_index},
            )
            await self._spawn(promotion)
        self._started = True

    async def _finish_interrupted_actuations(self) -> None:
        """The newest routed promotion of each (service, stage) owns its traffic: make the
        traffic, the ledger's record of it and the stable history agree with it."""
        for promotion in await self.ctx.ledger.newest(ROUTED_PHASES):
            with contextlib.suppress(ActuationError):
                await self.ctx.ensure_applied(promotion)

    async def _retry_unapplied(self) -> None:
        while True:
            await asyncio.sleep(_RETRY_TICK_S)  # real time: a cadence, not a policy rule
            await self.retry_due(time.monotonic())

    async def retry_due(self, now: float) -> None:
        """Retry the failed actuations of promotions no runner drives (finished ones) whose
        backoff has passed by ``now`` (monotonic), until each is applied, superseded by a
        newer promotion of its stage, or refused permanently (never retried)."""
        for promotion_id, failed in sorted(self.ctx.unapplied.items()):
            if promotion_id in self._tasks or failed.permanent or failed.retry_at > now:
                continue  # its runner retries on its own, or it never can apply, or not yet
            promotion = await self.ctx.ledger.get(promotion_id)
            if not await self._owns_traffic(promotion):
                self.ctx.unapplied.pop(promotion_id, None)
                continue
            with contextlib.suppress(ActuationError):
                await self.ctx.ensure_applied(promotion)

    async def _owns_traffic(self, promotion: Promotion) -> bool:
        """Whether ``promotion`` is the newest routed one of its (service, stage)."""
        stage = (promotion.service, promotion.stage)
        owners = [
            p for p in await self.ctx.ledger.newest(ROUTED_PHASES) if (p.service, p.stage) == stage
        ]
        return bool(owners) and owners[0].id == promotion.id

    async def stop(self) -> None:
        """Cancel the runners; their state is saved, so the next start resumes them."""
        self._started = False
        tasks: list[asyncio.Task[Any]] = [*self._tasks.values()]
        if self._retrier is not None:
            tasks.append(self._retrier)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def create(
        self,
        manifest_data: Any,
        stage_name: str,
        *,
        upstream: str = "",
        backend: str | None = None,
        actor: str = "cli",
        promotion_id: str | None = None,
    ) -> Promotion:
        """Admit a release for a stage and start promoting it; refusals raise.

        ``backend`` names the slot the candidate was deployed to; without it the candidate
        gets the slot the stable release is not in. ``promotion_id`` is the id to store it
        under (a Promotion object's name); a new one is made without it.
        """
        manifest = ReleaseManifest.from_data(manifest_data)
        stage = self._stage(stage_name)
        artifact = manifest.artifact_ref
        now = self.ctx.clock.now()
        history = await self.ctx.ledger.stable_history(manifest.service, stage.name)
        stable = history[-1] if history else None
        stable_backend = await self._backend_of(stable) if stable else None
        promotion = Promotion(
            id=promotion_id or uuid.uuid4().hex[:12],
            service=manifest.service,
            stage=stage.name,
            artifact=artifact,
            version=manifest.version,
            policy_version=self.ctx.policy.version,
            strategy=stage.strategy.kind,
            candidate_upstream=upstream,
            manifest=manifest.to_json_dict(),
            created_at=now,
            updated_at=now,
            baseline=stable.artifact if stable else None,
            baseline_upstream=stable.upstream if stable else None,
            baseline_version=stable.version if stable else "",
            candidate_backend=candidate_backend(backend, stable_backend),
            baseline_backend=stable_backend or "",
        )
        self._check_routable(promotion)
        span = self.ctx.tracer.start_span(
            "promgate.promotion",
            attributes=release_attributes(promotion),
            links=link_from_traceparent(manifest.build.traceparent),
        )
        promotion = promotion.evolve(traceparent=traceparent_of(span))
        try:
            await self._admit(promotion, manifest, stage, stable)
        except RefusedError as exc:
            span.set_attribute("promgate.outcome", "refused")
            span.end()
            await self._store_refusal(promotion, exc)
            raise
        created = self.ctx.new_event(
            promotion,
            "created",
            {
                "artifact": str(artifact),
                "version": manifest.version,
                "actor": actor,
                "policy_version": promotion.policy_version,
                "strategy": promotion.strategy,
                "baseline": str(promotion.baseline) if promotion.baseline else None,
                "backend": promotion.candidate_backend,
            },
        )
        await self.ctx.commit(Transaction(create=promotion, events=(created,)))
        runner = await self._spawn(promotion, span)
        return runner.promotion

    async def _backend_of(self, release: StableRelease) -> str:
        """The backend a stable release runs in: the one its promotion put it in."""
        try:
            promotion = await self.ctx.ledger.get(release.promotion_id)
        except NotFoundError:
            return SLOTS[0]
        return promotion.candidate_backend or SLOTS[0]

    def _check_routable(self, promotion: Promotion) -> None:
        """Refuse, before anything is stored, a release the actuator could never route."""
        problems = self.ctx.actuator.check(candidate_traffic(promotion))
        if problems:
            raise RequestError(
                f"the traffic actuator cannot route {promotion.service} in {promotion.stage}",
                problems,
            )

    async def _admit(
        self,
        promotion: Promotion,
        manifest: ReleaseManifest,
        stage: Stage,
        stable: StableRelease | None,
    ) -> None:
        artifact = promotion.artifact
        if stable is not None and stable.artifact.digest == artifact.digest:
            raise ConflictError(
                f"{artifact.digest} is already the stable release of {promotion.service} in "
                f"{stage.name}; nothing to promote"
            )
        try:
            await self.ctx.ledger.remember_tag(artifact)
        except TagMutationError:
            self.ctx.recorder.tag_mutation(artifact.name)
            raise
        done = await self.ctx.ledger.promoted_stages(promotion.service, artifact.digest)
        missing = [required for required in stage.requires if required not in done]
        if missing:
            raise StageOrderError(
                f"stage {stage.name} requires {artifact.short_digest} to be promoted in "
                f"{', '.join(missing)} first; promote it there, then here"
            )
        failures = metadata_failures(manifest, stage.gates.metadata)
        if failures:
            raise MetadataGateError(
                f"metadata gates of stage {stage.name} refused the release:\n  - "
                + "\n  - ".join(failures)
            )

    async def _store_refusal(self, promotion: Promotion, error: RefusedError) -> None:
        reason = type(error).__name__.removesuffix("Error").lower()
        self.ctx.recorder.refused(promotion.service, promotion.stage, reason)
        refused = promotion.evolve(phase=Phase.REFUSED, reason=str(error))
        event = self.ctx.new_event(refused, "refused", {"reason": str(error), "rule": reason})
        await self.ctx.commit(Transaction(create=refused, events=(event,)))
        error.promotion_id = refused.id
        _log.info(
            "release refused",
            extra={
                "promotion": refused.id,
                "rule": reason,
                "reason": str(error),
                "digest": promotion.artifact.digest,
            },
        )

    async def _spawn(self, promotion: Promotion, root_span: Any = None) -> PromotionRunner:
        """Take the promotion's first step now (so the caller sees its phase), then run it."""
        runner = PromotionRunner(self.ctx, promotion)
        await runner.begin()
        if promotion.approved_by is not None:
            runner.approved.set()

        async def run() -> Promotion:
            try:
                return await runner.run()
            finally:
                if root_span is not None:
                    root_span.set_attribute("promgate.outcome", runner.promotion.phase.value)
                    root_span.end()
                self._tasks.pop(promotion.id, None)
                self._runners.pop(promotion.id, None)

        self._runners[promotion.id] = runner
        self._tasks[promotion.id] = asyncio.create_task(run(), name=f"promotion-{promotion.id}")
        return runner

    def _stage(self, name: str) -> Stage:
        try:
            return self.ctx.policy.stage(name)
        except KeyError:
            policy = self.ctx.policy
            known = ", ".join(stage.name for stage in policy.stages)
            raise RequestError(
                f"unknown stage {name[:64]!r}",
                [
                    Problem(
                        "stage",
                        f"{name[:64]!r} is not a stage of policy {policy.metadata.name}",
                        f"use one of: {known}",
                    )
                ],
            ) from None

    async def get(self, promotion_id: str) -> Promotion:
        return await self.ctx.ledger.get(promotion_id)

    async def list(
        self,
        *,
        service: str | None = None,
        stage: str | None = None,
        active: bool | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Sequence[Promotion]:
        return await self.ctx.ledger.list(
            service=service, stage=stage, active=active, limit=limit, after=after
        )

    async def events(
        self, promotion_id: str, after: int = 0, limit: int | None = None
    ) -> Sequence[PromotionEvent]:
        return await self.ctx.ledger.events(promotion_id, after, limit)

    async def wait_events(
        self, promotion_id: str, after: int, timeout_s: float
    ) -> Sequence[PromotionEvent]:
        """Events after ``after``, waiting up to ``timeout_s`` for the first new one."""
        changed = self.ctx.bus.waiter(promotion_id)
        events = await self.events(promotion_id, after)
        if not events:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout_s)
            events = await self.events(promotion_id, after)
        return events

    async def wait_finished(self, promotion_id: str) -> Promotion:
        task = self._tasks.get(promotion_id)
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)
        return await self.get(promotion_id)

    async def approve(self, promotion_id: str, actor: str) -> Promotion:
        """Let an approval-gated promotion move traffic; 409 in any other phase."""
        async with self._commands:
            promotion = self._allowed(Command.APPROVE, await self.get(promotion_id))
            approved = await self.ctx.move(
                promotion, event="approved", data={"actor": actor}, approved_by=actor
            )
        runner = self._runners.get(promotion_id)
        if runner is not None:
            runner.approved.set()
        return approved

    async def abort(self, promotion_id: str, actor: str, *, rollback: bool = False) -> Promotion:
        """Stop an active promotion and send its traffic back to the stable release.

        Refused (409, naming the phase) where the command does not apply, before anything
        changes. Once the new phase is saved it stands, also when the traffic shift that
        follows fails (it is retried, and the caller hears of it).
        """
        command = Command.ROLLBACK if rollback else Command.ABORT
        async with self._commands:
            self._allowed(command, await self.get(promotion_id))
            await self._cancel(promotion_id)
            # the runner may have moved it on before it stopped: check the stored phase again
            promotion = await self.get(promotion_id)
            if promotion.phase.terminal:  # it ended: finish the split the cancel cut short
                with contextlib.suppress(ActuationError):
                    await self.ctx.ensure_applied(promotion)
            self._allowed(command, promotion)
            phase = COMMAND_TARGETS[command]
            if rollback:
                self.ctx.recorder.rollback(promotion, "manual")
            moved = await self.ctx.move(
                promotion,
                event=phase.value,
                data={"actor": actor},
                phase=phase,
                weight=0,
                reason=f"{'rolled back' if rollback else 'aborted'} by {actor}",
            )
        failed = self.ctx.unapplied.get(promotion_id)
        if failed is not None and failed.sequence == moved.actuation_seq:
            # a person should hear of it at once; the engine keeps retrying meanwhile
            raise ActuationError(
                f"promotion {promotion_id} is {phase.value}, but its traffic could not be "
                f"shifted back yet ({failed.error}); promgate retries it",
                permanent=failed.permanent,
            )
        return moved

    def _allowed(self, command: Command, promotion: Promotion) -> Promotion:
        """``promotion`` if ``command`` applies in its phase; else a ConflictError naming it."""
        why = command_refusal(command, promotion.phase, promotion.approved_by)
        if why is not None:
            raise ConflictError(
                f"cannot {command.value} promotion {promotion.id}: it is "
                f"{promotion.phase.value}; {why}"
            )
        return promotion

    async def rollback_stage(self, service: str, stage: str, actor: str) -> StableRelease:
        """Go back one stable digest in (service, stage), also after a promotion completed."""
        self._stage(stage)
        active = await self.ctx.ledger.list(service=service, stage=stage, active=True)
        if active:
            raise ConflictError(
                f"promotion {active[0].id} is {active[0].phase.value} for {service} in "
                f"{stage}; abort or roll back that promotion instead"
            )
        history = await self.ctx.ledger.stable_history(service, stage)
        if len(history) < 2:
            raise NotFoundError(
                f"{service} in {stage} has no earlier stable digest to roll back to"
            )
        removed, previous = history[-1], history[-2]
        now = self.ctx.clock.now()
        reason = f"rolled back by {actor}: {removed.artifact} -> {previous.artifact}"
        record = Promotion(
            id=uuid.uuid4().hex[:12],
            service=service,
            stage=stage,
            artifact=previous.artifact,
            version=previous.version,
            policy_version=self.ctx.policy.version,
            strategy="rollback",
            candidate_upstream=previous.upstream,
            manifest={},
            created_at=now,
            updated_at=now,
            phase=Phase.PROMOTED,
            weight=100,
            baseline=removed.artifact,
            baseline_upstream=removed.upstream,
            baseline_version=removed.version,
            candidate_backend=await self._backend_of(previous),
            baseline_backend=await self._backend_of(removed),
            reason=reason,
            actuation_seq=1,
        )
        event = self.ctx.new_event(
            record,
            "rolled_back_after_promotion",
            {
                "actor": actor,
                "to": str(previous.artifact),
                "from": str(removed.artifact),
                "from_promotion": removed.promotion_id,
            },
        )
        # the record owns the stage's traffic from now on: it and the shorter history
        # land together, so a restart routes the digest the history says is stable
        await self.ctx.commit(Transaction(create=record, pop_stable=removed, events=(event,)))
        self.ctx.recorder.stable_digest(service, stage, previous.artifact.digest, previous.version)
        self.ctx.recorder.rollback(record, "manual")
        _log.info(
            "stage rolled back",
            extra={
                "service": service,
                "stage": stage,
                "actor": actor,
                "promotion": record.id,
                "from": removed.artifact.digest,
                "to": previous.artifact.digest,
            },
        )
        await self.ctx.ensure_applied(record)
        return previous

    async def stable_history(self, service: str, stage: str) -> Sequence[StableRelease]:
        self._stage(stage)
        return await self.ctx.ledger.stable_history(service, stage)

    async def _cancel(self, promotion_id: str) -> None:
        task = self._tasks.get(promotion_id)
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
