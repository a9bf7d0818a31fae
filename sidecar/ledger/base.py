"""The durable-state seam: promotions, their event log, stable history and tag memory."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sidecar.actuators.base import TrafficState
from sidecar.domain.artifact import ArtifactRef
from sidecar.domain.promotion import Phase, Promotion, PromotionEvent, StableRelease


@dataclass(frozen=True)
class AuditEntry:
    """One write attempted through the API: who, what, on which target, and how it ended.

    ``result`` is ``applied``, or ``refused:<status>`` / ``failed:<status>`` with the
    HTTP status; ``reason`` is the error's message ("" when applied). ``id`` grows by one
    per entry and orders them."""

    id: int
    at: float
    actor: str
    action: str
    target: str
    result: str = "applied"
    reason: str = ""


@dataclass(frozen=True)
class NewEvent:
    """An entry to append to a promotion's event log."""

    promotion_id: str
    kind: str
    data: dict[str, Any]
    at: float


@dataclass(frozen=True)
class Transaction:
    """Writes that land together or not at all, so a crash leaves all of them or none.

    A state change and its consequences (its event, the traffic state it applied, the
    stable release it made) go in one transaction, so no restart can find one without the
    other. The writes apply in field order; a refused one (unknown id, active conflict, a
    stable release that is no longer the newest) cancels them all.
    """

    create: Promotion | None = None
    """A new promotion, as :meth:`Ledger.create` stores it."""

    save: Promotion | None = None
    """The new state of an existing promotion, as :meth:`Ledger.save` stores it."""

    pop_stable: StableRelease | None = None
    """The newest stable release of its (service, stage), removed as :meth:`Ledger.pop_stable`
    would; ``ConflictError`` if another write made a different one the newest meanwhile."""

    push_stable: StableRelease | None = None
    """Made the newest stable release of its (service, stage), as :meth:`Ledger.push_stable`."""

    traffic: TrafficState | None = None
    """The traffic state just applied, as :meth:`Ledger.save_traffic` remembers it."""

    events: tuple[NewEvent, ...] = ()
    """Appended last, in order, as :meth:`Ledger.append_event` appends."""


class Ledger(Protocol):
    """Everything promgate must remember across restarts. Raises ``LedgerError`` on I/O
    failure, ``NotFoundError`` for unknown ids, ``TagMutationError`` for a moved tag."""

    async def open(self) -> None:
        """Create the storage where there is none, else check and migrate it: a damaged or
        unexpectedly empty one is a ``LedgerError`` that says how to restore it."""

    async def close(self) -> None: ...

    async def create(self, promotion: Promotion) -> None:
        """Store a new promotion, its manifest included; ``ConflictError`` if one is active
        for its service+stage."""

    async def save(self, promotion: Promotion) -> None:
        """Replace the stored state of an existing promotion; its manifest, stored once by
        :meth:`create`, is never rewritten."""

    async def get(self, promotion_id: str) -> Promotion:
        """The promotion, or ``NotFoundError``."""

    async def list(
        self,
        *,
        service: str | None = None,
        stage: str | None = None,
        active: bool | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Sequence[Promotion]:
        """Promotions, newest first, filtered; at most ``limit`` of them, starting after the
        promotion with id ``after`` (``NotFoundError`` if there is none)."""

    async def newest(self, phases: Collection[Phase]) -> Sequence[Promotion]:
        """The newest promotion in one of ``phases`` of each (service, stage), newest first:
        what :meth:`list` would give first for that (service, stage)."""

    async def append_event(
        self, promotion_id: str, kind: str, data: dict[str, Any], at: float
    ) -> PromotionEvent:
        """Append to the promotion's event log; the returned event carries its seq (1, 2, ...)."""

    async def events(
        self, promotion_id: str, after: int = 0, limit: int | None = None
    ) -> Sequence[PromotionEvent]:
        """Events with seq greater than ``after``, in order; at most ``limit`` of them."""

    async def remember_tag(self, artifact: ArtifactRef) -> None:
        """Record (normalized repository, tag) -> digest; ``TagMutationError`` if the tag had
        another digest under any spelling of the repository. A reference without a tag is
        accepted and not recorded."""

    async def commit(self, transaction: Transaction) -> Sequence[PromotionEvent]:
        """Apply every write of ``transaction`` atomically; the appended events, in order."""

    async def push_stable(self, release: StableRelease) -> None:
        """Append a new stable release for its (service, stage), unless the newest one already
        has the same digest: repeating a push (after a crash) adds nothing."""

    async def stable_history(self, service: str, stage: str) -> Sequence[StableRelease]:
        """Stable releases of (service, stage), oldest first; empty if none."""

    async def pop_stable(self, service: str, stage: str) -> StableRelease:
        """Remove the newest stable release (a rollback); ``NotFoundError`` if fewer than two
        remain, as the last one cannot be rolled back to nothing. Returns the removed one."""

    async def save_traffic(self, state: TrafficState) -> None:
        """Remember the last applied traffic state of its (service, stage)."""

    async def traffic(self, service: str, stage: str) -> TrafficState | None:
        """The last applied traffic state, for restoring actuators after a restart."""

    async def all_traffic(self) -> Sequence[TrafficState]:
        """Every remembered traffic state."""

    async def promoted_stages(self, service: str, digest: str) -> set[str]:
        """Stages in which ``digest`` of ``service`` has been promoted (ever)."""

    async def audit(
        self,
        actor: str,
        action: str,
        target: str,
        at: float,
        *,
        result: str = "applied",
        reason: str = "",
    ) -> None:
        """Record who tried what on which target through the API, and how it ended."""

    async def audit_trail(self, *, limit: int, before: int | None = None) -> Sequence[AuditEntry]:
        """Audit entries newest first, at most ``limit``, with ids below ``before``."""
