"""The pure lease decisions: MicroTime, records, observations and what to write."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from sidecar.leadership.election import (
    Action,
    LeaseRecord,
    LeaseTiming,
    Observation,
    decide,
    format_micro_time,
    observe,
    parse_micro_time,
    pause,
)

WALL = datetime(2026, 12, 2, 15, 4, 5, 123456, tzinfo=UTC)
TIMING = LeaseTiming(duration_s=15, renew_s=10, retry_s=2)


def lease(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "promgate", "resourceVersion": "7"}, "spec": spec}


def record(holder: str = "a", duration_s: int = 15, transitions: int = 0) -> LeaseRecord:
    return LeaseRecord(holder, duration_s, WALL, WALL, transitions)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-02T15:04:05.123456Z", WALL),
        ("2026-12-02T15:04:05Z", WALL.replace(microsecond=0)),
        ("2026-12-02T15:04:05.1Z", WALL.replace(microsecond=100000)),
        ("2026-12-02T15:04:05.123456789Z", WALL),
        ("2026-12-02T17:04:05.123456+02:00", WALL),
    ],
)
def test_parse_micro_time(text: str, expected: datetime) -> None:
    """MicroTime and the RFC 3339 forms other writers use read as the same UTC moment."""
    assert parse_micro_time(text) == expected


@pytest.mark.parametrize("text", ["", "2026-12-02", "2026-12-02 15:04:05Z", "yesterday"])
def test_parse_micro_time_refuses(text: str) -> None:
    """Text that names no moment is an error that shows the expected form."""
    with pytest.raises(ValueError, match=re.escape("2026-12-02T15:04:05.123456Z")):
        parse_micro_time(text)


def test_format_micro_time() -> None:
    """Formatting writes UTC with six fraction digits, from any time zone."""
    assert format_micro_time(WALL) == "2026-12-02T15:04:05.123456Z"
    east = WALL.astimezone(timezone(timedelta(hours=5)))
    assert format_micro_time(east) == "2026-12-02T15:04:05.123456Z"
    assert parse_micro_time(format_micro_time(WALL)) == WALL


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {
                "holderIdentity": "a",
                "leaseDurationSeconds": 4,
                "acquireTime": "2026-12-02T15:04:05.123456Z",
                "renewTime": "2026-12-02T15:04:05.123456Z",
                "leaseTransitions": 3,
            },
            LeaseRecord("a", 4, WALL, WALL, 3),
        ),
        ({}, LeaseRecord("", 15, None, None, 0)),
        (
            {"leaseDurationSeconds": 0, "renewTime": "soon", "leaseTransitions": -1},
            LeaseRecord("", 15, None, None, 0),
        ),
    ],
)
def test_record_of(spec: dict[str, Any], expected: LeaseRecord) -> None:
    """A Lease's spec reads as its record; absent or invalid fields read as unset."""
    assert LeaseRecord.of(lease(**spec), 15) == expected


def test_record_spec_round_trip_and_release() -> None:
    """A record written and read back is the same; a released one names nobody for 1 s."""
    held = record(transitions=2)
    assert LeaseRecord.of(lease(**held.spec()), 15) == held
    later = WALL + timedelta(seconds=3)
    released = held.released(later)
    assert released == LeaseRecord("", 1, WALL, later, 2)
    assert "holderIdentity" not in released.spec()


def test_observe_ages_only_an_unchanged_record() -> None:
    """seen_at stays while the record is unchanged and moves when it changes."""
    first = observe(None, lease(**record().spec()), 100.0, 15)
    assert first == Observation(record(), 100.0)
    assert observe(first, lease(**record().spec()), 108.0, 15) is first
    renewed = LeaseRecord("a", 15, WALL, WALL + timedelta(seconds=2), 0)
    assert observe(first, lease(**renewed.spec()), 109.0, 15) == Observation(renewed, 109.0)
    assert observe(first, None, 110.0, 15) is None


@pytest.mark.parametrize(
    ("observed", "now", "leading", "action", "written", "leader"),
    [
        # no Lease yet: create it, held by us, no transition
        (None, 0.0, False, Action.CREATE, LeaseRecord("me", 15, WALL, WALL, 0), "me"),
        # ours: renew, keeping when it was acquired and the count
        (
            Observation(LeaseRecord("me", 4, WALL - timedelta(hours=1), None, 5), 0.0),
            3.0,
            True,
            Action.RENEW,
            LeaseRecord("me", 15, WALL - timedelta(hours=1), WALL, 5),
            "me",
        ),
        # ours after a restart under the same identity: renew, not a transition
        (Observation(record("me", transitions=1), 0.0), 1.0, False, Action.RENEW, None, "me"),
        # another's live lease: follow it
        (Observation(record("a"), 100.0), 114.9, False, Action.FOLLOW, None, "a"),
        # unchanged for its whole duration on our clock: take it over, one more transition
        (
            Observation(record("a", transitions=2), 100.0),
            115.0,
            False,
            Action.ACQUIRE,
            LeaseRecord("me", 15, WALL, WALL, 3),
            "me",
        ),
        # the holder's own duration counts, not ours
        (Observation(record("a", duration_s=4), 100.0), 104.0, False, Action.ACQUIRE, None, "me"),
        (Observation(record("a", duration_s=60), 100.0), 130.0, False, Action.FOLLOW, None, "a"),
        # released (no holder): take it at once
        (
            Observation(LeaseRecord("", 1, WALL, WALL, 4), 100.0),
            100.0,
            False,
            Action.ACQUIRE,
            LeaseRecord("me", 15, WALL, WALL, 5),
            "me",
        ),
        # we led and the record names another: deposed, nothing written
        (Observation(record("a"), 100.0), 100.0, True, Action.DEPOSED, None, "a"),
        (Observation(record("a"), 100.0), 200.0, True, Action.DEPOSED, None, "a"),
    ],
)
def test_decide(
    *,
    observed: Observation | None,
    now: float,
    leading: bool,
    action: Action,
    written: LeaseRecord | None,
    leader: str,
) -> None:
    """Each state of the Lease leads to one action, one record to write and one leader."""
    decision = decide(observed, "me", now=now, wall=WALL, timing=TIMING, leading=leading)
    assert decision.action is action
    assert decision.leader == leader
    if written is not None:
        assert decision.record == written
    if action in (Action.FOLLOW, Action.DEPOSED):
        assert decision.record is None
    else:
        assert decision.record is not None and decision.record.holder == "me"


@pytest.mark.parametrize(
    ("duration", "renew", "retry"),
    [(15, 15, 2), (15, 16, 2), (15, 10, 10), (15, 10, 0), (4, 3, -1)],
)
def test_timing_refuses_unsafe_settings(duration: int, renew: float, retry: float) -> None:
    """A renew deadline not shorter than the duration could let two leaders overlap."""
    with pytest.raises(ValueError, match="retry period < renew deadline < duration"):
        LeaseTiming(duration, renew, retry)


def test_timing_refuses_a_duration_under_a_second() -> None:
    """leaseDurationSeconds is whole seconds, at least one."""
    with pytest.raises(ValueError, match="at least 1 s"):
        LeaseTiming(0, 0.5, 0.1)


@pytest.mark.parametrize(
    ("observed", "now", "acting_until", "expected"),
    [
        (None, 100.0, None, 2.0),  # nothing seen yet: the retry period
        (Observation(record("me"), 90.0), 100.0, 109.0, 2.0),  # leading, deadline far
        (Observation(record("me"), 90.0), 100.0, 100.5, 0.5),  # leading: wake at the deadline
        (Observation(record("me"), 90.0), 100.0, 99.0, 0.0),  # deadline passed: at once
        (Observation(record("a"), 90.0), 100.0, None, 2.0),  # following, expiry at 105
        (Observation(record("a"), 90.0), 104.5, None, 0.5),  # following: wake at expiry
        (Observation(record("a"), 90.0), 106.0, None, 2.0),  # expired and not won: retry
        (Observation(record(""), 90.0), 100.0, None, 2.0),  # released: retry period
    ],
)
def test_pause(
    observed: Observation | None, now: float, acting_until: float | None, expected: float
) -> None:
    """The next round comes after the retry period, or at whichever deadline is sooner."""
    assert pause(observed, "me", now=now, timing=TIMING, acting_until=acting_until) == expected
