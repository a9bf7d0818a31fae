"""A stage's Kubernetes target, and the names of what promgate runs there for each side.

Pure: the actuator writes these objects and the query placeholders point at them, so
both take the names from here and a gate always looks at the pods that get the traffic.

Canary runs the candidate in ``<deployment>-candidate`` beside the stable Deployment,
behind the ``candidateService``. Blue-green runs two slot Deployments
``<deployment>-<backend>`` (``blue``, ``green``); with an HTTPRoute each slot has its own
Service ``<stableService>-<backend>``, with the Service router the stable Service's
selector picks the live slot and the preview Service the candidate's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from sidecar.domain.durations import Duration
from sidecar.domain.promotion import SLOTS

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""A DNS-1123 label: what Kubernetes accepts as a namespace, Service or container name."""
MAX_LABEL = 63
CANDIDATE_SUFFIX = "candidate"
"""The canary candidate Deployment is ``<deployment>-candidate``."""


def _dns_label(name: str) -> str:
    what = name_problem(name, "name")
    if what is not None:
        fix = "use lowercase letters, digits and '-', starting and ending with a letter or digit"
        raise PydanticCustomError("dns_label", "{what}", {"what": what, "fix": fix})
    return name


DnsName = Annotated[
    str,
    AfterValidator(_dns_label),
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": MAX_LABEL, "pattern": DNS_LABEL}
    ),
]
"""A DNS-1123 label: lowercase letters, digits and '-', at most 63."""


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, frozen=True, use_attribute_docstrings=True
    )


class HttpRouteRouter(_Model):
    """Weights on one rule of a Gateway API HTTPRoute."""

    name: DnsName
    """The HTTPRoute, in the target's namespace."""
    rule: int = Field(default=0, ge=0, le=15)
    """The index of the rule whose backendRefs promgate weights; other rules stay as they are."""
    stable_service: DnsName = Field(alias="stableService")
    """Canary: the Service of the stable Deployment. Blue-green: the prefix of the slot
    Services ``<stableService>-<backend>``."""
    candidate_service: DnsName | None = Field(default=None, alias="candidateService")
    """Canary: the Service of the candidate Deployment (default ``<stableService>-canary``);
    promgate creates it, or points its selector at the candidate."""

    @property
    def canary_service(self) -> str:
        return self.candidate_service or f"{self.stable_service}-canary"


class ServiceRouter(_Model):
    """Blue-green without a Gateway: the stable Service's selector switches slots."""

    name: DnsName
    """The Service live traffic reaches; its selector names the live slot."""
    preview_service: DnsName | None = Field(default=None, alias="previewService")
    """The Service that selects the candidate's slot (default ``<name>-preview``); promgate
    creates it."""

    @property
    def preview(self) -> str:
        return self.preview_service or f"{self.name}-preview"


class Router(_Model):
    """Exactly one of ``httpRoute`` or ``service``."""

    http_route: HttpRouteRouter | None = Field(default=None, alias="httpRoute")
    """Gateway API: weights on an HTTPRoute rule (canary and blue-green)."""
    service: ServiceRouter | None = None
    """A Service whose selector switches between the blue-green slots (blue-green only)."""

    @model_validator(mode="after")
    def _exactly_one(self) -> Router:
        if (self.http_route is None) == (self.service is None):
            raise ValueError("set exactly one of httpRoute or service")
        return self


class KubernetesTarget(_Model):
    """Where a stage's releases run on Kubernetes, and how their traffic is routed."""

    namespace: DnsName | None = None
    """The namespace of the Deployment, Services and route; default: promgate's own."""
    deployment: DnsName
    """The stable Deployment; its spec is the template of the candidate and slot copies."""
    container: DnsName | None = None
    """The container whose image promgate sets; default: the pod's only container."""
    ready_timeout: Duration = Field(default=300.0, alias="readyTimeout")
    """How long a rollout may take to become ready before the candidate counts as never
    ready (``5m``)."""
    router: Router
    """What moves the traffic."""

    def namespace_or(self, default: str) -> str:
        return self.namespace or default


Role = Literal["stable", "candidate"]


@dataclass(frozen=True)
class SideNames:
    """The Kubernetes identity of one side of a promotion."""

    workload: str
    """The Deployment that runs it."""
    service: str
    """The Service its traffic goes through."""

    @property
    def pod(self) -> str:
        """A regex that matches the pod names of its Deployment (``<workload>-<rs>-<id>``);
        a DNS label holds no regex metacharacter, so the name stands as it is."""
        return f"{self.workload}-[a-z0-9]+-[a-z0-9]+"


def side_names(target: KubernetesTarget, strategy: str, role: Role, backend: str) -> SideNames:
    """The Deployment and Service of the side with ``role`` running in ``backend``."""
    if strategy == "canary":
        route = target.router.http_route
        stable_service = route.stable_service if route else ""
        if role == "stable":
            return SideNames(target.deployment, stable_service)
        return SideNames(candidate_workload(target), route.canary_service if route else "")
    workload = slot_workload(target, backend)
    if target.router.http_route is not None:
        return SideNames(workload, slot_service(target.router.http_route, backend))
    service = target.router.service
    assert service is not None  # the router holds exactly one of the two
    return SideNames(workload, service.preview if role == "candidate" else service.name)


def candidate_workload(target: KubernetesTarget) -> str:
    return f"{target.deployment}-{CANDIDATE_SUFFIX}"


def slot_workload(target: KubernetesTarget, backend: str) -> str:
    return f"{target.deployment}-{backend}"


def slot_service(route: HttpRouteRouter, backend: str) -> str:
    return f"{route.stable_service}-{backend}"


def name_problem(name: str, what: str) -> str | None:
    """Why ``name`` cannot name a Kubernetes object, or None when it can."""
    if len(name) > MAX_LABEL:
        return f"{what} {name!r} is {len(name)} characters long; Kubernetes allows {MAX_LABEL}"
    if re.fullmatch(DNS_LABEL, name) is None:
        return f"{what} {name!r} is not a DNS-1123 label (lowercase letters, digits and '-')"
    return None


def target_problems(target: KubernetesTarget, strategy: str) -> list[tuple[str, str, str]]:
    """(path under ``kubernetes``, what, fix) of what keeps ``target`` from working with
    the stage's ``strategy``: a router the strategy cannot drive, or a name that grows past
    what Kubernetes accepts once promgate adds its suffix."""
    problems: list[tuple[str, str, str]] = []
    if target.router.service is not None and strategy == "canary":
        problems.append(
            (
                "router.service",
                "the service router switches all traffic at once, so it cannot weight a canary",
                "use router.httpRoute for a canary, or strategy blueGreen with this router",
            )
        )
    for path, name in _derived_names(target, strategy):
        what = name_problem(name, "the derived name")
        if what is not None:
            problems.append((path, what, f"shorten it so {name!r} fits in {MAX_LABEL}"))
    return problems


def _derived_names(target: KubernetesTarget, strategy: str) -> list[tuple[str, str]]:
    """(path of the field it derives from, name) of every object name promgate derives."""
    route = target.router.http_route
    if strategy == "canary":
        names = [("deployment", candidate_workload(target))]
        return names + ([("router.httpRoute", route.canary_service)] if route else [])
    slot = max(SLOTS, key=len)  # the longest default slot name tells for both
    names = [("deployment", slot_workload(target, slot))]
    if route is not None:
        names.append(("router.httpRoute.stableService", slot_service(route, slot)))
    return names
