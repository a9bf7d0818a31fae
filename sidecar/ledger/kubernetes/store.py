"""The Kubernetes ledger's I/O: the API calls it makes, their errors as LedgerError, and
the bounded re-read-and-retry that a lost resourceVersion race calls for.

A ``KubeConflictError`` stays inside the package (the retry loops decide on it); every
other API failure becomes a ``LedgerError`` that names the object and the namespace.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from sidecar.errors import KubeConflictError, KubeError, KubeNotFoundError, LedgerError
from sidecar.kube.api import Kind, KubeApi, Object

T = TypeVar("T")
ATTEMPTS = 10  # tries of one read-decide-write before a lost race is reported
_BACKOFF_S = 0.01  # random, growing waits between tries, so racing writers fall out of step
_MAX_BACKOFF_S = 0.25


class Store:
    """One namespace's objects, as the ledger reads and writes them."""

    def __init__(self, api: KubeApi, namespace: str) -> None:
        self.api = api
        self.namespace = namespace

    def _failed(self, action: str, kind: Kind, name: str, exc: KubeError) -> LedgerError:
        where = (
            f"{kind.kind} {name!r} in namespace {self.namespace!r}"
            if name
            else (f"{kind.plural} in namespace {self.namespace!r}")
        )
        return LedgerError(
            f"ledger: cannot {action} {where}: {exc}; check that the API server is reachable "
            "and that promgate's service account may read and write promotions and configmaps"
        )

    async def get(self, kind: Kind, name: str) -> Object | None:
        """The object, or None if there is none."""
        try:
            return await self.api.get(kind, self.namespace, name)
        except KubeNotFoundError:
            return None
        except KubeError as exc:
            raise self._failed("read", kind, name, exc) from exc

    async def list(self, kind: Kind, labels: Mapping[str, str] | None = None) -> Sequence[Object]:
        try:
            return await self.api.list(kind, self.namespace, labels=labels)
        except KubeError as exc:
            raise self._failed("list", kind, "", exc) from exc

    async def create(self, kind: Kind, body: Object) -> Object:
        """The created object; a taken name is a ``KubeConflictError``."""
        return await self._write("create", kind, body, self.api.create)

    async def replace(self, kind: Kind, body: Object) -> Object:
        """The replaced object; a moved resourceVersion is a ``KubeConflictError``."""
        return await self._write("replace", kind, body, self.api.replace)

    async def replace_status(self, kind: Kind, body: Object) -> Object:
        return await self._write("write the status of", kind, body, self.api.replace_status)

    async def delete(self, kind: Kind, name: str) -> None:
        """Delete the object if it is there."""
        try:
            await self.api.delete(kind, self.namespace, name)
        except KubeNotFoundError:
            return
        except KubeError as exc:
            raise self._failed("delete", kind, name, exc) from exc

    async def _write(
        self,
        action: str,
        kind: Kind,
        body: Object,
        call: Callable[[Kind, str, Object], Awaitable[Object]],
    ) -> Object:
        try:
            return await call(kind, self.namespace, body)
        except KubeConflictError:
            raise
        except KubeError as exc:
            raise self._failed(action, kind, body["metadata"]["name"], exc) from exc


async def retrying(what: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """``attempt`` (a whole read-decide-write) until it wins its resourceVersion race, at
    most ATTEMPTS times; losing every time is a LedgerError."""
    try:
        async for tried in AsyncRetrying(
            retry=retry_if_exception_type(KubeConflictError),
            stop=stop_after_attempt(ATTEMPTS),
            wait=wait_random_exponential(_BACKOFF_S, max=_MAX_BACKOFF_S),
            reraise=True,
        ):
            with tried:
                return await attempt()
    except KubeConflictError as exc:
        raise LedgerError(
            f"ledger: {what} lost {ATTEMPTS} races in a row against other writers of the same "
            f"objects ({exc}); try again, and check that only one promgate leads"
        ) from exc
    raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover
