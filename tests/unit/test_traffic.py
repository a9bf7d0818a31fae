"""desired_traffic: the split each promotion state calls for."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.actuators.base import Backend, TrafficState
from sidecar.domain.artifact import ArtifactRef
from sidecar.domain.promotion import Phase, Promotion
from sidecar.engine.traffic import desired_traffic

CANDIDATE = ArtifactRef("registry.example/shop/checkout", "sha256:" + "ab" * 32, "1.4.2")
STABLE = ArtifactRef("registry.example/shop/checkout", "sha256:" + "cd" * 32, "1.4.1")
C_URL = "http://127.0.0.1:9002"
S_URL = "http://127.0.0.1:9001"


def promotion(**changes: Any) -> Promotion:
    """A canary promotion at weight 25 with a stable baseline, actuated 3 times."""
    values: dict[str, Any] = {
        "id": "p1",
        "service": "checkout",
        "stage": "prod",
        "artifact": CANDIDATE,
        "version": "1.4.2",
        "policy_version": "7",
        "strategy": "canary",
        "candidate_upstream": C_URL,
        "manifest": {},
        "created_at": 1_700_000_000.0,
        "phase": Phase.PROGRESSING,
        "weight": 25,
        "baseline": STABLE,
        "baseline_upstream": S_URL,
        "actuation_seq": 3,
    }
    values.update(changes)
    return Promotion(**values)


def cand(weight: int) -> Backend:
    return Backend(CANDIDATE.digest, C_URL, weight, "candidate")


def stab(weight: int) -> Backend:
    return Backend(STABLE.digest, S_URL, weight, "stable")


FIRST = {"baseline": None, "baseline_upstream": None}
BG = {"strategy": "blue_green", "weight": 0}


@pytest.mark.parametrize(
    ("changes", "backends", "preview"),
    [
        pytest.param({}, (stab(75), cand(25)), None, id="canary-progressing-25"),
        pytest.param({"weight": 0}, (stab(100), cand(0)), None, id="canary-weight-0"),
        pytest.param({"weight": 100}, (stab(0), cand(100)), None, id="canary-weight-100"),
        pytest.param({"phase": Phase.PROMOTED}, (cand(100),), None, id="canary-promoted"),
        pytest.param({"phase": Phase.ROLLED_BACK}, (stab(100),), None, id="canary-rolled-back"),
        pytest.param({"phase": Phase.ABORTED}, (stab(100),), None, id="canary-aborted"),
        pytest.param({"phase": Phase.INCONCLUSIVE}, (stab(100),), None,
                     id="canary-inconclusive"),
        pytest.param(BG, (stab(100),), cand(0), id="blue-green-preview"),
        pytest.param({**BG, "weight": 40}, (stab(100),), cand(0),
                     id="blue-green-preview-ignores-weight"),
        pytest.param({**BG, "phase": Phase.POST_PROMOTION, "weight": 100},
                     (cand(100), stab(0)), None, id="blue-green-post-promotion-keeps-old-slot"),
        pytest.param({**BG, "phase": Phase.PROMOTED}, (cand(100),), None,
                     id="blue-green-promoted"),
        pytest.param({**BG, "phase": Phase.ROLLED_BACK}, (stab(100),), None,
                     id="blue-green-rolled-back"),
        pytest.param({**BG, "phase": Phase.ABORTED}, (stab(100),), None,
                     id="blue-green-aborted"),
        pytest.param(FIRST, (cand(100),), None, id="no-baseline-candidate-only"),
        pytest.param({**FIRST, "phase": Phase.PROMOTED}, (cand(100),), None,
                     id="no-baseline-promoted"),
        pytest.param({**FIRST, **BG}, (cand(100),), None, id="no-baseline-blue-green"),
    ],
)  # fmt: skip
def test_desired_traffic(
    changes: dict[str, Any], backends: tuple[Backend, ...], preview: Backend | None
) -> None:
    """Each phase and strategy gets its weights, roles and preview backend."""
    state = desired_traffic(promotion(**changes))
    assert state == TrafficState(
        promotion_id="p1",
        sequence=3,
        service="checkout",
        stage="prod",
        backends=backends,
        preview=preview,
    )
    assert sum(b.weight for b in state.backends) == 100


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"phase": Phase.PENDING}, id="pending"),
        pytest.param({"phase": Phase.AWAITING_APPROVAL}, id="awaiting-approval"),
        pytest.param({"phase": Phase.REFUSED}, id="refused"),
        pytest.param({"phase": Phase.PENDING, **BG}, id="blue-green-pending"),
        pytest.param({"phase": Phase.REFUSED, **FIRST}, id="refused-no-baseline"),
    ],
)
def test_desired_traffic_none_before_traffic_is_ours(changes: dict[str, Any]) -> None:
    """Before traffic moves (pending, awaiting approval, refused) there is nothing to set."""
    assert desired_traffic(promotion(**changes)) is None


def test_missing_baseline_upstream_is_empty_string() -> None:
    """A baseline without a recorded upstream gets an empty upstream, not None."""
    state = desired_traffic(promotion(baseline_upstream=None))
    assert state is not None
    assert state.backends[0] == Backend(STABLE.digest, "", 75, "stable")


def test_sequence_follows_actuation_seq() -> None:
    """The state's sequence is the promotion's actuation sequence."""
    state = desired_traffic(promotion(actuation_seq=11))
    assert state is not None
    assert state.sequence == 11


def test_blue_green_promotion_keeps_the_previous_slot_listed() -> None:
    """After a blue-green promotion the old release stays listed, unweighted, until
    keepPrevious ends, so a receiver keeps it running for an instant switch-back."""
    state = desired_traffic(
        promotion(
            phase=Phase.PROMOTED, strategy="blue_green", weight=100,
            extra={"previous_kept_until": 1_700_000_600.0},
        )
    )  # fmt: skip
    assert state is not None
    assert [(b.role, b.weight, b.retain_until) for b in state.backends] == [
        ("candidate", 100, None),
        ("stable", 0, 1_700_000_600.0),
    ]
