"""Promotion objects as a way in: a ``kubectl apply`` of a Promotion starts a promotion.

promgate polls (the API has no watch here). A Promotion object that no promgate has
touched (no status, not labelled as promgate's) is submitted to the engine once, under
the object's own name, so the object becomes that promotion's record: the Kubernetes
ledger adopts it and writes the progress into its status, keeping the user's spec. An
object the engine refuses is stored as a refused promotion the same way; one it cannot
even read (an invalid manifest, an unknown stage) gets ``status.phase: refused`` and a
reason naming the field, so ``kubectl get promotions`` shows why. Neither is submitted
again: apply a new object (a new name) to try again.

Deleting a Promotion object deletes promgate's record of it; intake leaves that alone
(it does not abort a running promotion: abort it through the API or CLI first).
Run intake on the leading replica only, as every other writer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from sidecar.engine.controller import Controller
from sidecar.errors import (
    InputError,
    KubeConflictError,
    KubeError,
    LedgerError,
    ManifestError,
    PromgateError,
    RefusedError,
)
from sidecar.kube.api import PROMOTION, KubeApi, Object
from sidecar.ledger.kubernetes import names, records
from sidecar.telemetry.logging import get_logger

_log = get_logger("intake")
_TRANSIENT = (LedgerError, KubeError)  # the next poll tries again


def is_new(obj: Object) -> bool:
    """Whether no promgate has touched the object yet: a person's request."""
    labels = obj["metadata"].get("labels") or {}
    status = obj.get("status") or {}
    return labels.get(names.MANAGED_BY) != "promgate" and not status


def refusal_reason(error: PromgateError) -> str:
    """Why an object could not be admitted, naming the field of the object at fault."""
    if isinstance(error, ManifestError):
        return f"spec.manifest: {error}"
    return str(error)


class PromotionIntake:
    """Submits new Promotion objects of one namespace to the engine."""

    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        controller: Controller,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._api = api
        self._namespace = namespace
        self._controller = controller
        self._clock = clock

    async def poll_once(self) -> list[str]:
        """Submit every new Promotion object; the names submitted (admitted or refused)."""
        try:
            found = await self._api.list(PROMOTION, self._namespace)
        except KubeError as exc:
            _log.warning("cannot list promotions", extra={"error": str(exc)})
            return []
        submitted = []
        for obj in sorted(found, key=lambda o: str(o["metadata"].get("creationTimestamp", ""))):
            if is_new(obj) and await self._submit(obj):
                submitted.append(obj["metadata"]["name"])
        return submitted

    async def run(self, interval_s: float) -> None:
        """Poll every ``interval_s`` until cancelled; a round the API fails is logged and
        the next one tries again."""
        while True:
            try:
                await self.poll_once()
            except PromgateError as exc:
                _log.warning("could not read Promotion objects", extra={"error": str(exc)})
            await asyncio.sleep(interval_s)

    async def _submit(self, obj: Object) -> bool:
        name = obj["metadata"]["name"]
        spec: dict[str, Any] = obj.get("spec") or {}
        actor = f"kubernetes:{self._namespace}/{name}"
        try:
            await self._controller.create(
                spec.get("manifest"),
                str(spec.get("stage", "")),
                backend=spec.get("backend") or None,
                actor=actor,
                promotion_id=name,
            )
        except RefusedError as exc:
            if exc.promotion_id == name:  # stored as a refused promotion, in the object
                _log.info("promotion object refused", extra={"name": name, "reason": str(exc)})
                return True
            return await self._refuse(name, exc)
        except _TRANSIENT as exc:
            why = {"name": name, "error": str(exc)}
            _log.warning("promotion object not submitted yet", extra=why)
            return False
        except InputError as exc:
            return await self._refuse(name, exc)
        _log.info("promotion object admitted", extra={"name": name, "actor": actor})
        return True

    async def _refuse(self, name: str, error: PromgateError) -> bool:
        """Write the refusal into the object's status, unless promgate wrote one already."""
        try:
            current = await self._api.get(PROMOTION, self._namespace, name)
            if not is_new(current):
                return True
            refused = records.refused_status(current, refusal_reason(error), self._clock())
            await self._api.replace_status(PROMOTION, self._namespace, refused)
        except KubeConflictError:
            return False  # it changed meanwhile: the next poll looks again
        except KubeError as exc:
            _log.warning("cannot write a refusal", extra={"name": name, "error": str(exc)})
            return False
        _log.info("promotion object refused", extra={"name": name, "reason": str(error)})
        return True
