"""One contract for every Ledger, run against each implementation, plus SQLite durability."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sidecar.actuators.base import Backend, TrafficState
from sidecar.domain.artifact import ArtifactRef
from sidecar.domain.promotion import Phase, Promotion, StableRelease
from sidecar.errors import (
    ConflictError,
    LedgerError,
    NotFoundError,
    SettingsError,
    TagMutationError,
)
from sidecar.ledger.base import AuditEntry, Ledger, NewEvent, Transaction
from sidecar.ledger.factory import build_ledger
from sidecar.ledger.memory import MemoryLedger
from sidecar.ledger.sqlite import _MIGRATIONS as SQLITE_MIGRATIONS
from sidecar.ledger.sqlite import SCHEMA_VERSION, SqliteLedger
from tests.support.kube import NAMESPACE, contract_api

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
DIGEST_C = "sha256:" + "c" * 64
REPO = "registry.example/shop/checkout"


def artifact(digest: str = DIGEST_A, tag: str | None = "1.0.0") -> ArtifactRef:
    return ArtifactRef(repository=REPO, digest=digest, tag=tag)


def promotion(
    promotion_id: str,
    *,
    service: str = "checkout",
    stage: str = "prod",
    phase: Phase = Phase.PENDING,
    created_at: float = 100.0,
) -> Promotion:
    return Promotion(
        id=promotion_id,
        service=service,
        stage=stage,
        artifact=artifact(),
        version="1.0.0",
        policy_version="3",
        strategy="canary",
        candidate_upstream="http://127.0.0.1:9002",
        manifest={"service": service, "labels": {"team": "payments"}},
        created_at=created_at,
        phase=phase,
        updated_at=created_at,
    )


def release(digest: str, promotion_id: str, *, stage: str = "prod") -> StableRelease:
    return StableRelease(
        service="checkout",
        stage=stage,
        artifact=artifact(digest),
        upstream=f"http://127.0.0.1:900{digest[-1]}",
        promotion_id=promotion_id,
        promoted_at=200.0,
        version="1.0.0",
    )


def traffic_state(stage: str = "prod", *, preview: bool = False) -> TrafficState:
    return TrafficState(
        promotion_id="p1",
        sequence=3,
        service="checkout",
        stage=stage,
        backends=(
            Backend(DIGEST_A, "http://127.0.0.1:9001", 90, "stable"),
            Backend(DIGEST_B, "http://127.0.0.1:9002", 10, "candidate"),
        ),
        preview=Backend(DIGEST_B, "http://127.0.0.1:9003", 0, "candidate") if preview else None,
    )


@pytest.fixture(params=["memory", "sqlite", "kubernetes"])
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ledger]:
    async with contextlib.AsyncExitStack() as stack:
        kube = None
        if request.param == "kubernetes":
            _, kube = await stack.enter_async_context(contract_api(tmp_path))
        built = build_ledger(
            request.param, str(tmp_path / "state" / "ledger.db"), kube=kube, namespace=NAMESPACE
        )
        await built.open()
        yield built
        await built.close()


# --- the contract -------------------------------------------------------------------------


async def test_create_get_and_save_round_trip(ledger: Ledger) -> None:
    original = promotion("p1")
    await ledger.create(original)
    assert await ledger.get("p1") == original

    moved = original.evolve(phase=Phase.PROGRESSING, weight=10, updated_at=150.0, reason="step 1")
    await ledger.save(moved)
    assert await ledger.get("p1") == moved


async def test_unknown_ids_are_not_found(ledger: Ledger) -> None:
    with pytest.raises(NotFoundError, match="nope"):
        await ledger.get("nope")
    with pytest.raises(NotFoundError, match="nope"):
        await ledger.save(promotion("nope"))
    with pytest.raises(NotFoundError, match="nope"):
        await ledger.append_event("nope", "step", {}, 1.0)
    with pytest.raises(NotFoundError, match="nope"):
        await ledger.events("nope")


async def test_duplicate_id_is_a_conflict(ledger: Ledger) -> None:
    await ledger.create(promotion("p1", phase=Phase.PROMOTED))
    with pytest.raises(ConflictError, match="already exists"):
        await ledger.create(promotion("p1", stage="staging"))


async def test_list_is_newest_first_and_filtered(ledger: Ledger) -> None:
    await ledger.create(promotion("old", phase=Phase.PROMOTED, created_at=1.0))
    await ledger.create(promotion("new", created_at=3.0))
    await ledger.create(promotion("staging", stage="staging", created_at=2.0))
    await ledger.create(promotion("cart", service="cart", phase=Phase.ABORTED, created_at=4.0))

    def ids(found: Any) -> list[str]:
        return [p.id for p in found]

    assert ids(await ledger.list()) == ["cart", "new", "staging", "old"]
    assert ids(await ledger.list(service="checkout")) == ["new", "staging", "old"]
    assert ids(await ledger.list(stage="prod")) == ["cart", "new", "old"]
    assert ids(await ledger.list(active=True)) == ["new", "staging"]
    assert ids(await ledger.list(active=False)) == ["cart", "old"]
    assert ids(await ledger.list(service="checkout", stage="prod", active=False)) == ["old"]
    assert await ledger.list(service="unknown") == []


async def test_list_breaks_ties_by_creation_order(ledger: Ledger) -> None:
    for promotion_id in ("first", "second", "third"):
        await ledger.create(promotion(promotion_id, phase=Phase.REFUSED, created_at=5.0))
    assert [p.id for p in await ledger.list()] == ["third", "second", "first"]


async def test_newest_gives_one_promotion_per_stage_in_the_given_phases(ledger: Ledger) -> None:
    """Per (service, stage), what list() would give first among the phases asked for;
    ties go to the later record, as in list()."""
    await ledger.create(promotion("old", phase=Phase.PROMOTED, created_at=1.0))
    await ledger.create(promotion("newer", phase=Phase.ROLLED_BACK, created_at=3.0))
    await ledger.create(promotion("refused", phase=Phase.REFUSED, created_at=4.0))
    await ledger.create(promotion("staging-a", stage="staging", phase=Phase.PROMOTED,
                                  created_at=2.0))  # fmt: skip
    await ledger.create(promotion("staging-b", stage="staging", phase=Phase.PROMOTED,
                                  created_at=2.0))  # fmt: skip
    await ledger.create(promotion("cart", service="cart", phase=Phase.ABORTED, created_at=5.0))

    routed = {Phase.PROMOTED, Phase.ROLLED_BACK}
    assert [p.id for p in await ledger.newest(routed)] == ["newer", "staging-b"]
    assert [p.id for p in await ledger.newest({Phase.PROMOTED})] == ["staging-b", "old"]
    assert await ledger.newest({Phase.PROGRESSING}) == []


async def test_second_active_promotion_of_a_stage_conflicts(ledger: Ledger) -> None:
    first = promotion("p1")
    await ledger.create(first)
    with pytest.raises(ConflictError, match=r"'p1' is still active.*checkout.*prod.*'p2'"):
        await ledger.create(promotion("p2"))

    # Other stages, other services and already-terminal records are not blocked.
    await ledger.create(promotion("p3", stage="staging"))
    await ledger.create(promotion("p4", service="cart"))
    await ledger.create(promotion("p5", phase=Phase.REFUSED))

    await ledger.save(first.evolve(phase=Phase.ABORTED))
    await ledger.create(promotion("p2"))
    assert (await ledger.get("p2")).active


async def test_events_are_numbered_per_promotion(ledger: Ledger) -> None:
    await ledger.create(promotion("p1"))
    await ledger.create(promotion("p2", stage="staging"))
    first = await ledger.append_event("p1", "created", {"by": "ci"}, 10.0)
    await ledger.append_event("p2", "created", {}, 10.5)
    second = await ledger.append_event("p1", "step", {"weight": 10, "ok": [1, 2]}, 11.0)
    third = await ledger.append_event("p1", "verdict", {"result": "pass"}, 12.0)

    assert (first.seq, second.seq, third.seq) == (1, 2, 3)
    assert second.data == {"weight": 10, "ok": [1, 2]}
    assert [e.seq for e in await ledger.events("p2")] == [1]

    everything = await ledger.events("p1")
    assert everything == [first, second, third]
    assert [e.seq for e in await ledger.events("p1", after=1)] == [2, 3]
    assert await ledger.events("p1", after=3) == []


async def test_stored_event_data_is_not_aliased(ledger: Ledger) -> None:
    await ledger.create(promotion("p1"))
    data: dict[str, Any] = {"weights": [10]}
    await ledger.append_event("p1", "step", data, 1.0)
    data["weights"].append(20)
    (event,) = await ledger.events("p1")
    assert event.data == {"weights": [10]}


async def test_unserialisable_data_is_a_ledger_error(ledger: Ledger) -> None:
    await ledger.create(promotion("p1"))
    with pytest.raises(LedgerError, match="JSON"):
        await ledger.append_event("p1", "step", {"when": object()}, 1.0)
    assert await ledger.events("p1") == []


async def test_tags_are_remembered_and_may_not_move(ledger: Ledger) -> None:
    await ledger.remember_tag(artifact(DIGEST_A, "1.0.0"))
    await ledger.remember_tag(artifact(DIGEST_A, "1.0.0"))  # same digest again: fine
    await ledger.remember_tag(artifact(DIGEST_B, "1.0.1"))
    await ledger.remember_tag(artifact(DIGEST_B, None))  # no tag: nothing to remember

    with pytest.raises(TagMutationError) as refused:
        await ledger.remember_tag(artifact(DIGEST_C, "1.0.0"))
    message = str(refused.value)
    for part in (REPO, "1.0.0", DIGEST_A, DIGEST_C, "mutable", "digest", "new tag"):
        assert part in message

    # The refusal did not overwrite what was known.
    with pytest.raises(TagMutationError, match=DIGEST_A):
        await ledger.remember_tag(artifact(DIGEST_B, "1.0.0"))


@pytest.mark.parametrize(
    ("first", "then", "name"),
    [
        pytest.param("nginx", "docker.io/library/nginx", "docker.io/library/nginx", id="bare"),
        pytest.param("docker.io/library/nginx", "index.docker.io/library/nginx",
                     "docker.io/library/nginx", id="legacy-hub"),
        pytest.param("library/nginx", "docker.io/nginx", "docker.io/library/nginx",
                     id="namespace-then-hub"),
        pytest.param("bitnami/redis", "index.docker.io/bitnami/redis", "docker.io/bitnami/redis",
                     id="hub-namespace"),
    ],
)  # fmt: skip
async def test_a_tag_moved_under_another_spelling_is_a_mutation(
    ledger: Ledger, first: str, then: str, name: str
) -> None:
    """Tag memory is keyed by the normalized repository, so respelling it hides no move."""
    await ledger.remember_tag(ArtifactRef.parse(f"{first}:1.25@{DIGEST_A}"))

    with pytest.raises(TagMutationError) as refused:
        await ledger.remember_tag(ArtifactRef.parse(f"{then}:1.25@{DIGEST_B}"))
    assert f"tag {name}:1.25 was seen with digest {DIGEST_A}" in str(refused.value)
    await ledger.remember_tag(ArtifactRef.parse(f"{then}:1.25@{DIGEST_A}"))  # same image: fine


async def test_other_registries_keep_their_own_tags(ledger: Ledger) -> None:
    """Only spellings of one repository are merged; another registry's nginx is its own."""
    await ledger.remember_tag(ArtifactRef.parse(f"nginx:1.25@{DIGEST_A}"))
    await ledger.remember_tag(ArtifactRef.parse(f"ghcr.io/library/nginx:1.25@{DIGEST_B}"))
    await ledger.remember_tag(ArtifactRef.parse(f"localhost:5000/nginx:1.25@{DIGEST_C}"))


async def test_stable_history_push_and_pop(ledger: Ledger) -> None:
    assert await ledger.stable_history("checkout", "prod") == []
    with pytest.raises(NotFoundError, match="no earlier digest to roll back to"):
        await ledger.pop_stable("checkout", "prod")

    await ledger.push_stable(release(DIGEST_A, "p1"))
    with pytest.raises(NotFoundError, match="no earlier digest to roll back to"):
        await ledger.pop_stable("checkout", "prod")

    await ledger.push_stable(release(DIGEST_B, "p2"))
    await ledger.push_stable(release(DIGEST_C, "p3", stage="staging"))
    assert list(await ledger.stable_history("checkout", "prod")) == [
        release(DIGEST_A, "p1"),
        release(DIGEST_B, "p2"),
    ]

    assert await ledger.pop_stable("checkout", "prod") == release(DIGEST_B, "p2")
    assert list(await ledger.stable_history("checkout", "prod")) == [release(DIGEST_A, "p1")]
    await ledger.push_stable(release(DIGEST_C, "p4"))
    assert [r.promotion_id for r in await ledger.stable_history("checkout", "prod")] == [
        "p1",
        "p4",
    ]
    assert len(await ledger.stable_history("checkout", "staging")) == 1


async def test_promoted_stages_come_from_stable_history(ledger: Ledger) -> None:
    assert await ledger.promoted_stages("checkout", DIGEST_A) == set()
    await ledger.push_stable(release(DIGEST_A, "p1", stage="staging"))
    await ledger.push_stable(release(DIGEST_A, "p2", stage="prod"))
    await ledger.push_stable(release(DIGEST_B, "p3", stage="canary"))

    assert await ledger.promoted_stages("checkout", DIGEST_A) == {"staging", "prod"}
    assert await ledger.promoted_stages("checkout", DIGEST_B) == {"canary"}
    assert await ledger.promoted_stages("cart", DIGEST_A) == set()


async def test_traffic_round_trip(ledger: Ledger) -> None:
    assert await ledger.traffic("checkout", "prod") is None
    assert await ledger.all_traffic() == []

    await ledger.save_traffic(traffic_state("prod"))
    await ledger.save_traffic(traffic_state("canary", preview=True))
    assert await ledger.traffic("checkout", "prod") == traffic_state("prod")
    assert await ledger.traffic("checkout", "canary") == traffic_state("canary", preview=True)

    newer = TrafficState(
        "p2", 1, "checkout", "prod", (Backend(DIGEST_B, "http://b", 100, "stable"),)
    )
    await ledger.save_traffic(newer)
    assert list(await ledger.all_traffic()) == [traffic_state("canary", preview=True), newer]


async def test_audit_is_recorded_and_read_back_newest_first_in_pages(ledger: Ledger) -> None:
    await ledger.audit("alice", "approve", "p1", 10.0)
    await ledger.audit("bob", "abort", "p2", 11.0, result="refused:409", reason="already ended")
    await ledger.audit("anonymous", "create", "promotions", 12.0, result="refused:401")
    newest = await ledger.audit_trail(limit=2)
    assert newest == [
        AuditEntry(3, 12.0, "anonymous", "create", "promotions", "refused:401", ""),
        AuditEntry(2, 11.0, "bob", "abort", "p2", "refused:409", "already ended"),
    ]
    assert await ledger.audit_trail(limit=2, before=2) == [
        AuditEntry(1, 10.0, "alice", "approve", "p1", "applied", "")
    ]


async def test_list_pages_after_a_cursor_in_the_same_order(ledger: Ledger) -> None:
    for n, at in enumerate([1.0, 3.0, 3.0, 2.0, 5.0]):
        await ledger.create(promotion(f"p{n}", phase=Phase.REFUSED, created_at=at))
    everything = [p.id for p in await ledger.list()]
    assert everything == ["p4", "p2", "p1", "p3", "p0"]
    pages, after = [], None
    for _ in range(5):
        page = [p.id for p in await ledger.list(limit=2, after=after)]
        if not page:
            break
        pages.append(page)
        after = page[-1]
    assert pages == [["p4", "p2"], ["p1", "p3"], ["p0"]]
    assert [p.id for p in await ledger.list(service="checkout", after="p1", limit=1)] == ["p3"]
    with pytest.raises(NotFoundError, match="nope"):
        await ledger.list(after="nope")


async def test_events_are_read_a_page_at_a_time(ledger: Ledger) -> None:
    await ledger.create(promotion("p1"))
    for n in range(5):
        await ledger.append_event("p1", "step", {"n": n}, float(n))
    assert [e.seq for e in await ledger.events("p1", after=1, limit=2)] == [2, 3]
    assert [e.seq for e in await ledger.events("p1", after=4, limit=10)] == [5]


async def test_the_manifest_is_kept_across_saves(ledger: Ledger) -> None:
    original = promotion("p1")
    await ledger.create(original)
    await ledger.save(original.evolve(phase=Phase.PROGRESSING, manifest={}))
    assert (await ledger.get("p1")).manifest == original.manifest
    assert [p.manifest for p in await ledger.list()] == [original.manifest]


async def test_commit_lands_every_write_together(ledger: Ledger) -> None:
    """A state change and its consequences are one write: all of them are there after it."""
    await ledger.create(promotion("p1", phase=Phase.PROGRESSING))
    promoted = (await ledger.get("p1")).evolve(phase=Phase.PROMOTED, weight=100)
    state = traffic_state()
    appended = await ledger.commit(
        Transaction(
            save=promoted,
            push_stable=release(DIGEST_A, "p1"),
            traffic=state,
            events=(
                NewEvent("p1", "promoted", {"w": 100}, 5.0),
                NewEvent("p1", "actuation", {}, 6.0),
            ),
        )
    )
    assert [(e.seq, e.kind, e.data) for e in appended] == [
        (1, "promoted", {"w": 100}),
        (2, "actuation", {}),
    ]
    assert await ledger.get("p1") == promoted
    assert list(await ledger.stable_history("checkout", "prod")) == [release(DIGEST_A, "p1")]
    assert await ledger.traffic("checkout", "prod") == state
    assert list(await ledger.events("p1")) == list(appended)


@pytest.mark.parametrize(
    "refused",
    [
        pytest.param(Transaction(events=(NewEvent("nope", "step", {}, 1.0),)), id="unknown-id"),
        pytest.param(Transaction(save=promotion("nope")), id="unknown-promotion"),
        pytest.param(Transaction(create=promotion("p2")), id="active-conflict"),
        pytest.param(
            Transaction(events=(NewEvent("p1", "step", {"x": object()}, 1.0),)), id="not-json"
        ),
        pytest.param(Transaction(pop_stable=release(DIGEST_A, "p0")), id="stale-pop"),
    ],
)
async def test_a_refused_write_cancels_the_whole_commit(
    ledger: Ledger, refused: Transaction
) -> None:
    """Whatever write of a transaction is refused, none of its other writes lands."""
    await ledger.create(promotion("p1"))
    await ledger.push_stable(release(DIGEST_A, "p0"))
    await ledger.push_stable(release(DIGEST_B, "p1"))
    before = (
        await ledger.list(),
        list(await ledger.stable_history("checkout", "prod")),
        await ledger.all_traffic(),
        await ledger.events("p1"),
    )
    others = Transaction(
        save=promotion("p1", phase=Phase.PROGRESSING),
        push_stable=release(DIGEST_C, "p1"),
        traffic=traffic_state(),
        events=(NewEvent("p1", "step", {}, 2.0),),
    )
    combined = Transaction(
        create=refused.create,
        save=refused.save or others.save,
        pop_stable=refused.pop_stable,
        push_stable=others.push_stable,
        traffic=others.traffic,
        events=(*others.events, *refused.events),
    )
    with pytest.raises((NotFoundError, ConflictError, LedgerError)):
        await ledger.commit(combined)
    after = (
        await ledger.list(),
        list(await ledger.stable_history("checkout", "prod")),
        await ledger.all_traffic(),
        await ledger.events("p1"),
    )
    assert after == before


async def test_a_repeated_stable_push_adds_nothing(ledger: Ledger) -> None:
    """Pushing the digest that is already the newest stable one (a push repeated after a
    crash, or a stage rolled back onto it) leaves the history as it is."""
    await ledger.push_stable(release(DIGEST_A, "p1"))
    await ledger.push_stable(release(DIGEST_B, "p2"))
    await ledger.push_stable(release(DIGEST_B, "p2"))
    await ledger.commit(Transaction(push_stable=release(DIGEST_B, "rollback-record")))
    assert [r.promotion_id for r in await ledger.stable_history("checkout", "prod")] == [
        "p1",
        "p2",
    ]
    await ledger.push_stable(release(DIGEST_A, "p3"))  # an older digest again is a new entry
    assert [r.promotion_id for r in await ledger.stable_history("checkout", "prod")] == [
        "p1",
        "p2",
        "p3",
    ]


async def test_a_rollback_pops_only_the_release_it_read_as_newest(ledger: Ledger) -> None:
    await ledger.push_stable(release(DIGEST_A, "p1"))
    await ledger.push_stable(release(DIGEST_B, "p2"))
    record = promotion("r1", phase=Phase.PROMOTED)
    await ledger.commit(Transaction(create=record, pop_stable=release(DIGEST_B, "p2")))
    assert [r.promotion_id for r in await ledger.stable_history("checkout", "prod")] == ["p1"]
    assert await ledger.get("r1") == record


async def test_open_is_idempotent(ledger: Ledger) -> None:
    await ledger.open()
    await ledger.create(promotion("p1"))
    await ledger.open()
    assert (await ledger.get("p1")).id == "p1"


# --- factory ------------------------------------------------------------------------------


def test_factory_builds_known_kinds(tmp_path: Path) -> None:
    assert isinstance(build_ledger("memory", ""), MemoryLedger)
    assert isinstance(build_ledger("sqlite", str(tmp_path / "l.db")), SqliteLedger)


def test_factory_needs_an_api_and_a_namespace_for_kubernetes() -> None:
    with pytest.raises(SettingsError, match=r"kubernetes ledger needs.*PROMGATE_KUBECONFIG"):
        build_ledger("kubernetes", "")


def test_factory_refuses_unknown_kind() -> None:
    with pytest.raises(SettingsError, match=r"'postgres'.*memory, sqlite"):
        build_ledger("postgres", "x")


# --- SQLite only --------------------------------------------------------------------------


async def test_sqlite_state_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    first = SqliteLedger(path)
    await first.open()
    original = promotion("p1")
    await first.create(original)
    await first.append_event("p1", "created", {"by": "ci"}, 1.0)
    await first.remember_tag(artifact(DIGEST_A, "1.0.0"))
    await first.push_stable(release(DIGEST_A, "p0"))
    await first.push_stable(release(DIGEST_B, "p1"))
    await first.save_traffic(traffic_state(preview=True))
    await first.audit("alice", "approve", "p1", 2.0)
    await first.close()
    await first.close()  # closing twice is harmless

    second = SqliteLedger(str(path))
    await second.open()
    try:
        assert await second.get("p1") == original
        assert [e.kind for e in await second.events("p1")] == ["created"]
        assert (await second.append_event("p1", "step", {}, 3.0)).seq == 2
        with pytest.raises(TagMutationError):
            await second.remember_tag(artifact(DIGEST_B, "1.0.0"))
        assert (await second.pop_stable("checkout", "prod")).artifact.digest == DIGEST_B
        assert await second.traffic("checkout", "prod") == traffic_state(preview=True)
        with pytest.raises(ConflictError):
            await second.create(promotion("p2"))
    finally:
        await second.close()


async def test_sqlite_tags_stored_under_an_old_spelling_still_guard(tmp_path: Path) -> None:
    """Tags a ledger stored before names were normalized keep guarding every spelling."""
    path = tmp_path / "ledger.db"
    created = SqliteLedger(path)
    await created.open()
    await created.close()
    with sqlite3.connect(path) as conn:  # as an older promgate stored it: as written
        conn.execute(
            "INSERT INTO tags (repository, tag, digest, first_seen) VALUES (?, ?, ?, ?)",
            ("nginx", "1.25", DIGEST_A, 1.0),
        )
    reopened = SqliteLedger(path)
    await reopened.open()
    try:
        await reopened.remember_tag(ArtifactRef.parse(f"docker.io/library/nginx:1.25@{DIGEST_A}"))
        with pytest.raises(TagMutationError, match=DIGEST_A):
            await reopened.remember_tag(
                ArtifactRef.parse(f"index.docker.io/library/nginx:1.25@{DIGEST_B}")
            )
    finally:
        await reopened.close()
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT repository, tag, digest FROM tags").fetchall()
    assert rows == [("nginx", "1.25", DIGEST_A)]  # known already: nothing added


@pytest.fixture
async def sqlite_with_p1(tmp_path: Path) -> AsyncIterator[SqliteLedger]:
    """An open SQLite ledger holding promotion p1; closed after."""
    ledger = SqliteLedger(tmp_path / "ledger.db")
    await ledger.open()
    try:
        await ledger.create(promotion("p1"))
        yield ledger
    finally:
        await ledger.close()


async def test_sqlite_concurrent_appends_get_gap_free_seqs(sqlite_with_p1: SqliteLedger) -> None:
    ledger = sqlite_with_p1
    appended = await asyncio.gather(
        *(ledger.append_event("p1", "step", {"n": n}, float(n)) for n in range(200))
    )
    assert sorted(e.seq for e in appended) == list(range(1, 201))
    stored = await ledger.events("p1")
    assert [e.seq for e in stored] == list(range(1, 201))
    assert {e.data["n"] for e in stored} == set(range(200))


async def test_sqlite_cancelled_calls_leave_the_ledger_usable(
    sqlite_with_p1: SqliteLedger,
) -> None:
    ledger = sqlite_with_p1
    tasks = [
        asyncio.create_task(ledger.append_event("p1", "step", {}, float(n))) for n in range(50)
    ]
    await asyncio.sleep(0.001)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    after = await ledger.append_event("p1", "step", {}, 99.0)
    assert [e.seq for e in await ledger.events("p1")] == list(range(1, after.seq + 1))


async def test_sqlite_creates_the_parent_directory_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "ledger.db"
    ledger = SqliteLedger(path)
    await ledger.open()
    await ledger.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


async def test_sqlite_event_log_is_append_only(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = SqliteLedger(path)
    await ledger.open()
    await ledger.create(promotion("p1"))
    await ledger.append_event("p1", "created", {}, 1.0)
    await ledger.close()
    with sqlite3.connect(path) as conn, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM events")


@pytest.mark.parametrize("spoil", ["directory", "garbage"])
async def test_sqlite_unusable_file_is_a_ledger_error(tmp_path: Path, spoil: str) -> None:
    path = tmp_path / "ledger.db"
    if spoil == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"this is not a database, just some bytes " * 200)
    ledger = SqliteLedger(path)
    with pytest.raises(LedgerError, match=r"open") as failed:
        await ledger.open()
    assert str(path) in str(failed.value)
    assert not isinstance(failed.value, sqlite3.Error)
    with pytest.raises(LedgerError, match="not open"):
        await ledger.get("p1")


async def test_sqlite_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(LedgerError, match=rf"{re.escape(str(path))}.*newer"):
        await SqliteLedger(path).open()


async def test_sqlite_before_open_is_a_ledger_error(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match=r"get promotion 'p1'.*not open"):
        await SqliteLedger(tmp_path / "ledger.db").get("p1")


async def test_sqlite_saves_do_not_rewrite_the_manifest(tmp_path: Path) -> None:
    """Saving a step of a promotion with a large manifest writes a few pages, not the manifest."""
    path = tmp_path / "ledger.db"
    ledger = SqliteLedger(path)
    await ledger.open()
    large = promotion("p1").evolve(manifest={"licences": ["x" * 1000] * 400})  # about 400 KB
    await ledger.create(large)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (body,) = conn.execute("SELECT body FROM promotions").fetchone()
    assert "licences" not in body
    for step in range(50):
        await ledger.save(large.evolve(step_index=step, updated_at=float(step)))
    wal_bytes = (tmp_path / "ledger.db-wal").stat().st_size
    assert (await ledger.get("p1")).manifest == large.manifest
    await ledger.close()
    assert wal_bytes < 1_000_000, f"50 saves wrote {wal_bytes} bytes of WAL"


V1_PROMOTION = {
    **promotion("p1", phase=Phase.PROMOTED).to_dict(),
    "manifest": {"build": {"id": "1", "url": "https://bot:s3cret@ci.example/1"}},
}


async def test_sqlite_opens_a_version_1_ledger_and_moves_its_manifests(tmp_path: Path) -> None:
    """An existing ledger opens: manifests move to their own table without credentials, and
    old audit rows read as applied."""
    path = tmp_path / "ledger.db"
    with sqlite3.connect(path) as conn:
        for statement in SQLITE_MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO promotions VALUES (?, ?, ?, ?, ?, ?, ?)",
            ("p1", "checkout", "prod", "promoted", 100.0, 100.0, json.dumps(V1_PROMOTION)),
        )
        conn.execute(
            "INSERT INTO audit (at, actor, action, target) VALUES (1.0, 'a', 'abort', 'p1')"
        )
    conn.close()
    ledger = SqliteLedger(path)
    await ledger.open()
    try:
        restored = await ledger.get("p1")
        assert restored.manifest == {"build": {"id": "1", "url": "https://ci.example/1"}}
        assert await ledger.audit_trail(limit=5) == [
            AuditEntry(1, 1.0, "a", "abort", "p1", "applied", "")
        ]
    finally:
        await ledger.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert "s3cret" not in str(conn.execute("SELECT * FROM promotions").fetchall())
    conn.close()


# --- SQLite integrity at start --------------------------------------------------------


async def filled_ledger(path: Path, events: int = 400) -> None:
    """A real ledger with a promotion, a long event log, stable history and traffic."""
    ledger = SqliteLedger(path)
    await ledger.open()
    await ledger.create(promotion("p1"))
    for n in range(events):
        await ledger.append_event("p1", "verdict", {"n": n, "pad": "x" * 200}, float(n))
    await ledger.push_stable(release(DIGEST_A, "p0"))
    await ledger.save_traffic(traffic_state())
    await ledger.close()


def smash_middle_page(path: Path) -> None:
    size = path.stat().st_size
    page = 4096
    assert size >= 20 * page, f"the ledger has only {size} bytes"
    with path.open("r+b") as file:
        file.seek((size // page // 2) * page)
        file.write(b"\xde\xad\xbe\xef" * (page // 4))


def truncate_to_half(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.truncate(size // 2 // 4096 * 4096 + 100)


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda path: path.write_bytes(b""), id="zero-bytes"),
        pytest.param(smash_middle_page, id="page-smashed-in-the-middle"),
        pytest.param(truncate_to_half, id="truncated"),
        pytest.param(lambda path: path.write_bytes(b"not a database " * 400), id="not-sqlite"),
    ],
)
async def test_sqlite_refuses_to_open_a_damaged_or_empty_ledger(tmp_path: Path, spoil: Any) -> None:
    """An existing ledger that is empty or fails its integrity check is refused with the
    path, what is wrong and how to restore it, and the file is left as it was."""
    path = tmp_path / "ledger.db"
    await filled_ledger(path)
    spoil(path)
    spoiled = path.read_bytes()
    ledger = SqliteLedger(path)
    with pytest.raises(LedgerError) as refused:
        await ledger.open()
    message = str(refused.value)
    for part in (f"cannot open ledger {path}", "does not start", "backup", ".recover", "aside"):
        assert part in message, message
    assert path.read_bytes() == spoiled
    with pytest.raises(LedgerError, match="not open"):
        await ledger.get("p1")


async def test_sqlite_starts_empty_where_no_ledger_is_yet(tmp_path: Path) -> None:
    """A path with no file is a first start: the ledger is created, with nothing left beside it."""
    path = tmp_path / "new" / "ledger.db"
    ledger = SqliteLedger(path)
    await ledger.open()
    assert await ledger.list() == []
    await ledger.close()
    assert sorted(p.name for p in path.parent.iterdir()) == ["ledger.db"]
    reopened = SqliteLedger(path)
    await reopened.open()  # the new file has its schema, so it is not "unexpectedly empty"
    await reopened.close()


async def test_sqlite_opens_a_healthy_ledger_after_an_unclean_stop(tmp_path: Path) -> None:
    """A ledger left with its WAL (as a killed process leaves it) passes the check."""
    path = tmp_path / "ledger.db"
    await filled_ledger(path, events=5)
    ledger = SqliteLedger(path)
    await ledger.open()
    await ledger.append_event("p1", "step", {}, 9.0)
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("ledger.db", "ledger.db-wal"):  # the files as they are while it runs
        (copy / name).write_bytes((tmp_path / name).read_bytes())
    await ledger.close()
    survivor = SqliteLedger(copy / "ledger.db")
    await survivor.open()
    assert (await survivor.events("p1"))[-1].kind == "step"
    await survivor.close()
