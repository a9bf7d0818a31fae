"""Leader election over a coordination.k8s.io/v1 Lease, for replicas sharing a cluster.

Every ``retry_s`` the loop reads the Lease, lets :func:`~sidecar.leadership.election.decide`
choose, and writes with the resourceVersion it read, so of two replicas racing for the
lease exactly one write lands. :meth:`LeaseLeadership.may_act` is a pure time check: True
until ``renew_s`` after the last successful renewal was *sent*; the loop wakes at that
moment and reports the loss (``on_change(False)``) while the lease is still valid for
``duration_s - renew_s`` more, before any other replica may take it over. A conflict on
our own write, or a record naming another holder, ends acting at once.

Change callbacks run one at a time in their own task, so a slow one (the controller
resuming every promotion) never delays a renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from datetime import UTC, datetime

from sidecar.engine.clock import Clock, SystemClock
from sidecar.errors import KubeConflictError, KubeError, KubeNotFoundError
from sidecar.kube.api import LEASE, KubeApi, Object
from sidecar.leadership.base import ChangeCallback
from sidecar.leadership.election import (
    Action,
    LeaseRecord,
    LeaseTiming,
    Observation,
    decide,
    observe,
    pause,
)
from sidecar.telemetry.logging import get_logger

_log = get_logger("leadership")
_RECORD_FIELDS = frozenset(
    {"holderIdentity", "leaseDurationSeconds", "acquireTime", "renewTime", "leaseTransitions"}
)


class LeaseLeadership:
    """One candidate for the Lease ``namespace/name``; see the module docstring."""

    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        name: str,
        identity: str,
        *,
        duration_s: int = 15,
        renew_s: float = 10.0,
        retry_s: float = 2.0,
        clock: Clock | None = None,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timing = LeaseTiming(duration_s, renew_s, retry_s)
        self._clock = clock or SystemClock()
        self._observed: Observation | None = None
        self._acting_until = -math.inf  # monotonic
        self._leading = False  # as the callbacks last heard
        self._leader: str | None = None
        self._callbacks: list[ChangeCallback] = []
        self._changes: asyncio.Queue[bool | None] = asyncio.Queue()
        self._loop: asyncio.Task[None] | None = None
        self._notifier: asyncio.Task[None] | None = None

    def may_act(self) -> bool:
        return time.monotonic() < self._acting_until

    @property
    def leader(self) -> str | None:
        return self._leader

    def on_change(self, callback: ChangeCallback) -> None:
        self._callbacks.append(callback)

    async def start(self) -> None:
        if self._loop is not None:
            return
        self._notifier = asyncio.create_task(self._notify(), name="leadership-changes")
        self._loop = asyncio.create_task(self._run(), name=f"lease-{self.name}")

    async def close(self, *, release: bool = True) -> None:
        """Stop campaigning; stop acting (the callbacks hear False), then give the lease up.

        ``release=False`` leaves the lease to expire, as a crashed replica would.
        """
        if self._loop is None:
            return
        self._loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._loop
        self._acting_until = -math.inf
        self._report()
        self._changes.put_nowait(None)
        if self._notifier is not None:
            await self._notifier
        if release:
            await self._release()
        self._loop = None

    async def _run(self) -> None:
        while True:
            try:
                await self._attempt()
            except Exception:  # a fault of ours must not end the campaign; acting lapses
                _log.exception("lease round failed", extra=self._where())
            self._report()
            await self._clock.sleep(self._pause())

    def _pause(self) -> float:
        acting_until = self._acting_until if self._leading else None
        return pause(
            self._observed,
            self.identity,
            now=time.monotonic(),
            timing=self.timing,
            acting_until=acting_until,
        )

    async def _attempt(self) -> None:
        """One read-decide-write round, bounded in time: never past the acting deadline
        while leading, and at most ``renew_s`` otherwise."""
        started = time.monotonic()
        budget = self.timing.renew_s
        if self._leading:
            budget = max(self._acting_until - started, 0.0)
        try:
            async with asyncio.timeout(budget):
                renewed = await self._round(started)
        except TimeoutError:
            _log.warning("lease request timed out", extra=self._where())
            return
        except KubeConflictError:
            # another replica wrote the lease since we read it: we may no longer hold it
            self._acting_until = -math.inf
            return
        except KubeError as exc:
            _log.warning("lease not renewed", extra={**self._where(), "error": str(exc)})
            return
        if renewed:
            self._acting_until = started + self.timing.renew_s

    async def _round(self, started: float) -> bool:
        """Read, decide, write; True when this replica now holds the lease."""
        try:
            lease: Object | None = await self.api.get(LEASE, self.namespace, self.name)
        except KubeNotFoundError:
            lease = None
        self._remember(lease)
        decision = decide(
            self._observed,
            self.identity,
            now=time.monotonic(),
            wall=self._wall(),
            timing=self.timing,
            leading=self._leading,
        )
        if decision.record is None:
            self._leader = decision.leader
            if decision.action is Action.DEPOSED:
                self._acting_until = -math.inf
            return False
        ns, record = self.namespace, decision.record
        if lease is None:
            stored = await self.api.create(LEASE, ns, self._body(record))
        else:
            stored = await self.api.replace(LEASE, ns, self._with(lease, record))
        self._remember(stored)
        self._leader = decision.leader  # only once the write landed
        if decision.action is Action.ACQUIRE:
            _log.info(
                "lease acquired",
                extra={**self._where(), "transitions": record.transitions},
            )
        return True

    def _remember(self, lease: Object | None) -> None:
        self._observed = observe(self._observed, lease, time.monotonic(), self.timing.duration_s)

    def _report(self) -> None:
        """Queue a change for the callbacks when acting started or stopped."""
        acting = self.may_act()
        if acting != self._leading:
            self._leading = acting
            _log.info("leadership acquired" if acting else "leadership lost", extra=self._where())
            self._changes.put_nowait(acting)

    async def _notify(self) -> None:
        while (change := await self._changes.get()) is not None:
            for callback in self._callbacks:
                try:
                    await callback(change)
                except Exception:  # one failing callback must not silence the others
                    _log.exception("leadership callback failed", extra=self._where())

    async def _release(self) -> None:
        """Clear the holder so another replica takes over at once: only if the Lease, read
        afresh, still names us, with the resourceVersion read, and bounded in time."""
        try:
            async with asyncio.timeout(self.timing.retry_s):
                lease = await self.api.get(LEASE, self.namespace, self.name)
                held = LeaseRecord.of(lease, self.timing.duration_s)
                if held.holder != self.identity:
                    return
                body = self._with(lease, held.released(self._wall()))
                await self.api.replace(LEASE, self.namespace, body)
        except (TimeoutError, KubeError) as exc:
            _log.warning(
                "lease not released; another replica takes over when it expires",
                extra={**self._where(), "error": str(exc) or "timed out"},
            )
            return
        _log.info("lease released", extra=self._where())

    def _wall(self) -> datetime:
        return datetime.fromtimestamp(self._clock.now(), UTC)

    def _body(self, record: LeaseRecord) -> Object:
        return {
            "apiVersion": LEASE.api_version,
            "kind": LEASE.kind,
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": "promgate"},
            },
            "spec": record.spec(),
        }

    @staticmethod
    def _with(lease: Object, record: LeaseRecord) -> Object:
        """``lease`` (metadata and resourceVersion as read) carrying ``record``."""
        kept = {k: v for k, v in (lease.get("spec") or {}).items() if k not in _RECORD_FIELDS}
        return {**lease, "spec": {**kept, **record.spec()}}

    def _where(self) -> dict[str, str]:
        return {"lease": f"{self.namespace}/{self.name}", "identity": self.identity}
