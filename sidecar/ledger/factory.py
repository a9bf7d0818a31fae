"""Picks the ledger a setting names."""

from __future__ import annotations

from sidecar.domain.policy import PromotionPolicy
from sidecar.errors import SettingsError
from sidecar.kube.api import KubeApi
from sidecar.ledger.base import Ledger
from sidecar.ledger.kubernetes import KubernetesLedger
from sidecar.ledger.memory import MemoryLedger
from sidecar.ledger.sqlite import SqliteLedger

KINDS = ("kubernetes", "memory", "sqlite")


def build_ledger(
    kind: str,
    path: str,
    *,
    kube: KubeApi | None = None,
    namespace: str | None = None,
    policy: PromotionPolicy | None = None,
) -> Ledger:
    """The ledger of ``kind``. ``path`` is the SQLite file (ignored by the others);
    ``kube`` and ``namespace`` are where the Kubernetes ledger keeps its objects, and
    ``policy`` lets it show each promotion's step count."""
    if kind == "memory":
        return MemoryLedger()  # dry runs: nothing outlives the process
    if kind == "sqlite":
        return SqliteLedger(path)
    if kind == "kubernetes":
        if kube is None or not namespace:
            raise SettingsError(
                "the kubernetes ledger needs a Kubernetes API connection and a namespace: "
                "run in a cluster or set PROMGATE_KUBECONFIG, and PROMGATE_KUBE_NAMESPACE"
            )
        return KubernetesLedger(kube, namespace, policy=policy)
    raise SettingsError(f"unknown ledger kind {kind!r}; known kinds: {', '.join(KINDS)}")
