"""The Kubernetes ledger's pure parts: object names, status mapping and transaction plans."""

from __future__ import annotations

import re

import pytest

from sidecar.domain.artifact import ArtifactRef
from sidecar.domain.promotion import Phase, Promotion
from sidecar.errors import LedgerError
from sidecar.ledger.base import NewEvent, Transaction
from sidecar.ledger.kubernetes import names, plan, records
from sidecar.ledger.kubernetes.records import LogTail, StageState

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("checkout", True),
        ("p1", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("Checkout", False),
        ("shop/checkout", False),
        ("-edge-", False),
        ("日本", False),
        ("", False),
    ],
)
def test_dns_label_keeps_valid_names_and_hashes_the_rest(value: str, kept: bool) -> None:
    label = names.dns_label(value)
    assert DNS_LABEL.fullmatch(label) and len(label) <= 63
    assert (label == value) is kept


@pytest.mark.parametrize(
    ("service", "stage"),
    [("checkout", "prod"), ("Shop/Checkout Service" * 5, "production-eu-west" * 4), ("a-b", "c")],
)
def test_stage_names_are_dns_subdomains_under_63(service: str, stage: str) -> None:
    name = names.stage_name(service, stage)
    assert DNS_SUBDOMAIN.fullmatch(name) and len(name) <= 63, name


def test_stage_names_of_different_stages_never_meet() -> None:
    """Joining with a dash alone would make a-b/c and a/b-c one object."""
    assert names.stage_name("a-b", "c") != names.stage_name("a", "b-c")
    assert names.tags_name("docker.io/library/nginx") != names.tags_name("docker.io/library-nginx")


@pytest.mark.parametrize("value", ["checkout", "Shop_Checkout.v2", "shop/checkout", "x" * 80, "_a"])
def test_label_values_are_accepted_by_kubernetes(value: str) -> None:
    assert LABEL_VALUE.fullmatch(names.label_value(value))
    assert len(names.label_value(value)) <= 63


DIGEST = "sha256:" + "a" * 64


def promotion(promotion_id: str = "p1", **changes: object) -> Promotion:
    base = Promotion(
        id=promotion_id,
        service="checkout",
        stage="prod",
        artifact=ArtifactRef("registry.example/checkout", DIGEST, "1.0.0"),
        version="1.0.0",
        policy_version="3",
        strategy="canary",
        candidate_upstream="",
        manifest={"service": "checkout"},
        created_at=100.0,
        updated_at=160.0,
    )
    return base.evolve(**changes)


VERDICTS = {
    "gates": [
        {"gate": "errors", "result": "breach", "classification": "transient", "value": 0.2,
         "threshold": 0.05, "baseline": 0.01, "hard": False, "reason": "x"},
        {"gate": "latency", "result": "no_data", "classification": None, "value": float("nan"),
         "threshold": 0.3, "baseline": None},
        "not a gate",
    ]
}  # fmt: skip


def test_gates_of_an_evaluation_take_the_schema_shape() -> None:
    assert records.gates_of(VERDICTS) == [
        {"name": "errors", "result": "breach", "classification": "transient", "value": 0.2,
         "threshold": 0.05, "baseline": 0.01},
        {"name": "latency", "result": "no_data", "value": None, "threshold": 0.3,
         "baseline": None},
    ]  # fmt: skip
    assert records.gates_of({"reason": "no evaluation"}) is None


def test_status_shows_the_promotion_and_keeps_the_last_gates() -> None:
    current = {"metadata": {"name": "p1", "generation": 2}, "status": {"gates": [{"name": "g"}]}}
    moved = promotion(phase=Phase.PROGRESSING, step_index=1, weight=25, reason="step 2")
    status = records.promotion_status(current, moved, 7, gates=None, steps=3)["status"]
    assert status["gates"] == [{"name": "g"}]
    assert {k: status[k] for k in ("phase", "step", "steps", "stepLabel", "weight")} == {
        "phase": "progressing",
        "step": 1,
        "steps": 3,
        "stepLabel": "2/3",
        "weight": 25,
    }
    assert (status["digest"], status["observedGeneration"]) == (DIGEST, 2)
    assert status["updatedAt"] == "1970-01-01T00:02:40Z"
    assert status["ledger"]["txn"] == 7
    assert records.promotion_of({**current, "status": status, "spec": {"manifest": {"m": 1}}}) == (
        moved.evolve(manifest={"m": 1})
    )
    unknown = records.promotion_status(current, moved, 7, gates=[], steps=None)["status"]
    assert "steps" not in unknown and "stepLabel" not in unknown


def test_an_object_without_a_record_is_no_promotion() -> None:
    assert records.promotion_of({"metadata": {"name": "x"}, "spec": {}}) is None
    assert records.promotion_of({"metadata": {"name": "x"}, "status": {"phase": "refused"}}) is None


def state(**changes: object) -> StageState:
    fresh = StageState("checkout", "prod")
    for key, value in changes.items():
        setattr(fresh, key, value)
    return fresh


def test_a_plan_numbers_events_after_the_log_end_and_rotates_full_chunks() -> None:
    big = {"pad": "x" * (plan.CHUNK_BYTES // 3)}
    events = tuple(NewEvent("p1", "step", big, float(n)) for n in range(4))
    start = state(tails={"p1": LogTail(seq=9, chunk=2, bytes=10)}, txn=4)
    new, appended = plan.plan(start, Transaction(events=events), plan.Facts(known={"p1"}))
    assert [e.seq for e in appended] == [10, 11, 12, 13]
    assert new.journal is not None and new.txn == new.journal.txn == 5
    assert [(e.seq, e.chunk) for e in new.journal.events] == [(10, 2), (11, 2), (12, 3), (13, 3)]
    assert new.tails["p1"].seq == 13 and new.tails["p1"].chunk == 3


def test_a_plan_refuses_a_second_active_promotion_and_a_taken_id() -> None:
    busy = state(active=["p0"])
    with pytest.raises(Exception, match="'p0' is still active"):
        plan.plan(busy, Transaction(create=promotion()), plan.Facts(known=()))
    with pytest.raises(Exception, match="already exists"):
        plan.plan(state(), Transaction(create=promotion()), plan.Facts(known=(), taken=True))
    done, _ = plan.plan(
        state(active=["p1"]),
        Transaction(save=promotion(phase=Phase.ABORTED)),
        plan.Facts(known={"p1"}),
    )
    assert done.active == []


def test_a_plan_that_would_not_fit_one_object_is_refused() -> None:
    huge = (NewEvent("p1", "step", {"pad": "x" * plan.MAX_OBJECT_BYTES}, 1.0),)
    with pytest.raises(LedgerError, match=r"over the 1000000 bytes Kubernetes accepts"):
        plan.plan(state(tails={"p1": LogTail()}), Transaction(events=huge), plan.Facts({"p1"}))


def test_a_transaction_over_two_stages_is_refused() -> None:
    staging = promotion("p2", stage="staging")
    with pytest.raises(LedgerError, match="checkout/prod, checkout/staging"):
        plan.stage_of(Transaction(create=promotion(), save=staging), {"p2": staging})


def test_the_stage_config_map_round_trips() -> None:
    new, _ = plan.plan(
        state(), Transaction(create=promotion(manifest={"big": "y" * 100})), plan.Facts(())
    )
    obj = new.to_object()
    assert obj["metadata"]["labels"][names.JOURNAL_LABEL] == "pending"
    obj["metadata"]["resourceVersion"] = "12"
    back = StageState.from_object(obj)
    assert back.journal == new.journal and back.active == ["p1"]
    assert back.resource_version == "12"
