"""The leadership seam the engine asks "may I act?", and its single-replica answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

ChangeCallback = Callable[[bool], Awaitable[None]]
"""Called with True when this replica becomes the leader, False when it stops being one."""


class Leadership(Protocol):
    """Whether this replica is the one that may run promotions and move traffic."""

    async def start(self) -> None:
        """Begin taking part; callbacks registered before it hear the first change."""

    def may_act(self) -> bool:
        """True only while this replica holds a valid lease."""

    @property
    def leader(self) -> str | None:
        """Identity of the current holder, if known."""

    def on_change(self, callback: ChangeCallback) -> None:
        """Register ``callback`` for every acquired (True) / lost (False) change."""

    async def close(self) -> None:
        """Stop taking part; releases the lease when held, so another replica takes over."""


class AlwaysLeader:
    """The only replica there is: outside a cluster, with a SQLite or memory ledger."""

    def __init__(self, identity: str = "local") -> None:
        self.identity = identity
        self._callbacks: list[ChangeCallback] = []

    async def start(self) -> None:
        for callback in self._callbacks:
            await callback(True)

    def may_act(self) -> bool:
        return True

    @property
    def leader(self) -> str | None:
        return self.identity

    def on_change(self, callback: ChangeCallback) -> None:
        self._callbacks.append(callback)

    async def close(self) -> None:
        """Nothing to release."""
