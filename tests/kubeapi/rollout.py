"""The Deployment controller and the kubelet, as far as the status promgate reads.

After a Deployment's spec changes (its ``generation`` moves past ``status.observedGeneration``)
and a short delay, its status and Pods are set as a real cluster would set them for the
behaviour chosen by image: ``ready`` (the default), ``never`` (Pods stay Pending),
``ImagePullBackOff``, ``CrashLoopBackOff`` or ``Unschedulable``. A rollout that is not ready
by ``spec.progressDeadlineSeconds`` (600 by default) turns Progressing False with reason
ProgressDeadlineExceeded. Counts that are zero are left out of the status, as the real API
server leaves them out.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import secrets
from collections.abc import Mapping
from typing import Any

from sidecar.kube.api import Object
from tests.kubeapi.resources import Resource
from tests.kubeapi.store import Store, timestamp

READY = "ready"
FAILURES = ("Unschedulable", "never", "ImagePullBackOff", "CrashLoopBackOff")
"""Pod-level outcomes, the first of a Pod's container behaviours in this order wins."""
BEHAVIOURS = (READY, *FAILURES)
UNSCHEDULABLE_MESSAGE = "0/3 nodes are available: 3 Insufficient cpu."
DEFAULT_PROGRESS_DEADLINE_S = 600


class Rollouts:
    """Drives Deployment status and Pods in ``store`` after each spec change."""

    def __init__(
        self, store: Store, deployments: Resource, pods: Resource, *, delay_s: float = 0.2
    ) -> None:
        self._store = store
        self._deployments = deployments
        self._pods = pods
        self._delay_s = delay_s
        self._rules: list[tuple[str, str]] = []
        self._tasks: dict[tuple[str, str], tuple[int, asyncio.Task[None]]] = {}

    def set(self, image_substring: str, behaviour: str) -> None:
        """Deployments whose images contain ``image_substring`` roll out as ``behaviour``
        from their next spec change on; the latest matching rule wins."""
        if behaviour not in BEHAVIOURS:
            raise ValueError(
                f"unknown rollout behaviour {behaviour!r}; one of {', '.join(BEHAVIOURS)}"
            )
        self._rules.append((image_substring, behaviour))

    def written(self, deployment: Object) -> None:
        """Start rolling out ``deployment`` if its spec moved past the observed one."""
        metadata = deployment["metadata"]
        generation = metadata.get("generation", 1)
        if deployment.get("status", {}).get("observedGeneration") == generation:
            return
        key = (metadata["namespace"], metadata["name"])
        running = self._tasks.get(key)
        if running is not None:
            if running[0] == generation:
                return
            running[1].cancel()
        started = asyncio.get_running_loop().time()
        self._tasks[key] = (generation, asyncio.create_task(self._roll(key, generation, started)))

    def deleted(self, deployment: Object) -> None:
        """Stop rolling out ``deployment`` and remove its Pods (garbage collection)."""
        metadata = deployment["metadata"]
        running = self._tasks.pop((metadata["namespace"], metadata["name"]), None)
        if running is not None:
            running[1].cancel()
        for pod in self._owned_pods(deployment):
            self._store.delete(self._pods, metadata["namespace"], pod["metadata"]["name"])

    async def close(self) -> None:
        """Cancel every rollout in flight."""
        tasks = [task for _, task in self._tasks.values()]
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _roll(self, key: tuple[str, str], generation: int, started: float) -> None:
        await asyncio.sleep(self._delay_s)
        deployment = self._store.find(self._deployments, *key)
        if deployment is None or deployment["metadata"].get("generation", 1) != generation:
            return
        spec = deployment["spec"]
        replicas = spec.get("replicas", 1)
        template_hash = _template_hash(spec["template"])
        behaviours = self._container_behaviours(spec["template"]["spec"])
        outcome = next((f for f in FAILURES if f in behaviours.values()), READY)
        if replicas == 0:
            outcome = READY
        old_ready = self._replace_pods(deployment, template_hash, replicas, outcome, behaviours)
        rs_name = f"{key[1]}-{template_hash}"
        status = _status(generation, replicas, old_ready, outcome, rs_name)
        self._store.set_status(self._deployments, *key, status)
        if outcome == READY:
            return
        deadline = spec.get("progressDeadlineSeconds", DEFAULT_PROGRESS_DEADLINE_S)
        await asyncio.sleep(max(0.0, started + deadline - asyncio.get_running_loop().time()))
        status["conditions"] = [
            _condition("Available", *_availability(replicas, old_ready)),
            _condition(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs_name}" has timed out progressing.',
            ),
        ]
        self._store.set_status(self._deployments, *key, status)

    def _container_behaviours(self, pod_spec: Mapping[str, Any]) -> dict[str, str]:
        return {c["name"]: self._behaviour_of(c.get("image", "")) for c in pod_spec["containers"]}

    def _behaviour_of(self, image: str) -> str:
        for substring, behaviour in reversed(self._rules):
            if substring in image:
                return behaviour
        return READY

    def _owned_pods(self, deployment: Object) -> list[Object]:
        selector = deployment["spec"]["selector"].get("matchLabels") or {}
        return self._store.list(
            self._pods,
            deployment["metadata"]["namespace"],
            lambda labels: all(labels.get(k) == v for k, v in selector.items()),
        )

    def _replace_pods(
        self,
        deployment: Object,
        template_hash: str,
        replicas: int,
        outcome: str,
        behaviours: Mapping[str, str],
    ) -> int:
        """Recreate the new ReplicaSet's Pods; keep the old ready ones while the new are not
        ready. Returns how many old ready Pods remain."""
        namespace = deployment["metadata"]["namespace"]
        old_ready = 0
        for pod in self._owned_pods(deployment):
            labels = pod["metadata"].get("labels") or {}
            keep = (
                outcome != READY
                and labels.get("pod-template-hash") != template_hash
                and _is_ready(pod)
            )
            if keep:
                old_ready += 1
            else:
                self._store.delete(self._pods, namespace, pod["metadata"]["name"])
        template = deployment["spec"]["template"]
        for _ in range(replicas):
            name = f"{deployment['metadata']['name']}-{template_hash}-{secrets.token_hex(3)[:5]}"
            labels = dict(template.get("metadata", {}).get("labels") or {})
            labels["pod-template-hash"] = template_hash
            pod: Object = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
                "spec": copy.deepcopy(template["spec"]),
            }
            self._store.create(self._pods, namespace, pod)
            self._store.set_status(
                self._pods, namespace, name, _pod_status(pod, outcome, behaviours)
            )
        return old_ready


def _template_hash(template: Mapping[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
    return digest[:10]


def _is_ready(pod: Object) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _availability(replicas: int, available: int) -> tuple[str, str, str]:
    """Available as the controller judges it: at least replicas minus maxUnavailable (25%)."""
    if available >= replicas - replicas // 4:
        return "True", "MinimumReplicasAvailable", "Deployment has minimum availability."
    return "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability."


def _status(
    generation: int, replicas: int, old_ready: int, outcome: str, rs_name: str
) -> dict[str, Any]:
    available = replicas if outcome == READY else old_ready
    counts = {
        "replicas": replicas + (0 if outcome == READY else old_ready),
        "updatedReplicas": replicas,
        "readyReplicas": available,
        "availableReplicas": available,
        "unavailableReplicas": 0 if outcome == READY else replicas,
    }
    if outcome == READY:
        progressing = (
            "True",
            "NewReplicaSetAvailable",
            f'ReplicaSet "{rs_name}" has successfully progressed.',
        )
    else:
        progressing = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
    return {
        "observedGeneration": generation,
        **{key: value for key, value in counts.items() if value},
        "conditions": [
            _condition("Available", *_availability(replicas, available)),
            _condition("Progressing", *progressing),
        ],
    }


def _pod_status(pod: Object, outcome: str, behaviours: Mapping[str, str]) -> dict[str, Any]:
    containers = pod["spec"]["containers"]
    if outcome == "Unschedulable":
        return {
            "phase": "Pending",
            "conditions": [
                _pod_condition("PodScheduled", "False", "Unschedulable", UNSCHEDULABLE_MESSAGE)
            ],
        }
    if outcome == "never":
        return {"phase": "Pending", "conditions": [_pod_condition("PodScheduled", "True")]}
    statuses = [_container_status(pod, c, behaviours[c["name"]]) for c in containers]
    unready = [c["name"] for c, s in zip(containers, statuses, strict=True) if not s["ready"]]
    why = (
        ("ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]")
        if unready
        else ()
    )
    ready = "False" if unready else "True"
    return {
        "phase": "Pending" if outcome == "ImagePullBackOff" else "Running",
        "conditions": [
            _pod_condition("PodScheduled", "True"),
            _pod_condition("Initialized", "True"),
            _pod_condition("ContainersReady", ready, *why),
            _pod_condition("Ready", ready, *why),
        ],
        "containerStatuses": statuses,
        "startTime": timestamp(),
    }


def _container_status(pod: Object, container: Mapping[str, Any], behaviour: str) -> dict[str, Any]:
    image = container["image"]
    status: dict[str, Any] = {
        "name": container["name"],
        "image": image,
        "imageID": "",
        "restartCount": 0,
    }
    if behaviour == "ImagePullBackOff":
        waiting = {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}
        return status | {"ready": False, "started": False, "state": {"waiting": waiting}}
    if behaviour == "CrashLoopBackOff":
        who = f"container={container['name']} pod={pod['metadata']['name']}"
        message = f"back-off 40s restarting failed {who}"
        return status | {
            "ready": False,
            "started": False,
            "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": message}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
        }
    return status | {
        "ready": True,
        "started": True,
        "imageID": image,
        "state": {"running": {"startedAt": timestamp()}},
    }


def _condition(kind: str, status: str, reason: str, message: str) -> dict[str, Any]:
    now = timestamp()
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    }


def _pod_condition(kind: str, status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    condition = {"type": kind, "status": status, "lastTransitionTime": timestamp()}
    if reason:
        condition |= {"reason": reason, "message": message}
    return condition
