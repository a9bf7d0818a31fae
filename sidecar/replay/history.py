"""The data side of a replay: times, Prometheus range queries and the historical source."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sidecar.analysis.prometheus import many_series
from sidecar.analysis.prometheus_http import Series
from sidecar.domain.measurement import Measurement
from sidecar.engine.clock import Clock
from sidecar.errors import InputError, ProviderError

MAX_WINDOW_S = 24 * 3600.0
_EPOCH = re.compile(r"^[0-9]+(\.[0-9]+)?$")
_LATEST_EPOCH_S = 1e11  # year 5138: a larger number is milliseconds, not seconds


# --- times ------------------------------------------------------------------------------


def parse_instant(text: str) -> float:
    """RFC 3339 with an offset (``2024-05-01T12:00:00Z``) or epoch seconds -> epoch seconds.

    Raises ValueError with a message fit to show next to the flag's name.
    """
    text = text.strip()
    if _EPOCH.match(text):
        seconds = float(text)
        if seconds >= _LATEST_EPOCH_S:
            raise ValueError(
                f"{text!r} looks like epoch milliseconds; give epoch seconds "
                f"(e.g. {seconds / 1000:.0f}) or an RFC 3339 time"
            )
        return seconds
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an RFC 3339 time (e.g. 2024-05-01T12:00:00Z) "
            "nor epoch seconds (e.g. 1714564800)"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(
            f"{text!r} has no UTC offset; add Z or one like +02:00 (e.g. 2024-05-01T12:00:00Z)"
        )
    return moment.timestamp()


def iso(timestamp: float) -> str:
    """``2024-05-01T12:00:00Z``, with milliseconds only when the time has them."""
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    spec = "seconds" if float(timestamp).is_integer() else "milliseconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


def check_window(start: float, end: float, now: float | None = None) -> None:
    """Refuse a window that is empty, reversed, too long or still in the future."""
    now = time.time() if now is None else now
    if end <= start:
        raise InputError(f"--to ({iso(end)}) must be after --from ({iso(start)})")
    if end > now + 60:
        raise InputError(f"--to ({iso(end)}) is in the future; Prometheus holds no data for it yet")
    if end - start > MAX_WINDOW_S:
        raise InputError(
            f"the window {iso(start)} .. {iso(end)} is {(end - start) / 3600:.1f}h long; "
            f"replay at most {MAX_WINDOW_S / 3600:g}h at a time"
        )


# --- the range client ---------------------------------------------------------------------


class RangeClient(Protocol):
    """Range queries; every failure is a ProviderError whose text names the cause.
    :class:`~sidecar.analysis.prometheus_http.PrometheusClient` is the real one."""

    @property
    def display_url(self) -> str: ...

    async def range(self, query: str, start: float, end: float, step: float) -> list[Series]: ...

    async def close(self) -> None: ...


# --- the historical source ----------------------------------------------------------------


@dataclass(frozen=True)
class _Fetched:
    series: Sequence[Series] = ()
    error: str | None = None


class HistoricalSource:
    """A :class:`~sidecar.analysis.prometheus.MetricsSource` that answers as of ``clock.now()``.

    The first ask for a query fetches the whole window once as a range query with the
    analysis interval as its step; later asks only look up the cache. Each point of a range
    result is what an instant query at that time would have returned: Prometheus has already
    applied its 5-minute lookback and its staleness markers. So the answer as of ``now`` is
    each series' point at the latest grid time at or before ``now``; a series without a
    point within one step of ``now`` had no value then. One series is a value, none is no
    data, several are a provider error (a gate needs one number), as with the live source. A
    failed fetch is a provider error for every ask of that query: the replay holds, it never
    rolls back.
    """

    def __init__(
        self,
        client: RangeClient,
        clock: Clock,
        *,
        start: float,
        end: float,
        step: float,
        lead_s: float = 300.0,
    ) -> None:
        if step <= 0 or end < start:
            raise ValueError(f"need step > 0 and end >= start (got {step=}, {start=}, {end=})")
        self._client = client
        self._clock = clock
        self._start = start - lead_s
        self._end = end
        self._step = step
        self._slack = min(1e-3, step / 1000)
        self._fetches: dict[str, asyncio.Task[_Fetched]] = {}

    async def query(self, promql: str) -> Measurement:
        task = self._fetches.get(promql)
        if task is None:
            task = asyncio.create_task(self._fetch(promql), name=f"fetch {promql[:60]}")
            self._fetches[promql] = task
        fetched = await asyncio.shield(task)
        if fetched.error is not None:
            return Measurement.provider_error(f"query {promql!r}: {fetched.error}")
        return self._lookup(promql, fetched.series, self._clock.now())

    async def close(self) -> None:
        for task in self._fetches.values():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._client.close()

    async def _fetch(self, promql: str) -> _Fetched:
        try:
            series = await self._client.range(promql, self._start, self._end, self._step)
        except ProviderError as exc:
            return _Fetched(error=f"cannot read {iso(self._start)} .. {iso(self._end)}: {exc}")
        return _Fetched(series=series)

    def _lookup(self, promql: str, series: Sequence[Series], now: float) -> Measurement:
        found: list[tuple[Series, float]] = []
        for one in series:
            index = bisect.bisect_right(one.points, now + self._slack, key=_time) - 1
            if index < 0:
                continue
            at, value = one.points[index]
            if now - at < self._step - self._slack:
                found.append((one, value))
        if not found:
            return Measurement.no_data(f"empty result at {iso(now)}")
        if len(found) > 1:
            labels = [one.labels for one, _ in found]
            return Measurement.provider_error(
                f"query {promql!r}: {many_series(labels, at=f' at {iso(now)}')}"
            )
        return Measurement.of(found[0][1])


def _time(point: tuple[float, float]) -> float:
    return point[0]
