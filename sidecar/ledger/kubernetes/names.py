"""Object names and label values the Kubernetes ledger writes, valid whatever a user names
a service, stage or repository.

Kubernetes accepts lowercase DNS-1123 labels (at most 63 characters) as names and a
similar grammar for label values; promgate's names are free text. A name that fits is
used as it is, so ``kubectl get`` shows it; one that does not keeps a readable prefix and
gains a hash of the whole, so two different names never meet in one object.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

MAX_LABEL = 63
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_NOT_DNS = re.compile(r"[^a-z0-9]+")
_HASH_CHARS = 10

PREFIX = "promgate"
GROUP = "promgate.dev"
MANAGED_BY = "app.kubernetes.io/managed-by"
SERVICE_LABEL = f"{GROUP}/service"
STAGE_LABEL = f"{GROUP}/stage"
ACTIVE_LABEL = f"{GROUP}/active"
LEDGER_LABEL = f"{GROUP}/ledger"  # which part of the ledger a ConfigMap holds
PROMOTION_LABEL = f"{GROUP}/promotion"
JOURNAL_LABEL = f"{GROUP}/journal"  # "pending" while a stage holds a transaction to apply
ORDER_ANNOTATION = f"{GROUP}/order"  # creation order among promotions created at one time


def _hash(*values: str) -> str:
    return hashlib.sha256("\0".join(values).encode()).hexdigest()[:_HASH_CHARS]


def _readable(value: str, room: int) -> str:
    """The DNS-safe part of ``value``, at most ``room`` characters, no dash at either end."""
    return _NOT_DNS.sub("-", value.lower())[:room].strip("-")


def dns_label(value: str) -> str:
    """``value`` if it is a DNS-1123 label, else its readable part plus a hash."""
    if len(value) <= MAX_LABEL and _DNS_LABEL.fullmatch(value):
        return value
    readable = _readable(value, MAX_LABEL - _HASH_CHARS - 1)
    return f"{readable}-{_hash(value)}" if readable else _hash(value)


def label_value(value: str) -> str:
    """``value`` if Kubernetes accepts it as a label value, else a DNS label for it."""
    if len(value) <= MAX_LABEL and _LABEL_VALUE.fullmatch(value):
        return value
    return dns_label(value)


def promotion_name(promotion_id: str) -> str:
    """The Promotion object of a promotion: its id, which promgate makes DNS-safe."""
    return dns_label(promotion_id)


def stage_name(service: str, stage: str) -> str:
    """The ConfigMap of a (service, stage): always hashed, as ``a-b``/``c`` and ``a``/``b-c``
    would otherwise meet."""
    return f"{PREFIX}-stage-{_readable(service, 18)}-{_readable(stage, 18)}-{_hash(service, stage)}"


def events_name(promotion_object: str, chunk: int) -> str:
    """Chunk ``chunk`` (from 0) of a promotion's event log."""
    return f"{PREFIX}-events-{promotion_object}-{chunk}"


def chunk_number(obj: dict[str, Any]) -> int:
    """The number of an event-log or audit chunk, from its name."""
    return int(str(obj["metadata"]["name"]).rsplit("-", 1)[1])


def tags_name(repository: str) -> str:
    """The ConfigMap of one (normalized) repository's tags."""
    return f"{PREFIX}-tags-{_readable(repository, 36)}-{_hash(repository)}"


AUDIT_INDEX = f"{PREFIX}-audit"


def audit_name(chunk: int) -> str:
    return f"{PREFIX}-audit-{chunk}"
