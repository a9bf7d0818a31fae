"""An actuator that shifts nothing."""

from __future__ import annotations

from collections.abc import Sequence

from sidecar.actuators.base import TrafficState
from sidecar.errors import Problem


class NullActuator:
    """Accepts every state and changes nothing: for dry runs that judge without routing."""

    def check(self, state: TrafficState) -> Sequence[Problem]:
        """Nothing is routed, so nothing is needed."""
        return ()

    async def start(self) -> None:
        """Nothing to open."""

    async def apply(self, state: TrafficState) -> None:
        """Accept ``state`` without routing anything."""

    async def restore(self, state: TrafficState) -> None:
        """Accept ``state`` without routing anything."""

    async def close(self) -> None:
        """Nothing to release."""
