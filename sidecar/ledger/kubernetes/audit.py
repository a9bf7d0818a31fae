"""The audit log in ConfigMaps: chunks of entries, the newest few kept.

Entries go into ``promgate-audit-<n>``; ``promgate-audit`` names the chunk being filled.
An entry lands with one resourceVersion-checked write of that chunk, so its id (one more
than the chunk's last) is never given twice. A full chunk starts the next; one beyond
RETENTION_CHUNKS back is deleted then: etcd is no archive, and the entries also go to
the log stream promgate writes for each API write.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sidecar.errors import KubeConflictError, LedgerError
from sidecar.kube.api import CONFIGMAP
from sidecar.ledger.base import AuditEntry
from sidecar.ledger.kubernetes import names, records
from sidecar.ledger.kubernetes.plan import CHUNK_BYTES
from sidecar.ledger.kubernetes.store import Store, retrying

RETENTION_CHUNKS = 64
"""Audit chunks kept: 64 x 256 KiB, about 16 MiB or 80,000 entries."""

_LABELS = {names.LEDGER_LABEL: "audit"}


class AuditLog:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def append(self, entry: AuditEntry) -> None:
        """Record ``entry`` (its id is assigned here)."""
        await retrying(f"audit {entry.action} by {entry.actor}", lambda: self._append(entry))

    async def _append(self, entry: AuditEntry) -> None:
        chunk = await self._tail()
        name = names.audit_name(chunk)
        current = await self._store.get(CONFIGMAP, name)
        data: dict[str, str] = (current or {}).get("data") or {}
        if current is not None and records.data_bytes(data) >= CHUNK_BYTES:
            await self._rotate(chunk, _last_id(data))
            raise KubeConflictError("the audit chunk is full; writing into the next one")
        first = await self._first_id(chunk) if current is None else _last_id(data) + 1
        key = records.event_key(first)
        value = json.dumps(
            [entry.at, entry.actor, entry.action, entry.target, entry.result, entry.reason]
        )
        if current is None:
            await self._store.create(CONFIGMAP, records.config_map(name, _LABELS, {key: value}))
        else:
            await self._store.replace(CONFIGMAP, {**current, "data": {**data, key: value}})

    async def _tail(self) -> int:
        index = await self._store.get(CONFIGMAP, names.AUDIT_INDEX)
        return int(((index or {}).get("data") or {}).get("chunk", "0"))

    async def _first_id(self, chunk: int) -> int:
        """The first id of a chunk not written yet: one past the previous chunk's last."""
        if chunk == 0:
            return 1
        previous = await self._store.get(CONFIGMAP, names.audit_name(chunk - 1))
        return _last_id((previous or {}).get("data") or {}) + 1

    async def _rotate(self, full: int, last_id: int) -> None:
        """Point the index past the full chunk and drop the one beyond retention."""
        index = await self._store.get(CONFIGMAP, names.AUDIT_INDEX)
        body = records.config_map(names.AUDIT_INDEX, _LABELS, {"chunk": str(full + 1)})
        if index is None:
            await self._store.create(CONFIGMAP, body)
        elif int((index.get("data") or {}).get("chunk", "0")) == full:
            body["metadata"]["resourceVersion"] = index["metadata"]["resourceVersion"]
            await self._store.replace(CONFIGMAP, body)
        if full + 1 - RETENTION_CHUNKS >= 0:
            await self._store.delete(CONFIGMAP, names.audit_name(full + 1 - RETENTION_CHUNKS))

    async def trail(self, limit: int, before: int | None) -> Sequence[AuditEntry]:
        """Entries newest first, ids below ``before``, at most ``limit``."""
        found: list[AuditEntry] = []
        chunk = await self._tail()
        for number in range(chunk, max(-1, chunk - RETENTION_CHUNKS), -1):
            if len(found) >= limit:
                break
            current = await self._store.get(CONFIGMAP, names.audit_name(number))
            if current is None:
                continue  # the next one was never written, or this one is beyond retention
            data: dict[str, str] = current.get("data") or {}
            for key in sorted(data, reverse=True):
                if before is None or int(key) < before:
                    found.append(_entry(int(key), data[key]))
        return found[:limit]


def _last_id(data: dict[str, str]) -> int:
    return max((int(k) for k in data), default=0)


def _entry(entry_id: int, text: str) -> AuditEntry:
    try:
        at, actor, action, target, result, reason = json.loads(text)
        return AuditEntry(entry_id, float(at), actor, action, target, result, reason)
    except (TypeError, ValueError) as exc:
        raise LedgerError(f"stored audit entry {entry_id} is damaged ({exc})") from exc
