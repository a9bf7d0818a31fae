"""A Kubernetes API server for tests: the one fake in promgate's tests.

No real API server can run here, so this one enforces the parts of the contract promgate
relies on, the way a real one answers: ``kind: Status`` errors (404 NotFound, 409 Conflict
on a stale resourceVersion, 409 AlreadyExists, 422 Invalid naming the field, 401 without the
token, 413 over 3 MiB), one global resourceVersion counter, ``generation`` on spec changes,
status subresources, label-selector lists, validation of every write (built-in kinds with
kubernetes-validate, custom resources against their published CRD schema, images pinned by
digest, ConfigMaps up to 1 MiB), and Deployment rollouts with the Pods a controller and
kubelet would leave (``rollout``). No watch, no PATCH: promgate polls and writes with PUT.

Modules: ``resources`` (served types), ``validation``, ``store`` (objects and versions),
``selectors``, ``rollout`` (the Deployment simulation), ``server`` (routes, auth, faults).
"""

from tests.kubeapi.errors import ApiError
from tests.kubeapi.resources import SCHEMAS_DIR, MissingSchemasError
from tests.kubeapi.rollout import BEHAVIOURS
from tests.kubeapi.server import ContractApiServer, Write

__all__ = [
    "BEHAVIOURS",
    "SCHEMAS_DIR",
    "ApiError",
    "ContractApiServer",
    "MissingSchemasError",
    "Write",
]
