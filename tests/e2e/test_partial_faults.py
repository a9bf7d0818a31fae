"""A partial Prometheus fault (one query of a ratio gate empty, the other answering)
holds judging back and never rolls a release back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import BASE_LATENCY_MS, StackFactory, bounded, demo_digest, gates_of
from tests.e2e.test_sequential import sequential_policy
from tests.support.fault_proxy import FaultyPrometheus

pytestmark = pytest.mark.e2e

STAGE = "production"
STABLE, CANDIDATE = "1.0.0", "1.1.0"
LOAD_RPS = 60.0
ERROR_RATE = 0.02
WARM_UP_REQUESTS = 1000  # served before the promotion: some 20 errors already counted
FAULT_S = 4.0


async def warm_up(url: str, requests: int) -> None:
    """Serve ``requests`` straight to one service, 20 at a time."""

    async def some(session: aiohttp.ClientSession, count: int) -> None:
        for _ in range(count):
            async with session.get(url + "/") as response:
                await response.read()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await asyncio.gather(*(some(session, requests // 20) for _ in range(20)))


@bounded(120)
async def test_an_empty_bad_query_for_a_few_seconds_does_not_roll_back(
    stack_factory: StackFactory, workdir: Path
) -> None:
    """Both versions fail 2%. For 4 s mid-step the candidate's bad-event query comes back
    empty while its total answers: those evaluations have no evidence (and say which
    query matched nothing), the errors counted before the gap stay out of the next
    window, and the release is promoted."""
    stack = await stack_factory(versions={STAGE: [STABLE, CANDIDATE]},
                                policy=sequential_policy(workdir))  # fmt: skip
    proxy = FaultyPrometheus(stack.prometheus_url)
    try:
        front = await proxy.start()
        assert stack.sidecar is not None
        await stack.sidecar.stop()  # the sidecar now queries Prometheus through the proxy
        stack.prometheus_url = front
        await stack.start_sidecar()
        for version in (STABLE, CANDIDATE):
            await stack.service(version, STAGE).fault(
                error_rate=ERROR_RATE, latency_ms=BASE_LATENCY_MS, duration_s=None
            )
        await warm_up(stack.service(CANDIDATE, STAGE).url, WARM_UP_REQUESTS)
        await stack.seed(STAGE, STABLE)
        stack.start_load(STAGE, LOAD_RPS)
        await stack.wait_scraped()

        result = stack.promote_in_background(CANDIDATE, STAGE)
        promotion_id = await stack.active_promotion(STAGE)
        await stack.wait_event(
            promotion_id,
            lambda e: e["kind"] == "verdict" and e["data"]["step"] == 0,
            20,
            "an evaluation in the first step",
        )
        proxy.emptying = ('code=~"5.."', demo_digest(CANDIDATE))
        await asyncio.sleep(FAULT_S)  # the fault's length is what is tested
        proxy.emptying = ()
        outcome = await result
    finally:
        await proxy.stop()

    assert outcome.code == 0, outcome
    assert proxy.emptied, "the fault never hit a query"
    gates = [g for _, g in gates_of(await stack.events(promotion_id))]
    gaps = [g for g in gates if "candidate bad query matched nothing after" in g["reason"]]
    assert gaps and all(g["result"] == "no_data" for g in gaps), [g["reason"] for g in gates]
    assert demo_digest(CANDIDATE) in gaps[0]["reason"]
    ratios = [g["value"] for g in gates if g["gate"] == "error-ratio" and g["value"] is not None]
    assert ratios and max(ratios) < 0.6, ratios
