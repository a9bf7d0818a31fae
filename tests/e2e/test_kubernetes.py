"""Kubernetes mode end to end: two replicas, the route and the workloads in the API server.

See :mod:`tests.e2e.kube_stack` for what stands for the cluster. Each test seeds the first
release, then promotes another through the leader's API and checks what a user would
check with kubectl: the route's weights, the workloads' images, the Lease.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sidecar.client import ApiClient
from sidecar.kube.api import PROMOTION
from sidecar.local.demo import demo_manifest
from tests.e2e.conftest import bounded, wait_promotion
from tests.e2e.kube_stack import (
    PROMGATE_NAMESPACE,
    STAGE,
    KubeStack,
    http_route,
    image,
    rule_weights,
)
from tests.support.processes import wait_until

pytestmark = pytest.mark.e2e

STABLE, CANDIDATE = "1.0.0", "1.1.0"
LOAD_RPS = 60.0
CANARY_WEIGHTS = [(75, 25), (50, 50), (100, 0)]  # steps 25 and 50, then promoted


@pytest.fixture
async def kube_stack(workdir: Path) -> AsyncIterator[KubeStack]:
    stack = KubeStack(workdir, [STABLE, CANDIDATE])
    try:
        yield await stack.start()
    finally:
        await stack.stop()


ENDED = {"promoted", "rolled_back", "aborted"}


async def ended(client: ApiClient, promotion_id: str) -> dict[str, Any]:
    return await wait_promotion(
        client, promotion_id, lambda p: p["phase"] in ENDED, 90, f"{promotion_id} to end"
    )


async def routed_back(stack: KubeStack) -> None:
    """Until the final split has reached the cluster (a phase is saved before its traffic
    moves): the route sends everything to the stable Service, the candidate scaled to 0."""

    async def settled() -> bool:
        candidate = stack.deployment("demo-candidate")
        scaled_down = candidate is not None and candidate["spec"]["replicas"] == 0
        return rule_weights(stack.route()) == (100, 0) and scaled_down

    await wait_until(settled, 30, what="the route at 100/0 and the candidate scaled to 0")


async def seeded(stack: KubeStack) -> ApiClient:
    """The first release promoted through the leader; load on the route; both scraped."""
    leader = await stack.leader()
    client = stack.client(leader)
    first = await client.create(demo_manifest(STABLE), STAGE)
    assert (await ended(client, first["id"]))["phase"] == "promoted"
    assert stack.route_weights_written() == [], "the first release needs no route change"
    stack.start_load(LOAD_RPS)
    await stack.wait_scraped()
    return client


@bounded(120)
async def test_a_healthy_canary_moves_the_route_and_pins_the_stable_workload(
    kube_stack: KubeStack,
) -> None:
    client = await seeded(kube_stack)
    async with client:
        done = await ended(client, (await client.create(demo_manifest(CANDIDATE), STAGE))["id"])

    assert done["phase"] == "promoted", done
    await routed_back(kube_stack)
    assert kube_stack.route_weights_written() == CANARY_WEIGHTS
    route = kube_stack.route()
    assert route["spec"]["rules"][1:] == http_route()["spec"]["rules"][1:], "another rule moved"
    assert {k: v for k, v in route["spec"].items() if k != "rules"} == {
        k: v for k, v in http_route()["spec"].items() if k != "rules"
    }
    assert kube_stack.image_of("demo") == image(CANDIDATE)
    promotion = kube_stack.server.object(PROMOTION, PROMGATE_NAMESPACE, done["id"])
    assert promotion is not None
    assert promotion["status"]["phase"] == "promoted", promotion["status"]


@bounded(120)
async def test_a_regression_is_rolled_back_to_the_stable_service_and_prior_digest(
    kube_stack: KubeStack,
) -> None:
    client = await seeded(kube_stack)
    await kube_stack.fault(CANDIDATE, error_rate=0.3, latency_ms=20, duration_s=None)
    async with client:
        done = await ended(client, (await client.create(demo_manifest(CANDIDATE), STAGE))["id"])

    assert done["phase"] == "rolled_back", done
    await routed_back(kube_stack)
    written = kube_stack.route_weights_written()
    assert written[0] == (75, 25) and written[-1] == (100, 0), written
    assert rule_weights(kube_stack.route()) == (100, 0)
    assert kube_stack.image_of("demo") == image(STABLE)


@bounded(150)
async def test_the_other_replica_finishes_a_canary_whose_leader_was_killed(
    kube_stack: KubeStack,
) -> None:
    client = await seeded(kube_stack)
    leader = await kube_stack.leader()
    follower = next(r for r in kube_stack.replicas if r is not leader)
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.post(
            f"{follower.url}/v1/promotions",
            json={"manifest": demo_manifest(CANDIDATE), "stage": STAGE},
            headers={"Authorization": f"Bearer {kube_stack.token}"},
        ) as refused,
    ):
        assert refused.status == 503, await refused.text()
        assert int(refused.headers["Retry-After"]) >= 1
        assert leader.identity in await refused.text()
    created = await client.create(demo_manifest(CANDIDATE), STAGE)
    await client.close()

    async def first_step_routed() -> bool:
        return kube_stack.route_weights_written() == CANARY_WEIGHTS[:1]

    await wait_until(first_step_routed, 30, what="the first canary step to reach the route")
    assert leader.process is not None
    await leader.process.kill()

    survivor = kube_stack.client(follower)
    try:
        await kube_stack.leader(follower.identity)
        done = await ended(survivor, created["id"])
    finally:
        await survivor.close()

    assert done["phase"] == "promoted", done
    await routed_back(kube_stack)
    assert kube_stack.route_weights_written() == CANARY_WEIGHTS, "a route write repeated or lost"
    assert kube_stack.image_of("demo") == image(CANDIDATE)
