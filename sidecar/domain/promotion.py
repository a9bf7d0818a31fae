"""A promotion's durable state, its phases and the transitions allowed between them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from sidecar.domain.artifact import ArtifactRef

SLOTS = ("blue", "green")
"""The backends a candidate alternates between when its promotion names none."""


class Phase(StrEnum):
    """Where a promotion is. Terminal phases never change again."""

    PENDING = "pending"
    AWAITING_APPROVAL = "awaiting_approval"
    PROGRESSING = "progressing"  # canary steps, or blue-green preview analysis
    POST_PROMOTION = "post_promotion"  # blue-green: switched, analysing, old slot kept
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"  # the candidate was judged worse (persistent breach)
    ABORTED = "aborted"  # analysis unavailable too long, or a person aborted it
    INCONCLUSIVE = "inconclusive"  # not enough evidence; the release is not blamed
    REFUSED = "refused"  # a metadata gate or identity rule refused it before any traffic
    NOT_READY = "not_ready"  # the candidate's workload never became ready; no traffic moved

    @property
    def terminal(self) -> bool:
        """A phase with no way out (an empty entry in :data:`ALLOWED_TRANSITIONS`)."""
        return not ALLOWED_TRANSITIONS[self]


ALLOWED_TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.PENDING: frozenset(
        {
            Phase.AWAITING_APPROVAL,
            Phase.PROGRESSING,
            Phase.PROMOTED,
            Phase.REFUSED,
            Phase.ABORTED,
            Phase.NOT_READY,
        }
    ),
    Phase.AWAITING_APPROVAL: frozenset(
        {Phase.PROGRESSING, Phase.PROMOTED, Phase.ABORTED, Phase.NOT_READY}
    ),
    Phase.PROGRESSING: frozenset(
        {
            Phase.POST_PROMOTION,
            Phase.PROMOTED,
            Phase.ROLLED_BACK,
            Phase.ABORTED,
            Phase.INCONCLUSIVE,
            Phase.NOT_READY,
        }
    ),
    Phase.POST_PROMOTION: frozenset(
        {Phase.PROMOTED, Phase.ROLLED_BACK, Phase.ABORTED, Phase.INCONCLUSIVE, Phase.NOT_READY}
    ),
    Phase.PROMOTED: frozenset(),
    Phase.ROLLED_BACK: frozenset(),
    Phase.ABORTED: frozenset(),
    Phase.INCONCLUSIVE: frozenset(),
    Phase.REFUSED: frozenset(),
    Phase.NOT_READY: frozenset(),
}


def can_transition(current: Phase, target: Phase) -> bool:
    """Whether ``current -> target`` is allowed (staying put always is, unless terminal)."""
    return target in ALLOWED_TRANSITIONS[current] or (current == target and not current.terminal)


class Command(StrEnum):
    """What a person can do to a promotion through the API or CLI."""

    APPROVE = "approve"  # let traffic move on a stage that requires approval
    ABORT = "abort"  # stop, traffic back to the stable release; the release is not blamed
    ROLLBACK = "rollback"  # stop, traffic back to the stable release; the release is blamed


COMMAND_PHASES: dict[Command, frozenset[Phase]] = {
    Command.APPROVE: frozenset({Phase.AWAITING_APPROVAL}),
    Command.ABORT: frozenset(
        {Phase.PENDING, Phase.AWAITING_APPROVAL, Phase.PROGRESSING, Phase.POST_PROMOTION}
    ),
    Command.ROLLBACK: frozenset({Phase.PROGRESSING, Phase.POST_PROMOTION}),
}
"""The phases in which each command applies; in every other phase it is refused."""

COMMAND_TARGETS: dict[Command, Phase] = {
    Command.ABORT: Phase.ABORTED,
    Command.ROLLBACK: Phase.ROLLED_BACK,
}
"""The phase a command ends a promotion in; approving leaves the phase to the engine."""


def command_refusal(command: Command, phase: Phase, approved_by: str | None) -> str | None:
    """Why ``command`` cannot apply to a promotion in ``phase``, or None when it can."""
    if phase in COMMAND_PHASES[command]:
        if command is Command.APPROVE and approved_by is not None:
            return f"it is already approved by {approved_by}; traffic starts moving shortly"
        return None
    if phase.terminal:
        return "it has already ended; start a new promotion instead"
    if command is Command.APPROVE:
        return "only a promotion awaiting approval can be approved"
    return "it has moved no traffic yet, so there is nothing to roll back; abort it instead"


@dataclass(frozen=True)
class Promotion:
    """Everything needed to resume a promotion after a restart, and to explain it."""

    id: str
    service: str
    stage: str
    artifact: ArtifactRef
    version: str
    policy_version: str
    strategy: str  # "canary" or "blue_green"
    candidate_upstream: str
    manifest: dict[str, Any]
    created_at: float
    phase: Phase = Phase.PENDING
    step_index: int = 0
    weight: int = 0
    step_started_at: float | None = None
    updated_at: float = 0.0
    baseline: ArtifactRef | None = None
    baseline_upstream: str | None = None
    baseline_version: str = ""
    candidate_backend: str = ""  # the slot (server) the candidate runs in
    baseline_backend: str = ""  # the slot the baseline (stable) runs in
    reason: str = ""
    classification: str | None = None
    actuation_seq: int = 0
    no_data_since: float | None = None
    unavailable_since: float | None = None
    approved_by: str | None = None
    traceparent: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return not self.phase.terminal

    def evolve(self, **changes: Any) -> Promotion:
        """A copy with ``changes``; refuses a phase change that the table does not allow."""
        target = changes.get("phase")
        if target is not None and target != self.phase and not can_transition(self.phase, target):
            raise ValueError(f"promotion {self.id}: {self.phase} -> {target} is not allowed")
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; the inverse of :meth:`from_dict`."""
        data = asdict(self)
        data["artifact"] = str(self.artifact)
        data["baseline"] = str(self.baseline) if self.baseline else None
        data["phase"] = self.phase.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Promotion:
        values = dict(data)
        values["artifact"] = ArtifactRef.parse(values["artifact"])
        values["baseline"] = (
            ArtifactRef.parse(values["baseline"]) if values.get("baseline") else None
        )
        values["phase"] = Phase(values["phase"])
        return cls(**values)


@dataclass(frozen=True)
class StableRelease:
    """One entry of a (service, stage)'s history of stable digests, newest last."""

    service: str
    stage: str
    artifact: ArtifactRef
    upstream: str
    promotion_id: str
    promoted_at: float
    version: str = ""


@dataclass(frozen=True)
class PromotionEvent:
    """One append-only entry of a promotion's event log."""

    promotion_id: str
    seq: int
    at: float
    kind: str  # e.g. "created", "step", "verdict", "actuation", "phase", "approval"
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
