"""Deployment objects by digest, rollout readiness and the reason a rollout is not ready:
pure, so table-tested."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.actuators.kubernetes.actuator import candidate_labels
from sidecar.actuators.kubernetes.workloads import (
    COPY_OF,
    Release,
    copy_of,
    label_value,
    not_ready_reason,
    rollout_ready,
    with_release,
)
from sidecar.errors import ActuationError

DIGEST = "sha256:" + "ab" * 32
RELEASE = Release("ghcr.io/acme/checkout@" + DIGEST, DIGEST, "1.4.2+build.7", "p-123")


def deployment(containers: tuple[str, ...] = ("app", "proxy")) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "checkout", "namespace": "shop", "labels": {"team": "pay"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "checkout"}},
            "template": {
                "metadata": {"labels": {"app": "checkout", "tier": "web"}},
                "spec": {"containers": [{"name": c, "image": f"{c}@{DIGEST}"} for c in containers]},
            },
        },
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.4.2", "1.4.2"),
        ("1.4.2+build.7", "1.4.2_build.7"),
        ("v2 (rc)", "v2_rc"),
        ("-lead", "lead"),
        ("x" * 70, "x" * 63),
        ("ab" * 32, "ab" * 31 + "a"),
    ],
)
def test_label_value_is_what_a_label_accepts(text: str, expected: str) -> None:
    assert label_value(text) == expected


def test_a_release_sets_the_named_containers_image_by_digest_and_stamps_the_pods() -> None:
    """Only the named container's image changes; the pods carry version, digest and
    promotion as labels (label-safe) and annotations (whole)."""
    edited = with_release(deployment(), "app", RELEASE)
    template = edited["spec"]["template"]
    assert [c["image"] for c in template["spec"]["containers"]] == [
        "ghcr.io/acme/checkout@" + DIGEST,
        "proxy@" + DIGEST,
    ]
    assert template["metadata"]["labels"] == {
        "app": "checkout",
        "tier": "web",
        "promgate.dev/version": "1.4.2_build.7",
        "promgate.dev/digest": ("ab" * 32)[:63],
        "promgate.dev/promotion": "p-123",
    }
    assert template["metadata"]["annotations"] == {
        "promgate.dev/version": "1.4.2+build.7",
        "promgate.dev/digest": DIGEST,
        "promgate.dev/promotion": "p-123",
    }
    assert with_release(edited, "app", RELEASE) == edited  # repeated: unchanged


@pytest.mark.parametrize(
    ("containers", "container", "message"),
    [
        (("app", "proxy"), None, r"has 2 containers \(\['app', 'proxy'\]\); name the one"),
        (("app",), "web", r"has no container 'web'; set kubernetes.container to one of \['app'\]"),
    ],
)
def test_the_container_must_be_named_or_alone(
    containers: tuple[str, ...], container: str | None, message: str
) -> None:
    """Guessing a container could replace a sidecar's image: refuse, and say which to name."""
    with pytest.raises(ActuationError, match=message) as caught:
        with_release(deployment(containers), container, RELEASE)
    assert caught.value.permanent


def test_the_only_container_needs_no_name() -> None:
    edited = with_release(deployment(("app",)), None, RELEASE)
    assert edited["spec"]["template"]["spec"]["containers"][0]["image"] == RELEASE.image


def test_a_candidate_copy_claims_only_its_own_pods() -> None:
    """The copy selects labels the stable selector does not match, keeps the pod template's
    other labels, and says what it is a copy of."""
    labels = candidate_labels({"app": "checkout"})
    assert labels == {"app": "checkout-candidate", "promgate.dev/role": "candidate"}
    copy = copy_of(deployment(), "checkout-candidate", labels)
    assert copy["metadata"]["name"] == "checkout-candidate"
    assert copy["metadata"]["labels"][COPY_OF] == "checkout"
    assert copy["spec"]["selector"] == {"matchLabels": labels}
    assert copy["spec"]["template"]["metadata"]["labels"] == {**labels, "tier": "web"}
    assert copy["spec"]["replicas"] == 3


def status(**counts: int) -> dict[str, Any]:
    base = {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3,
            "availableReplicas": 3}  # fmt: skip
    return {"metadata": {"generation": 2}, "spec": {"replicas": 3}, "status": {**base, **counts}}


@pytest.mark.parametrize(
    ("rollout", "ready"),
    [
        pytest.param(status(), True, id="all-caught-up"),
        pytest.param(status(observedGeneration=1), False, id="old-generation-observed"),
        pytest.param(status(updatedReplicas=2), False, id="one-not-updated"),
        pytest.param(status(readyReplicas=2), False, id="one-not-ready"),
        pytest.param(status(availableReplicas=2), False, id="one-not-available"),
        pytest.param(status(replicas=4), False, id="an-old-pod-still-running"),
        pytest.param({"metadata": {"generation": 1}, "spec": {"replicas": 1}}, False,
                     id="no-status-yet"),
    ],
)  # fmt: skip
def test_rollout_ready(rollout: dict[str, Any], ready: bool) -> None:
    assert rollout_ready(rollout) is ready


def pod(status: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "checkout-candidate-7d9-x2k"}, "status": status}


def waiting(reason: str, message: str) -> dict[str, Any]:
    state = {"waiting": {"reason": reason, "message": message}}
    return {"containerStatuses": [{"name": "app", "state": state}]}


NO_NODE = "0/3 nodes are available: 3 Insufficient cpu."
UNSCHEDULABLE = {"conditions": [{"type": "PodScheduled", "status": "False",
                                 "reason": "Unschedulable", "message": NO_NODE}]}  # fmt: skip
DEADLINE = {"conditions": [{"type": "Progressing", "status": "False",
                            "reason": "ProgressDeadlineExceeded",
                            "message": 'ReplicaSet "x" has timed out progressing.'}]}  # fmt: skip


@pytest.mark.parametrize(
    ("pods", "deployment_status", "expected"),
    [
        pytest.param([pod(waiting("ImagePullBackOff", "Back-off pulling image"))], {},
                     "ImagePullBackOff: Back-off pulling image (pod checkout-candidate-7d9-x2k)",
                     id="image-pull"),
        pytest.param([pod(waiting("ContainerCreating", "")),
                      pod(waiting("CrashLoopBackOff", "back-off 40s restarting"))], {},
                     "CrashLoopBackOff: back-off 40s restarting (pod checkout-candidate-7d9-x2k)",
                     id="crash-loop-past-a-starting-pod"),
        pytest.param([pod(UNSCHEDULABLE)], {},
                     "Unschedulable: 0/3 nodes are available: 3 Insufficient cpu. "
                     "(pod checkout-candidate-7d9-x2k)", id="unschedulable"),
        pytest.param([], DEADLINE,
                     "ProgressDeadlineExceeded: ReplicaSet \"x\" has timed out progressing.",
                     id="progress-deadline"),
        pytest.param([pod(waiting("ContainerCreating", ""))], {"readyReplicas": 1},
                     "not ready within 30s: 1 of 3 replicas ready, 0 updated",
                     id="just-slow"),
    ],
)  # fmt: skip
def test_not_ready_reason_is_what_kubernetes_says(
    pods: list[dict[str, Any]], deployment_status: dict[str, Any], expected: str
) -> None:
    """The first telling reason: a container's waiting reason, a pod's scheduling failure,
    the Deployment's progress deadline, else the replica counts."""
    stalled = {"spec": {"replicas": 3}, "status": deployment_status}
    assert not_ready_reason(stalled, pods, 30) == expected
