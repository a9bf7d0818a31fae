"""The engine against real in-process parts: memory ledger, recording actuator, no metrics.

Judging on real Prometheus data is covered end to end in tests/e2e; here the subject is
what the engine does with state: first releases, approvals, timeouts, aborts, refusals,
and resuming after a restart without repeating an actuation or starting the sequential
tests over (the one place here that reads a real Prometheus, for counts to save).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from sidecar.analysis.judge import StepCounts
from sidecar.analysis.prometheus import MetricsSource, NullMetricsSource, PrometheusSource
from sidecar.domain.promotion import Phase, Promotion, PromotionEvent
from sidecar.engine.clock import Clock, SystemClock
from sidecar.engine.context import EngineContext
from sidecar.engine.controller import Controller
from sidecar.engine.runner import EVIDENCE, PromotionRunner
from sidecar.errors import ActuationError, MetadataGateError, NotFoundError, StageOrderError
from sidecar.ledger.memory import MemoryLedger
from sidecar.localrun import wait_until
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
