"""The one error tree of promgate.

Every error a caller can see derives from :class:`PromgateError`; third-party
exceptions (aiohttp, sqlite3, pydantic, yaml) are translated at the seam where they
occur and never cross it. Each error says what was wrong, where, and what to do.

    PromgateError
    ├── InputError               bad input from a user or pipeline (CLI exit 2, HTTP 400)
    │   ├── ArtifactReferenceError   not an OCI reference, or no digest
    │   ├── ManifestError            release manifest fails its schema
    │   ├── PolicyError              promotion policy fails validation (carries every problem)
    │   ├── RequestError             an API request body or parameter is malformed
    │   │   └── RequestTooLargeError     its URL or a header is over the server's limit
    │   └── SettingsError            a setting or PROMGATE_* variable is invalid
    ├── RefusedError             the release is refused by a rule (CLI exit 1, HTTP 409/422)
    │   ├── TagMutationError         a known tag arrived with a different digest
    │   ├── StageOrderError          a required earlier stage has not promoted this digest
    │   ├── MetadataGateError        a metadata gate (vulnerabilities, provenance, stack) failed
    │   └── ConflictError            another promotion is active for the same service and stage
    ├── NotFoundError            an unknown promotion, service or stage (HTTP 404)
    ├── AuthError                missing or insufficient bearer token (HTTP 401/403)
    ├── UnreachableError         the promgate server did not answer (refused, reset, 5xx)
    ├── ProviderError            the metrics source could not answer (never a rollback reason)
    │   ├── ProviderTimeoutError     the query did not finish in time
    │   ├── ProviderHTTPError        Prometheus answered with a non-success status
    │   └── QueryError               Prometheus refused the query (bad PromQL)
    ├── ActuationError           traffic could not be shifted
    │   └── CandidateNotReadyError   the candidate's workload never became ready (permanent)
    ├── LedgerError              durable state could not be read or written
    ├── NotLeaderError           a write reached a replica that does not lead (HTTP 503)
    └── KubeError                the Kubernetes API failed or refused a request
        ├── KubeNotFoundError        the object does not exist (404)
        ├── KubeConflictError        its resourceVersion moved, or the name is taken (409)
        └── KubeInvalidError         the API server rejected the object as invalid (422)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class PromgateError(Exception):
    """Base of every error promgate raises on purpose."""


class InputError(PromgateError):
    """The input given to promgate is malformed; fix it and try again."""


class ArtifactReferenceError(InputError):
    """An artifact reference is not ``repository[:tag]@<sha256 or sha512 digest>``."""


@dataclass(frozen=True)
class Problem:
    """One validation problem: where it is (file and field path), what, and the fix."""

    path: str
    message: str
    fix: str = ""
    file: str = ""

    def __str__(self) -> str:
        where = f"{self.file}: " if self.file else ""
        fix = f" (fix: {self.fix})" if self.fix else ""
        return f"{where}{self.path or '<root>'}: {self.message}{fix}"


class ProblemsError(InputError):
    """An input error that carries every problem found, not just the first."""

    def __init__(self, what: str, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{what}: {len(self.problems)} problem(s)\n{lines}")


class ManifestError(ProblemsError):
    """The release manifest does not match its schema."""


class PolicyError(ProblemsError):
    """The promotion policy does not validate."""


class RequestError(ProblemsError):
    """An API request itself (JSON, fields, query parameters) is malformed."""


class RequestTooLargeError(RequestError):
    """The request line or a header is longer than the API accepts (HTTP 414 or 431)."""

    def __init__(self, what: str, problems: Iterable[Problem], *, status: int) -> None:
        super().__init__(what, problems)
        self.status = status


class SettingsError(InputError):
    """A setting or its PROMGATE_* environment variable is invalid."""


class RefusedError(PromgateError):
    """The release is refused by a rule; nothing was shifted.

    ``promotion_id`` names the stored record of the refusal, once it has been stored.
    """

    promotion_id: str | None = None


class TagMutationError(RefusedError):
    """A tag already seen with one digest arrived with another."""


class StageOrderError(RefusedError):
    """The stage requires earlier stages that have not promoted this digest."""


class MetadataGateError(RefusedError):
    """A metadata gate rejected the manifest."""


class ConflictError(RefusedError):
    """Another promotion is already active for this service and stage.

    ``active_id`` names that active promotion, when the conflict is with one.
    """

    active_id: str | None = None


class NotFoundError(PromgateError):
    """The named promotion, service or stage does not exist."""


class AuthError(PromgateError):
    """The request lacks a valid bearer token or the token's role is too low."""

    def __init__(self, message: str, *, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


class UnreachableError(PromgateError):
    """The promgate server could not be reached or failed to answer (connection refused
    or reset, timeout, HTTP 5xx): a restarting sidecar looks like this for a while.

    ``why`` is the short reason (``connection refused``, ``HTTP 503: starting``).
    """

    def __init__(self, message: str, *, why: str = "") -> None:
        super().__init__(message)
        self.why = why or message


class ProviderError(PromgateError):
    """The metrics source could not answer. Holds traffic; never a rollback reason."""


class ProviderTimeoutError(ProviderError):
    """A query did not finish within its timeout."""


class ProviderHTTPError(ProviderError):
    """The metrics source answered with a non-success HTTP status."""


class QueryError(ProviderError):
    """The metrics source rejected the query itself (for example bad PromQL)."""


class ActuationError(PromgateError):
    """Traffic could not be shifted to the desired state.

    ``permanent`` means the actuator refuses the state itself (it names no upstream, its
    stage has no listener, the receiver rejected it), so sending it again cannot succeed.
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class CandidateNotReadyError(ActuationError):
    """The candidate's workload missed its rollout deadline; no traffic moved to it.

    ``reason`` is what Kubernetes gave (``ImagePullBackOff: ...``, ``Unschedulable: ...``).
    Permanent: the promotion ends as ``not_ready`` instead of retrying.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message, permanent=True)
        self.reason = reason


class LedgerError(PromgateError):
    """Durable state could not be read or written."""


class NotLeaderError(PromgateError):
    """This replica does not lead, so it takes no writes; ``leader`` names the one that
    does (None during an election), ``retry_after_s`` when to try again."""

    def __init__(self, message: str, *, leader: str | None, retry_after_s: int) -> None:
        super().__init__(message)
        self.leader = leader
        self.retry_after_s = retry_after_s


class KubeError(PromgateError):
    """The Kubernetes API server failed or refused a request (unreachable, 5xx, 401/403).

    ``status`` is the HTTP status (0 when the server did not answer) and ``reason`` the
    Status object's ``reason`` (``NotFound``, ``Conflict``, ``AlreadyExists``, ``Invalid``).
    """

    def __init__(self, message: str, *, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class KubeNotFoundError(KubeError):
    """The named object (or its namespace) does not exist."""


class KubeConflictError(KubeError):
    """A write lost a race: the object's resourceVersion moved since it was read
    (``reason`` ``Conflict``), or a create found the name taken (``AlreadyExists``).
    Re-read, re-decide, and write again, or give up."""


class KubeInvalidError(KubeError):
    """The API server rejected the object as invalid (HTTP 422); the message names the
    fields, as the server reported them."""
