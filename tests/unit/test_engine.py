"""The engine against real in-process parts: memory ledger, recording actuator, no metrics.

Judging on real Prometheus data is covered end to end in tests/e2e; here the subject is
what the engine does with state: first releases, approvals, timeouts, aborts, refusals,
and resuming after a restart without repeating an actuation or starting the sequential
tests over (the one place here that reads a real Prometheus, for counts to save).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from sidecar.analysis.judge import StepCounts
from sidecar.analysis.prometheus import MetricsSource, NullMetricsSource, PrometheusSource
from sidecar.domain.artifact import ArtifactRef
from sidecar.domain.measurement import Measurement
from sidecar.domain.promotion import (
    COMMAND_PHASES,
    COMMAND_TARGETS,
    Command,
    Phase,
    Promotion,
    PromotionEvent,
    can_transition,
    command_refusal,
)
from sidecar.engine.clock import Clock, SystemClock
from sidecar.engine.context import EngineContext
from sidecar.engine.controller import Controller
from sidecar.engine.runner import EVIDENCE, PromotionRunner
from sidecar.errors import (
    ActuationError,
    ConflictError,
    MetadataGateError,
    NotFoundError,
    Problem,
    RequestError,
    StageOrderError,
)
from sidecar.ledger.memory import MemoryLedger
from sidecar.local.processes import wait_until
from sidecar.telemetry.metrics import PrometheusRecorder
from sidecar.testing import FakeClock, RecordingActuator
from tests.support.manifests import manifest
from tests.support.policies import policy


def release(digest_char: str, version: str, **changes: Any) -> dict[str, Any]:
    return manifest(digest_char=digest_char, version=version, tag=version, **changes)


def build(
    ledger: MemoryLedger, clock: Clock, source: MetricsSource | None = None, **policy_options: Any
) -> tuple[Controller, RecordingActuator]:
    actuator = RecordingActuator()
    ctx = EngineContext(
        policy=policy(**policy_options),
        ledger=ledger,
        actuator=actuator,
        source=source or NullMetricsSource(),
        recorder=PrometheusRecorder(),
        tracer=TracerProvider().get_tracer("test"),
        clock=clock,
    )
    return Controller(ctx), actuator


def applied(actuator: RecordingActuator) -> Callable[[], Awaitable[bool]]:
    async def any_applied() -> bool:
        return bool(actuator.applied)

    return any_applied


async def first_release(controller: Controller, stage: str = "staging") -> Promotion:
    created = await controller.create(
        release("a", "1.0.0"), stage, upstream="http://127.0.0.1:9001"
    )
    return await controller.wait_finished(created.id)


async def weight_of(controller: Controller, promotion_id: str, at_least: int) -> Promotion:
    async def reached() -> bool:
        return (await controller.get(promotion_id)).weight >= at_least

    await wait_until(reached, 5, what=f"weight {at_least}", interval_s=0.01)
    return await controller.get(promotion_id)


async def test_first_release_goes_straight_to_stable() -> None:
    """With nothing to compare against, the first release takes all traffic and is stable."""
    ledger = MemoryLedger()
    controller, actuator = build(ledger, FakeClock())
    await controller.start()
    done = await first_release(controller)
    assert done.phase is Phase.PROMOTED
    assert [(s.sequence, [(b.role, b.weight) for b in s.backends]) for s in actuator.applied] == [
        (1, [("candidate", 100)])
    ]
    history = await ledger.stable_history("demo", "staging")
    assert [h.artifact.digest for h in history] == [done.artifact.digest]
    await controller.stop()


async def test_missing_data_stops_as_inconclusive_and_restores_stable() -> None:
    """No data never promotes: after noDataTimeout traffic returns to the stable digest."""
    ledger = MemoryLedger()
    clock = FakeClock()
    controller, actuator = build(ledger, clock, no_data="30s")
    await controller.start()
    stable = await first_release(controller)
    candidate = await controller.create(
        release("b", "1.1.0"), "staging", upstream="http://127.0.0.1:9002"
    )
    done = await asyncio.wait_for(controller.wait_finished(candidate.id), 10)
    assert done.phase is Phase.INCONCLUSIVE
    assert "insufficient evidence" in done.reason
    assert done.created_at + 30 <= done.updated_at <= done.created_at + 33
    splits = [[(b.digest, b.weight) for b in s.backends] for s in actuator.applied[1:]]
    assert splits == [
        [(stable.artifact.digest, 80), (candidate.artifact.digest, 20)],
        [(stable.artifact.digest, 100)],
    ]
    await controller.stop()


async def test_approval_holds_traffic_until_approved() -> None:
    """A stage that needs approval moves no traffic until an approver agrees."""
    ledger = MemoryLedger()
    controller, actuator = build(ledger, SystemClock(), interval="1m", approval=True)
    await controller.start()
    first = await controller.create(
        release("a", "1.0.0"), "staging", upstream="http://127.0.0.1:9001"
    )
    waiting = await controller.get(first.id)
    assert waiting.phase is Phase.AWAITING_APPROVAL
    assert actuator.applied == []
    await controller.approve(first.id, "alice")
    done = await asyncio.wait_for(controller.wait_finished(first.id), 5)
    assert (done.phase, done.approved_by) == (Phase.PROMOTED, "alice")
    assert len(actuator.applied) == 1
    await controller.stop()


async def canary_stopped_at_first_step(ledger: MemoryLedger) -> Promotion:
    """A canary at its first step, its engine stopped as a crash or a deploy would."""
    controller, _ = build(ledger, SystemClock(), interval="1m")
    await controller.start()
    await first_release(controller)
    candidate = await controller.create(
        release("b", "1.1.0"), "staging", upstream="http://127.0.0.1:9002"
    )
    assert candidate.weight == 20
    await controller.stop()
    return await ledger.get(candidate.id)


async def test_restart_resumes_without_repeating_an_actuation() -> None:
    """A restarted engine restores the split and resumes at the same step, applying nothing
    it had already applied."""
    ledger = MemoryLedger()
    before = await canary_stopped_at_first_step(ledger)
    candidate = before

    restarted, actuator = build(ledger, SystemClock(), interval="1m")
    await restarted.start()
    resumed = await restarted.get(candidate.id)
    assert (resumed.phase, resumed.step_index, resumed.weight, resumed.actuation_seq) == (
        before.phase,
        before.step_index,
        before.weight,
        before.actuation_seq,
    )
    assert [s.sequence for s in actuator.restored] == [before.actuation_seq]
    assert actuator.applied == []
    kinds = [e.kind for e in await restarted.events(candidate.id)]
    assert kinds.count("actuation") == 1 and kinds[-1] == "resumed"
    await restarted.stop()


async def test_restart_finishes_an_actuation_saved_but_not_applied() -> None:
    """A crash between saving a step and applying it is finished once on restart."""
    ledger = MemoryLedger()
    at_step = await canary_stopped_at_first_step(ledger)
    candidate = at_step
    await ledger.save(
        at_step.evolve(weight=50, step_index=1, actuation_seq=at_step.actuation_seq + 1)
    )

    restarted, actuator = build(ledger, SystemClock(), interval="1m")
    await restarted.start()
    await weight_of(restarted, candidate.id, 50)

    await wait_until(applied(actuator), 5, what="the actuation", interval_s=0.01)
    assert [(s.sequence, [b.weight for b in s.backends]) for s in actuator.applied] == [
        (at_step.actuation_seq + 1, [50, 50])
    ]
    await restarted.stop()


async def test_abort_returns_traffic_to_stable() -> None:
    """Aborting an active canary ends it and sends all traffic back to the stable digest."""
    ledger = MemoryLedger()
    controller, actuator = build(ledger, SystemClock(), interval="1m")
    await controller.start()
    stable = await first_release(controller)
    candidate = await controller.create(
        release("b", "1.1.0"), "staging", upstream="http://127.0.0.1:9002"
    )
    await weight_of(controller, candidate.id, 20)
    aborted = await controller.abort(candidate.id, "bob")
    assert (aborted.phase, aborted.reason) == (Phase.ABORTED, "aborted by bob")
    assert [(b.digest, b.weight) for b in actuator.applied[-1].backends] == [
        (stable.artifact.digest, 100)
    ]
    await controller.stop()


@pytest.mark.parametrize(
    ("stage", "changes", "error", "fragment"),
    [
        pytest.param("production", {}, StageOrderError, "promoted in staging first",
                     id="stage-order"),
        pytest.param("staging", {"checks": {"vulnerabilities": {"critical": 2}}},
                     MetadataGateError, "critical is 2, above the stage's limit of 0",
                     id="metadata-gate"),
    ],
)  # fmt: skip
async def test_refusals_are_stored_and_move_no_traffic(
    stage: str, changes: dict[str, Any], error: type[Exception], fragment: str
) -> None:
    """A refused release is recorded as refused, with the reason, and no traffic moves."""
    ledger = MemoryLedger()
    controller, actuator = build(ledger, FakeClock())
    await controller.start()
    with pytest.raises(error, match=fragment) as raised:
        await controller.create(
            release("c", "1.2.0", **changes), stage, upstream="http://127.0.0.1:9003"
        )
    record_id = getattr(raised.value, "promotion_id", None)
    assert record_id is not None
    record = await ledger.get(record_id)
    assert record.phase is Phase.REFUSED and fragment in record.reason
    assert actuator.applied == []
    await controller.stop()


async def test_failed_actuation_is_retried_until_applied() -> None:
    """A promotion whose final actuation failed is applied once the actuator recovers."""
    ledger = MemoryLedger()
    controller, actuator = build(ledger, FakeClock())
    await controller.start()
    actuator.error = ActuationError("proxy unreachable")
    done = await first_release(controller)
    assert done.phase is Phase.PROMOTED and actuator.applied == []
    assert "actuation_failed" in [e.kind for e in await controller.events(done.id)]
    actuator.error = None

    await wait_until(applied(actuator), 10, what="the retried actuation")
    assert [s.sequence for s in actuator.applied] == [done.actuation_seq]
    await controller.stop()


async def test_stage_rollback_goes_back_one_digest_and_survives_restart() -> None:
    """After a completed promotion, a stage rollback routes the prior digest, and a restart
    does not bring the rolled-back digest back."""
    ledger = MemoryLedger()
    controller, actuator = build(ledger, FakeClock())
    await controller.start()
    v1 = await first_release(controller, "qa")
    v2 = await controller.create(release("b", "1.1.0"), "qa", upstream="http://127.0.0.1:9002")
    assert (await controller.wait_finished(v2.id)).phase is Phase.PROMOTED
    previous = await controller.rollback_stage("demo", "qa", "carol")
    assert previous.artifact == v1.artifact
    assert [(b.digest, b.weight) for b in actuator.applied[-1].backends] == [
        (v1.artifact.digest, 100)
    ]
    history = await ledger.stable_history("demo", "qa")
    assert [h.artifact for h in history] == [v1.artifact]
    with pytest.raises(NotFoundError, match="no earlier stable digest"):
        await controller.rollback_stage("demo", "qa", "carol")
    await controller.stop()

    restarted, fresh = build(ledger, FakeClock())
    await restarted.start()
    assert fresh.applied == []
    assert [b.digest for b in fresh.restored[0].backends] == [v1.artifact.digest]
    await restarted.stop()


SAVED = {
    "errors": StepCounts(2, 1000, 8, 4000, worst=(1, 100, 4, 400))
    .next_step()
    .plus(1, 500, 4, 2000)
    .to_json()
}


@pytest.mark.parametrize(
    ("stored", "restored"),
    [
        pytest.param(SAVED, SAVED, id="stored-counts"),
        pytest.param(None, {}, id="none-stored"),
        pytest.param({"errors": {"counts": [1, 2]}}, {}, id="unreadable"),
        pytest.param(["errors"], {}, id="not-a-mapping"),
    ],
)
async def test_runner_resumes_the_stored_evidence(stored: Any, restored: dict[str, Any]) -> None:
    """A runner built from a stored promotion goes on with the counts it carries; without
    readable counts it starts over rather than failing."""
    ledger = MemoryLedger()
    stopped = await canary_stopped_at_first_step(ledger)
    extra = {**stopped.extra, EVIDENCE: stored} if stored is not None else stopped.extra
    await ledger.save(stopped.evolve(extra=extra))
    controller, _ = build(ledger, SystemClock(), interval="1m")
    runner = PromotionRunner(controller.ctx, await ledger.get(stopped.id))
    assert runner.analyzer.evidence() == restored


TIMED_GATE = {
    "name": "errors",
    "ratio": {"bad": "time() * 10", "total": "time() * 1000"},  # 1% bad, 1000 per second
    "max": 0.05,
    "judge": "sequential",
}


def judged_requests(events: Sequence[PromotionEvent]) -> list[float]:
    """The candidate requests of every window the gate judged (a window without a value
    was not counted: a first reading, or too few requests)."""
    return [
        gate["requests"]
        for event in events
        for gate in event.data.get("gates", [])
        if gate["gate"] == "errors" and gate["value"] is not None
    ]


async def test_evaluations_save_the_evidence_and_a_restart_resumes_it(
    time_source: PrometheusSource,
) -> None:
    """Each evaluation saves the sequential test's counts with the promotion (every window
    a verdict judged, the first step's as an earlier step); an engine restarted mid-step
    goes on from those counts instead of starting the test over.

    The gate's counters are PromQL's ``time()`` scaled, so each evaluation on the real
    Prometheus judges a fresh window of a few hundred requests on both sides.
    """
    options: dict[str, Any] = {"interval": "500ms", "gate": TIMED_GATE, "step_duration": "3s"}
    ledger = MemoryLedger()
    controller, _ = build(ledger, SystemClock(), source=time_source, **options)
    await controller.start()
    await first_release(controller)
    candidate = await controller.create(
        release("b", "1.1.0"), "staging", upstream="http://127.0.0.1:9002"
    )

    async def second_step_counted() -> bool:
        stored = (await ledger.get(candidate.id)).extra.get(EVIDENCE) or {}
        if "errors" not in stored:
            return False
        step = StepCounts.from_json(stored["errors"])
        return len(step.earlier) == 1 and step.candidate_total > 0

    await wait_until(second_step_counted, 20, what="counts of the second step", interval_s=0.02)
    await controller.stop()
    stopped = await ledger.get(candidate.id)
    assert (stopped.phase, stopped.step_index) == (Phase.PROGRESSING, 1), stopped.reason
    saved = stopped.extra[EVIDENCE]
    assert list(saved) == ["errors"]
    before = StepCounts.from_json(saved["errors"])
    [first_step] = before.earlier
    assert first_step.candidate_total > 0 and first_step.baseline_total > 0
    assert before.baseline_total > 0
    judged = judged_requests(await ledger.events(candidate.id))
    assert len(judged) >= 2
    assert first_step.candidate_total + before.candidate_total == pytest.approx(sum(judged))

    restarted, _ = build(ledger, SystemClock(), source=time_source, **options)
    await restarted.start()

    async def counted_again() -> bool:
        return bool((await ledger.get(candidate.id)).extra.get(EVIDENCE) != saved)

    # the first evaluation only starts the new analyzer's counters: the counts it saves
    # are the restored ones, unchanged; the next one adds a window to them
    await wait_until(counted_again, 10, what="a window counted after the restart")
    await restarted.stop()
    resumed = (await ledger.get(candidate.id)).extra[EVIDENCE]
    assert list(resumed) == ["errors"]
    after = StepCounts.from_json(resumed["errors"])
    assert after.earlier == before.earlier
    assert all(a >= b for a, b in zip(after.counts, before.counts, strict=True))
    events = await ledger.events(candidate.id)
    resumed_at = max(e.seq for e in events if e.kind == "resumed")
    since = judged_requests([e for e in events if e.seq > resumed_at])
    assert since, "no window judged after the restart"
    assert after.candidate_total == pytest.approx(before.candidate_total + sum(since))


# --- crashes in the final step ------------------------------------------------------------

LEDGER_WRITES = frozenset(
    {"create", "save", "commit", "append_event", "remember_tag", "push_stable", "pop_stable",
     "save_traffic", "audit"}
)  # fmt: skip


class Crash(Exception):
    """The process died here: nothing after this point runs."""


class CrashingLedger:
    """Wraps a ledger; once ``arm`` is called, the ``crash_after``-th write after it lands
    and then the process "dies": that and every later call raises :class:`Crash`."""

    def __init__(self, inner: Any, crash_after: int) -> None:
        self.inner = inner
        self.crash_after = crash_after
        self.writes_after_arming: int | None = None
        self.dead = False

    def arm(self) -> None:
        if self.writes_after_arming is None:
            self.writes_after_arming = 0
            self._maybe_die()

    def _maybe_die(self) -> None:
        if self.writes_after_arming == self.crash_after:
            self.dead = True
            raise Crash(f"after {self.crash_after} write(s) following the final actuation")

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.dead:
                raise Crash("the process is dead")
            result = await method(*args, **kwargs)
            if name in LEDGER_WRITES and self.writes_after_arming is not None:
                self.writes_after_arming += 1
                self._maybe_die()
            return result

        return call


class FinalStepActuator(RecordingActuator):
    """Records applied states into ``seen`` (the receiver's view, across restarts) and arms
    the ledger's crash when the final split (``digest`` at 100%) is applied; with
    ``before`` it dies instead of applying it."""

    def __init__(self, seen: list[Any], digest: str, ledger: CrashingLedger | None, before: bool):
        super().__init__()
        self.seen, self.digest, self.ledger, self.before = seen, digest, ledger, before

    async def apply(self, state: Any) -> None:
        final = any(b.digest == self.digest and b.weight == 100 for b in state.backends)
        if final and self.ledger is not None and self.before:
            self.ledger.dead = True
            raise Crash("before the final actuation")
        await super().apply(state)
        self.seen.append(state)
        if final and self.ledger is not None:
            self.ledger.arm()


def build_on(ledger: Any, actuator: RecordingActuator, clock: Clock) -> Controller:
    ctx = EngineContext(
        policy=policy(),
        ledger=ledger,
        actuator=actuator,
        source=NullMetricsSource(),
        recorder=PrometheusRecorder(),
        tracer=TracerProvider().get_tracer("test"),
        clock=clock,
    )
    return Controller(ctx)


async def sqlite_ledger(tmp_path: Any) -> Any:
    from sidecar.ledger.sqlite import SqliteLedger  # noqa: PLC0415

    ledger = SqliteLedger(tmp_path / "ledger.db")
    await ledger.open()
    return ledger


KILL_POINTS = [
    pytest.param(True, 0, id="before-the-final-actuation"),
    *(pytest.param(False, n, id=f"after-it-and-{n}-ledger-writes") for n in range(4)),
]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize(("before", "crash_after"), KILL_POINTS)
async def test_a_crash_anywhere_in_the_final_step_keeps_stable_history_true_to_traffic(
    kind: str, before: bool, crash_after: int, tmp_path: Any
) -> None:
    """Killed before the final actuation, right after it, or after any ledger write that
    follows it: after a restart the stage's stable digest is the one the last applied split
    sends everything to, the promotion ends promoted with its actuation recorded once, and
    the next canary compares with that release."""
    inner = MemoryLedger() if kind == "memory" else await sqlite_ledger(tmp_path)
    clock, seen = FakeClock(), []
    stable_digest, candidate_digest = (manifest(digest_char=c)["artifact"].split("@")[1]
                                       for c in "ab")  # fmt: skip

    setup = build_on(inner, FinalStepActuator(seen, candidate_digest, None, False), clock)
    await first_release(setup, "qa")
    await setup.stop()
    ledger = CrashingLedger(inner, crash_after)
    crashing = build_on(ledger, FinalStepActuator(seen, candidate_digest, ledger, before), clock)
    candidate = await crashing.create(release("b", "1.1.0"), "qa", upstream="http://127.0.0.1:9002")
    with contextlib.suppress(Crash):
        await asyncio.wait_for(crashing.wait_finished(candidate.id), 10)
    await crashing.stop()

    restarted = build_on(inner, FinalStepActuator(seen, candidate_digest, None, False), clock)
    await restarted.start()
    done = await asyncio.wait_for(restarted.wait_finished(candidate.id), 10)
    assert done.phase is Phase.PROMOTED, done
    (last_applied_to_all,) = [b.digest for b in seen[-1].backends if b.weight == 100]
    assert last_applied_to_all == candidate_digest
    history = await inner.stable_history("demo", "qa")
    assert [h.artifact.digest for h in history] == [stable_digest, candidate_digest]
    final_actuations = [
        e for e in await inner.events(candidate.id)
        if e.kind == "actuation" and e.data["sequence"] == done.actuation_seq
    ]  # fmt: skip
    assert len(final_actuations) == 1, final_actuations
    following = await restarted.create(
        release("c", "1.2.0"), "qa", upstream="http://127.0.0.1:9003"
    )
    assert following.baseline == done.artifact
    assert {b.digest: b.weight for b in seen[-1].backends} == {
        candidate_digest: 50,
        following.artifact.digest: 50,
    }
    await restarted.stop()
    if kind == "sqlite":
        await inner.close()


async def test_a_start_puts_back_a_stable_release_whose_split_was_recorded_without_it() -> None:
    """A ledger that recorded the promoted split but not the stable release (as one written
    by an earlier version could be, after a crash) is repaired at start, once."""
    ledger = MemoryLedger()
    controller, _ = build(ledger, FakeClock())
    await first_release(controller, "qa")
    v2 = await controller.create(release("b", "1.1.0"), "qa", upstream="http://127.0.0.1:9002")
    assert (await controller.wait_finished(v2.id)).phase is Phase.PROMOTED
    await controller.stop()
    await ledger.pop_stable("demo", "qa")  # what the crash lost

    for _ in range(2):  # repeated starts repair once
        restarted, actuator = build(ledger, FakeClock())
        await restarted.start()
        assert actuator.applied == []
        await restarted.stop()
    history = await ledger.stable_history("demo", "qa")
    assert [h.promotion_id for h in history][-1] == v2.id and len(history) == 2


# --- people's commands in every phase ------------------------------------------------------

APPLIES = {
    (Command.APPROVE, Phase.AWAITING_APPROVAL): Phase.AWAITING_APPROVAL,  # the engine moves on
    **{(Command.ABORT, phase): Phase.ABORTED for phase in COMMAND_PHASES[Command.ABORT]},
    (Command.ROLLBACK, Phase.PROGRESSING): Phase.ROLLED_BACK,
    (Command.ROLLBACK, Phase.POST_PROMOTION): Phase.ROLLED_BACK,
}


async def stored_in(phase: Phase) -> tuple[Controller, MemoryLedger, RecordingActuator, Promotion]:
    """A controller whose runners do not run, and a v1.1.0 promotion stored in ``phase``
    behind a promoted v1.0.0."""
    ledger = MemoryLedger()
    controller, actuator = build(ledger, FakeClock())
    stable = await first_release(controller)
    promotion = Promotion(
        id="p-" + phase.value,
        service="demo",
        stage="staging",
        artifact=ArtifactRef.parse(release("b", "1.1.0")["artifact"]),
        version="1.1.0",
        policy_version="7",
        strategy="canary",
        candidate_upstream="http://127.0.0.1:9002",
        manifest={},
        created_at=1.0,
        phase=phase,
        weight=20 if phase is Phase.PROGRESSING else 0,
        baseline=stable.artifact,
        baseline_upstream=stable.candidate_upstream,
        actuation_seq=1 if phase in (Phase.PROGRESSING, Phase.POST_PROMOTION) else 0,
    )
    await ledger.create(promotion)
    actuator.applied.clear()
    return controller, ledger, actuator, promotion


async def command(controller: Controller, which: Command, promotion_id: str) -> Promotion:
    if which is Command.APPROVE:
        return await controller.approve(promotion_id, "alice")
    return await controller.abort(promotion_id, "alice", rollback=which is Command.ROLLBACK)


@pytest.mark.parametrize("phase", list(Phase), ids=str)
@pytest.mark.parametrize("which", list(Command), ids=str)
async def test_every_command_in_every_phase_applies_or_is_a_conflict_naming_the_phase(
    which: Command, phase: Phase
) -> None:
    """Each (command, phase) either applies, or is refused with a 409 that names the phase
    before anything changes: no saved state, no traffic. (The API audits both outcomes.)"""
    controller, ledger, actuator, promotion = await stored_in(phase)
    target = APPLIES.get((which, phase))
    if target is None:
        with pytest.raises(ConflictError, match=rf"cannot {which} .* it is {phase}") as refused:
            await command(controller, which, promotion.id)
        assert command_refusal(which, phase, None) in str(refused.value)
        assert await ledger.get(promotion.id) == promotion
        assert actuator.applied == []
        return
    done = await command(controller, which, promotion.id)
    assert done.phase is target
    assert await ledger.get(promotion.id) == done
    if target in (Phase.ABORTED, Phase.ROLLED_BACK):
        assert [[(b.role, b.weight) for b in s.backends] for s in actuator.applied] == [
            [("stable", 100)]
        ]
    else:
        assert done.approved_by == "alice" and actuator.applied == []


def test_the_command_table_only_asks_for_allowed_transitions() -> None:
    for which, phases in COMMAND_PHASES.items():
        for phase in phases:
            target = COMMAND_TARGETS.get(which)
            assert target is None or can_transition(phase, target), (which, phase)
        assert not any(phase.terminal for phase in phases)


async def test_a_refused_rollback_leaves_an_awaiting_promotion_that_approval_moves_on() -> None:
    """Rolling back a promotion that awaits approval is a conflict that changes nothing: its
    runner still waits, so a later approval promotes it."""
    ledger = MemoryLedger()
    controller, _ = build(ledger, SystemClock(), interval="1m", approval=True)
    waiting = await controller.create(
        release("a", "1.0.0"), "staging", upstream="http://127.0.0.1:9001"
    )
    with pytest.raises(ConflictError, match=r"awaiting_approval.*abort it instead"):
        await controller.abort(waiting.id, "bob", rollback=True)
    await controller.approve(waiting.id, "amy")
    with pytest.raises(ConflictError, match=r"already approved by amy|already ended"):
        await controller.approve(waiting.id, "amy")
    done = await asyncio.wait_for(controller.wait_finished(waiting.id), 5)
    assert (done.phase, done.approved_by) == (Phase.PROMOTED, "amy")
    await controller.stop()


async def test_aborting_a_first_release_that_awaits_approval_routes_nothing() -> None:
    """With no stable release to go back to, an abort before approval moves no traffic
    (before, it sent everything to the release it aborted)."""
    ledger = MemoryLedger()
    controller, actuator = build(ledger, SystemClock(), interval="1m", approval=True)
    waiting = await controller.create(
        release("a", "1.0.0"), "staging", upstream="http://127.0.0.1:9001"
    )
    aborted = await controller.abort(waiting.id, "bob")
    assert aborted.phase is Phase.ABORTED
    assert actuator.applied == []
    assert await ledger.stable_history("demo", "staging") == []
    await controller.stop()


# --- actuations that fail for good, and ones that may recover -------------------------------


class CountingActuator(RecordingActuator):
    """Counts every apply, failed ones too."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    async def apply(self, state: Any) -> None:
        self.attempts += 1
        await super().apply(state)


def counting(ledger: MemoryLedger, **policy_options: Any) -> tuple[Controller, CountingActuator]:
    actuator = CountingActuator()
    controller = build_on(ledger, actuator, FakeClock())
    controller.ctx.policy = policy(**policy_options)
    return controller, actuator


def failure_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Each "actuation failed" record once, whichever handlers saw it."""
    unique = {id(r): r for r in caplog.records if r.getMessage() == "actuation failed"}
    return list(unique.values())


@pytest.fixture
def engine_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Captures the engine's logs also where promgate's logger does not propagate."""
    logger = logging.getLogger("promgate")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    yield caplog
    logger.removeHandler(caplog.handler)


async def test_a_permanently_refused_actuation_is_never_retried(
    engine_logs: pytest.LogCaptureFixture,
) -> None:
    """A state the actuator refuses for good is tried once, logged and recorded once, and
    the retrier leaves it alone however often it runs."""
    ledger = MemoryLedger()
    controller, actuator = counting(ledger)
    actuator.error = ActuationError("receiver refused the state with HTTP 400", permanent=True)
    done = await first_release(controller)
    assert done.phase is Phase.PROMOTED and actuator.attempts == 1
    for hours in range(1, 6):
        await controller.retry_due(time.monotonic() + 3600 * hours)
    assert actuator.attempts == 1
    events = [e for e in await ledger.events(done.id) if e.kind == "actuation_failed"]
    assert [(e.data["sequence"], e.data["permanent"]) for e in events] == [(1, True)]
    assert len(failure_logs(engine_logs)) == 1
    assert await ledger.stable_history("demo", "staging") == []  # it never served
    await controller.stop()


async def test_a_transient_failure_is_retried_with_a_bounded_backoff_and_logged_once(
    engine_logs: pytest.LogCaptureFixture,
) -> None:
    """Each failed retry doubles the wait up to a bound; the failure is logged once per
    state, not at every retry; once the actuator recovers, the state applies."""
    ledger = MemoryLedger()
    controller, actuator = counting(ledger)
    actuator.error = ActuationError("receiver unreachable")
    done = await first_release(controller)
    waits = []
    for _ in range(8):
        failed = controller.ctx.unapplied[done.id]
        waits.append(round(failed.retry_at - time.monotonic()))
        await controller.retry_due(time.monotonic())  # not due yet: nothing is tried
        await controller.retry_due(failed.retry_at)
    assert waits == [2, 4, 8, 16, 32, 60, 60, 60]
    assert actuator.attempts == 1 + 8
    assert len(failure_logs(engine_logs)) == 1
    assert len([e for e in await ledger.events(done.id) if e.kind == "actuation_failed"]) == 1
    actuator.error = None
    await controller.retry_due(controller.ctx.unapplied[done.id].retry_at)
    assert done.id not in controller.ctx.unapplied
    assert [h.promotion_id for h in await ledger.stable_history("demo", "staging")] == [done.id]
    await controller.stop()


async def test_a_superseded_failed_actuation_is_dropped_not_retried() -> None:
    """Once a newer promotion owns the stage's traffic, an older one's failed split is
    never sent: it would take the traffic back."""
    ledger = MemoryLedger()
    controller, actuator = counting(ledger)
    actuator.error = ActuationError("receiver unreachable")
    first = await first_release(controller, "qa")
    actuator.error = None
    second = await controller.create(release("b", "1.1.0"), "qa", upstream="http://127.0.0.1:9002")
    await controller.wait_finished(second.id)
    attempts = actuator.attempts
    await controller.retry_due(time.monotonic() + 3600)
    assert actuator.attempts == attempts and first.id not in controller.ctx.unapplied
    await controller.stop()


async def test_an_active_promotion_whose_split_is_refused_for_good_is_aborted() -> None:
    """A canary whose next split the actuator refuses permanently cannot go on: it ends
    aborted (traffic back to stable) instead of retrying at every interval forever."""
    ledger = MemoryLedger()
    controller, actuator = counting(ledger)
    await first_release(controller)
    actuator.error = ActuationError("no listener for stage", permanent=True)
    candidate = await controller.create(
        release("b", "1.1.0"), "staging", upstream="http://127.0.0.1:9002"
    )
    done = await asyncio.wait_for(controller.wait_finished(candidate.id), 5)
    assert done.phase is Phase.ABORTED
    assert "refuses this promotion's traffic state: no listener for stage" in done.reason
    assert actuator.attempts <= 4
    await controller.stop()


async def test_the_actuators_problems_refuse_a_release_before_anything_is_stored() -> None:
    """What the actuator says it needs (an upstream, a listener) refuses the release as bad
    input, naming the field, and stores nothing."""
    ledger = MemoryLedger()
    controller, actuator = build(ledger, FakeClock())
    actuator.problems = [Problem("upstream", "the candidate has no upstream", "give one")]
    with pytest.raises(RequestError) as refused:
        await controller.create(release("a", "1.0.0"), "staging")
    assert [p.path for p in refused.value.problems] == ["upstream"]
    assert await ledger.list() == [] and actuator.applied == []
    await controller.stop()


class SlowPromotedSave(MemoryLedger):
    """Saves a promotion as promoted only once ``go`` is set, finishing the save even when
    the caller is cancelled meanwhile, as the SQLite ledger finishes a write in its thread."""

    def __init__(self) -> None:
        super().__init__()
        self.saving, self.go = asyncio.Event(), asyncio.Event()

    async def commit(self, transaction: Any) -> Any:
        saved = transaction.save
        if saved is None or saved.phase is not Phase.PROMOTED or saved.baseline is None:
            return await super().commit(transaction)

        async def save_when_told() -> Any:
            self.saving.set()
            await self.go.wait()
            return await MemoryLedger.commit(self, transaction)

        future = asyncio.ensure_future(save_when_told())
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await asyncio.wait({future})
            raise


async def test_an_abort_that_stops_a_runner_as_it_promotes_finishes_the_promoted_split() -> None:
    """An abort whose cancel lands while the runner's save of "promoted" is under way is
    refused (the promotion has ended), and the promoted split the cancel cut short is
    applied and recorded, not left for a restart."""
    ledger = SlowPromotedSave()
    actuator = RecordingActuator()
    controller = build_on(ledger, actuator, FakeClock())
    await first_release(controller, "qa")
    candidate = await controller.create(
        release("b", "1.1.0"), "qa", upstream="http://127.0.0.1:9002"
    )
    await asyncio.wait_for(ledger.saving.wait(), 5)
    runner = controller._tasks[candidate.id]
    abort = asyncio.create_task(controller.abort(candidate.id, "bob"))

    async def cancelling() -> bool:
        return runner.cancelling() > 0

    await wait_until(cancelling, 5, what="the runner to be cancelled", interval_s=0.001)
    ledger.go.set()
    with pytest.raises(ConflictError, match="it is promoted; it has already ended"):
        await abort
    assert [(b.digest, b.weight) for b in actuator.applied[-1].backends] == [
        (candidate.artifact.digest, 100)
    ]
    history = await ledger.stable_history("demo", "qa")
    assert history[-1].promotion_id == candidate.id
    await controller.stop()


class FailingOnce(NullMetricsSource):
    """A source whose first queries fail with an error no seam expects, like a bug would."""

    def __init__(self, failures: int) -> None:
        self.failures = failures

    async def query(self, promql: str) -> Measurement:
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("unexpected")
        return await super().query(promql)


async def test_an_evaluation_that_fails_unexpectedly_holds_the_promotion_and_goes_on() -> None:
    """An unexpected error in one evaluation is logged and recorded; the runner carries on
    at the next interval, so the promotion still ends (here inconclusive, as no data)."""
    ledger = MemoryLedger()
    controller, _ = build(ledger, FakeClock(), FailingOnce(failures=2), no_data="30s")
    await controller.start()
    await first_release(controller)
    candidate = await controller.create(
        release("b", "1.1.0"), "staging", upstream="http://127.0.0.1:9002"
    )
    done = await asyncio.wait_for(controller.wait_finished(candidate.id), 10)
    assert done.phase is Phase.INCONCLUSIVE
    failed = [e for e in await ledger.events(candidate.id) if e.kind == "evaluation_failed"]
    assert [e.data["error"] for e in failed] == ["RuntimeError"]
    await controller.stop()
