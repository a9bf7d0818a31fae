"""The Kubernetes actuator: releases deployed by digest, traffic moved by an HTTPRoute's
weights or a Service's selector."""

from sidecar.actuators.kubernetes.actuator import KubernetesActuator, StageTarget, stage_targets

__all__ = ["KubernetesActuator", "StageTarget", "stage_targets"]
