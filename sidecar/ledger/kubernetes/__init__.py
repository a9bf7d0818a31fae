"""The Kubernetes ledger: promgate's durable state as objects in one namespace.

What lives where, and why:

- Each promotion is a ``Promotion`` object (promgate.dev/v1alpha1) named by its id: its
  spec is what was asked for (stage, manifest, backend), its status what promgate made of
  it (phase, step, weight, the last evaluation's gates) with promgate's full record under
  ``status.ledger``. So ``kubectl get promotions`` is the list of promotions, and a user's
  ``kubectl apply`` of one is a way in (see :mod:`sidecar.kube.intake`).
- Each promotion's event log is a run of ConfigMaps ``promgate-events-<id>-<n>``, each
  taking events until it holds 256 KiB: append-only, every object far below the 1 MiB
  the API accepts, however long the promotion runs.
- Each (service, stage) has one ConfigMap holding what must change together: its stable
  history, its last traffic state, its active promotion, where its promotions' logs end,
  and the journal of the transaction being applied. The API server writes one object
  atomically (checked by resourceVersion) and nothing across objects, so a transaction
  is written whole, as intent, into that ConfigMap in one write: the commit point. Then
  its Promotion and event writes are applied idempotently and the journal is cleared;
  ``open()`` and every read roll a pending journal forward first. A crash anywhere
  leaves all of a transaction or none of it, and two replicas racing for a stage retry
  on the resourceVersion they lost (bounded), so no update is lost.
- Tags live in one ConfigMap per repository; the audit log in chunked ConfigMaps with a
  bounded retention (:mod:`sidecar.ledger.kubernetes.audit`).

Names are DNS-1123: a service or stage name that is not one is shortened and hashed.
"""

from sidecar.ledger.kubernetes.ledger import KubernetesLedger

__all__ = ["KubernetesLedger"]
