"""Leader election against the contract API server: one leader at a time, fast and safe
hand-overs, and a loss reported before the lease could pass to another replica."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from sidecar.kube.api import LEASE, KubeApi
from sidecar.kube.client import connect
from sidecar.leadership.lease import LeaseLeadership
from tests.kubeapi import ContractApiServer
from tests.support.kube import contract_server
from tests.support.processes import wait_until

NS = "default"
RETRY_S = 0.15  # with a 1 s lease and a 0.6 s renew deadline unless a test says otherwise

Candidate = Callable[..., Awaitable[LeaseLeadership]]


@pytest.fixture
async def server() -> AsyncIterator[ContractApiServer]:
    async with contract_server() as running:
        yield running


@pytest.fixture
async def candidate(server: ContractApiServer, tmp_path: Path) -> AsyncIterator[Candidate]:
    """``await candidate("a", **timing)``: a started LeaseLeadership with its own client."""
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
    made: list[tuple[LeaseLeadership, KubeApi]] = []

    async def make(
        identity: str, duration_s: int = 1, renew_s: float = 0.6, retry_s: float = RETRY_S
    ) -> LeaseLeadership:
        api = await connect(kubeconfig)
        leadership = LeaseLeadership(
            api, NS, "promgate", identity, duration_s=duration_s, renew_s=renew_s, retry_s=retry_s
        )
        made.append((leadership, api))
        await leadership.start()
        return leadership

    yield make
    for leadership, api in made:
        await leadership.close(release=False)
        await api.close()


def holder(server: ContractApiServer) -> str | None:
    lease = server.object(LEASE, NS, "promgate")
    return None if lease is None else lease["spec"].get("holderIdentity")


async def leads(leadership: LeaseLeadership, within_s: float) -> float:
    """Seconds until ``leadership`` may act; fails after ``within_s``."""
    started = time.monotonic()

    async def acting() -> bool:
        return leadership.may_act()

    await wait_until(acting, within_s, what=f"{leadership.identity} leading", interval_s=0.01)
    return time.monotonic() - started


async def test_exactly_one_leader_across_many_renewals(
    server: ContractApiServer, candidate: Candidate
) -> None:
    """Two replicas racing from the start: never both acting, and one always soon acting."""
    a, b = await candidate("a"), await candidate("b")
    await leads_either(a, b)
    deadline, both, samples, gaps = time.monotonic() + 4.0, 0, 0, 0
    while time.monotonic() < deadline:
        acting = (a.may_act(), b.may_act())
        both += all(acting)
        gaps += not any(acting)
        samples += 1
        await asyncio.sleep(0.005)
    assert both == 0
    assert gaps == 0, "the leader stopped acting while nothing went wrong"
    assert samples > 200
    leader = a if a.may_act() else b
    assert holder(server) == leader.identity
    assert a.leader == b.leader == leader.identity
    renewals = [w for w in server.writes_of(LEASE, "promgate") if w.method == "PUT"]
    assert len(renewals) >= 4.0 / RETRY_S / 2  # renewed all along, not once
    assert [w.method for w in server.writes_of(LEASE, "promgate")].count("POST") == 1


async def test_never_two_leaders_through_crashes_and_hand_overs(
    server: ContractApiServer, candidate: Candidate
) -> None:
    """Leaders that crash or close in turn, each replaced by a new replica: a sampler that
    watches every replica all along never sees two acting at once."""
    replicas = [await candidate("r0"), await candidate("r1")]
    alive = list(replicas)
    overlaps, samples = 0, 0
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal overlaps, samples
        while not done.is_set():
            overlaps += sum(r.may_act() for r in replicas) > 1
            samples += 1
            await asyncio.sleep(0.002)

    sampler = asyncio.create_task(sample())
    try:
        for turn in range(4):
            await leads_either(*alive)
            leader = next(r for r in alive if r.may_act())
            alive.remove(leader)
            await leader.close(release=turn % 2 == 0)  # hand over, then crash, in turn
            alive.append(await candidate(f"r{turn + 2}"))
            replicas.append(alive[-1])
        await leads_either(*alive)
    finally:
        done.set()
        await sampler
    assert overlaps == 0
    assert samples > 500
    lease = server.object(LEASE, NS, "promgate")
    assert lease is not None and lease["spec"]["leaseTransitions"] == 4


async def leads_either(a: LeaseLeadership, b: LeaseLeadership) -> None:
    async def one() -> bool:
        return a.may_act() or b.may_act()

    await wait_until(one, 3, what="a leader", interval_s=0.01)


async def test_a_crashed_leader_is_replaced_once_its_lease_expires(
    server: ContractApiServer, candidate: Candidate
) -> None:
    """A leader that stops without releasing is taken over after the lease duration."""
    a = await candidate("a")
    await leads(a, 3)
    b = await candidate("b")
    await asyncio.sleep(0.3)  # b has seen a's live lease
    assert not b.may_act() and b.leader == "a"
    await a.close(release=False)
    took = await leads(b, 3)
    assert 1.0 - 0.6 <= took <= 1.0 + 0.15 + 0.5  # lease duration, plus a retry and slack
    assert holder(server) == "b"
    lease = server.object(LEASE, NS, "promgate")
    assert lease is not None and lease["spec"]["leaseTransitions"] == 1


async def test_a_closed_leader_hands_over_at_once(
    server: ContractApiServer, candidate: Candidate
) -> None:
    """Closing releases the lease, so another replica takes it long before it would expire."""
    a = await candidate("a", duration_s=10, renew_s=6, retry_s=0.1)
    await leads(a, 3)
    b = await candidate("b", duration_s=10, renew_s=6, retry_s=0.1)
    await asyncio.sleep(0.3)
    await a.close()
    assert not a.may_act()
    took = await leads(b, 2)
    assert took < 1.0  # not the 10 s duration
    assert holder(server) == "b"


async def test_a_failing_renewal_stops_acting_before_the_lease_expires(
    server: ContractApiServer, candidate: Candidate
) -> None:
    """When the API refuses renewals, the leader stops acting (and hears so) while its lease
    is still valid, so no other replica can be acting yet."""
    a = await candidate("a")
    changes: list[tuple[bool, float]] = []

    async def record(leading: bool) -> None:
        changes.append((leading, time.monotonic()))

    a.on_change(record)
    await leads(a, 3)
    await asyncio.sleep(0.3)  # a few renewals
    server.fail("PUT", r"/leases/promgate$", status=500, times=1000)
    await wait_until(_len_at_least(changes, 2), 2, what="the loss reported", interval_s=0.01)
    assert [leading for leading, _ in changes] == [True, False]
    lost_at = changes[1][1]
    last_renewal = server.writes_of(LEASE, "promgate")[-1].at  # accepted by the server
    assert lost_at < last_renewal + 1.0  # before the 1 s lease could pass to anyone
    assert not a.may_act()
    assert holder(server) == "a"  # nobody wrote it since


def _len_at_least(items: list[tuple[bool, float]], n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(items) >= n

    return check


async def test_a_conflict_on_renewal_ends_acting_at_once(
    server: ContractApiServer, candidate: Candidate
) -> None:
    """A 409 on a renewal means someone else wrote the Lease: the leader stops acting then,
    not at its renew deadline, and acts again only after a renewal that lands."""
    a = await candidate("a", duration_s=10, renew_s=6, retry_s=0.1)
    changes: list[tuple[bool, float]] = []

    async def record(leading: bool) -> None:
        changes.append((leading, time.monotonic()))

    a.on_change(record)
    await leads(a, 3)
    server.fail("PUT", r"/leases/promgate$", status=409, times=1)
    faulted = time.monotonic()
    await wait_until(_len_at_least(changes, 3), 3, what="lost and regained", interval_s=0.01)
    assert [leading for leading, _ in changes] == [True, False, True]
    assert changes[1][1] - faulted < 1.0  # at the conflict, not 6 s later
    assert holder(server) == "a"


async def test_another_holder_in_the_lease_deposes_the_leader(
    server: ContractApiServer, candidate: Candidate
) -> None:
    """A Lease rewritten to name another holder ends acting at the next read, and the
    replica follows that holder until its lease expires."""
    a = await candidate("a", duration_s=10, renew_s=6, retry_s=0.1)
    await leads(a, 3)
    lease = server.object(LEASE, NS, "promgate")
    assert lease is not None
    lease["spec"]["holderIdentity"] = "intruder"
    server.seed(lease)

    async def deposed() -> bool:
        return not a.may_act() and a.leader == "intruder"

    await wait_until(deposed, 2, what="a deposed", interval_s=0.01)
    await asyncio.sleep(0.5)
    assert not a.may_act() and holder(server) == "intruder"
