"""Public test doubles for code built on promgate's seams."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sidecar.actuators.base import TrafficState
from sidecar.errors import ActuationError, Problem


class RecordingActuator:
    """Keeps every state it is given, so a test can assert what would have been routed.

    Set ``error`` to make the next calls to ``apply`` fail with it, as a broken
    actuator would; failed calls are not recorded. Set ``problems`` to what ``check``
    should report, as an actuator that cannot route a state would.
    """

    def __init__(self) -> None:
        self.applied: list[TrafficState] = []
        self.restored: list[TrafficState] = []
        self.error: ActuationError | None = None
        self.problems: list[Problem] = []
        self.closed = False

    def check(self, state: TrafficState) -> Sequence[Problem]:
        return list(self.problems)

    async def start(self) -> None:
        """Nothing to open."""

    async def apply(self, state: TrafficState) -> None:
        if self.error is not None:
            raise self.error
        self.applied.append(state)

    async def restore(self, state: TrafficState) -> None:
        self.restored.append(state)

    async def close(self) -> None:
        self.closed = True


class FakeClock:
    """A clock whose ``sleep`` returns at once and moves time on, for fast timing tests.

    It starts at a plausible epoch time, because a zero timestamp reads as "unset".
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Advance by ``seconds`` (negative counts as zero) and yield to other tasks once."""
        self.sleeps.append(seconds)
        self.advance(max(seconds, 0.0))
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"time cannot go back; got {seconds} seconds")
        self._now += seconds
