"""Lease decisions, pure: given the Lease read, local time and who we are, what to write.

Only locally observed time is trusted, as in client-go's leader election: a replica never
compares another's ``renewTime`` with its own clock. It notes *when it saw* the record
change (``Observation.seen_at``, on its own monotonic clock) and takes the lease over only
when the record has not changed for the holder's ``leaseDurationSeconds`` since. The holder
acts only until ``renew_s`` after the moment it *sent* its last successful renewal, and
``renew_s < duration_s``, so the two windows cannot overlap whatever the clocks' offsets:
each side measures an interval on its own clock, starting from the same write.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from sidecar.kube.api import Object

_MICRO_TIME = re.compile(
    r"(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})"
)


def format_micro_time(moment: datetime) -> str:
    """A Kubernetes MicroTime: ``2026-12-02T15:04:05.123456Z`` (UTC, microseconds)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro_time(text: str) -> datetime:
    """The moment a MicroTime (or RFC 3339 time) names; ValueError if it names none."""
    match = _MICRO_TIME.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a MicroTime like 2026-12-02T15:04:05.123456Z")
    day, clock, fraction, zone = match.groups()
    micros = (fraction or "").ljust(6, "0")[:6]
    offset = "+00:00" if zone == "Z" else zone
    return datetime.fromisoformat(f"{day}T{clock}.{micros}{offset}").astimezone(UTC)


@dataclass(frozen=True)
class LeaseTiming:
    """How long a lease lasts, how long its holder may act after a renewal, how often to try.

    ``duration_s`` is whole seconds (``leaseDurationSeconds`` is an integer); the margin
    ``duration_s - renew_s`` covers a stale leader's last in-flight write and clock rates
    that differ between replicas.
    """

    duration_s: int
    renew_s: float
    retry_s: float

    def __post_init__(self) -> None:
        if self.duration_s < 1:
            raise ValueError(f"lease duration must be at least 1 s; got {self.duration_s}")
        if not 0 < self.retry_s < self.renew_s < self.duration_s:
            raise ValueError(
                "lease settings need 0 < retry period < renew deadline < duration; got "
                f"retry {self.retry_s} s, renew {self.renew_s} s, duration {self.duration_s} s"
            )


@dataclass(frozen=True)
class LeaseRecord:
    """The leader-election part of a Lease's spec; ``holder`` ``""`` means nobody."""

    holder: str
    duration_s: int
    acquired: datetime | None
    renewed: datetime | None
    transitions: int

    @classmethod
    def of(cls, lease: Object, default_duration_s: int) -> LeaseRecord:
        """The record a Lease object carries; absent or unreadable fields read as unset."""
        spec = lease.get("spec") or {}
        duration = spec.get("leaseDurationSeconds")
        if not isinstance(duration, int) or duration < 1:
            duration = default_duration_s
        transitions = spec.get("leaseTransitions")
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration_s=duration,
            acquired=_time_or_none(spec.get("acquireTime")),
            renewed=_time_or_none(spec.get("renewTime")),
            transitions=transitions if isinstance(transitions, int) and transitions >= 0 else 0,
        )

    def spec(self) -> dict[str, Any]:
        """The Lease ``spec`` that stores this record."""
        spec: dict[str, Any] = {
            "leaseDurationSeconds": self.duration_s,
            "leaseTransitions": self.transitions,
        }
        if self.holder:
            spec["holderIdentity"] = self.holder
        if self.acquired is not None:
            spec["acquireTime"] = format_micro_time(self.acquired)
        if self.renewed is not None:
            spec["renewTime"] = format_micro_time(self.renewed)
        return spec

    def released(self, now: datetime) -> LeaseRecord:
        """This record given up: no holder and a one-second duration, so any replica that
        reads it takes over at once (a planned restart fails over immediately)."""
        return replace(self, holder="", duration_s=1, renewed=now)


def _time_or_none(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_micro_time(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class Observation:
    """A record as read, and when (local monotonic seconds) it was first seen so."""

    record: LeaseRecord
    seen_at: float


def observe(
    previous: Observation | None, lease: Object | None, now: float, default_duration_s: int
) -> Observation | None:
    """The observation after reading ``lease`` at ``now``: ``seen_at`` moves only when the
    record changed, so an unrenewed lease ages on this replica's clock alone."""
    if lease is None:
        return None
    record = LeaseRecord.of(lease, default_duration_s)
    if previous is not None and previous.record == record:
        return previous
    return Observation(record, now)


class Action(Enum):
    CREATE = "create"  # no Lease yet: create it, held by us
    RENEW = "renew"  # we hold it: write a new renewTime
    ACQUIRE = "acquire"  # free or expired: take it over
    FOLLOW = "follow"  # another replica holds a live lease
    DEPOSED = "deposed"  # we believed we led, and the record names another holder


@dataclass(frozen=True)
class Decision:
    action: Action
    record: LeaseRecord | None
    """What to write (None for FOLLOW and DEPOSED)."""
    leader: str | None
    """Who leads if the write lands (or, when nothing is written, who the record names)."""


def decide(
    observed: Observation | None,
    identity: str,
    *,
    now: float,
    wall: datetime,
    timing: LeaseTiming,
    leading: bool,
) -> Decision:
    """What this replica does with the Lease it last observed.

    ``now`` is local monotonic time, ``wall`` the time written into the record (for
    people; no replica decides by it), ``leading`` whether we currently act as leader.
    """
    if observed is None:
        record = LeaseRecord(identity, timing.duration_s, wall, wall, 0)
        return Decision(Action.CREATE, record, identity)
    held = observed.record
    if held.holder == identity:
        renewed = replace(held, duration_s=timing.duration_s, renewed=wall)
        return Decision(Action.RENEW, renewed, identity)
    if leading:
        return Decision(Action.DEPOSED, None, held.holder or None)
    if not held.holder or now >= observed.seen_at + held.duration_s:
        taken = LeaseRecord(identity, timing.duration_s, wall, wall, held.transitions + 1)
        return Decision(Action.ACQUIRE, taken, identity)
    return Decision(Action.FOLLOW, None, held.holder)


def pause(
    observed: Observation | None,
    identity: str,
    *,
    now: float,
    timing: LeaseTiming,
    acting_until: float | None,
) -> float:
    """Seconds until the next round: ``retry_s``, or sooner when something is due first.

    While leading (``acting_until`` set), at the acting deadline, so a loss is reported the
    moment it happens; while following a live lease, at the moment it expires on this
    replica's clock, so a dead leader is replaced without waiting out a retry period.
    """
    due = now + timing.retry_s
    if acting_until is not None:
        due = min(due, acting_until)
    elif observed is not None and observed.record.holder not in ("", identity):
        expires = observed.seen_at + observed.record.duration_s
        if expires > now:
            due = min(due, expires)
    return max(0.0, due - now)
