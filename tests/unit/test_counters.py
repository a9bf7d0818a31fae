"""Reading a ratio gate's counters: good readings, gaps, restarts and resyncs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sidecar.analysis.counters import (
    CounterPair,
    RatioCounters,
    ReadKind,
    SideCounts,
    read_pair,
)
from sidecar.domain.measurement import Measurement

EMPTY = Measurement.no_data()
NAN = Measurement.of(float("nan"))
FAILED = Measurement.provider_error("query 'x': Prometheus answered HTTP 503")


def v(value: float) -> Measurement:
    return Measurement.of(value)


SEEN = CounterPair(5.0, 100.0, bad_seen=True)
NEVER = CounterPair(0.0, 100.0, bad_seen=False)


@pytest.mark.parametrize(
    ("last", "bad", "total", "kind", "now", "increase", "query"),
    [
        pytest.param(None, v(5), v(100), ReadKind.FIRST, SEEN, (0, 0), "", id="first"),
        pytest.param(None, EMPTY, v(100), ReadKind.FIRST, NEVER, (0, 0), "",
                     id="first-without-bad-events"),
        pytest.param(SEEN, v(7), v(130), ReadKind.COUNTED, CounterPair(7, 130, True), (2, 30),
                     "", id="counted"),
        pytest.param(SEEN, v(5), v(100), ReadKind.COUNTED, SEEN, (0, 0), "", id="unchanged"),
        pytest.param(NEVER, EMPTY, v(120), ReadKind.COUNTED, CounterPair(0, 120, False),
                     (0, 20), "", id="still-no-bad-series"),
        pytest.param(NEVER, v(1), v(120), ReadKind.COUNTED, CounterPair(1, 120, True), (1, 20),
                     "", id="first-bad-event"),
        pytest.param(SEEN, EMPTY, v(130), ReadKind.GAP, SEEN, (0, 0), "bad",
                     id="bad-vanished"),
        pytest.param(SEEN, FAILED, v(130), ReadKind.GAP, SEEN, (0, 0), "bad", id="bad-failed"),
        pytest.param(SEEN, v(7), FAILED, ReadKind.GAP, SEEN, (0, 0), "total",
                     id="total-failed"),
        pytest.param(SEEN, NAN, v(130), ReadKind.GAP, SEEN, (0, 0), "bad", id="bad-nan"),
        pytest.param(NEVER, NAN, v(130), ReadKind.GAP, NEVER, (0, 0), "bad",
                     id="bad-nan-before-any-bad-event"),
        pytest.param(SEEN, v(7), NAN, ReadKind.GAP, SEEN, (0, 0), "total", id="total-nan"),
        pytest.param(SEEN, v(7), EMPTY, ReadKind.GAP, SEEN, (0, 0), "total",
                     id="total-matched-nothing"),
        pytest.param(None, EMPTY, EMPTY, ReadKind.GAP, None, (0, 0), "total",
                     id="nothing-at-all"),
        pytest.param(SEEN, v(1), v(10), ReadKind.COUNTED, CounterPair(1, 10, True), (1, 10), "",
                     id="restart-counts-from-zero"),
        pytest.param(SEEN, EMPTY, v(10), ReadKind.COUNTED, CounterPair(0, 10, False), (0, 10),
                     "", id="restart-bad-series-not-back-yet"),
        pytest.param(SEEN, EMPTY, v(0), ReadKind.COUNTED, CounterPair(0, 0, False), (0, 0), "",
                     id="restart-to-zero"),
        pytest.param(SEEN, v(6), v(10), ReadKind.RESYNCED, CounterPair(6, 10, True), (0, 0), "",
                     id="total-restarted-bad-did-not"),
        pytest.param(SEEN, v(2), v(120), ReadKind.RESYNCED, CounterPair(2, 120, True), (0, 0),
                     "", id="bad-restarted-total-did-not"),
        pytest.param(NEVER, v(300), v(120), ReadKind.RESYNCED, CounterPair(300, 120, True),
                     (0, 0), "", id="bad-rose-more-than-total"),
    ],
)  # fmt: skip
def test_read_pair(
    *,
    last: CounterPair | None,
    bad: Measurement,
    total: Measurement,
    kind: ReadKind,
    now: CounterPair | None,
    increase: tuple[float, float],
    query: str,
) -> None:
    """Each reading is good (counted, first), a gap that keeps the last good reading, or a
    resync that counts nothing; only a counted reading yields an increase."""
    got = read_pair(last, bad, total)
    assert (got.kind, got.last, got.increase, got.query) == (kind, now, increase, query), got


CANDIDATE, BASELINE = "candidate", "baseline"


def read_all(
    counters: RatioCounters, *readings: dict[str, tuple[Measurement, Measurement]]
) -> list[dict[str, tuple[float, float]] | None]:
    """The window after each evaluation (judged as soon as there is one)."""
    windows = []
    for reading in readings:
        got = counters.read(reading)
        windows.append(got.window)
        counters = got.counters.judged() if got.window is not None else got.counters
    return windows


def both(c: tuple[Measurement, Measurement], b: tuple[Measurement, Measurement]) -> Any:
    return {CANDIDATE: c, BASELINE: b}


def test_an_empty_bad_reading_on_one_side_never_moves_its_errors_into_the_next_window() -> None:
    """The candidate's bad query matches nothing for two evaluations while its total
    answers: no window is judged meanwhile, and the next one holds exactly the errors and
    requests of the whole span, on both sides."""
    windows = read_all(
        RatioCounters({}),
        both((v(20), v(1000)), (v(60), v(3000))),  # first: the window opens
        both((v(21), v(1025)), (v(62), v(3075))),
        both((EMPTY, v(1050)), (v(63), v(3150))),  # a gap: nothing judged
        both((EMPTY, v(1075)), (v(65), v(3225))),
        both((v(23), v(1100)), (v(66), v(3300))),
    )
    assert windows == [
        None,
        {CANDIDATE: (1, 25), BASELINE: (2, 75)},
        None,
        None,
        {CANDIDATE: (2, 75), BASELINE: (4, 225)},
    ]


def test_a_side_in_a_gap_at_the_first_reading_opens_the_window_late() -> None:
    """The window opens only where every side has read well, so both cover the same span."""
    windows = read_all(
        RatioCounters({}),
        both((v(1), v(100)), (FAILED, v(300))),
        both((v(2), v(150)), (v(9), v(450))),  # the baseline's first reading: opens here
        both((v(3), v(200)), (v(10), v(600))),
    )
    assert windows == [None, None, {CANDIDATE: (1, 50), BASELINE: (1, 150)}]


def test_a_resync_restarts_the_window_for_every_side() -> None:
    """Counts around readings that cannot be trusted are dropped on both sides."""
    windows = read_all(
        RatioCounters({}),
        both((v(1), v(100)), (v(3), v(300))),
        both((v(15), v(110)), (v(4), v(350))),  # candidate bad rose past its total: resync
        both((v(16), v(160)), (v(5), v(400))),
    )
    assert windows == [None, None, {CANDIDATE: (1, 50), BASELINE: (1, 50)}]


def test_counters_survive_json_and_carry_the_open_window() -> None:
    """Saved and read back, the counters go on as if never stopped: the increase since
    the saved reading is judged with what was pending."""
    counters = RatioCounters({}).read(both((v(1), v(100)), (v(3), v(300)))).counters
    counters = counters.read(both((v(2), v(105)), (v(4), v(315)))).counters  # 5 < minRequests
    saved = json.loads(json.dumps(counters.to_json()))
    restored = RatioCounters.from_json(saved)
    assert restored == counters
    got = restored.read(both((v(4), v(200)), (v(9), v(600))))
    assert got.window == {CANDIDATE: (3, 100), BASELINE: (6, 300)}


@pytest.mark.parametrize(
    "saved",
    [
        pytest.param({"sides": {}}, id="no-open"),
        pytest.param({"open": True, "sides": []}, id="sides-a-list"),
        pytest.param({"open": True, "sides": {"candidate": {"bad": 1, "total": 2}}},
                     id="no-bad-seen"),
        pytest.param({"open": True, "sides": {"candidate": {"bad": -1, "total": 2,
                      "badSeen": True, "pending": [0, 0]}}}, id="negative"),
        pytest.param({"open": True, "sides": {"candidate": {"bad": "1", "total": 2,
                      "badSeen": True, "pending": [0, 0]}}}, id="a-string"),
        pytest.param({"open": True, "sides": {"candidate": {"bad": 1, "total": 2,
                      "badSeen": True, "pending": [0]}}}, id="short-pending"),
    ],
)  # fmt: skip
def test_unreadable_counters_are_refused(saved: Any) -> None:
    """Anything but what to_json writes raises ValueError."""
    with pytest.raises(ValueError):
        RatioCounters.from_json(saved)


def test_judged_keeps_the_last_readings_and_empties_the_window() -> None:
    counters = RatioCounters({CANDIDATE: SideCounts(SEEN, (2, 40))}, open=True)
    assert counters.judged() == RatioCounters({CANDIDATE: SideCounts(SEEN)}, open=True)
