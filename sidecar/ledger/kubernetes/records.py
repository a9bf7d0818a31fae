"""Pure mapping between the ledger's records and the Kubernetes objects that hold them.

No I/O here: every function turns values into object bodies or back, so the layout of
each object can be read (and tested) in one place.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sidecar.actuators.base import TrafficState
from sidecar.domain.artifact import ArtifactRef
from sidecar.domain.policy import PromotionPolicy
from sidecar.domain.promotion import Promotion, PromotionEvent, StableRelease
from sidecar.errors import ArtifactReferenceError, LedgerError
from sidecar.kube.api import CONFIGMAP, PROMOTION, Object
from sidecar.ledger import rules
from sidecar.ledger.kubernetes import names

MANAGED = {names.MANAGED_BY: "promgate"}
_GATE_FIELDS = ("value", "threshold", "baseline")


# --- Promotion objects ----------------------------------------------------------------


def promotion_labels(promotion: Promotion) -> dict[str, str]:
    return {
        **MANAGED,
        names.SERVICE_LABEL: names.label_value(promotion.service),
        names.STAGE_LABEL: names.label_value(promotion.stage),
        names.ACTIVE_LABEL: "true" if promotion.active else "false",
    }


def new_promotion_object(promotion: Promotion, order: int) -> Object:
    """The Promotion object promgate creates for a promotion (its status follows apart,
    as the API ignores status on create)."""
    spec: dict[str, Any] = {"stage": promotion.stage, "manifest": promotion.manifest}
    if 0 < len(promotion.candidate_backend) <= names.MAX_LABEL:
        spec["backend"] = promotion.candidate_backend
    return {
        "apiVersion": PROMOTION.api_version,
        "kind": PROMOTION.kind,
        "metadata": {
            "name": names.promotion_name(promotion.id),
            "labels": promotion_labels(promotion),
            "annotations": {names.ORDER_ANNOTATION: str(order)},
        },
        "spec": spec,
    }


def adopted_metadata(current: Object, promotion: Promotion, order: int) -> Object:
    """A user's Promotion object with promgate's labels and order added, its spec kept."""
    metadata = dict(current["metadata"])
    metadata["labels"] = {**(metadata.get("labels") or {}), **promotion_labels(promotion)}
    metadata["annotations"] = {
        **(metadata.get("annotations") or {}),
        names.ORDER_ANNOTATION: str(order),
    }
    return {**current, "metadata": metadata}


def step_count(policy: PromotionPolicy | None, promotion: Promotion) -> int | None:
    """How many steps the promotion's strategy has under ``policy``; None when unknown."""
    if policy is None:
        return None
    try:
        strategy = policy.stage(promotion.stage).strategy
    except KeyError:
        return None
    if promotion.strategy == "canary" and strategy.canary is not None:
        return len(strategy.canary.steps)
    if promotion.strategy == "blue_green" and strategy.blue_green is not None:
        return 2  # the preview, then the switch
    return None


def gates_of(data: dict[str, Any]) -> list[dict[str, Any]] | None:
    """An evaluation event's gate verdicts as ``status.gates``; None if it carries none."""
    verdicts = data.get("gates")
    if not isinstance(verdicts, list):
        return None
    gates = []
    for verdict in verdicts:
        if not isinstance(verdict, dict) or not isinstance(verdict.get("gate"), str):
            continue
        gate: dict[str, Any] = {"name": verdict["gate"]}
        for key in ("result", "classification"):
            if isinstance(verdict.get(key), str):
                gate[key] = verdict[key]
        for key in _GATE_FIELDS:
            gate[key] = _finite(verdict.get(key))
        gates.append(gate)
    return gates


def _finite(value: Any) -> float | None:
    """A gate figure as the schema takes it: a finite number, else null."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def timestamp(epoch_s: float) -> str:
    """RFC 3339 in UTC, as Kubernetes writes times."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def promotion_status(
    current: Object,
    promotion: Promotion,
    txn: int,
    *,
    gates: list[dict[str, Any]] | None,
    steps: int | None,
) -> Object:
    """``current`` (the stored object) with the status that shows ``promotion``; the last
    evaluation's gates stay until a newer evaluation replaces them."""
    body = json.loads(rules.dump_promotion(promotion))
    status: dict[str, Any] = {
        "phase": promotion.phase.value,
        "service": promotion.service,
        "version": promotion.version,
        "digest": promotion.artifact.digest,
        "step": promotion.step_index,
        "weight": max(0, min(100, promotion.weight)),
        "reason": promotion.reason,
        "gates": gates if gates is not None else (current.get("status") or {}).get("gates", []),
        "updatedAt": timestamp(promotion.updated_at),
        "observedGeneration": current["metadata"].get("generation", 1),
        "ledger": {"record": body, "txn": txn},
    }
    if steps is not None:
        status["steps"] = steps
        status["stepLabel"] = f"{min(promotion.step_index + 1, steps)}/{steps}"
    return {**current, "status": status}


def refused_status(current: Object, reason: str, at: float) -> Object:
    """The status of a Promotion object promgate could not admit (no record of its own)."""
    status = {
        "phase": "refused",
        "reason": reason,
        "updatedAt": timestamp(at),
        "observedGeneration": current["metadata"].get("generation", 1),
    }
    return {**current, "status": status}


def ledger_part(obj: Object) -> dict[str, Any] | None:
    """``status.ledger`` of a Promotion object: promgate's record; None before promgate
    adopted the object (a user applied it) or refused it."""
    status = obj.get("status")
    part = status.get("ledger") if isinstance(status, dict) else None
    return part if isinstance(part, dict) and "record" in part else None


def applied_txn(obj: Object) -> int:
    """The stage transaction that last wrote this object's record (0: none yet)."""
    part = ledger_part(obj)
    return int(part.get("txn", 0)) if part else 0


def promotion_of(obj: Object) -> Promotion | None:
    """The promotion a Promotion object holds, or None when it holds no record yet."""
    part = ledger_part(obj)
    if part is None:
        return None
    name = obj["metadata"]["name"]
    what = f"record of Promotion {name!r}"
    record = part["record"]
    if not isinstance(record, dict):
        raise LedgerError(f"stored {what} is not an object; delete it or restore it from backup")
    promotion = rules.load_promotion(what, json.dumps(record))
    manifest = (obj.get("spec") or {}).get("manifest")
    return replace(promotion, manifest=manifest if isinstance(manifest, dict) else {})


def order_of(obj: Object) -> int:
    """Creation order among promotions (ties of created_at go to the later one)."""
    annotations = obj["metadata"].get("annotations") or {}
    try:
        return int(annotations.get(names.ORDER_ANNOTATION, "0"))
    except ValueError:
        return 0


# --- ConfigMaps -----------------------------------------------------------------------


def config_map(name: str, labels: dict[str, str], data: dict[str, str]) -> Object:
    return {
        "apiVersion": CONFIGMAP.api_version,
        "kind": CONFIGMAP.kind,
        "metadata": {"name": name, "labels": {**MANAGED, **labels}},
        "data": data,
    }


def data_bytes(data: dict[str, str]) -> int:
    """What the API counts against a ConfigMap's 1 MiB: keys and values, in UTF-8."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in data.items())


def event_key(seq: int) -> str:
    return f"{seq:012d}"


def event_value(at: float, kind: str, text: str) -> str:
    """A stored event: its data kept as the JSON text the ledger validated."""
    return json.dumps({"at": at, "kind": kind, "data": json.loads(text)})


def events_of(promotion_id: str, data: dict[str, str]) -> list[PromotionEvent]:
    """The events an event-log chunk holds, by seq."""
    found = []
    for key in sorted(data):
        what = f"event {key} of promotion {promotion_id!r}"
        value = rules.load(what, data[key])
        try:
            found.append(
                PromotionEvent(
                    promotion_id, int(key), float(value["at"]), str(value["kind"]), value["data"]
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LedgerError(f"stored {what} is damaged ({exc})") from exc
    return found


def release_dict(release: StableRelease) -> dict[str, Any]:
    return {**asdict(release), "artifact": str(release.artifact)}


def release_of(data: dict[str, Any]) -> StableRelease:
    try:
        return StableRelease(**{**data, "artifact": ArtifactRef.parse(data["artifact"])})
    except (KeyError, TypeError, ArtifactReferenceError) as exc:
        raise LedgerError(f"a stored stable release is damaged ({exc}): {data!r}") from exc


@dataclass(frozen=True)
class LogTail:
    """Where a promotion's event log ends: its last seq, and the chunk that takes the next
    event with the bytes it holds."""

    seq: int = 0
    chunk: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class JournalEvent:
    promotion_id: str
    seq: int
    chunk: int
    at: float
    kind: str
    text: str  # the event's data, as JSON


@dataclass(frozen=True)
class Journal:
    """A committed transaction, to be applied to the objects outside the stage ConfigMap:
    the Promotion objects and the event-log chunks. ``txn`` orders it among the stage's."""

    txn: int
    create: Promotion | None = None
    create_order: int = 0
    save: Promotion | None = None
    events: tuple[JournalEvent, ...] = ()

    def to_json(self) -> str:
        return json.dumps(
            {
                "txn": self.txn,
                "create": self.create.to_dict() if self.create else None,
                "create_order": self.create_order,
                "save": self.save.to_dict() if self.save else None,
                "events": [e.__dict__ for e in self.events],
            }
        )

    @classmethod
    def from_json(cls, what: str, text: str) -> Journal:
        data = rules.load(what, text)
        try:
            return cls(
                txn=int(data["txn"]),
                create=Promotion.from_dict(data["create"]) if data["create"] else None,
                create_order=int(data["create_order"]),
                save=Promotion.from_dict(data["save"]) if data["save"] else None,
                events=tuple(JournalEvent(**e) for e in data["events"]),
            )
        except (KeyError, TypeError, ValueError, ArtifactReferenceError) as exc:
            raise LedgerError(f"stored {what} is damaged ({exc})") from exc


@dataclass
class StageState:
    """Everything the ConfigMap of one (service, stage) holds: one object, so one write
    changes all of it at once. That write is the commit point of every transaction."""

    service: str
    stage: str
    history: list[StableRelease] = field(default_factory=list)
    traffic: TrafficState | None = None
    active: list[str] = field(default_factory=list)
    tails: dict[str, LogTail] = field(default_factory=dict)
    txn: int = 0
    journal: Journal | None = None
    resource_version: str | None = None  # None: the ConfigMap does not exist yet

    @property
    def name(self) -> str:
        return names.stage_name(self.service, self.stage)

    def to_object(self) -> Object:
        data = {
            "service": self.service,
            "stage": self.stage,
            "history": json.dumps([release_dict(r) for r in self.history]),
            "active": json.dumps(self.active),
            "tails": json.dumps({k: [t.seq, t.chunk, t.bytes] for k, t in self.tails.items()}),
            "txn": str(self.txn),
        }
        if self.traffic is not None:
            data["traffic"] = json.dumps(self.traffic.to_dict())
        labels = {
            names.LEDGER_LABEL: "stage",
            names.SERVICE_LABEL: names.label_value(self.service),
            names.STAGE_LABEL: names.label_value(self.stage),
        }
        if self.journal is not None:
            data["journal"] = self.journal.to_json()
            labels[names.JOURNAL_LABEL] = "pending"
        obj = config_map(self.name, labels, data)
        if self.resource_version is not None:
            obj["metadata"]["resourceVersion"] = self.resource_version
        return obj

    @classmethod
    def from_object(cls, obj: Object) -> StageState:
        name = obj["metadata"]["name"]
        data: dict[str, str] = obj.get("data") or {}
        what = f"ConfigMap {name!r}"
        try:
            history = json.loads(data["history"])
            tails = json.loads(data["tails"])
            traffic = data.get("traffic")
            journal = data.get("journal")
            return cls(
                service=data["service"],
                stage=data["stage"],
                history=[release_of(r) for r in history],
                traffic=TrafficState.from_dict(json.loads(traffic)) if traffic else None,
                active=[str(i) for i in json.loads(data["active"])],
                tails={k: LogTail(*v) for k, v in tails.items()},
                txn=int(data["txn"]),
                journal=Journal.from_json(f"journal in {what}", journal) if journal else None,
                resource_version=obj["metadata"].get("resourceVersion"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LedgerError(
                f"stored {what} is damaged ({type(exc).__name__}: {exc}); restore it from a "
                "backup of the namespace, or delete it to forget that stage's history"
            ) from exc
