"""An actuator that shifts nothing."""

from __future__ import annotations

from sidecar.actuators.base import TrafficState


class NullActuator:
    """Accepts every state and changes nothing: for dry runs that judge without routing."""

    async def start(self) -> None:
        """Nothing to open."""

    async def apply(self, state: TrafficState) -> None:
        """Accept ``state`` without routing anything."""

    async def restore(self, state: TrafficState) -> None:
        """Accept ``state`` without routing anything."""

    async def close(self) -> None:
        """Nothing to release."""
