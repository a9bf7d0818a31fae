"""What leadership changes for the rest of promgate: a follower's API answers, the
client riding over a failover, the engine's fence, and the sidecar starting its controller
only while it leads. Leases live in the contract API server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from opentelemetry.sdk.trace import TracerProvider

from sidecar.analysis.prometheus import NullMetricsSource
from sidecar.api.app import build_api
from sidecar.api.auth import TokenTable
from sidecar.app import Sidecar
from sidecar.client import ApiClient
from sidecar.domain.policy import parse_policy_text
from sidecar.engine.clock import SystemClock
from sidecar.engine.context import EngineContext
from sidecar.engine.controller import Controller
from sidecar.errors import NotLeaderError, SettingsError
from sidecar.kube.api import LEASE, KubeApi
from sidecar.kube.client import connect
from sidecar.leadership.base import AlwaysLeader
from sidecar.leadership.election import format_micro_time
from sidecar.leadership.lease import LeaseLeadership
from sidecar.ledger.memory import MemoryLedger
from sidecar.settings import Settings
from sidecar.telemetry.metrics import PrometheusRecorder
from sidecar.testing import RecordingActuator
from tests.conftest import HttpServer
from tests.kubeapi import ContractApiServer
from tests.support.kube import contract_server
from tests.support.manifests import manifest
from tests.support.processes import free_port, wait_until

NS = "default"
TOKEN = "admin-token-for-tests"
TOKENS = TokenTable.from_pairs([("admin", "ops", TOKEN)])
AUTH = {"Authorization": f"Bearer {TOKEN}"}
POLICY = """apiVersion: promgate/v1
kind: PromotionPolicy
metadata: {name: leader}
version: "1"
analysis: {interval: 1s, confirm: 1, noDataTimeout: 5m, maxProviderHold: 5m}
stages:
  - name: production
    strategy: {canary: {steps: [10, 20, 30, 40, 50, 60, 70, 80, 90], stepDuration: 1s}}
"""


@pytest.fixture
async def server() -> AsyncIterator[ContractApiServer]:
    async with contract_server() as running:
        yield running


@pytest.fixture
async def kube(server: ContractApiServer, tmp_path: Path) -> AsyncIterator[KubeApi]:
    api = await connect(server.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS))
    yield api
    await api.close()


def release(digest_char: str, version: str) -> dict[str, Any]:
    return manifest(digest_char=digest_char, version=version, tag=version)


def held_by(server: ContractApiServer, identity: str, duration_s: int) -> None:
    """A Lease another replica holds, renewed just now."""
    now = format_micro_time(datetime.now(UTC))
    server.seed(
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "promgate", "namespace": NS},
            "spec": {
                "holderIdentity": identity,
                "leaseDurationSeconds": duration_s,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }
    )


def controller(ledger: MemoryLedger, actuator: RecordingActuator, leadership: Any) -> Controller:
    return Controller(
        EngineContext(
            policy=parse_policy_text(POLICY, "leader-policy"),
            ledger=ledger,
            actuator=actuator,
            source=NullMetricsSource(),
            recorder=PrometheusRecorder(),
            tracer=TracerProvider().get_tracer("test"),
            clock=SystemClock(),
            may_act=leadership.may_act,
        )
    )


async def following(leadership: LeaseLeadership, leader: str) -> None:
    async def seen() -> bool:
        return leadership.leader == leader

    await wait_until(seen, 3, what=f"{leadership.identity} following {leader}", interval_s=0.01)


async def leading(leadership: LeaseLeadership, within_s: float = 3) -> None:
    async def acting() -> bool:
        return leadership.may_act()

    await wait_until(acting, within_s, what=f"{leadership.identity} leading", interval_s=0.01)


async def test_a_follower_serves_reads_and_refuses_writes_naming_the_leader(
    server: ContractApiServer, kube: KubeApi, http_server: HttpServer
) -> None:
    """Writes get 503 with Retry-After and the leader's name, before any audit row;
    reads and readiness work; the client gives up after its wait with the leader named."""
    held_by(server, "replica-a", duration_s=30)
    follower = LeaseLeadership(kube, NS, "promgate", "replica-b", duration_s=30, renew_s=20)
    await follower.start()
    ledger = MemoryLedger()
    try:
        await following(follower, "replica-a")
        engine = controller(ledger, RecordingActuator(), follower)
        app = build_api(
            engine, TOKENS, PrometheusRecorder().registry, leadership=follower, retry_after_s=3
        )
        base = await http_server(app)
        async with aiohttp.ClientSession(base, headers=AUTH) as session:
            body = {"manifest": manifest(), "stage": "production"}
            for path in ("/v1/promotions", "/v1/promotions/abc/approve"):
                async with session.post(path, json=body) as answer:
                    assert answer.status == 503
                    assert answer.headers["Retry-After"] == "3"
                    error = (await answer.json())["error"]
            assert error["type"] == "NotLeaderError"
            assert error["leader"] == "replica-a"
            assert "replica-a" in error["message"]
            async with session.get("/v1/promotions") as answer:
                assert answer.status == 200 and (await answer.json())["items"] == []
            async with session.get("/readyz") as answer:
                assert answer.status == 200
                assert await answer.json() == {
                    "status": "ready",
                    "role": "follower",
                    "leader": "replica-a",
                }
        assert await ledger.audit_trail(limit=10) == []
        started = time.monotonic()
        async with ApiClient(base, TOKEN, leader_wait_s=0.5) as client:
            with pytest.raises(NotLeaderError, match=r"replica-a leads") as refused:
                await client.create(manifest(), "production")
        assert refused.value.leader == "replica-a"
        assert 0.5 <= time.monotonic() - started < 5
    finally:
        await follower.close()


async def test_a_write_sent_during_a_failover_lands_on_the_new_leader(
    server: ContractApiServer, kube: KubeApi, http_server: HttpServer
) -> None:
    """A replica whose predecessor died answers 503 until its lease lapses, then takes the
    lease, starts its controller and accepts the write the client kept retrying."""
    held_by(server, "dead-replica", duration_s=1)
    survivor = LeaseLeadership(
        kube, NS, "promgate", "replica-b", renew_s=0.6, retry_s=0.1, duration_s=1
    )
    engine = controller(MemoryLedger(), RecordingActuator(), survivor)

    async def lead_or_follow(acting: bool) -> None:
        await (engine.start() if acting else engine.stop())

    survivor.on_change(lead_or_follow)
    app = build_api(
        engine, TOKENS, PrometheusRecorder().registry, leadership=survivor, retry_after_s=1
    )
    base = await http_server(app)
    await survivor.start()
    try:
        async with ApiClient(base, TOKEN, leader_wait_s=10) as client:
            created = await client.create(manifest(), "production")
        assert (await engine.get(created["id"])).service == "demo"
        assert survivor.may_act() and engine.ready
    finally:
        await survivor.close()
    assert not engine.ready


async def test_a_controller_that_lost_its_lease_moves_no_traffic(
    server: ContractApiServer, kube: KubeApi
) -> None:
    """The fence alone, with the runner left running: once renewals fail and the lease
    lapses, no traffic state reaches the actuator and no state reaches the ledger."""
    leadership = LeaseLeadership(kube, NS, "promgate", "a", duration_s=1, renew_s=0.6, retry_s=0.1)
    await leadership.start()
    ledger, actuator = MemoryLedger(), RecordingActuator()
    engine = controller(ledger, actuator, leadership)
    try:
        await leading(leadership)
        await engine.start()
        await engine.create(release("a", "1.0.0"), "production")
        canary = await engine.create(release("b", "1.1.0"), "production")

        async def stepping() -> bool:
            return len(actuator.applied) >= 3

        await wait_until(stepping, 10, what="two canary steps", interval_s=0.02)
        server.fail("PUT", r"/leases/promgate$", status=500, times=1000)

        async def lapsed() -> bool:
            return not leadership.may_act()

        await wait_until(lapsed, 2, what="the lease lapsing", interval_s=0.005)
        applied, stored = len(actuator.applied), await ledger.get(canary.id)
        events = len(await ledger.events(canary.id))
        await asyncio.sleep(2.5)  # more than two steps' worth: nothing may happen meanwhile
        assert len(actuator.applied) == applied
        assert await ledger.get(canary.id) == stored
        assert len(await ledger.events(canary.id)) == events
    finally:
        await engine.stop()
        await leadership.close(release=False)


async def test_the_sidecar_runs_its_controller_only_while_it_leads(
    server: ContractApiServer, tmp_path: Path
) -> None:
    """Serving as a follower first, then leading: the controller starts on acquiring,
    the role shows in /readyz and promgate_leader, and stopping hands the lease over."""
    held_by(server, "replica-a", duration_s=1)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    listen = f"127.0.0.1:{free_port()}"
    settings = Settings.load(
        policy=policy,
        listen=listen,
        ledger="memory",
        actuator="none",
        leader_election=True,
        kube_namespace=NS,
        identity="replica-b",
        lease_duration_s=1,
        lease_renew_deadline_s=0.6,
        lease_retry_period_s=0.1,
    )
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
    sidecar = Sidecar(settings, kube=await connect(kubeconfig))  # it closes the client
    await sidecar.start()
    try:
        async with aiohttp.ClientSession(f"http://{listen}") as session:
            async with session.get("/readyz") as answer:
                assert (await answer.json())["role"] == "follower"

            async def led() -> bool:
                async with session.get("/readyz") as answer:
                    return answer.status == 200 and (await answer.json())["role"] == "leader"

            await wait_until(led, 5, what="replica-b leading", interval_s=0.02)
            assert sidecar.controller.ready
            async with session.get("/metrics") as answer:
                assert 'promgate_leader{identity="replica-b"} 1.0' in await answer.text()
    finally:
        await sidecar.stop()
    lease = server.object(LEASE, NS, "promgate")
    assert lease is not None and "holderIdentity" not in lease["spec"]
    assert lease["spec"]["leaseDurationSeconds"] == 1


@pytest.mark.parametrize(
    ("options", "elects"),
    [
        ({}, False),
        ({"ledger": "kubernetes"}, True),
        ({"ledger": "kubernetes", "leader_election": False}, False),
        ({"ledger": "sqlite", "leader_election": True}, True),
    ],
)
def test_leader_election_is_on_where_the_ledger_is_shared(
    options: dict[str, Any], elects: bool
) -> None:
    """Unset, leader election follows the ledger: on for kubernetes, off otherwise."""
    assert Settings.load(**options).elects_leader is elects


def test_unsafe_lease_settings_are_refused() -> None:
    """A renew deadline not shorter than the lease duration is refused, naming the settings."""
    with pytest.raises(SettingsError, match=r"PROMGATE_LEASE_.*renew deadline < duration"):
        Settings.load(lease_duration_s=4, lease_renew_deadline_s=4)


async def test_a_leader_still_resuming_refuses_writes_for_now(http_server: HttpServer) -> None:
    """Until its controller has resumed every promotion, even the leader answers writes with
    503 and Retry-After (it names itself), and /readyz says it is starting."""
    engine = controller(MemoryLedger(), RecordingActuator(), AlwaysLeader("replica-a"))
    app = build_api(
        engine, TOKENS, PrometheusRecorder().registry, leadership=AlwaysLeader("replica-a")
    )
    base = await http_server(app)
    async with aiohttp.ClientSession(base, headers=AUTH) as session:
        body = {"manifest": manifest(), "stage": "production"}
        async with session.post("/v1/promotions", json=body) as answer:
            assert answer.status == 503 and answer.headers["Retry-After"] == "2"
            error = (await answer.json())["error"]
        assert error["leader"] == "replica-a" and "still resuming" in error["message"]
        async with session.get("/readyz") as answer:
            assert answer.status == 503
            assert await answer.json() == {"status": "starting", "role": "leader"}
        await engine.start()
        async with session.get("/readyz") as answer:
            assert await answer.json() == {
                "status": "ready",
                "role": "leader",
                "leader": "replica-a",
            }
    await engine.stop()
