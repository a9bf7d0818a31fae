"""Blue-green promotions end to end: preview, switch, post-promotion analysis, switch-back."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import (
    REGRESSION,
    StackFactory,
    bounded,
    demo_digest,
    gates_of,
    past_progressing,
)

pytestmark = pytest.mark.e2e

STAGE = "staging"
V1, V2, V3 = "1.0.0", "1.1.0", "1.2.0"
LIVE_RPS, PREVIEW_RPS = 40.0, 20.0
PREVIEW_S, POST_PROMOTION_S = 4.0, 8.0  # examples/e2e-policy.yaml


def _kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["kind"] for e in events if e["kind"] not in ("verdict", "actuation")]


def _actuations(events: list[dict[str, Any]]) -> list[dict[str, int]]:
    """Each actuation as {version digest: weight}, plus the preview digest under 'preview'."""
    applied = []
    for event in events:
        if event["kind"] == "actuation":
            split = {b["digest"]: b["weight"] for b in event["data"]["backends"]}
            if event["data"]["preview"]:
                split["preview:" + event["data"]["preview"]] = 0
            applied.append(split)
    return applied


@bounded(120)
async def test_blue_green_promotes_through_preview_then_switches_back_on_regression(
    stack_factory: StackFactory,
) -> None:
    """V2 passes preview and post-promotion; V3 regresses after the switch and is switched
    back to V2 at once."""
    stack = await stack_factory(versions={STAGE: [V1, V2, V3]})
    await stack.seed(STAGE, V1)
    stack.start_load(STAGE, LIVE_RPS)
    preview_load = stack.start_load(STAGE, PREVIEW_RPS, preview=True)
    await stack.wait_scraped()

    first = await stack.promote_in_background(V2, STAGE)

    assert first.code == 0, first
    first_id = first.stdout.split()[1]
    events = await stack.events(first_id)
    assert _kinds(events) == ["created", "step", "switched", "promoted"], _kinds(events)
    by_kind = {e["kind"]: e for e in events}
    assert (by_kind["step"]["data"]["phase"], by_kind["step"]["data"]["weight"]) == (
        "progressing",
        0,
    )
    assert by_kind["switched"]["data"]["phase"] == "post_promotion"
    assert by_kind["switched"]["at"] - by_kind["step"]["at"] >= PREVIEW_S
    assert by_kind["promoted"]["at"] - by_kind["switched"]["at"] >= POST_PROMOTION_S
    # The evaluation that switched judged the preview; the one that promoted, the switch.
    for deciding in (by_kind["switched"], by_kind["promoted"]):
        assert deciding["data"]["decision"] == "pass", deciding
        gates = deciding["data"]["gates"]
        assert gates and all(g["result"] == "pass" and g["requests"] >= 10 for g in gates)
    assert _actuations(events) == [
        {demo_digest(V1): 100, "preview:" + demo_digest(V2): 0},  # preview slot only
        {demo_digest(V2): 100, demo_digest(V1): 0},  # switched; the old slot kept
        {demo_digest(V2): 100, demo_digest(V1): 0},  # promoted; old slot retained a while
    ]
    assert [e for e in events if e["kind"] == "actuation"][-1]["data"]["backends"][1][
        "retain_until"
    ], "the old slot is retained until keepPrevious ends"
    assert preview_load.stats.bodies[f"hello from {V2}"] > 0, preview_load.stats
    assert "previous_kept_until" in (await stack.client.get(first_id))["extra"]
    assert await stack.sample(STAGE, 30) == {f"hello from {V2}": 30}

    running = stack.promote_in_background(V3, STAGE)
    second_id = await stack.active_promotion(STAGE)
    switched = await stack.wait_promotion(
        second_id,
        past_progressing,
        30,
        "V3's preview to pass",
    )
    assert switched["phase"] == "post_promotion", switched
    await stack.service(V3, STAGE).fault(**REGRESSION)
    second = await running

    assert second.code == 1, second
    promotion = await stack.client.get(second_id)
    assert (promotion["phase"], promotion["classification"]) == ("rolled_back", "persistent")
    assert "breach 3 of 3" in promotion["reason"], promotion
    events = await stack.events(second_id)
    assert _kinds(events) == ["created", "step", "switched", "rolled_back"], _kinds(events)
    breaches = [
        (e["kind"], e["data"]["phase"], g["classification"])
        for e, g in gates_of(events)
        if g["result"] == "breach"
    ]
    judged_breaches = {b for b in breaches if b[0] == "verdict"}
    assert judged_breaches == {("verdict", "post_promotion", "transient")}, breaches
    assert ("rolled_back", "rolled_back", "persistent") in breaches, breaches
    assert _actuations(events)[-1] == {demo_digest(V2): 100}, _actuations(events)
    history = await stack.client.history("demo", STAGE)
    assert [h["version"] for h in history] == [V1, V2], history
    assert await stack.sample(STAGE, 30) == {f"hello from {V2}": 30}

    # After a completed promotion, one command goes back one stable digest.
    back = await stack.cli("rollback", "--service", "demo", "--stage", STAGE)
    assert back.code == 0, back
    assert f"demo in {STAGE}: {V2} " in back.stdout and f"-> {V1} " in back.stdout, back
    history = await stack.client.history("demo", STAGE)
    assert [h["version"] for h in history] == [V1], history
    assert await stack.sample(STAGE, 30) == {f"hello from {V1}": 30}
