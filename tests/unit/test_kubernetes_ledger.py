"""The Kubernetes ledger against the contract API server: object sizes, crashes between
the commit point and the rest, concurrent replicas, and what kubectl shows.

The shared contract runs against it in test_ledger.py; these are its own properties.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.actuators.base import TrafficState
from sidecar.domain.promotion import Phase
from sidecar.errors import LedgerError, NotFoundError
from sidecar.kube.api import CONFIGMAP, PROMOTION, KubeApi
from sidecar.ledger.base import NewEvent, Transaction
from sidecar.ledger.kubernetes import KubernetesLedger, names
from sidecar.ledger.kubernetes.plan import MAX_OBJECT_BYTES
from tests.kubeapi import ContractApiServer
from tests.support.kube import NAMESPACE, contract_api
from tests.support.policies import policy
from tests.unit.test_ledger import DIGEST_A, DIGEST_B, promotion, release, traffic_state

CRD = Path(__file__).resolve().parents[2] / "helm/promgate/crds/promotions.promgate.dev.yaml"
MIB = 1 << 20


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[tuple[ContractApiServer, KubeApi]]:
    async with contract_api(tmp_path) as both:
        yield both


async def opened(api: KubeApi) -> KubernetesLedger:
    ledger = KubernetesLedger(api, NAMESPACE)
    await ledger.open()
    return ledger


def object_bytes(obj: dict[str, Any]) -> int:
    return len(json.dumps(obj).encode())


async def test_a_long_promotion_keeps_every_object_under_a_mebibyte(
    kube: tuple[ContractApiServer, KubeApi],
) -> None:
    """Thousands of events, some of them large, read back whole from objects that each
    stay under what etcd accepts."""
    server, api = kube
    ledger = await opened(api)
    await ledger.create(promotion("p1", phase=Phase.PROGRESSING))
    written = []
    for batch in range(25):
        events = tuple(
            NewEvent("p1", "verdict", {"n": batch * 100 + n, "pad": "v" * 1500}, float(n))
            for n in range(100)
        )
        written += [e.data for e in events]
        await ledger.commit(Transaction(save=await ledger.get("p1"), events=events))
    large = {"n": len(written), "pad": "L" * 400_000}
    await ledger.append_event("p1", "report", large, 1.0)
    written.append(large)

    stored = await ledger.events("p1")
    assert [e.seq for e in stored] == list(range(1, len(written) + 1))
    assert [e.data for e in stored] == written
    chunks = [
        o for o in server.objects(CONFIGMAP, NAMESPACE) if "-events-p1-" in o["metadata"]["name"]
    ]
    assert len(chunks) > 10
    for obj in [*server.objects(CONFIGMAP, NAMESPACE), *server.objects(PROMOTION, NAMESPACE)]:
        assert object_bytes(obj) < MIB, obj["metadata"]["name"]
    assert await ledger.events("p1", after=2499, limit=2) == stored[2499:2501]


async def test_an_event_too_large_for_one_object_is_refused_whole(
    kube: tuple[ContractApiServer, KubeApi],
) -> None:
    _, api = kube
    ledger = await opened(api)
    await ledger.create(promotion("p1"))
    with pytest.raises(LedgerError, match=rf"over the {MAX_OBJECT_BYTES} bytes"):
        await ledger.append_event("p1", "huge", {"pad": "x" * MIB}, 1.0)
    assert await ledger.events("p1") == []


# --- crashes ------------------------------------------------------------------------------


async def prepared(api: KubeApi) -> KubernetesLedger:
    """A ledger with promotion p1 progressing over a stable release."""
    ledger = await opened(api)
    await ledger.push_stable(release(DIGEST_B, "p0"))
    await ledger.create(promotion("p1", phase=Phase.PROGRESSING))
    await ledger.append_event("p1", "created", {}, 1.0)
    return ledger


PROMOTING = Transaction(
    save=promotion("p1", phase=Phase.PROGRESSING).evolve(phase=Phase.PROMOTED, weight=100),
    push_stable=release(DIGEST_A, "p1"),
    traffic=traffic_state(),
    events=(
        NewEvent("p1", "promoted", {"gates": [{"gate": "errors", "result": "pass"}]}, 5.0),
        NewEvent("p1", "actuation", {}, 6.0),
    ),
)


async def snapshot(ledger: KubernetesLedger) -> tuple[Any, ...]:
    return (
        await ledger.list(),
        list(await ledger.stable_history("checkout", "prod")),
        await ledger.all_traffic(),
        await ledger.events("p1"),
    )


def write_path(write: Any) -> str:
    """The request path of an accepted write, as ``server.fail`` matches it."""
    kind = {PROMOTION.plural: PROMOTION, CONFIGMAP.plural: CONFIGMAP}[write.plural]
    if write.method == "POST":
        return kind.path(write.namespace)
    return kind.path(write.namespace, write.name, write.subresource)


async def reference_run(tmp_path: Path) -> tuple[tuple[Any, ...], tuple[Any, ...], list[Any]]:
    """The state before and after the commit, and its writes, commit point first."""
    async with contract_api(tmp_path) as (server, api):
        ledger = await prepared(api)
        before = await snapshot(ledger)
        mark = len(server.writes)
        await ledger.commit(PROMOTING)
        return before, await snapshot(ledger), list(server.writes[mark:])


async def test_a_crash_after_any_write_of_a_commit_leaves_all_of_it_or_none(
    tmp_path: Path,
) -> None:
    """Each write of a commit fails in turn, as if promgate died there: the commit point
    failing leaves nothing; any later one leaves a journal the next reader completes."""
    before, after, writes = await reference_run(tmp_path)
    assert len(writes) >= 4, writes  # commit point, promotion, events, journal cleared
    stage = names.stage_name("checkout", "prod")
    assert writes[0].name == stage and writes[-1].name == stage
    for index, write in enumerate(writes[:-1]):
        async with contract_api(tmp_path) as (server, api):
            ledger = await prepared(api)
            server.fail(write.method, re.escape(write_path(write)) + "$", status=500, times=1)
            if index == 0:
                with pytest.raises(LedgerError):
                    await ledger.commit(PROMOTING)
            else:
                await ledger.commit(PROMOTING)  # committed: the failure is left to a reader
            reopened = await opened(api)
            assert await snapshot(reopened) == (before if index == 0 else after), write
            assert await snapshot(ledger) == (before if index == 0 else after), write


async def test_a_journal_applied_already_is_applied_again_harmlessly(
    kube: tuple[ContractApiServer, KubeApi],
) -> None:
    """A crash after everything but clearing the journal: the next start applies it again
    without a second copy of anything."""
    server, api = kube
    ledger = await prepared(api)
    mark = len(server.writes)
    await ledger.commit(PROMOTING)
    after = await snapshot(ledger)
    commit_point = server.writes[mark].body
    metadata = {k: v for k, v in commit_point["metadata"].items() if k != "resourceVersion"}
    server.seed({**commit_point, "metadata": {**metadata, "namespace": NAMESPACE}})
    assert server.object(CONFIGMAP, NAMESPACE, commit_point["metadata"]["name"])["data"]["journal"]
    reopened = await opened(api)
    assert await snapshot(reopened) == after
    stage = server.object(CONFIGMAP, NAMESPACE, commit_point["metadata"]["name"])
    assert "journal" not in stage["data"]


# --- replicas -----------------------------------------------------------------------------


async def test_two_replicas_writing_at_once_lose_no_update(
    kube: tuple[ContractApiServer, KubeApi],
) -> None:
    """Writers in two ledgers race on one stage: the losers re-read and retry, so every
    event lands once with a gap-free seq and every stable release is kept."""
    _, api = kube
    first, second = await opened(api), await opened(api)
    await first.create(promotion("p1"))

    async def append(ledger: KubernetesLedger, who: str, count: int) -> None:
        for n in range(count):
            await ledger.append_event("p1", "step", {"who": who, "n": n}, float(n))

    await asyncio.gather(append(first, "first", 25), append(second, "second", 25))
    events = await second.events("p1")
    assert [e.seq for e in events] == list(range(1, 51))
    assert sorted((e.data["who"], e.data["n"]) for e in events) == sorted(
        (who, n) for who in ("first", "second") for n in range(25)
    )
    digests = ["sha256:" + c * 64 for c in "0123456789"]
    await asyncio.gather(*(
        ledger.push_stable(release(d, f"r{i}"))
        for i, (d, ledger) in enumerate(zip(digests, [first, second] * 5, strict=True))
    ))  # fmt: skip
    history = await first.stable_history("checkout", "prod")
    assert sorted(r.artifact.digest for r in history) == sorted(digests)


async def test_a_second_active_promotion_from_another_replica_still_conflicts(
    kube: tuple[ContractApiServer, KubeApi],
) -> None:
    _, api = kube
    first, second = await opened(api), await opened(api)
    results = await asyncio.gather(
        first.create(promotion("p1")), second.create(promotion("p2")), return_exceptions=True
    )
    assert sorted(type(r).__name__ for r in results) == ["ConflictError", "NoneType"]
    assert len(await first.list(active=True)) == 1


# --- what a user sees ---------------------------------------------------------------------


def resolve(obj: dict[str, Any], json_path: str) -> Any:
    value: Any = obj
    for part in json_path.strip(".").split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


async def test_kubectl_get_columns_resolve_on_a_stored_promotion(
    kube: tuple[ContractApiServer, KubeApi],
) -> None:
    """Every printer column of the CRD names a field the ledger writes, of its type."""
    server, api = kube
    ledger = await opened(api)
    await ledger.create(promotion("p1"))
    moved = (await ledger.get("p1")).evolve(phase=Phase.PROGRESSING, weight=20, reason="step 1")
    await ledger.commit(Transaction(save=moved, events=(NewEvent("p1", "step", {}, 2.0),)))
    stored = server.object(PROMOTION, NAMESPACE, "p1")
    assert stored is not None
    crd = yaml.safe_load(CRD.read_text())
    types = {"string": str, "integer": int, "date": str}
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    for column in columns:
        if column["name"] == "Step":
            continue  # shown when the ledger knows the policy: see the next test
        value = resolve(stored, column["jsonPath"])
        assert isinstance(value, types[column["type"]]), (column, value)
    assert stored["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "promgate",
        "promgate.dev/service": "checkout",
        "promgate.dev/stage": "prod",
        "promgate.dev/active": "true",
    }
    assert stored["status"]["ledger"]["record"]["id"] == "p1"


async def test_the_step_column_counts_the_strategy_steps_of_the_policy(
    kube: tuple[ContractApiServer, KubeApi],
) -> None:
    server, api = kube
    ledger = KubernetesLedger(api, NAMESPACE, policy=policy())
    await ledger.open()
    await ledger.create(promotion("p1", stage="staging").evolve(step_index=1))
    stored = server.object(PROMOTION, NAMESPACE, "p1")
    assert stored is not None
    assert (stored["status"]["steps"], stored["status"]["stepLabel"]) == (2, "2/2")


async def test_the_last_evaluation_shows_in_the_status_gates(
    kube: tuple[ContractApiServer, KubeApi],
) -> None:
    server, api = kube
    ledger = await opened(api)
    await ledger.create(promotion("p1", phase=Phase.PROGRESSING))
    gate = {"gate": "errors", "result": "breach", "classification": "transient",
            "value": 0.2, "threshold": 0.05, "baseline": 0.01}  # fmt: skip
    saved = (await ledger.get("p1")).evolve(updated_at=300.0)
    await ledger.commit(
        Transaction(save=saved, events=(NewEvent("p1", "verdict", {"gates": [gate]}, 3.0),))
    )
    await ledger.commit(
        Transaction(save=saved.evolve(reason="held"), events=(NewEvent("p1", "resumed", {}, 4.0),))
    )
    stored = server.object(PROMOTION, NAMESPACE, "p1")
    assert stored is not None
    assert stored["status"]["gates"] == [
        {"name": "errors", "result": "breach", "classification": "transient",
         "value": 0.2, "threshold": 0.05, "baseline": 0.01}
    ]  # fmt: skip
    assert stored["status"]["reason"] == "held"


async def test_a_user_applied_promotion_is_adopted_with_its_spec_kept(
    kube: tuple[ContractApiServer, KubeApi],
) -> None:
    server, api = kube
    ledger = await opened(api)
    applied = {
        "apiVersion": PROMOTION.api_version,
        "kind": PROMOTION.kind,
        "metadata": {"name": "p1", "namespace": NAMESPACE, "labels": {"team": "payments"}},
        "spec": {"stage": "prod", "manifest": {"service": "checkout", "note": "as applied"}},
    }
    server.seed(applied)
    assert await ledger.list() == []  # a request, not a promotion yet
    await ledger.create(promotion("p1"))
    stored = server.object(PROMOTION, NAMESPACE, "p1")
    assert stored is not None
    assert stored["spec"] == applied["spec"]
    assert stored["metadata"]["labels"]["team"] == "payments"
    assert stored["metadata"]["labels"]["promgate.dev/active"] == "true"
    assert (await ledger.get("p1")).manifest == applied["spec"]["manifest"]


async def test_open_without_the_crd_says_how_to_install_it(
    kube: tuple[ContractApiServer, KubeApi],
) -> None:
    server, api = kube
    server.fail("GET", r"promotions$", status=404, times=1)
    with pytest.raises(LedgerError, match=r"install the CRD.*helm/promgate/crds"):
        await KubernetesLedger(api, NAMESPACE).open()


async def test_an_unanswering_api_is_a_ledger_error_naming_the_object(
    kube: tuple[ContractApiServer, KubeApi],
) -> None:
    server, api = kube
    ledger = await opened(api)
    server.fail("GET", r"promotions/p1$", status=503, times=1)
    with pytest.raises(LedgerError, match=r"Promotion 'p1' in namespace 'promgate'"):
        await ledger.get("p1")
    with pytest.raises(NotFoundError):
        await ledger.get("p1")  # the next read reaches the API again


async def test_the_audit_log_rotates_its_chunks_and_pages_across_them(
    kube: tuple[ContractApiServer, KubeApi],
) -> None:
    server, api = kube
    ledger = await opened(api)
    for n in range(60):
        await ledger.audit("alice", "approve", f"p{n}", float(n), reason="r" * 10_000)
    chunks = [o for o in server.objects(CONFIGMAP, NAMESPACE) if "-audit-" in o["metadata"]["name"]]
    assert len(chunks) >= 2
    assert all(object_bytes(o) < MIB for o in chunks)
    ids = [e.id for e in await ledger.audit_trail(limit=100)]
    assert ids == list(range(60, 0, -1))
    assert [e.target for e in await ledger.audit_trail(limit=3, before=30)] == ["p28", "p27", "p26"]


async def test_odd_and_long_names_are_stored_under_dns_names(
    kube: tuple[ContractApiServer, KubeApi],
) -> None:
    """Service, stage and promotion names Kubernetes would refuse as names or labels
    still round-trip: their objects get DNS-1123 names with a hash."""
    server, api = kube
    ledger = await opened(api)
    service, stage = "Shop/Checkout_Service " * 10, "Production EU/West"
    odd = promotion("Release_2024/Q1", service=service, stage=stage)
    await ledger.create(odd)
    await ledger.append_event(odd.id, "created", {}, 1.0)
    await ledger.save_traffic(TrafficState(odd.id, 1, service, stage, ()))
    assert await ledger.get(odd.id) == odd
    assert [p.id for p in await ledger.list(service=service, stage=stage)] == [odd.id]
    assert [e.kind for e in await ledger.events(odd.id)] == ["created"]
    assert (await ledger.traffic(service, stage)) is not None
    for obj in [*server.objects(CONFIGMAP, NAMESPACE), *server.objects(PROMOTION, NAMESPACE)]:
        assert len(obj["metadata"]["name"]) <= 253
    with pytest.raises(LedgerError, match=r"spec.stage takes at most 63"):
        await ledger.create(promotion("p2", stage="s" * 64))
    assert server.object(PROMOTION, NAMESPACE, "p2") is None
