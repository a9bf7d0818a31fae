"""The traffic seam: what every actuator is told, and the Protocol it implements.

One vocabulary runs through the traffic state, the query placeholders and the metrics:
a release's ``role`` is ``stable`` (the release serving now) or ``candidate`` (the one
being judged), and its ``backend`` is the slot it runs in (a server name such as
``blue`` or ``green``). A role changes between releases; a backend does not: the
candidate of one release is the stable of the next, in the same backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal, Protocol

from pydantic import ConfigDict, Field, TypeAdapter

from sidecar.errors import Problem

Role = Literal["stable", "candidate"]
BACKEND_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
"""A backend's name: what a load balancer accepts as a server name."""

_SCHEMA_CONFIG = ConfigDict(
    use_attribute_docstrings=True, json_schema_serialization_defaults_required=True
)


@dataclass(frozen=True)
class Backend:
    """One release that should receive ``weight`` percent of live traffic."""

    __pydantic_config__ = _SCHEMA_CONFIG

    digest: str
    """The release's image digest, ``sha256:<64 hex>``."""
    upstream: str
    """Base URL the release serves on, e.g. ``http://127.0.0.1:9001``; may be empty."""
    weight: Annotated[int, Field(ge=0, le=100)]
    """Percent of live traffic; the weights of ``backends`` add up to 100."""
    role: Role
    """``stable`` (serving now) or ``candidate`` (being judged); changes between releases."""
    backend: Annotated[str, Field(pattern=BACKEND_NAME)] = ""
    """The slot (server) that runs this release; it stays the same when the role changes.
    Always set in a state promgate sends (empty only in states stored by older versions)."""
    retain_until: float | None = None
    """Epoch seconds: weight 0, but keep this release running until then (blue-green)."""
    image: str = ""
    """The release's image pinned by digest, ``repository@sha256:<64 hex>``, for actuators
    that deploy it; empty only in states stored by older versions."""
    version: str = ""
    """The release's version, as its manifest gives it; informative."""


@dataclass(frozen=True)
class TrafficState:
    """The desired traffic split for one (service, stage), numbered per promotion.

    ``sequence`` grows by one per actuation of a promotion, so a receiver can drop a
    repeated or out-of-order state. A backend the state does not list gets no traffic.
    ``preview`` gets only requests that ask for the preview (header
    ``X-Promgate-Preview: 1``), never live traffic. A weight-0 backend with
    ``retain_until`` is the previous release after a blue-green promotion: it gets no
    traffic but stays running until then, so a switch-back is instant.
    """

    __pydantic_config__ = _SCHEMA_CONFIG

    promotion_id: str
    """The promotion this split belongs to."""
    sequence: Annotated[int, Field(ge=1)]
    """Grows by one per actuation of the promotion; drop a state of the same promotion at
    or below one already applied. A new promotion starts again at 1."""
    service: str
    """The service whose traffic this is."""
    stage: str
    """The stage (environment) whose traffic this is."""
    backends: tuple[Backend, ...]
    """The releases to route by weight; a backend not listed gets no traffic at all."""
    preview: Backend | None = None
    """Blue-green preview: gets only requests with ``X-Promgate-Preview: 1``."""

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


def traffic_state_schema() -> dict[str, Any]:
    """The JSON Schema of the traffic state a webhook receiver gets."""
    schema = TypeAdapter(TrafficState).json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://promgate.dev/schemas/traffic-state-v1.json"
    return schema


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
