"""PromotionPolicy: parsing, durations, and every validation problem with path and fix."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.domain.durations import parse_duration
from sidecar.domain.policy import (
    MAX_ITEMS,
    MAX_NAME,
    MAX_QUERY,
    PromotionPolicy,
    load_policy,
    parse_policy,
    parse_policy_text,
    policy_schema,
)
from sidecar.errors import PolicyError, Problem
from tests.support.edit import DELETE, edited
from tests.support.schemas import unbounded

SOURCE = "policy.yaml"

VALID_POLICY_YAML = """\
apiVersion: promgate/v1
kind: PromotionPolicy
metadata:
  name: checkout
version: 7
analysis:
  interval: 5s
  confirm: 3
  noDataTimeout: 2m
  maxProviderHold: 5m
stages:
  - name: staging
    strategy:
      blueGreen:
        preview: 30s
        postPromotion: 1m
        keepPrevious: 10m
    gates:
      metadata:
        maxVulnerabilities: {critical: 0, high: 5}
        requireProvenance: true
        requiredFields: [build.url, source.ref]
        requirePassingTests: true
        stack: {postgres: "15.4"}
      slo:
        - name: error-ratio
          ratio:
            bad: 'sum(http_requests_total{service="$service",version="$version",code=~"5.."})'
            total: 'sum(http_requests_total{service="$service",version="$version"})'
          max: 0.01
          maxVsBaseline: 2
          hardMax: 0.5
          minRequests: 20
  - name: production
    requires: [staging]
    strategy:
      canary:
        steps: [5, 25, 50, 100]
        stepDuration: 2m
    analysis:
      interval: 500ms
      confirm: 2
    approval:
      required: true
    gates:
      slo:
        - name: p99-latency
          query: 'histogram_quantile(0.99, rate(latency_bucket{digest="$digest"}[$window]))'
          max: 0.3
          hardVsBaseline: 10
          window: 1m
        - name: throughput
          query: 'sum(rate(requests_total{stage="$stage",role="$role"}[$window]))'
          min: 1
"""


def valid_policy() -> dict[str, Any]:
    """The valid policy as parsed YAML, for tests to break one field at a time."""
    data = yaml.safe_load(VALID_POLICY_YAML)
    assert isinstance(data, dict)
    return copy.deepcopy(data)


def problems_of(data: Any) -> list[Problem]:
    """The problems parse_policy reports for ``data``."""
    with pytest.raises(PolicyError) as caught:
        parse_policy(data, SOURCE)
    return caught.value.problems


def test_full_policy_parses() -> None:
    """A policy with both strategies, requires, both gate kinds and approval parses."""
    policy = parse_policy_text(VALID_POLICY_YAML, SOURCE)
    assert policy.version == "7"
    assert [s.name for s in policy.stages] == ["staging", "production"]
    staging, production = policy.stages
    assert staging.strategy.kind == "blue_green"
    assert staging.strategy.blue_green is not None
    assert staging.strategy.blue_green.preview == 30.0
    assert staging.strategy.blue_green.post_promotion == 60.0
    assert staging.strategy.blue_green.keep_previous == 600.0
    assert staging.gates.metadata.max_vulnerabilities == {"critical": 0, "high": 5}
    assert staging.gates.metadata.required_fields == ["build.url", "source.ref"]
    assert staging.gates.metadata.stack == {"postgres": "15.4"}
    gate = staging.gates.slo[0]
    assert gate.ratio is not None
    assert (gate.max, gate.max_vs_baseline, gate.hard_max, gate.min_requests) == (
        0.01,
        2.0,
        0.5,
        20,
    )
    assert production.requires == ["staging"]
    assert production.strategy.kind == "canary"
    assert production.strategy.canary is not None
    assert production.strategy.canary.steps == [5, 25, 50, 100]
    assert production.strategy.canary.step_duration == 120.0
    assert production.approval.required is True
    assert [g.name for g in production.gates.slo] == ["p99-latency", "throughput"]
    assert production.gates.slo[0].window == 60.0
    assert production.gates.slo[1].min == 1.0
    assert policy.analysis_for(staging) == policy.analysis
    assert policy.analysis.no_data_timeout == 120.0
    assert policy.analysis_for(production).interval == 0.5
    assert policy.analysis_for(production).confirm == 2
    assert policy.stage("production") is production


def test_unknown_stage_lookup_names_known_stages() -> None:
    """stage() on an unknown name raises KeyError listing the known stages."""
    policy = parse_policy(valid_policy(), SOURCE)
    with pytest.raises(KeyError, match="stage 'qa' is not in policy checkout; known: staging"):
        policy.stage("qa")


def test_load_policy_reads_file(tmp_path: Path) -> None:
    """load_policy reads a file and names it as the source of problems."""
    path = tmp_path / "p.yaml"
    path.write_text(VALID_POLICY_YAML, encoding="utf-8")
    assert isinstance(load_policy(path), PromotionPolicy)
    path.write_text("apiVersion: promgate/v1\n", encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert {p.file for p in caught.value.problems} == {str(path)}


def test_load_policy_missing_file(tmp_path: Path) -> None:
    """A missing file is a PolicyError naming the file, not an OSError."""
    path = tmp_path / "absent.yaml"
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    [problem] = caught.value.problems
    assert (problem.file, problem.message) == (str(path), "No such file or directory")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param("500ms", 0.5, id="ms"),
        pytest.param("2m", 120.0, id="minutes"),
        pytest.param("1h", 3600.0, id="hours"),
        pytest.param("30s", 30.0, id="seconds"),
        pytest.param("1.5s", 1.5, id="fractional"),
        pytest.param(" 10 s ", 10.0, id="spaces"),
        pytest.param(3, 3.0, id="int"),
        pytest.param(0.25, 0.25, id="float"),
    ],
)
def test_parse_duration_valid(value: Any, seconds: float) -> None:
    """A duration string or number becomes seconds."""
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("0s", "must be longer than zero", id="zero-string"),
        pytest.param(0, "must be longer than zero", id="zero-number"),
        pytest.param(-1, "must be longer than zero", id="negative"),
        pytest.param("ten", "'ten' is not a duration; write it like 30s", id="word"),
        pytest.param("10", "'10' is not a duration", id="string-without-unit"),
        pytest.param("10d", "'10d' is not a duration", id="unknown-unit"),
        pytest.param("-5s", "'-5s' is not a duration", id="negative-string"),
        pytest.param(True, "must be a duration like 30s, 500ms or 2m", id="bool"),
        pytest.param(math.nan, "", id="nan-any-message"),
    ],
)
def test_parse_duration_invalid(value: Any, message: str) -> None:
    """A zero, negative, unit-less, boolean or NaN duration is refused."""
    with pytest.raises(ValueError) as caught:
        parse_duration(value)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("path", "value", "expected_path"),
    [
        pytest.param("analysis.interval", "0s", "analysis.interval", id="policy-interval"),
        pytest.param("analysis.noDataTimeout", "ten", "analysis.noDataTimeout", id="no-data"),
        pytest.param(
            "stages.1.strategy.canary.stepDuration",
            -1,
            "stages[1].strategy.canary.stepDuration",
            id="step-duration",
        ),
        pytest.param(
            "stages.0.strategy.blueGreen.preview",
            True,
            "stages[0].strategy.blueGreen.preview",
            id="preview-bool",
        ),
        pytest.param(
            "stages.1.strategy.canary.stepDuration",
            math.nan,
            "stages[1].strategy.canary.stepDuration",
            id="step-duration-nan",
        ),
        pytest.param(
            "stages.1.gates.slo.0.window", "1d", "stages[1].gates.slo[0].window", id="window"
        ),
    ],
)
def test_bad_duration_in_policy_names_path(path: str, value: Any, expected_path: str) -> None:
    """A bad duration inside a policy is one problem at the duration's field path."""
    problems = problems_of(changed(path, value))
    assert [(p.path, p.file) for p in problems] == [(expected_path, SOURCE)]
    assert problems[0].fix == "see examples/policy.yaml"


def changed(path: str, value: Any) -> dict[str, Any]:
    """The valid policy with dotted ``path`` (list indexes as numbers) set or deleted."""
    return edited(valid_policy(), path, value)


GATE = "stages.1.gates.slo.0"
STEPS = "stages.1.strategy.canary.steps"
RATIO_GATE = "stages.0.gates.slo.0"
SEQUENTIAL = {"name": "g", "ratio": {"bad": "a", "total": "b"}, "max": 0.05,
              "judge": "sequential"}  # fmt: skip


@pytest.mark.parametrize(
    ("gate", "power", "detect", "expected_power"),
    [
        pytest.param(SEQUENTIAL | {"detect": 2}, None, 2.0, 0.95, id="detect-default-power"),
        pytest.param(SEQUENTIAL | {"detect": 1.5, "margin": 0.2}, 0.9, 1.5, 0.9,
                     id="detect-above-1-plus-margin"),
        pytest.param(SEQUENTIAL | {"detect": 1.01}, 0.5, 1.01, 0.5, id="detect-just-above-1"),
        pytest.param(SEQUENTIAL, 0.99, None, 0.99, id="power-without-detect"),
        pytest.param({"name": "g", "ratio": {"bad": "a", "total": "b"}, "max": 0.05}, None,
                     None, 0.95, id="threshold-gate-no-detect"),
    ],
)  # fmt: skip
def test_detect_and_power_parse(
    gate: dict[str, Any], power: float | None, detect: float | None, expected_power: float
) -> None:
    """A sequential gate may ask for a regression to be ruled out (``detect``), with the
    analysis' ``power`` (0.95 unless given)."""
    data = changed(RATIO_GATE, gate)
    if power is not None:
        data["analysis"]["power"] = power
    policy = parse_policy(data, SOURCE)
    assert policy.stages[0].gates.slo[0].detect == detect
    assert policy.analysis.power == expected_power
    assert policy.analysis_for(policy.stages[0]).power == expected_power


@pytest.mark.parametrize(
    ("path", "value", "expected_path", "fragment"),
    [
        pytest.param(STEPS, [10, 10, 50], "stages[1].strategy.canary.steps",
                     "weights must increase step by step", id="steps-repeat"),
        pytest.param(STEPS, [50, 25], "stages[1].strategy.canary.steps",
                     "weights must increase step by step", id="steps-decrease"),
        pytest.param(STEPS, [], "stages[1].strategy.canary.steps",
                     "at least 1 item", id="steps-empty"),
        pytest.param(STEPS, [0, 50], "stages[1].strategy.canary.steps[0]",
                     "greater than or equal to 1", id="weight-0"),
        pytest.param(STEPS, [50, 101],
                     "stages[1].strategy.canary.steps[1]", "less than or equal to 100",
                     id="weight-101"),
        pytest.param("stages.1.strategy",
                     {"canary": {"steps": [50], "stepDuration": "1m"},
                      "blueGreen": {"preview": "1m", "postPromotion": "1m"}},
                     "stages[1].strategy", "set exactly one of canary or blueGreen",
                     id="both-strategies"),
        pytest.param("stages.1.strategy", {}, "stages[1].strategy",
                     "set exactly one of canary or blueGreen", id="no-strategy"),
        pytest.param(GATE, {"name": "g", "query": "up", "ratio": {"bad": "a", "total": "b"},
                            "max": 1},
                     "stages[1].gates.slo[0]", "set exactly one of ratio", id="ratio-and-query"),
        pytest.param(GATE, {"name": "g", "max": 1}, "stages[1].gates.slo[0]",
                     "set exactly one of ratio", id="neither-ratio-nor-query"),
        pytest.param(GATE, {"name": "g", "query": "up"}, "stages[1].gates.slo[0]",
                     "set a bound: max, min or maxVsBaseline", id="no-bound"),
        pytest.param(GATE, {"name": "g", "query": "up", "hardMax": 5}, "stages[1].gates.slo[0]",
                     "set a bound: max, min or maxVsBaseline", id="hard-only-no-bound"),
        pytest.param(RATIO_GATE, {"name": "g", "ratio": {"bad": "a", "total": "b"}, "min": 0.1},
                     "stages[0].gates.slo[0]", "min makes no sense for a bad/total ratio",
                     id="ratio-with-min"),
        pytest.param(GATE, {"name": "g", "query": 'up{x="$foo"}', "max": 1},
                     "stages[1].gates.slo[0].query", "unknown placeholder $foo",
                     id="unknown-placeholder"),
        pytest.param(RATIO_GATE,
                     {"name": "g", "ratio": {"bad": 'x{a="$bar"}', "total": "x"}, "max": 1},
                     "stages[0].gates.slo[0].ratio.bad", "unknown placeholder $bar",
                     id="unknown-placeholder-in-ratio"),
        pytest.param(GATE + ".maxVsBaseline", 1.0, "stages[1].gates.slo[0].maxVsBaseline",
                     "greater than 1", id="max-vs-baseline-not-above-1"),
        pytest.param(GATE + ".name", "Bad Name", "stages[1].gates.slo[0].name",
                     "should match pattern", id="gate-name"),
        pytest.param("stages.1.gates.slo",
                     [{"name": "dup", "query": "up", "max": 1},
                      {"name": "dup", "query": "up", "min": 1}],
                     "stages[1].gates.slo", "gate names must be unique; repeated: ['dup']",
                     id="duplicate-gate-names"),
        pytest.param("stages.0.gates.metadata.maxVulnerabilities", {"severe": 1},
                     "stages[0].gates.metadata.maxVulnerabilities.severe", "Input should be",
                     id="unknown-severity"),
        pytest.param("apiVersion", "promgate/v2", "apiVersion", "Input should be 'promgate/v1'",
                     id="api-version"),
        pytest.param("kind", "Rollout", "kind", "Input should be 'PromotionPolicy'", id="kind"),
        pytest.param("stages", [], "stages", "at least 1 item", id="no-stages"),
        pytest.param("analysis.confirm", 0, "analysis.confirm", "greater than or equal to 1",
                     id="confirm-0"),
        pytest.param("stages.1.name", "Production", "stages[1].name", "should match pattern",
                     id="stage-name"),
        pytest.param("stages.0.colour", "blue", "stages[0].colour", "unknown field",
                     id="unknown-field"),
        pytest.param(RATIO_GATE + ".detect", 2, "stages[0].gates.slo[0]",
                     "detect needs the sequential judge: set judge: sequential",
                     id="detect-without-sequential-judge"),
        pytest.param(GATE, {"name": "g", "query": "up", "max": 1, "detect": 2},
                     "stages[1].gates.slo[0]", "detect needs the sequential judge",
                     id="detect-on-a-value-gate"),
        pytest.param(RATIO_GATE, SEQUENTIAL | {"margin": 0.2, "detect": 1.2},
                     "stages[0].gates.slo[0]",
                     "detect (1.2) must exceed 1 + margin (1.2): a step cannot rule out",
                     id="detect-at-1-plus-margin"),
        pytest.param(RATIO_GATE, SEQUENTIAL | {"margin": 0.5, "detect": 1.3},
                     "stages[0].gates.slo[0]", "detect (1.3) must exceed 1 + margin (1.5)",
                     id="detect-below-1-plus-margin"),
        pytest.param(RATIO_GATE, SEQUENTIAL | {"detect": 1}, "stages[0].gates.slo[0].detect",
                     "greater than 1", id="detect-1"),
        pytest.param(RATIO_GATE, SEQUENTIAL | {"detect": "twice"},
                     "stages[0].gates.slo[0].detect", "valid number", id="detect-not-a-number"),
        pytest.param("analysis.power", 0, "analysis.power", "greater than 0", id="power-0"),
        pytest.param("analysis.power", 1, "analysis.power", "less than 1", id="power-1"),
        pytest.param("stages.1.analysis.power", 1.5, "stages[1].analysis.power", "less than 1",
                     id="stage-power-above-1"),
        pytest.param(RATIO_GATE, SEQUENTIAL | {"detectFloor": 0.01},
                     "stages[0].gates.slo[0]", "detectFloor needs detect", id="floor-alone"),
        pytest.param(RATIO_GATE, SEQUENTIAL | {"detect": 2, "detectFloor": 1},
                     "stages[0].gates.slo[0].detectFloor", "less than 1", id="floor-1"),
        pytest.param("analysis.confirmWithin", 2, "analysis",
                     "confirmWithin (2) must be at least confirm (3)", id="within-below-confirm"),
        pytest.param("analysis.confirmWithin", 61, "analysis.confirmWithin", "less than or equal",
                     id="within-too-long"),
    ],
)  # fmt: skip
def test_model_problem_names_path_and_fix(
    path: str, value: Any, expected_path: str, fragment: str
) -> None:
    """Each invalid policy field is one problem carrying file, field path and a fix."""
    problems = problems_of(changed(path, value))
    assert [p.path for p in problems] == [expected_path]
    [problem] = problems
    assert fragment in problem.message
    assert problem.file == SOURCE
    assert problem.fix


@pytest.mark.parametrize(
    ("path", "expected_path"),
    [
        pytest.param("apiVersion", "apiVersion", id="api-version"),
        pytest.param("kind", "kind", id="kind"),
        pytest.param("metadata", "metadata", id="metadata"),
        pytest.param("stages.1.strategy", "stages[1].strategy", id="strategy"),
        pytest.param("stages.1.strategy.canary.stepDuration",
                     "stages[1].strategy.canary.stepDuration", id="step-duration"),
    ],
)  # fmt: skip
def test_missing_field_says_add_it(path: str, expected_path: str) -> None:
    """A missing required field is reported at its path with the fix 'add this field'."""
    problems = problems_of(changed(path, DELETE))
    assert [(p.path, p.message, p.fix, p.file) for p in problems] == [
        (expected_path, "Field required", "add this field", SOURCE)
    ]


def stages(*specs: tuple[str, list[str]]) -> dict[str, Any]:
    """A valid policy whose stages have the given (name, requires)."""
    data = valid_policy()
    data["stages"] = [
        {"name": name, "requires": requires, "strategy": {"canary": {"steps": [50, 100],
                                                                      "stepDuration": "1m"}}}
        for name, requires in specs
    ]  # fmt: skip
    return data


@pytest.mark.parametrize(
    ("specs", "expected"),
    [
        pytest.param(
            [("staging", []), ("prod", ["qa"])],
            [("stages[1].requires[0]", "unknown stage 'qa'", "use one of ['staging', 'prod']")],
            id="unknown-required-stage",
        ),
        pytest.param(
            [("staging", []), ("prod", ["staging", "prod"])],
            [
                ("stages[1].requires[1]", "a stage cannot require itself", "remove it"),
                (
                    "stages",
                    "requirements form a cycle: prod -> prod",
                    "break the cycle so promotions have a first stage",
                ),
            ],
            id="self-require",
        ),
        pytest.param(
            [("a", ["b"]), ("b", ["a"])],
            [
                (
                    "stages",
                    "requirements form a cycle: a -> b -> a",
                    "break the cycle so promotions have a first stage",
                )
            ],
            id="two-stage-cycle",
        ),
        pytest.param(
            [("dev", []), ("a", ["dev", "c"]), ("b", ["a"]), ("c", ["b"])],
            [
                (
                    "stages",
                    "requirements form a cycle: a -> c -> b -> a",
                    "break the cycle so promotions have a first stage",
                )
            ],
            id="three-stage-cycle",
        ),
        pytest.param(
            [("staging", []), ("staging", [])],
            [
                ("stages[0].name", "stage 'staging' is defined twice",
                 "give every stage a unique name"),
                ("stages[1].name", "stage 'staging' is defined twice",
                 "give every stage a unique name"),
            ],
            id="duplicate-stage-names",
        ),
    ],
)  # fmt: skip
def test_graph_problem_names_path_and_fix(
    specs: list[tuple[str, list[str]]], expected: list[tuple[str, str, str]]
) -> None:
    """Stage-graph mistakes are reported with their path, message and fix."""
    problems = problems_of(stages(*specs))
    assert [(p.path, p.message, p.fix) for p in problems] == expected
    assert {p.file for p in problems} == {SOURCE}


def test_valid_chain_has_no_graph_problems() -> None:
    """A diamond of requirements without a cycle is accepted."""
    policy = parse_policy(
        stages(("dev", []), ("qa", ["dev"]), ("perf", ["dev"]), ("prod", ["qa", "perf"])), SOURCE
    )
    assert [s.requires for s in policy.stages] == [[], ["dev"], ["dev"], ["qa", "perf"]]


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        pytest.param(
            "apiVersion: promgate/v1\nkind: [unclosed\n",
            "line 3 column 1",
            "expected ',' or ']', but got '<stream end>'",
            id="unclosed-flow",
        ),
        pytest.param(
            "a: b\n  c: d\n", "line 2 column 4", "mapping values are not allowed here", id="indent"
        ),
        pytest.param("key: 'open\n", "line 2 column 1", "found unexpected end of stream",
                     id="open-quote"),
    ],
)  # fmt: skip
def test_yaml_syntax_error_names_line_and_column(text: str, where: str, message: str) -> None:
    """A YAML syntax error is one problem at its line and column with the file name."""
    with pytest.raises(PolicyError) as caught:
        parse_policy_text(text, SOURCE)
    assert [(p.path, p.message, p.fix, p.file) for p in caught.value.problems] == [
        (where, message, "fix the YAML", SOURCE)
    ]
    assert str(caught.value).startswith(f"{SOURCE} is not valid YAML: 1 problem(s)")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("- a\n- b\n", id="list"),
        pytest.param("just text\n", id="scalar"),
    ],
)
def test_non_mapping_document_is_refused(text: str) -> None:
    """A document that is not a mapping is one root problem pointing at an example."""
    with pytest.raises(PolicyError) as caught:
        parse_policy_text(text, SOURCE)
    assert [(p.path, p.message, p.fix, p.file) for p in caught.value.problems] == [
        (
            "",
            "must be a YAML mapping with apiVersion: promgate/v1",
            "start from examples/policy.yaml",
            SOURCE,
        )
    ]


@pytest.mark.parametrize(
    ("template", "what", "fix"),
    [
        pytest.param("sum(x{version='$version'})", "$version is inside a single-quoted string",
                     'use {version="$version"}', id="single-quoted"),
        pytest.param("sum(x{version=`$version`})", "$version is inside a backtick raw string",
                     'use {version="$version"}', id="backtick"),
        pytest.param('sum(x{job="a"}) # $tag\n', "$tag is inside a comment",
                     'use {tag="$tag"}', id="comment"),
        pytest.param('sum(x{job="a"}) > $service', "$service is outside any string",
                     'use {service="$service"}', id="bare"),
        pytest.param('sum(x{v="\\$version"})', "$version is right after a backslash",
                     "remove the backslash before $version", id="after-backslash"),
        pytest.param('sum(rate(x{a="b"}[$tag]))', "$tag is in a range or offset",
                     'use {tag="$tag"}', id="tag-as-range"),
        pytest.param('sum(x{a="b"}) > $window', "$window is outside any string",
                     "put $window in a range or after offset", id="window-bare"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("field", ["query", "ratio.bad"])
def test_misplaced_placeholder_names_path_and_fix(
    field: str, template: str, what: str, fix: str
) -> None:
    """A placeholder outside a double-quoted string is refused at its field with the fix."""
    if field == "query":
        gate_path, expected_path = GATE, "stages[1].gates.slo[0].query"
        gate = {"name": "g", "max": 1, "query": template}
    else:
        gate_path, expected_path = RATIO_GATE, "stages[0].gates.slo[0].ratio.bad"
        gate = {"name": "g", "max": 1, "ratio": {"bad": template, "total": 'x{a="$service"}'}}
    [problem] = problems_of(changed(gate_path, gate))
    assert (problem.path, problem.file) == (expected_path, SOURCE)
    assert what in problem.message
    assert fix in problem.fix


@pytest.mark.parametrize(
    "template",
    [
        'sum(rate(x{version="$version",role="${role}"}[$window]))',
        'sum(x{a="$digest"} offset $window)',
        'max_over_time(sum(x{a="$tag"})[$window:$window])',
        'label_replace(x{a="$repository"}, "b", "$stage", "c", "(.*)")',
        'sum(x{a=~"$version|$$literal"}) # $$ in a comment is only a dollar',
        'sum(x{a="\\\\$version"})',
    ],
)
def test_placeholders_in_double_quotes_or_ranges_are_accepted(template: str) -> None:
    """Double-quoted strings (and $window in a range) are where values stay inert."""
    parse_policy(changed(GATE, {"name": "g", "max": 1, "query": template}), SOURCE)


def test_several_model_problems_are_all_reported() -> None:
    """Every field problem in one policy is reported together, each with file and fix."""
    data = valid_policy()
    data["apiVersion"] = "v1"
    data["stages"][1]["strategy"]["canary"]["steps"] = [50, 25]
    data["stages"][1]["gates"]["slo"][0]["query"] = "up{x='$nope'}"
    data["stages"][0]["strategy"] = {}
    with pytest.raises(PolicyError) as caught:
        parse_policy(data, SOURCE)
    problems = caught.value.problems
    assert sorted(p.path for p in problems) == [
        "apiVersion",
        "stages[0].strategy",
        "stages[1].gates.slo[0].query",
        "stages[1].strategy.canary.steps",
    ]
    assert all(p.file == SOURCE and p.fix for p in problems)
    assert str(caught.value).startswith(f"{SOURCE} is invalid: 4 problem(s)\n  - {SOURCE}: ")


def test_several_graph_problems_are_all_reported() -> None:
    """Duplicate names, an unknown requirement and a cycle are reported together."""
    problems = problems_of(stages(("a", ["b"]), ("b", ["a", "zz"]), ("c", []), ("c", [])))
    assert sorted((p.path, p.message) for p in problems) == [
        ("stages", "requirements form a cycle: a -> b -> a"),
        ("stages[1].requires[1]", "unknown stage 'zz'"),
        ("stages[2].name", "stage 'c' is defined twice"),
        ("stages[3].name", "stage 'c' is defined twice"),
    ]


def test_model_and_graph_problems_are_reported_together() -> None:
    """A field problem does not hide a stage-graph problem elsewhere in the same policy."""
    data = stages(("staging", []), ("prod", ["qa"]))
    data["stages"][0]["strategy"]["canary"]["steps"] = [0, 100]
    problems = problems_of(data)
    assert sorted(p.path for p in problems) == [
        "stages[0].strategy.canary.steps[0]",
        "stages[1].requires[0]",
    ]


def test_schema_bounds_every_string_list_and_mapping_and_accepts_the_valid_policy() -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is a test dependency")
    schema = policy_schema()
    assert unbounded(schema) == []
    jsonschema.validate(valid_policy(), schema)


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        ("metadata.name", "n" * 257, "at most 256 characters"),
        ("stages[1].name", "s" * (MAX_NAME + 1), f"at most {MAX_NAME} characters"),
        ("stages[1].gates.slo[0].query", "up" + " " * MAX_QUERY, f"at most {MAX_QUERY}"),
        ("stages[0].gates.metadata.requiredFields", ["build.url"] * (MAX_ITEMS + 1), "at most"),
        ("stages[1].strategy.canary.stepDuration", "1" * 100_000 + "s", "not a duration"),
        ("analysis.interval", "9" * 5000 + "s", "not a duration"),
    ],
)
def test_oversized_policy_values_are_refused_at_their_path(
    path: str, value: Any, fragment: str
) -> None:
    problems = problems_of(edited(valid_policy(), path, value))
    assert [p.path for p in problems] == [path]
    assert fragment in problems[0].message


def test_too_many_stages_are_refused() -> None:
    data = valid_policy()
    stage = data["stages"][0]
    data["stages"] = [{**stage, "name": f"s{i}"} for i in range(MAX_ITEMS + 1)]
    assert [p.path for p in problems_of(data)] == ["stages"]
