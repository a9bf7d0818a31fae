"""The sidecar killed with SIGKILL mid-canary resumes where it was, without repeating itself."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from typing import Any

import pytest

from sidecar.analysis.prometheus import PrometheusSource
from tests.e2e.conftest import (
    Stack,
    StackFactory,
    WebhookReceiver,
    bounded,
    demo_digest,
    past_progressing,
)
from tests.support.processes import metric_value, wait_for_value

pytestmark = pytest.mark.e2e

STAGE = "production"
STABLE, CANDIDATE = "1.0.0", "1.1.0"
LOAD_RPS = 60.0


def _passes_at_first_step(event: dict[str, Any]) -> bool:
    data = event["data"]
    return event["kind"] == "verdict" and data.get("decision") == "pass" and data["step"] == 0


async def _canary_past_its_first_evaluation(
    stack_factory: StackFactory, receiver: WebhookReceiver
) -> tuple[Stack, str]:
    """A canary routed by the webhook receiver under load, once its first step has passed
    an evaluation: the moment the restart tests kill the sidecar."""
    stack = await stack_factory(versions={STAGE: [STABLE, CANDIDATE]}, receiver=receiver)
    await stack.seed(STAGE, STABLE)
    stack.start_weighted_load(STAGE, LOAD_RPS)
    await stack.wait_scraped()
    promotion_id = await stack.start_promotion(CANDIDATE, STAGE)
    await stack.wait_event(
        promotion_id, _passes_at_first_step, 20, "a passing evaluation in the first step"
    )
    return stack, promotion_id


@bounded(120)
async def test_killed_sidecar_resumes_the_step_and_never_repeats_an_actuation(
    stack_factory: StackFactory, webhook_receiver: WebhookReceiver
) -> None:
    """SIGKILL at step 1 of a canary driven through the webhook: the restarted sidecar
    resumes at the same step, sends every (promotion, sequence) once and promotes."""
    stack, promotion_id = await _canary_past_its_first_evaluation(stack_factory, webhook_receiver)

    before = await stack.client.get(promotion_id)
    assert await stack.kill_sidecar() == -signal.SIGKILL
    delivered_before_kill = len(webhook_receiver.deliveries)
    await stack.start_sidecar()
    after = await stack.client.get(promotion_id)

    assert (before["phase"], before["step_index"], before["weight"]) == ("progressing", 0, 25)
    assert webhook_receiver.sequences(promotion_id) == [before["actuation_seq"]] == [1]
    resumed = [e for e in await stack.events(promotion_id) if e["kind"] == "resumed"]
    assert len(resumed) == 1, resumed
    assert (resumed[0]["data"]["step"], resumed[0]["data"]["weight"]) == (0, 25), resumed
    assert after["step_index"] in (0, 1), after  # it may already have moved on since
    final = await stack.wait_promotion(
        promotion_id,
        past_progressing,
        60,
        "the resumed promotion to end",
    )
    assert final["phase"] == "promoted", final

    keys = [(d.promotion_id, d.sequence) for d in webhook_receiver.deliveries]
    assert not [k for k, n in Counter(keys).items() if n > 1], keys
    for delivery in webhook_receiver.deliveries:
        assert delivery.idempotency_key == f"{delivery.promotion_id}:{delivery.sequence}"
        assert delivery.sequence_header == str(delivery.sequence)
    assert webhook_receiver.sequences(promotion_id) == [1, 2, 3], keys
    after_restart = webhook_receiver.deliveries[delivered_before_kill:]
    assert after_restart and all(d.promotion_id == promotion_id for d in after_restart)
    assert min(d.sequence for d in after_restart) > before["actuation_seq"]
    weights = [
        {b["digest"]: b["weight"] for b in d.state["backends"]}
        for d in webhook_receiver.deliveries
        if d.promotion_id == promotion_id
    ]
    stable, candidate = demo_digest(STABLE), demo_digest(CANDIDATE)
    assert weights == [
        {stable: 75, candidate: 25},
        {stable: 50, candidate: 50},
        {candidate: 100},
    ], weights
    assert webhook_receiver.rejected == []
    assert final["actuation_seq"] == 3, final


@bounded(90)
async def test_killed_sidecar_restores_the_proxy_split_before_it_serves_again(
    stack_factory: StackFactory,
) -> None:
    """SIGKILL mid-canary with the built-in proxy: once ready again, the proxy routes the
    split the promotion was at, and the promotion still ends promoted."""
    stack = await stack_factory(versions={STAGE: [STABLE, CANDIDATE]})
    await stack.seed(STAGE, STABLE)
    stack.start_load(STAGE, LOAD_RPS)
    await stack.wait_scraped()
    promotion_id = await stack.start_promotion(CANDIDATE, STAGE)
    await stack.wait_event(
        promotion_id, _passes_at_first_step, 20, "a passing evaluation in the first step"
    )

    assert await stack.kill_sidecar() == -signal.SIGKILL
    await stack.start_sidecar()
    metrics = await stack.sidecar_metrics()  # the first evaluation after start waits
    bodies = await stack.sample(STAGE, 40)

    split = {
        version: metric_value(
            metrics,
            "promgate_proxy_backend_weight",
            {"stage": STAGE, "role": role, "digest": demo_digest(version)},
        )
        for version, role in ((STABLE, "stable"), (CANDIDATE, "candidate"))
    }
    assert split == {STABLE: 75, CANDIDATE: 25}, split
    assert set(bodies) == {f"hello from {STABLE}", f"hello from {CANDIDATE}"}, bodies
    resumed = [e for e in await stack.events(promotion_id) if e["kind"] == "resumed"]
    assert [(e["data"]["step"], e["data"]["weight"]) for e in resumed] == [(0, 25)], resumed
    final = await stack.wait_promotion(
        promotion_id,
        past_progressing,
        60,
        "the resumed promotion to end",
    )
    assert final["phase"] == "promoted", final
    assert await stack.sample(STAGE, 20) == {f"hello from {CANDIDATE}": 20}


DOWNTIME_S = 8.0  # longer than the 5 s step: were it counted, the step would be over
STEP_S = 5.0


def _judged(event: dict[str, Any]) -> bool:
    return event["kind"] in ("verdict", "step") and bool(event["data"].get("gates"))


@bounded(120)
async def test_traffic_served_while_down_is_judged_and_the_downtime_is_not_step_time(
    stack_factory: StackFactory, webhook_receiver: WebhookReceiver
) -> None:
    """SIGKILL mid-step while the traffic goes on (routed by the webhook receiver), 8 s
    down, restart: the first evaluation judges every candidate request served meanwhile,
    and the step still runs its 5 s of watched time, the downtime not counted."""
    stack, promotion_id = await _canary_past_its_first_evaluation(stack_factory, webhook_receiver)
    source = PrometheusSource(stack.prometheus_url)
    served = f'sum(demo_requests_total{{stage="{STAGE}", digest="{demo_digest(CANDIDATE)}"}})'
    try:
        assert await stack.kill_sidecar() == -signal.SIGKILL
        at_kill = await source.query(served)
        await asyncio.sleep(DOWNTIME_S)  # the downtime itself is what is tested
        at_restart = await wait_for_value(source, served)
        await stack.start_sidecar()
    finally:
        await source.close()
    assert at_kill.value is not None and at_restart.value is not None
    served_while_down = at_restart.value - at_kill.value
    assert served_while_down >= 0.5 * LOAD_RPS * 0.25 * DOWNTIME_S, served_while_down

    resumed = await stack.wait_event(promotion_id, lambda e: e["kind"] == "resumed", 5, "resumed")
    first = await stack.wait_event(
        promotion_id, _judged, 20, "an evaluation after the restart", after=resumed["seq"]
    )
    gates = {g["gate"]: g for g in first["data"]["gates"]}
    assert all(g["requests"] is not None for g in gates.values()), gates
    assert gates["error-ratio"]["requests"] >= served_while_down, (served_while_down, gates)
    assert gates["error-ratio"]["result"] == "pass", gates

    moved = await stack.wait_event(
        promotion_id, lambda e: e["kind"] == "step" and e["data"]["step"] == 1, 30,
        "the second step", after=resumed["seq"],
    )  # fmt: skip
    events = await stack.events(promotion_id)
    began = next(e for e in events if e["kind"] == "step" and e["data"]["step"] == 0)
    last_before = max(e["at"] for e in events if _judged(e) and e["seq"] < resumed["seq"])
    unwatched = first["at"] - last_before
    assert unwatched >= DOWNTIME_S, unwatched
    watched = moved["at"] - began["at"] - unwatched
    assert watched >= STEP_S, (watched, unwatched)


@bounded(150)
async def test_promote_wait_rides_over_a_sidecar_restart(stack_factory: StackFactory) -> None:
    """`promote --wait` runs as a process while the sidecar is killed and started again
    mid-canary: it reconnects, shows each step once and exits 0 on promotion. Meanwhile a
    second `promote` of the release is refused with the command that re-attaches, and
    that command (`status ID --wait`) exits 0 once the promotion has ended."""
    stack = await stack_factory(versions={STAGE: [STABLE, CANDIDATE]})
    await stack.seed(STAGE, STABLE)
    stack.start_load(STAGE, LOAD_RPS)
    await stack.wait_scraped()
    waiting = stack.promote_in_background(CANDIDATE, STAGE)
    promotion_id = await stack.active_promotion(STAGE)
    await stack.wait_event(
        promotion_id, _passes_at_first_step, 20, "a passing evaluation in the first step"
    )

    again = await stack.cli(
        "promote", "--manifest", str(stack.manifest_file(CANDIDATE)), "--stage", STAGE,
        "--upstream", stack.service(CANDIDATE, STAGE).url,
    )  # fmt: skip
    assert again.code == 1, again
    assert f"follow it with `promgate status {promotion_id} --wait`" in again.stderr, again
    assert not waiting.done()
    assert await stack.kill_sidecar() == -signal.SIGKILL
    await stack.start_sidecar()
    followed = await waiting

    assert followed.code == 0, followed
    lines = followed.stdout.splitlines()
    assert lines[0] == f"promotion {promotion_id}", followed
    assert lines[-1].startswith("promoted: "), followed
    assert len([line for line in lines if line.startswith("sidecar unreachable (")]) == 1
    assert [line for line in lines if line == "resumed" or line.startswith("resumed:")], lines
    for step in ("step 1: weight 25%", "step 2: weight 50%"):
        assert len([line for line in lines if line.startswith(step)]) == 1, followed
    steps_in_ledger = [e for e in await stack.events(promotion_id) if e["kind"] == "step"]
    assert len([line for line in lines if line.startswith("step ")]) == len(steps_in_ledger)
    reattached = await stack.cli("status", promotion_id, "--wait", timeout_s=30)
    assert reattached.code == 0, reattached
    assert reattached.stdout.splitlines()[-1] == lines[-1], reattached
