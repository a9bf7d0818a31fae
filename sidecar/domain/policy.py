"""The versioned promotion policy: stages, their order, strategies, gates and approvals."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from sidecar.analysis.queries import KUBERNETES_PLACEHOLDERS, placeholders, template_problems
from sidecar.domain.durations import Duration
from sidecar.domain.kubernetes import KubernetesTarget, target_problems
from sidecar.domain.validation import MAX_INTEGER, problems_from
from sidecar.errors import PolicyError, Problem

# Bounds of the policy's strings and lists; `promgate schema policy` shows them too.
MAX_NAME = 63  # stage and gate names: they become metric labels and URL segments
MAX_TEXT = 256
MAX_QUERY = 8192  # a PromQL template
MAX_ITEMS = 64  # stages, gates, requirements, required fields, stack entries

Name = Annotated[str, Field(max_length=MAX_NAME)]
Text = Annotated[str, Field(max_length=MAX_TEXT)]
Query = Annotated[str, Field(min_length=1, max_length=MAX_QUERY)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def _query_template(template: str | None) -> str | None:
    """Refuse unknown placeholders and any placed where escaping cannot keep a value inert."""
    problems = template_problems(template) if template is not None else []
    if problems:
        raise PydanticCustomError(
            "query_template",
            "{problems}",
            {
                "problems": "; ".join(what for what, _ in problems),
                "fix": "; ".join(dict.fromkeys(fix for _, fix in problems)),
            },
        )
    return template


class Analysis(_Model):
    """How often gates are evaluated and how long missing evidence is tolerated."""

    interval: Duration = Field(default=5.0, description="time between gate evaluations")
    confirm: int = Field(
        default=3, ge=1, le=60, description="consecutive breaches that make one persistent"
    )
    confirm_within: int | None = Field(
        default=None,
        alias="confirmWithin",
        ge=1,
        le=60,
        description="threshold gates: `confirm` breaches within this many evaluations (k of "
        "n) make one persistent, rather than in a row",
    )
    no_data_timeout: Duration = Field(
        default=120.0,
        alias="noDataTimeout",
        description="how long a step waits for data before stopping as insufficient evidence",
    )
    alpha: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="sequential gates: the chance of a false rollback per release, split "
        "across the stage's sequential gates (evidence carries over from step to step)",
    )
    power: float = Field(
        default=0.95,
        gt=0,
        lt=1,
        description="sequential gates with `detect`: the chance that a regression that large "
        "is stopped before its step passes",
    )
    max_provider_hold: Duration = Field(
        default=300.0,
        alias="maxProviderHold",
        description="how long traffic holds while Prometheus is unavailable before aborting",
    )

    @model_validator(mode="after")
    def _confirmation(self) -> Analysis:
        if self.confirm_within is not None and self.confirm_within < self.confirm:
            raise ValueError(
                f"confirmWithin ({self.confirm_within}) must be at least confirm "
                f"({self.confirm}): {self.confirm} breaches cannot fit in fewer evaluations"
            )
        return self


class Canary(_Model):
    """Shift live traffic in steps of weights, judging each step for ``stepDuration``."""

    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(min_length=1, max_length=100)
    step_duration: Duration = Field(alias="stepDuration")

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[int]) -> list[int]:
        if any(b <= a for a, b in pairwise(steps)):
            raise ValueError("weights must increase step by step, e.g. [10, 25, 50, 100]")
        return steps


class BlueGreen(_Model):
    """Judge a preview, switch all traffic at once, judge again, keep the old slot a while."""

    preview: Duration = Field(description="pre-promotion analysis of the preview slot")
    post_promotion: Duration = Field(alias="postPromotion", description="analysis after switch")
    keep_previous: Duration = Field(
        default=600.0, alias="keepPrevious", description="old slot kept for instant switch-back"
    )


class Strategy(_Model):
    """Exactly one of ``canary`` or ``blueGreen``."""

    canary: Canary | None = None
    blue_green: BlueGreen | None = Field(default=None, alias="blueGreen")

    @model_validator(mode="after")
    def _exactly_one(self) -> Strategy:
        if (self.canary is None) == (self.blue_green is None):
            raise ValueError("set exactly one of canary or blueGreen")
        return self

    @property
    def kind(self) -> str:
        return "canary" if self.canary is not None else "blue_green"


class RatioQueries(_Model):
    """Two counter queries; the gate judges bad/total over the evaluation's increase."""

    bad: Query
    total: Query

    _templates = field_validator("bad", "total")(_query_template)


class SloGate(_Model):
    """An SLO judged on Prometheus for candidate and baseline alike.

    Either ``ratio`` (counters: bad and total events, judged on their increase) or
    ``query`` (a PromQL expression yielding one value). A breach is a value above ``max``
    (or below ``min``); with ``maxVsBaseline`` the bound rises to that multiple of the
    baseline, so the candidate is blamed only for what it adds. ``hardMax`` and
    ``hardVsBaseline`` are guards that roll back at once.
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=MAX_NAME)
    ratio: RatioQueries | None = None
    query: Query | None = None
    max: float | None = None
    min: float | None = None
    max_vs_baseline: float | None = Field(default=None, alias="maxVsBaseline", gt=1.0)
    hard_max: float | None = Field(default=None, alias="hardMax")
    hard_vs_baseline: float | None = Field(default=None, alias="hardVsBaseline", gt=1.0)
    min_requests: int = Field(
        default=10,
        alias="minRequests",
        ge=1,
        le=MAX_INTEGER,
        description="requests on the candidate needed before a ratio gate judges",
    )
    window: Duration = Field(default=30.0, description="value of $window in `query`")
    judge: Literal["threshold", "sequential"] = Field(
        default="threshold",
        description="threshold: bounds with `confirm` breaches in a row; sequential (ratio "
        "gates): an anytime-valid test of candidate against baseline counts",
    )
    margin: float = Field(
        default=0.0,
        ge=0,
        description="sequential: how much worse than the baseline the candidate may be "
        "(0.2 = 20%) before it counts as a regression",
    )
    min_step_requests: int = Field(
        default=100,
        alias="minStepRequests",
        ge=1,
        le=MAX_INTEGER,
        description="sequential: candidate requests a step needs before it may pass",
    )
    detect: float | None = Field(
        default=None,
        gt=1.0,
        description="sequential: a step passes only once the evidence rules out a regression "
        "this many times the baseline (2 = twice as many bad events), with the analysis' "
        "`power`; until then the step waits",
    )
    detect_floor: float | None = Field(
        default=None,
        alias="detectFloor",
        gt=0,
        lt=1,
        description="sequential with `detect`: a step may also pass once the candidate's "
        "ratio is shown to be below this (for near-spotless baselines, where twice the "
        "baseline says little)",
    )

    @model_validator(mode="after")
    def _shape(self) -> SloGate:
        if (self.ratio is None) == (self.query is None):
            raise ValueError("set exactly one of ratio (bad/total counters) or query")
        if self.max is None and self.min is None and self.max_vs_baseline is None:
            raise ValueError("set a bound: max, min or maxVsBaseline")
        if self.ratio is not None and self.min is not None:
            raise ValueError("min makes no sense for a bad/total ratio; use max")
        if self.judge == "sequential" and self.ratio is None:
            raise ValueError("the sequential judge needs counts: give ratio (bad/total)")
        if self.detect_floor is not None and self.detect is None:
            raise ValueError("detectFloor needs detect: set detect (e.g. 2) as well")
        if self.detect is not None and self.judge != "sequential":
            raise ValueError("detect needs the sequential judge: set judge: sequential")
        if self.detect is not None and self.detect <= 1.0 + self.margin:
            raise ValueError(
                f"detect ({self.detect:g}) must exceed 1 + margin ({1.0 + self.margin:g}): "
                "a step cannot rule out a regression it is allowed to have"
            )
        return self

    _template = field_validator("query")(_query_template)


class MetadataGates(_Model):
    """Rules on the manifest, checked before any traffic moves."""

    max_vulnerabilities: dict[
        Literal["critical", "high", "medium", "low"], Annotated[int, Field(le=MAX_INTEGER)]
    ] = Field(default_factory=dict, alias="maxVulnerabilities", max_length=4)
    require_provenance: bool = Field(default=False, alias="requireProvenance")
    required_fields: list[Text] = Field(
        default_factory=list, alias="requiredFields", max_length=MAX_ITEMS
    )
    require_passing_tests: bool = Field(default=False, alias="requirePassingTests")
    stack: dict[Text, Text] = Field(
        default_factory=dict,
        max_length=MAX_ITEMS,
        description="component -> version this stage runs",
    )


class Gates(_Model):
    slo: list[SloGate] = Field(default_factory=list, max_length=MAX_ITEMS)
    metadata: MetadataGates = Field(default_factory=MetadataGates)

    @field_validator("slo")
    @classmethod
    def _unique(cls, gates: list[SloGate]) -> list[SloGate]:
        names = [g.name for g in gates]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"gate names must be unique; repeated: {duplicates}")
        return gates


class Approval(_Model):
    """A person with the approver role must agree before traffic moves."""

    required: bool = False


class Stage(_Model):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=MAX_NAME)
    requires: list[Name] = Field(default_factory=list, max_length=MAX_ITEMS)
    strategy: Strategy
    analysis: Analysis | None = None
    gates: Gates = Field(default_factory=Gates)
    approval: Approval = Field(default_factory=Approval)
    kubernetes: KubernetesTarget | None = Field(
        default=None,
        description="where the stage's releases run on Kubernetes (actuator: kubernetes): "
        "the Deployment, its container, the rollout deadline and the router",
    )


class Metadata(_Model):
    name: str = Field(min_length=1, max_length=MAX_TEXT)


class PromotionPolicy(_Model):
    """The whole policy; ``version`` is recorded on every decision made under it."""

    api_version: Literal["promgate/v1"] = Field(alias="apiVersion")
    kind: Literal["PromotionPolicy"]
    metadata: Metadata
    version: Annotated[
        str,
        Field(min_length=1, max_length=128),
        WithJsonSchema({"type": ["string", "number"], "minLength": 1, "maxLength": 128}),
    ]
    analysis: Analysis = Field(default_factory=Analysis)
    stages: list[Stage] = Field(min_length=1, max_length=MAX_ITEMS)

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) else value

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        known = ", ".join(s.name for s in self.stages)
        raise KeyError(f"stage {name!r} is not in policy {self.metadata.name}; known: {known}")

    def analysis_for(self, stage: Stage) -> Analysis:
        return stage.analysis or self.analysis


def policy_schema() -> dict[str, Any]:
    """The JSON Schema of a policy document, for editors and CI checks."""
    schema = PromotionPolicy.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://promgate.dev/schemas/policy-v1.json"
    return schema


def graph_problems(data: dict[str, Any], source: str) -> list[Problem]:
    """Stage-graph rules pydantic cannot see: unique names, known requirements, no cycles.

    Works on the raw document, so these problems are reported alongside field problems.
    """
    raw = data.get("stages")
    stages = [s for s in raw if isinstance(s, dict)] if isinstance(raw, list) else []
    names = [s.get("name") for s in stages]
    problems: list[Problem] = []
    graph: dict[str, list[str]] = {}
    for index, stage in enumerate(stages):
        name = stage.get("name")
        if names.count(name) > 1:
            problems.append(
                Problem(
                    f"stages[{index}].name",
                    f"stage {name!r} is defined twice",
                    "give every stage a unique name",
                    source,
                )
            )
        requires = stage.get("requires")
        for r_index, required in enumerate(requires if isinstance(requires, list) else []):
            path = f"stages[{index}].requires[{r_index}]"
            if required == name:
                problems.append(Problem(path, "a stage cannot require itself", "remove it", source))
            elif required not in names:
                problems.append(
                    Problem(path, f"unknown stage {required!r}", f"use one of {names}", source)
                )
        if isinstance(name, str) and isinstance(requires, list):
            graph.setdefault(name, []).extend(r for r in requires if r in names)
    cycle = _find_cycle(graph)
    if cycle:
        problems.append(
            Problem(
                "stages",
                "requirements form a cycle: " + " -> ".join(cycle),
                "break the cycle so promotions have a first stage",
                source,
            )
        )
    return problems


def _find_cycle(graph: dict[str, list[str]]) -> list[str]:
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str]:
        if node in visiting:
            return [*visiting[visiting.index(node) :], node]
        if node in done:
            return []
        visiting.append(node)
        for nxt in graph.get(node, []):
            found = visit(nxt)
            if found:
                return found
        visiting.pop()
        done.add(node)
        return []

    for node in graph:
        found = visit(node)
        if found:
            return found
    return []


def parse_policy(data: Any, source: str = "policy") -> PromotionPolicy:
    """Validate parsed YAML; raise PolicyError carrying every problem found."""
    if not isinstance(data, dict):
        raise PolicyError(
            f"{source} is invalid",
            [
                Problem(
                    "",
                    "must be a YAML mapping with apiVersion: promgate/v1",
                    "start from examples/policy.yaml",
                    source,
                )
            ],
        )
    problems = graph_problems(data, source)
    try:
        policy = PromotionPolicy.model_validate(data)
    except ValidationError as exc:
        problems = problems_from(exc, source, "see examples/policy.yaml") + problems
    else:
        problems += _kubernetes_problems(policy, source)
    if problems:
        raise PolicyError(f"{source} is invalid", problems)
    return policy


def _kubernetes_problems(policy: PromotionPolicy, source: str) -> list[Problem]:
    """Each stage's Kubernetes target against its strategy, and its gates' Kubernetes
    placeholders against whether it has a target at all."""
    problems: list[Problem] = []
    for index, stage in enumerate(policy.stages):
        at = f"stages[{index}]"
        if stage.kubernetes is not None:
            problems.extend(
                Problem(f"{at}.kubernetes.{path}", what, fix, source)
                for path, what, fix in target_problems(stage.kubernetes, stage.strategy.kind)
            )
            continue
        for path, template in _templates(stage):
            for name in sorted(placeholders(template) & KUBERNETES_PLACEHOLDERS):
                problems.append(
                    Problem(
                        f"{at}.gates.{path}",
                        f"${name} is a Kubernetes placeholder, and stage {stage.name!r} has "
                        "no kubernetes target",
                        "add a kubernetes block to the stage, or use $service, $digest, "
                        "$backend and the other placeholders",
                        source,
                    )
                )
    return problems


def _templates(stage: Stage) -> list[tuple[str, str]]:
    """(path under ``gates``, template) of every query of the stage's SLO gates."""
    found: list[tuple[str, str]] = []
    for index, gate in enumerate(stage.gates.slo):
        if gate.query is not None:
            found.append((f"slo[{index}].query", gate.query))
        if gate.ratio is not None:
            found.append((f"slo[{index}].ratio.bad", gate.ratio.bad))
            found.append((f"slo[{index}].ratio.total", gate.ratio.total))
    return found


def load_policy(path: Path | str) -> PromotionPolicy:
    """Read a policy file; syntax errors name the line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(
            f"cannot read {path}", [Problem("", exc.strerror or str(exc), "", str(path))]
        ) from None
    return parse_policy_text(text, str(path))


def parse_policy_text(text: str, source: str) -> PromotionPolicy:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(
            f"{source} is not valid YAML", [Problem(where, str(problem), "fix the YAML", source)]
        ) from None
    return parse_policy(data, source)
