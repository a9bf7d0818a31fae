"""desired_traffic: the split each promotion state calls for, and the backend each side
runs in, from one promotion to the next."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import replace
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner
from opentelemetry.sdk.trace import TracerProvider

from sidecar.actuators.base import Backend, TrafficState, traffic_state_schema
from sidecar.actuators.webhook import encode_state
from sidecar.cli import cli
from sidecar.domain.artifact import ArtifactRef
from sidecar.domain.measurement import Measurement
from sidecar.domain.promotion import Phase, Promotion
from sidecar.engine.context import EngineContext
from sidecar.engine.controller import Controller
from sidecar.engine.traffic import candidate_backend, desired_traffic
from sidecar.errors import InputError
from sidecar.ledger.memory import MemoryLedger
from sidecar.telemetry.metrics import PrometheusRecorder
from sidecar.testing import FakeClock, RecordingActuator
from tests.support.manifests import manifest
from tests.support.policies import policy

REPO = "registry.example/shop/checkout"
CANDIDATE = ArtifactRef(REPO, "sha256:" + "ab" * 32, "1.4.2")
STABLE = ArtifactRef(REPO, "sha256:" + "cd" * 32, "1.4.1")
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
        "baseline_version": "1.4.1",
        "candidate_backend": "b",
        "baseline_backend": "a",
        "actuation_seq": 3,
    }
    values.update(changes)
    return Promotion(**values)


def cand(weight: int) -> Backend:
    return Backend(
        CANDIDATE.digest,
        C_URL,
        weight,
        "candidate",
        "b",
        image=REPO + "@sha256:" + "ab" * 32,
        version="1.4.2",
    )


def stab(weight: int) -> Backend:
    return Backend(
        STABLE.digest,
        S_URL,
        weight,
        "stable",
        "a",
        image=REPO + "@sha256:" + "cd" * 32,
        version="1.4.1",
    )


FIRST = {"baseline": None, "baseline_upstream": None, "baseline_backend": ""}
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
        pytest.param({"phase": Phase.NOT_READY}, (stab(100),), None, id="canary-not-ready"),
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
        pytest.param({**BG, "phase": Phase.NOT_READY}, (stab(100),), None,
                     id="blue-green-not-ready"),
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
    jsonschema.validate(json.loads(encode_state(state)), traffic_state_schema())


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
    assert state.backends[0] == replace(stab(75), upstream="")


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


def test_promotions_stored_without_backend_names_get_the_two_slots() -> None:
    """A promotion stored before backends had names still sends two distinct names."""
    state = desired_traffic(promotion(candidate_backend="", baseline_backend=""))
    assert state is not None
    assert [(b.role, b.backend) for b in state.backends] == [
        ("stable", "blue"),
        ("candidate", "green"),
    ]


@pytest.mark.parametrize(
    ("requested", "stable", "expected"),
    [
        pytest.param(None, None, "blue", id="first-release-first-slot"),
        pytest.param(None, "blue", "green", id="alternates-to-green"),
        pytest.param(None, "green", "blue", id="alternates-back-to-blue"),
        pytest.param(None, "srv-a", "blue", id="named-stable-default-slot"),
        pytest.param("", "blue", "green", id="empty-means-none"),
        pytest.param("srv-b", "srv-a", "srv-b", id="named"),
        pytest.param("blue", None, "blue", id="named-first-release"),
        pytest.param("web_2.eu-1", "web_1", "web_2.eu-1", id="dots-dashes-underscores"),
    ],
)
def test_candidate_backend(requested: str | None, stable: str | None, expected: str) -> None:
    """The candidate runs where it was deployed, else in the slot the stable is not in."""
    assert candidate_backend(requested, stable) == expected


@pytest.mark.parametrize(
    ("requested", "stable", "match"),
    [
        pytest.param("srv-a", "srv-a", "runs the stable release", id="stable-slot"),
        pytest.param("blue", "blue", "runs the stable release", id="stable-default-slot"),
        pytest.param("a b", None, "not a backend name", id="space"),
        pytest.param("-a", None, "not a backend name", id="leading-dash"),
        pytest.param('a"}', None, "not a backend name", id="quote"),
        pytest.param("x" * 64, None, "not a backend name", id="too-long"),
        pytest.param("blue\n", None, "not a backend name", id="trailing-newline"),
    ],
)
def test_candidate_backend_refusals(requested: str, stable: str | None, match: str) -> None:
    """A name a load balancer would refuse, or the stable's own slot, is bad input."""
    with pytest.raises(InputError, match=f"backend: .*{match}"):
        candidate_backend(requested, stable)


SERVER_GATE = {
    "name": "errors",
    "ratio": {
        "bad": 'sum(hits{server="$backend",role="$role",code="5xx",up="$upstream"})',
        "total": 'sum(hits{server="$backend",role="$role",up="$upstream"})',
    },
    "max": 0.05,
    "maxVsBaseline": 2.0,  # compares with the stable release, so both sides are queried
}
_LABEL = re.compile(r'(\w+)="([^"]*)"')


class HealthyServers:
    """A metrics source on which every server is healthy, and which keeps every query."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    async def query(self, promql: str) -> Measurement:
        self.queries.append(promql)
        bad = 'code="5xx"' in promql
        return Measurement.of(0.0 if bad else 1000.0 * len(self.queries))

    def sides(self) -> set[tuple[str, str, str]]:
        """(server, role, upstream) of every query asked."""
        found = set()
        for query in self.queries:
            labels = dict(_LABEL.findall(query))
            found.add((labels["server"], labels["role"], labels["up"]))
        return found

    async def close(self) -> None:
        """Nothing to release."""


async def promote(
    controller: Controller, digest_char: str, upstream: str, backend: str | None = None
) -> Promotion:
    version = f"1.{ord(digest_char) - ord('a')}.0"
    created = await controller.create(
        manifest(digest_char=digest_char, version=version, tag=version),
        "staging",
        upstream=upstream,
        backend=backend,
    )
    return await asyncio.wait_for(controller.wait_finished(created.id), 10)


def build_engine(source: HealthyServers) -> tuple[Controller, RecordingActuator]:
    actuator = RecordingActuator()
    ctx = EngineContext(
        policy=policy(gate=SERVER_GATE),
        ledger=MemoryLedger(),
        actuator=actuator,
        source=source,
        recorder=PrometheusRecorder(),
        tracer=TracerProvider().get_tracer("test"),
        clock=FakeClock(),
    )
    return Controller(ctx), actuator


def named(state: TrafficState) -> list[tuple[str, str, int]]:
    return [(b.backend, b.role, b.weight) for b in state.backends]


async def test_slots_alternate_and_a_candidate_becomes_the_next_stable_in_place() -> None:
    """The candidate of one release is the stable of the next in the same backend; the
    queries see the same role and backend names as the traffic state."""
    source = HealthyServers()
    controller, actuator = build_engine(source)
    await controller.start()
    try:
        first = await promote(controller, "a", "http://127.0.0.1:9001")
        assert (first.phase, first.candidate_backend) == (Phase.PROMOTED, "blue")
        second = await promote(controller, "b", "http://127.0.0.1:9002")
        assert second.phase is Phase.PROMOTED, second.reason
        assert (second.candidate_backend, second.baseline_backend) == ("green", "blue")
        assert source.sides() == {
            ("green", "candidate", "http://127.0.0.1:9002"),
            ("blue", "stable", "http://127.0.0.1:9001"),
        }
        events = await controller.events(second.id)
        first_split = next(e for e in events if e.kind == "actuation")
        assert [(b["backend"], b["role"]) for b in first_split.data["backends"]] == [
            ("blue", "stable"),
            ("green", "candidate"),
        ], "actuation events name the backends as the traffic state does"
        source.queries.clear()
        third = await promote(controller, "c", "http://127.0.0.1:9001")
        assert third.phase is Phase.PROMOTED, third.reason
        assert (third.candidate_backend, third.baseline_backend) == ("blue", "green")
        assert source.sides() == {
            ("blue", "candidate", "http://127.0.0.1:9001"),
            ("green", "stable", "http://127.0.0.1:9002"),
        }
    finally:
        await controller.stop()
    for state in actuator.applied:
        jsonschema.validate(json.loads(encode_state(state)), traffic_state_schema())
    splits = [named(state) for state in actuator.applied]
    assert splits[0] == [("blue", "candidate", 100)]
    assert ("blue", "stable", 80) in splits[1] and ("green", "candidate", 20) in splits[1]
    assert [("green", "candidate", 100)] in splits
    assert splits[-1] == [("blue", "candidate", 100)]


async def test_named_backends_are_remembered_for_the_next_release() -> None:
    """Fixed server names given at creation carry over: the next release's baseline is
    the server the last one was deployed to, and its own server cannot be that one."""
    source = HealthyServers()
    controller, actuator = build_engine(source)
    await controller.start()
    try:
        await promote(controller, "a", "http://127.0.0.1:9001", backend="srv-a")
        second = await promote(controller, "b", "http://127.0.0.1:9002", backend="srv-b")
        assert (second.candidate_backend, second.baseline_backend) == ("srv-b", "srv-a")
        with pytest.raises(InputError, match="'srv-b' runs the stable release"):
            await controller.create(
                manifest(digest_char="c", version="1.2.0", tag="1.2.0"),
                "staging",
                upstream="http://127.0.0.1:9002",
                backend="srv-b",
            )
        third = await promote(controller, "c", "http://127.0.0.1:9001", backend="srv-a")
        assert (third.candidate_backend, third.baseline_backend) == ("srv-a", "srv-b")
    finally:
        await controller.stop()
    assert named(actuator.applied[-1]) == [("srv-a", "candidate", 100)]


async def test_stage_rollback_routes_back_to_the_previous_backend() -> None:
    """``promgate rollback`` after a promotion names the backend the previous release
    still runs in."""
    source = HealthyServers()
    controller, actuator = build_engine(source)
    await controller.start()
    try:
        await promote(controller, "a", "http://127.0.0.1:9001", backend="srv-a")
        await promote(controller, "b", "http://127.0.0.1:9002", backend="srv-b")
        await controller.rollback_stage("demo", "staging", "alice")
    finally:
        await controller.stop()
    assert named(actuator.applied[-1]) == [("srv-a", "candidate", 100)]
    assert actuator.applied[-1].backends[0].upstream == "http://127.0.0.1:9001"


def test_schema_traffic_prints_the_schema_states_validate_against() -> None:
    """``promgate schema traffic`` is a JSON Schema that refuses a state missing a backend
    name, with an unknown role or a weight over 100."""
    result = CliRunner().invoke(cli, ["schema", "traffic"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    assert schema == traffic_state_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    state = desired_traffic(promotion())
    assert state is not None
    good = json.loads(encode_state(state))
    jsonschema.validate(good, schema)
    for path, bad in (("backend", ""), ("role", "baseline"), ("weight", 101)):
        broken = json.loads(encode_state(state))
        broken["backends"][0][path] = bad
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)
    del broken["backends"][0]["backend"]
    with pytest.raises(jsonschema.ValidationError, match="'backend' is a required property"):
        jsonschema.validate(broken, schema)
