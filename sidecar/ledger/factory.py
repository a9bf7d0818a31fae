"""Picks the ledger a setting names."""

from __future__ import annotations

from collections.abc import Callable

from sidecar.errors import SettingsError
from sidecar.ledger.base import Ledger
from sidecar.ledger.memory import MemoryLedger
from sidecar.ledger.sqlite import SqliteLedger

_KINDS: dict[str, Callable[[str], Ledger]] = {
    "memory": lambda _path: MemoryLedger(),  # dry runs: nothing outlives the process
    "sqlite": SqliteLedger,
}


def build_ledger(kind: str, path: str) -> Ledger:
    """The ledger of ``kind``; ``path`` is its file, ignored by kinds that keep no file."""
    try:
        make = _KINDS[kind]
    except KeyError:
        known = ", ".join(sorted(_KINDS))
        raise SettingsError(f"unknown ledger kind {kind!r}; known kinds: {known}") from None
    return make(path)
