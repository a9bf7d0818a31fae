"""Which readings of a ratio gate's counters are evidence, and of how many events.

Pure: no I/O. A ratio gate reads two counters on each side (candidate, baseline): bad
events and all events. Only the increase between two good readings of the same pair is
evidence; a gap never produces any. The rules for one side's pair:

- **good**: the total is a number and so is bad; or bad matched nothing while no bad
  series has been read since the counters last started, which is zero (a bad counter
  that has never counted has no series yet);
- **gap**: either query failed or returned NaN, the total matched nothing, or bad matched
  nothing after bad events were counted (its series cannot vanish while the total goes
  on). A gap leaves the last good reading in place: the next good one's increase spans it;
- **restart**: a total below the last good one means the counters started again. As with
  Prometheus' ``increase()``, the new values count from zero; the bad counter must have
  started again too (dropped, or matched nothing);
- **resync**: readings that cannot both be right (bad rose by more than the total, or one
  counter started again and the other did not) become the last good reading, and the
  increase since the one before is not counted. A series that existed but whose very
  first reading matched nothing is taken as zero; this rule bounds what that costs.

A gate's window opens at an evaluation where every side has a good reading and may be
judged at any later one where every side has one again. Each side's increases are summed
in between, so both sides cover the same span however their gaps fell, and the window
carries across a restart of promgate when its counters are saved (:meth:`to_json`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from sidecar.domain.measurement import Measurement, MeasurementKind

Pair = tuple[float, float]  # (bad, total)


class ReadKind(StrEnum):
    COUNTED = "counted"  # good: its increase since the last good reading counts
    FIRST = "first"  # good, and the first: counting starts here
    RESYNCED = "resynced"  # good, but its increase since the last good one cannot be trusted
    GAP = "gap"  # not good: the last good reading stays


@dataclass(frozen=True)
class CounterPair:
    """One side's last good reading of a ratio gate's counters."""

    bad: float
    total: float
    bad_seen: bool  # a bad series was read since the counters last started


@dataclass(frozen=True)
class PairReading:
    """What one reading of a side's two counters is, against its last good reading."""

    kind: ReadKind
    last: CounterPair | None  # the last good reading once this one is taken in
    increase: Pair = (0.0, 0.0)  # COUNTED: bad and total events since the last good reading
    query: str = ""  # GAP and RESYNCED: the query at fault, "bad" or "total" ("" for both)
    why: str = ""


def read_pair(last: CounterPair | None, bad: Measurement, total: Measurement) -> PairReading:
    """Classify one reading of a side's ``bad`` and ``total`` counters (module rules)."""
    for name, measured in (("total", total), ("bad", bad)):
        if measured.kind is MeasurementKind.PROVIDER_ERROR:
            return PairReading(ReadKind.GAP, last, query=name, why=f"failed: {measured.detail}")
        if measured.not_a_number:
            return PairReading(ReadKind.GAP, last, query=name, why=f"not a number: {measured}")
    if total.value is None:
        return PairReading(ReadKind.GAP, last, query="total", why="matched nothing")
    total_now = total.value
    restarted = last is not None and total_now < last.total
    if bad.value is None:
        if last is not None and last.bad_seen and not restarted:
            return PairReading(
                ReadKind.GAP,
                last,
                query="bad",
                why=f"matched nothing after {last.bad:g} bad events were counted",
            )
        now = CounterPair(0.0, total_now, bad_seen=False)
    else:
        now = CounterPair(bad.value, total_now, bad_seen=True)
    if last is None:
        return PairReading(ReadKind.FIRST, now, why="first reading; counting starts now")
    if restarted:
        if last.bad > 0 and now.bad >= last.bad:
            return _resync(now, f"the total started again ({last.total:g} -> {total_now:g}) "
                           f"but bad did not ({last.bad:g} -> {now.bad:g})")  # fmt: skip
        increase = (now.bad, now.total)
    elif now.bad < last.bad:
        return _resync(now, f"bad started again ({last.bad:g} -> {now.bad:g}) "
                       f"but the total did not ({last.total:g} -> {total_now:g})")  # fmt: skip
    else:
        increase = (now.bad - last.bad, now.total - last.total)
    if increase[0] > increase[1]:
        return _resync(now, f"bad rose by {increase[0]:g}, more than the total's {increase[1]:g}")
    return PairReading(ReadKind.COUNTED, now, increase)


def _resync(now: CounterPair, why: str) -> PairReading:
    return PairReading(ReadKind.RESYNCED, now, why=f"{why}; counting starts again")


@dataclass(frozen=True)
class SideCounts:
    """One side of a gate: its last good reading and its increases since the window opened."""

    last: CounterPair
    pending: Pair = (0.0, 0.0)


@dataclass(frozen=True)
class GateReading:
    """One evaluation of a ratio gate's counters: the gate's new state and what it yields."""

    counters: RatioCounters
    reads: Mapping[str, PairReading]  # by side

    @property
    def gaps(self) -> dict[str, PairReading]:
        return {side: r for side, r in self.reads.items() if r.kind is ReadKind.GAP}

    @property
    def window(self) -> dict[str, Pair] | None:
        """Each side's events since the window opened, when they may be judged now: every
        side read well, and the window was open before this evaluation."""
        if self.gaps or not self.counters.open:
            return None
        if any(r.kind is not ReadKind.COUNTED for r in self.reads.values()):
            return None
        return {side: counts.pending for side, counts in self.counters.sides.items()}

    @property
    def why(self) -> str:
        """Why there is no window: the sides that started or resynced their counting."""
        return "; ".join(f"{side}: {r.why}" for side, r in self.reads.items() if r.why)


@dataclass(frozen=True)
class RatioCounters:
    """A ratio gate's counter state: every side's counts, and whether its window is open."""

    sides: Mapping[str, SideCounts]
    open: bool = False  # every side has read well at one evaluation since counting started

    def read(self, readings: Mapping[str, tuple[Measurement, Measurement]]) -> GateReading:
        """Take in one evaluation's (bad, total) readings, by side (module rules)."""
        reads = {
            side: read_pair(self.sides[side].last if side in self.sides else None, bad, total)
            for side, (bad, total) in readings.items()
        }
        restarted = set(readings) != set(self.sides) or any(
            r.kind in (ReadKind.FIRST, ReadKind.RESYNCED) for r in reads.values()
        )
        sides: dict[str, SideCounts] = {}
        for side, reading in reads.items():
            kept = self.sides.get(side)
            if reading.last is None or (reading.kind is ReadKind.GAP and kept is None):
                continue
            pending = kept.pending if kept is not None else (0.0, 0.0)
            if reading.kind is ReadKind.COUNTED:
                pending = (pending[0] + reading.increase[0], pending[1] + reading.increase[1])
            sides[side] = SideCounts(reading.last, pending)
        is_open = self.open and not restarted
        all_read = len(sides) == len(readings) and not any(
            r.kind is ReadKind.GAP for r in reads.values()
        )
        if all_read and not is_open:  # the window opens here, with nothing counted yet
            sides = {side: SideCounts(counts.last) for side, counts in sides.items()}
            is_open = True
        return GateReading(RatioCounters(sides, is_open), reads)

    def judged(self) -> RatioCounters:
        """The state once the window has been judged: the next one starts empty."""
        return replace(self, sides={side: SideCounts(c.last) for side, c in self.sides.items()})

    def to_json(self) -> dict[str, Any]:
        return {
            "open": self.open,
            "sides": {
                side: {
                    "bad": c.last.bad,
                    "total": c.last.total,
                    "badSeen": c.last.bad_seen,
                    "pending": list(c.pending),
                }
                for side, c in self.sides.items()
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RatioCounters:
        """The inverse of :meth:`to_json`; raises ValueError on anything else."""
        if not isinstance(data, Mapping) or not isinstance(data.get("open"), bool):
            raise ValueError(f"expected counters with 'open' and 'sides', got {data!r}")
        sides = data.get("sides")
        if not isinstance(sides, Mapping):
            raise ValueError(f"expected counters by side, got {sides!r}")
        read: dict[str, SideCounts] = {}
        for side, one in sides.items():
            if not isinstance(one, Mapping) or not isinstance(one.get("badSeen"), bool):
                raise ValueError(f"side {side!r}: expected bad, total, badSeen and pending")
            bad, total = _count(one.get("bad")), _count(one.get("total"))
            pending = one.get("pending")
            if not isinstance(pending, list) or len(pending) != 2:
                raise ValueError(f"side {side!r}: pending must be [bad, total], got {pending!r}")
            read[str(side)] = SideCounts(
                CounterPair(bad, total, one["badSeen"]), (_count(pending[0]), _count(pending[1]))
            )
        return cls(read, data["open"])


def _count(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a count, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"expected a finite non-negative count, got {value!r}")
    return number
