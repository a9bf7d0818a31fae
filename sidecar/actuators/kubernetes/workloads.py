"""Deployments by digest: the copies promgate runs a release in, and waiting for a rollout.

Pure parts build and compare objects; :class:`Workloads` does the I/O. A release's pod
template gets its image as ``repository@sha256:...`` (never a tag) and is stamped with the
release's version, digest and promotion, as labels (cut to what a label accepts) and as
annotations (whole). A rollout is ready once the controller has seen the newest spec and
every replica is updated, ready and available; when it misses its deadline, the reason is
read from its Pods, as ``kubectl describe`` would show it.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sidecar.actuators.kubernetes.writes import Edit, actuation_error, call, update
from sidecar.errors import ActuationError, CandidateNotReadyError, KubeConflictError, KubeError
from sidecar.kube.api import DEPLOYMENT, POD, KubeApi, Object

if TYPE_CHECKING:
    from sidecar.engine.clock import Clock

PREFIX = "promgate.dev/"
ROLE = PREFIX + "role"
SLOT = PREFIX + "slot"
VERSION = PREFIX + "version"
DIGEST = PREFIX + "digest"
PROMOTION = PREFIX + "promotion"
COPY_OF = PREFIX + "copy-of"
"""Label of the Deployments promgate copies from a base Deployment: the base's name."""
MANAGED_BY = {"app.kubernetes.io/managed-by": "promgate"}

_LABEL_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
_MAX_LABEL_VALUE = 63
_STARTING = frozenset({"ContainerCreating", "PodInitializing"})


@dataclass(frozen=True)
class Release:
    """What a pod template runs and is stamped with."""

    image: str
    """``repository@sha256:<hex>``."""
    digest: str
    version: str
    promotion_id: str


def label_value(text: str) -> str:
    """``text`` as a label value: only letters, digits, ``-``, ``_`` and ``.``, at most 63,
    starting and ending with a letter or digit (so ``1.4.2+build.7`` -> ``1.4.2_build.7``)."""
    cleaned = _LABEL_CHARS.sub("_", text)[:_MAX_LABEL_VALUE]
    return cleaned.strip("-_.")


def digest_label(digest: str) -> str:
    """The digest's hex, cut to the 63 characters a label value may hold."""
    return label_value(digest.partition(":")[2])


def container_index(spec: Mapping[str, Any], container: str | None, where: str) -> int:
    """The index of the container whose image promgate sets: the one named, else the only one."""
    containers = spec.get("template", {}).get("spec", {}).get("containers") or []
    names = [c.get("name") for c in containers]
    if container is not None:
        if container in names:
            return names.index(container)
        fix = f"set kubernetes.container to one of {names}"
        raise ActuationError(
            f"kubernetes: {where} has no container {container!r}; {fix}", permanent=True
        )
    if len(names) != 1:
        raise ActuationError(
            f"kubernetes: {where} has {len(names)} containers ({names}); name the one "
            "promgate sets with kubernetes.container",
            permanent=True,
        )
    return 0


def image_of(deployment: Object, container: str | None) -> str:
    spec = deployment.get("spec", {})
    index = container_index(spec, container, _where(deployment))
    return str(spec["template"]["spec"]["containers"][index].get("image", ""))


def with_release(
    deployment: Object, container: str | None, release: Release, replicas: int | None = None
) -> Object:
    """A copy of ``deployment`` that runs ``release`` (and ``replicas``, when given)."""
    edited = copy.deepcopy(deployment)
    spec = edited.setdefault("spec", {})
    index = container_index(spec, container, _where(deployment))
    template = spec["template"]
    template["spec"]["containers"][index]["image"] = release.image
    meta = template.setdefault("metadata", {})
    meta["labels"] = {
        **(meta.get("labels") or {}),
        VERSION: label_value(release.version),
        DIGEST: digest_label(release.digest),
        PROMOTION: label_value(release.promotion_id),
    }
    meta["annotations"] = {
        **(meta.get("annotations") or {}),
        VERSION: release.version,
        DIGEST: release.digest,
        PROMOTION: release.promotion_id,
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return edited


def copy_of(base: Object, name: str, labels: Mapping[str, str]) -> Object:
    """A new Deployment ``name`` with ``base``'s spec whose selector and pod labels are
    replaced by ``labels`` where they overlap and extended by the rest, so neither the base
    Deployment nor its Services claim the copy's pods."""
    spec = copy.deepcopy(base.get("spec", {}))
    spec.pop("paused", None)
    spec["selector"] = {**spec.get("selector", {}), "matchLabels": dict(labels)}
    meta = spec.setdefault("template", {}).setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    base_meta = base.get("metadata", {})
    return {
        "apiVersion": DEPLOYMENT.api_version,
        "kind": DEPLOYMENT.kind,
        "metadata": {
            "name": name,
            "namespace": base_meta.get("namespace", ""),
            "labels": {
                **(base_meta.get("labels") or {}),
                **labels,
                **MANAGED_BY,
                COPY_OF: base_meta.get("name", ""),
            },
        },
        "spec": spec,
    }


def selector_of(deployment: Object) -> dict[str, str]:
    return dict(deployment.get("spec", {}).get("selector", {}).get("matchLabels") or {})


def with_spec_of(current: Object, desired: Object) -> Object:
    """``current`` (as read, with its resourceVersion) carrying ``desired``'s spec and labels."""
    edited = copy.deepcopy(current)
    edited["spec"] = copy.deepcopy(desired["spec"])
    edited["metadata"]["labels"] = dict(desired["metadata"].get("labels") or {})
    return edited


def rollout_ready(deployment: Object) -> bool:
    """The controller saw the newest spec and every replica is updated, ready and available."""
    meta, spec, status = (deployment.get(k) or {} for k in ("metadata", "spec", "status"))
    replicas = spec.get("replicas", 1)
    counts = [status.get(k, 0) for k in ("updatedReplicas", "readyReplicas", "availableReplicas")]
    caught_up = status.get("observedGeneration", 0) >= meta.get("generation", 1)
    return caught_up and counts == [replicas] * 3 and status.get("replicas", 0) == replicas


def not_ready_reason(deployment: Object, pods: Sequence[Object], timeout_s: float) -> str:
    """Why the rollout is not ready, as Kubernetes says it: a container's waiting reason
    (``ImagePullBackOff``, ``CrashLoopBackOff``) or a pod's scheduling failure with its
    message, else the Deployment's ``ProgressDeadlineExceeded``, else the replica counts."""
    for pod in pods:
        name = pod.get("metadata", {}).get("name", "")
        status = pod.get("status") or {}
        for container in status.get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason and reason not in _STARTING:
                return _reason(reason, waiting.get("message"), f"pod {name}")
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                reason = condition.get("reason") or "Unschedulable"
                return _reason(reason, condition.get("message"), f"pod {name}")
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if condition.get("reason") == "ProgressDeadlineExceeded":
            return _reason("ProgressDeadlineExceeded", condition.get("message"), "")
    status, spec = deployment.get("status") or {}, deployment.get("spec") or {}
    return (
        f"not ready within {timeout_s:g}s: {status.get('readyReplicas', 0)} of "
        f"{spec.get('replicas', 1)} replicas ready, {status.get('updatedReplicas', 0)} updated"
    )


def _reason(reason: str, message: Any, where: str) -> str:
    text = reason + (f": {message}" if message else "")
    return f"{text} ({where})" if where else text


def _where(deployment: Object) -> str:
    meta = deployment.get("metadata", {})
    return f"Deployment {meta.get('namespace', '')}/{meta.get('name', '')}"


class Workloads:
    """Deployment I/O: create or update, scale, and wait for a rollout with a deadline."""

    def __init__(self, api: KubeApi, clock: Clock, *, poll_s: float = 1.0) -> None:
        self._api = api
        self._clock = clock
        self._poll_s = poll_s

    async def get(self, namespace: str, name: str) -> Object:
        return await call(self._api.get(DEPLOYMENT, namespace, name), DEPLOYMENT, namespace, name)

    async def find(self, namespace: str, name: str) -> Object | None:
        """The Deployment, or None when it does not exist."""
        try:
            return await self._api.get(DEPLOYMENT, namespace, name)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise actuation_error(exc, DEPLOYMENT, namespace, name) from None

    async def ensure(self, namespace: str, desired: Object) -> Object:
        """Make the Deployment ``desired`` names carry its spec and labels: create it, or
        update it (no write when it already does)."""
        name = desired["metadata"]["name"]
        found = await self.find(namespace, name)
        if found is None:
            try:
                return await self._api.create(DEPLOYMENT, namespace, desired)
            except KubeConflictError:
                pass  # created meanwhile: update it below
            except KubeError as exc:
                raise actuation_error(exc, DEPLOYMENT, namespace, name) from None
        return await self.edit(
            namespace, name, lambda current: with_spec_of(current, desired), current=found
        )

    async def edit(
        self, namespace: str, name: str, change: Edit, *, current: Object | None = None
    ) -> Object:
        """Apply ``change`` to the Deployment (``current``: as the caller just read it)."""
        return await update(self._api, DEPLOYMENT, namespace, name, change, current=current)

    async def scale_to_zero(
        self, namespace: str, name: str, *, current: Object | None = None
    ) -> None:
        """Stop the Deployment's pods, keeping the object (and its spec) for the next release;
        ``current`` is the Deployment as the caller just read it."""
        if current is None:
            current = await self.find(namespace, name)
            if current is None:
                return

        def zero(deployment: Object) -> Object:
            deployment["spec"]["replicas"] = 0
            return deployment

        await self.edit(namespace, name, zero, current=current)

    async def wait_ready(self, namespace: str, name: str, timeout_s: float) -> Object:
        """Poll until the rollout is ready; past ``timeout_s`` raise CandidateNotReadyError
        with the reason the Pods give."""
        deadline = self._clock.now() + timeout_s
        for _ in range(math.ceil(timeout_s / self._poll_s) + 2):
            deployment = await self.get(namespace, name)
            if rollout_ready(deployment):
                return deployment
            left = deadline - self._clock.now()
            if left <= 0:
                break
            await self._clock.sleep(min(self._poll_s, left))
        pods = await call(
            self._api.list(POD, namespace, labels=selector_of(deployment)), POD, namespace, name
        )
        reason = not_ready_reason(deployment, pods, timeout_s)
        raise CandidateNotReadyError(
            f"kubernetes: Deployment {namespace}/{name} did not become ready within "
            f"{timeout_s:g}s: {reason}",
            reason=reason,
        )
