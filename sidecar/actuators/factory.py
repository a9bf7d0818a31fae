"""Turns actuator settings into the one actuator a sidecar uses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from sidecar.actuators.base import TrafficActuator
from sidecar.actuators.kubernetes import KubernetesActuator, StageTarget
from sidecar.actuators.null import NullActuator
from sidecar.actuators.proxy import ProxyActuator
from sidecar.actuators.webhook import WebhookActuator
from sidecar.engine.clock import Clock, SystemClock
from sidecar.errors import SettingsError
from sidecar.kube.api import KubeApi

KINDS = ("proxy", "webhook", "kubernetes", "none")


@dataclass(frozen=True)
class ActuatorSettings:
    """Which actuator shifts traffic, and what it needs."""

    kind: str = "proxy"
    """One of ``KINDS``: the embedded proxy, a user's webhook, the cluster's own workloads
    and router (``kubernetes``), or no routing (dry run)."""

    proxy_listen: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    """Stage name -> (host, port) the proxy listens on for that stage; port 0 picks one."""

    proxy_metrics_listen: tuple[str, int] | None = None
    """Where the proxy serves its own ``/metrics``; None serves nothing."""

    webhook_url: str | None = field(default=None, repr=False)
    """The receiver every traffic state is POSTed to; required for ``webhook``.

    Kept out of the repr because such URLs often carry an access token.
    """

    webhook_secret: bytes | None = field(default=None, repr=False)
    """The secret that signs webhook states (``whsec_<base64>`` or raw bytes); None sends
    them unsigned."""

    timeout_s: float = 5.0
    """Per-request timeout for upstream (proxy) or receiver (webhook) calls."""

    kube_targets: Mapping[str, StageTarget] = field(default_factory=dict)
    """Stage name -> its Kubernetes target and strategy (``stage_targets(policy)``); for
    ``kubernetes``."""

    kube_namespace: str = "default"
    """The namespace of a target that names none: promgate's own."""


def build_actuator(
    settings: ActuatorSettings,
    *,
    registry: CollectorRegistry | None = None,
    kube: KubeApi | None = None,
    clock: Clock | None = None,
) -> TrafficActuator:
    """The configured actuator, not yet started.

    A :class:`ProxyActuator` still needs ``await start()`` before it listens.
    ``registry`` is where the proxy publishes its series. ``kube`` is the API client the
    ``kubernetes`` actuator uses (its owner closes it), ``clock`` times its rollouts.
    """
    if settings.kind == "proxy":
        return ProxyActuator(
            settings.proxy_listen,
            metrics_listen=settings.proxy_metrics_listen,
            registry=registry,
            timeout_s=settings.timeout_s,
        )
    if settings.kind == "webhook":
        if not settings.webhook_url:
            raise SettingsError("the webhook actuator needs a webhook URL")
        return WebhookActuator(
            settings.webhook_url, secret=settings.webhook_secret, timeout_s=settings.timeout_s
        )
    if settings.kind == "kubernetes":
        if kube is None:
            raise SettingsError(
                "the kubernetes actuator needs a Kubernetes API client; run promgate in a "
                "cluster or give it a kubeconfig (PROMGATE_KUBECONFIG)"
            )
        return KubernetesActuator(
            kube, settings.kube_targets, settings.kube_namespace, clock or SystemClock()
        )
    if settings.kind == "none":
        return NullActuator()
    raise SettingsError(f"unknown actuator kind {settings.kind!r}; known kinds: {', '.join(KINDS)}")
