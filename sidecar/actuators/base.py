"""The traffic seam: what every actuator is told, and the Protocol it implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from sidecar.errors import Problem


@dataclass(frozen=True)
class Backend:
    """One upstream that should receive ``weight`` percent of live traffic."""

    digest: str
    upstream: str  # base URL, e.g. http://127.0.0.1:9001
    weight: int  # 0..100
    role: str  # "stable" or "candidate"
    retain_until: float | None = None  # epoch seconds: keep this slot running until then


@dataclass(frozen=True)
class TrafficState:
    """The desired traffic split for one (service, stage), numbered per promotion.

    ``sequence`` grows by one per actuation of a promotion, so a receiver can drop a
    repeated or out-of-order state. ``preview`` gets only requests that ask for the
    preview (header ``X-Promgate-Preview: 1``), never live traffic. A weight-0 backend
    with ``retain_until`` is the previous release after a blue-green promotion: it gets no
    traffic but stays running until then, so a switch-back is instant.
    """

    promotion_id: str
    sequence: int
    service: str
    stage: str
    backends: tuple[Backend, ...]
    preview: Backend | None = None

    def covers(self, other: TrafficState) -> bool:
        """Whether, with this state applied, ``other`` is a repeat or out of order: the same
        promotion's split at the same or an earlier sequence."""
        return self.promotion_id == other.promotion_id and self.sequence >= other.sequence

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrafficState:
        preview = data.get("preview")
        return cls(
            promotion_id=data["promotion_id"],
            sequence=int(data["sequence"]),
            service=data["service"],
            stage=data["stage"],
            backends=tuple(Backend(**b) for b in data["backends"]),
            preview=Backend(**preview) if preview else None,
        )


class TrafficActuator(Protocol):
    """Shifts live traffic. Raises ``ActuationError`` and nothing else on failure; one that
    sending the same state again cannot cure is ``permanent``."""

    def check(self, state: TrafficState) -> Sequence[Problem]:
        """What keeps this actuator from ever applying ``state``; empty if nothing does.

        Asked before a promotion is admitted, so a release that could never be routed is
        refused at once instead of failing at every retry. A problem's path names the
        state's field at fault (``upstream`` of a backend, ``stage``).
        """

    async def start(self) -> None:
        """Open listeners or sessions; called once before the first apply or restore."""

    async def apply(self, state: TrafficState) -> None:
        """Make ``state`` the live split. Idempotent for a repeated (promotion, sequence)."""

    async def restore(self, state: TrafficState) -> None:
        """Reload a state already applied before a restart, without announcing it anew."""

    async def close(self) -> None:
        """Release sockets and servers."""
