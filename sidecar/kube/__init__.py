"""Talking to a Kubernetes API server: the one seam the Kubernetes actuator, ledger,
leader election and Promotion intake share.

Objects travel as plain JSON dicts (as the API serves them), so nothing a user set on a
Deployment or HTTPRoute is lost between a read and a write. Every write of an object read
earlier carries that read's ``metadata.resourceVersion``: a write that lost a race fails
with :class:`~sidecar.errors.KubeConflictError` instead of landing over another's.
"""

from sidecar.kube.api import (
    CONFIGMAP,
    DEPLOYMENT,
    EVENT,
    HTTPROUTE,
    LEASE,
    POD,
    PROMOTION,
    SERVICE,
    Kind,
    KubeApi,
)

__all__ = [
    "CONFIGMAP",
    "DEPLOYMENT",
    "EVENT",
    "HTTPROUTE",
    "LEASE",
    "POD",
    "PROMOTION",
    "SERVICE",
    "Kind",
    "KubeApi",
]
