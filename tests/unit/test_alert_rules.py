"""The alert rules: promtool checks and unit-tests them, and every name they read exists.

A rule that names a metric promgate does not export is never wrong, it is just silent,
so the names and labels in every expression are checked against the exposition of a real
``PrometheusRecorder`` that recorded one of everything.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.actuators.proxy import ProxyActuator
from sidecar.analysis.judge import Classification, Decision, GateResult, GateVerdict, StepVerdict
from sidecar.domain.artifact import ArtifactRef
from sidecar.domain.promotion import Phase, Promotion
from sidecar.telemetry.metrics import PrometheusRecorder

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "alerts"
RULES = ALERTS / "promgate.rules.yaml"
RULE_TESTS = ALERTS / "promgate.rules.test.yaml"
ALERTMANAGER_CONFIG = ALERTS / "alertmanager.example.yaml"

EXPECTED_ALERTS = {
    "PromgateRollback",
    "PromgateFlakyGate",
    "PromgatePersistentBreach",
    "PromgateAnalysisUnavailable",
    "PromgateTagMutation",
    "PromgatePromotionStuck",
    "PromgateActuationFailing",
}
# The receiver alertmanager.example.yaml must pick for each severity.
RECEIVER_BY_SEVERITY = {
    "critical": "promgate-pager",
    "warning": "promgate-team",
    "info": "promgate-tickets",
}
# The proxy's series, exported next to the recorder's (same registry in the sidecar).
PROXY_SERIES = {
    "promgate_proxy_requests_total": {"stage", "role", "digest", "code"},
    "promgate_proxy_request_duration_seconds_bucket": {"stage", "role", "digest", "le"},
    "promgate_proxy_request_duration_seconds_count": {"stage", "role", "digest"},
    "promgate_proxy_request_duration_seconds_sum": {"stage", "role", "digest"},
    "promgate_proxy_backend_weight": {"stage", "role", "digest"},
}
_PROMQL_WORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "inf",
    "nan",
}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)\s*\"")
_IDENTIFIER = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()")


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not on PATH; `make test` installs it (scripts/install-packages.sh)")
    return found


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _rules() -> list[dict[str, object]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _alerts() -> dict[str, dict[str, object]]:
    return {str(rule["alert"]): rule for rule in _rules() if "alert" in rule}


def _promotion() -> Promotion:
    return Promotion(
        id="p-1",
        service="checkout",
        stage="production",
        artifact=ArtifactRef.parse("registry.example.com/shop/checkout:1.4.0@sha256:" + "b" * 64),
        version="1.4.0",
        policy_version="2026.11.1",
        strategy="canary",
        candidate_upstream="http://127.0.0.1:9002",
        manifest={},
        created_at=1.0,
        phase=Phase.PROGRESSING,
        weight=20,
        step_index=1,
    )


def _gate(result: GateResult, classification: Classification | None) -> GateVerdict:
    return GateVerdict(
        "error-ratio", result, classification, 0.02, 0.01, 0.05, False, "error-ratio: test"
    )


def _series_labels(exposition: str) -> dict[str, set[str]]:
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    """Every series name promgate exports, with its label names."""
    recorder = PrometheusRecorder()
    promotion = _promotion()
    recorder.gate_verdicts(
        promotion,
        StepVerdict(
            Decision.WAIT,
            (
                _gate(GateResult.PASS, None),
                _gate(GateResult.BREACH, Classification.TRANSIENT),
                _gate(GateResult.BREACH, Classification.PERSISTENT),
            ),
        ),
    )
    recorder.progress(promotion)
    recorder.rollback(promotion, "persistent_breach")
    recorder.finished(promotion.evolve(phase=Phase.ROLLED_BACK))
    recorder.stable_digest("checkout", "production", "sha256:" + "a" * 64, "1.3.0")
    recorder.decision_latency(promotion, 0.2)
    recorder.actuation(promotion, ok=True)
    recorder.actuation(promotion, ok=False)
    recorder.refused("checkout", "production", "vulnerabilities")
    recorder.tag_mutation("registry.example.com/shop/checkout")
    series = _series_labels(generate_latest(recorder.registry).decode())

    proxy_registry = CollectorRegistry()
    ProxyActuator({"production": ("127.0.0.1", 0)}, registry=proxy_registry)
    proxy_families = {family.name for family in proxy_registry.collect()}
    for name in PROXY_SERIES:
        base = re.sub(r"_(total|bucket|count|sum)$", "", name)
        assert base in proxy_families, f"the proxy no longer exports {base}: {proxy_families}"
    return {**series, **PROXY_SERIES}


def _record_labels(name: str) -> set[str]:
    """A recorded series' labels, read from its name: ``level:metric:operation``."""
    return set(name.split(":", maxsplit=1)[0].split("_"))


def _referenced(expr: str) -> Iterator[tuple[str, set[str]]]:
    """(metric name, label names its matchers use) for every selector in ``expr``."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    for name, matchers in _SELECTOR.findall(text):
        yield name, set(_MATCHER.findall(matchers))
    text = _SELECTOR.sub(lambda m: m.group(1), text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    for name in _IDENTIFIER.findall(text):
        if name not in _PROMQL_WORDS:
            yield name, set()


def _groupings(expr: str) -> set[str]:
    return {
        label.strip()
        for _, labels in _GROUPING.findall(expr)
        for label in labels.split(",")
        if label.strip()
    }


def test_promtool_check_rules() -> None:
    result = _run([_tool("promtool"), "check", "rules", str(RULES)])
    assert result.returncode == 0, f"promtool check rules failed:\n{result.stdout}{result.stderr}"
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = _run([_tool("promtool"), "test", "rules", str(RULE_TESTS)])
    assert result.returncode == 0, f"promtool test rules failed:\n{result.stdout}{result.stderr}"


def test_every_alert_is_present_and_explained() -> None:
    alerts = _alerts()
    assert set(alerts) == EXPECTED_ALERTS
    for name, rule in alerts.items():
        labels = rule.get("labels") or {}
        assert isinstance(labels, dict)
        assert labels.get("severity") in RECEIVER_BY_SEVERITY, f"{name}: severity {labels}"
        annotations = rule.get("annotations") or {}
        assert isinstance(annotations, dict)
        for key in ("summary", "description", "runbook"):
            assert str(annotations.get(key, "")).strip(), f"{name} has no {key} annotation"


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    """Each alert has a promtool case where it fires and one where it must stay silent."""
    document = yaml.safe_load(RULE_TESTS.read_text())
    firing: set[str] = set()
    silent: set[str] = set()
    for group in document["tests"]:
        for case in group.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    assert EXPECTED_ALERTS - firing == set(), "alerts never tested firing"
    assert EXPECTED_ALERTS - silent == set(), "alerts never tested staying silent"


def _problems(rules: list[dict[str, object]], exported: dict[str, set[str]]) -> list[str]:
    """Names and labels the rules read that promgate does not export or the rules record."""
    recorded = {str(rule["record"]): rule for rule in rules if "record" in rule}
    problems: list[str] = []
    for name, rule in recorded.items():
        by = _groupings(str(rule["expr"])) - {"le"}
        if by != _record_labels(name):
            problems.append(f"recording rule {name} aggregates by {sorted(by)}")
    for rule in rules:
        expr = str(rule["expr"])
        owner = rule.get("record") or rule.get("alert")
        available: set[str] = set()
        for name, matcher_labels in _referenced(expr):
            if name in recorded:
                labels = _record_labels(name)
            elif name in exported:
                labels = exported[name]
            else:
                problems.append(f"{owner}: {name} is neither exported nor recorded")
                continue
            available |= labels
            for label in sorted(matcher_labels - labels):
                problems.append(f"{owner}: {name} has no label {label!r}")
        for label in sorted(_groupings(expr) - available):
            problems.append(f"{owner}: groups by {label!r}, which no series in it has")
    return problems


def test_rules_read_only_series_promgate_exports(exported: dict[str, set[str]]) -> None:
    problems = _problems(_rules(), exported)
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize(
    ("typo", "found"),
    [
        (("promgate_rollbacks_total", "promgate_rolbacks_total"), "promgate_rolbacks_total is"),
        (('result="breach"', 'reslt="breach"'), "has no label 'reslt'"),
        (("by (service, stage, reason)", "by (service, stage, reasn)"), "'reasn'"),
        (
            ("service_stage_reason:promgate_rollbacks:increase10m > 0", "stage:rollbacks > 0"),
            "stage:rollbacks is neither",
        ),
    ],
)
def test_a_typo_in_a_rule_is_found(
    exported: dict[str, set[str]], typo: tuple[str, str], found: str
) -> None:
    """The check above must be able to fail: one misspelt name or label is reported."""
    old, new = typo
    rules = _rules()
    changed = [rule for rule in rules if old in str(rule["expr"])]
    assert changed, f"{old!r} does not occur in the rules any more"
    changed[0]["expr"] = str(changed[0]["expr"]).replace(old, new)
    problems = _problems(rules, exported)
    assert any(found in problem for problem in problems), problems


def test_alertmanager_example_config_is_valid() -> None:
    amtool = _tool("amtool")
    result = _run([amtool, "check-config", str(ALERTMANAGER_CONFIG)])
    assert result.returncode == 0, f"amtool check-config failed:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("alertname", sorted(EXPECTED_ALERTS))
def test_alertmanager_routes_each_alert_by_severity(alertname: str) -> None:
    amtool = _tool("amtool")
    labels = _alerts()[alertname]["labels"]
    assert isinstance(labels, dict)
    severity = labels["severity"]
    expected = RECEIVER_BY_SEVERITY[severity]
    result = _run(
        [
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER_CONFIG}",
            f"--verify.receivers={expected}",
            f"alertname={alertname}",
            f"severity={severity}",
            "service=checkout",
            "stage=production",
        ]
    )
    assert result.returncode == 0, (
        f"{alertname} (severity {severity}) should reach {expected}:\n"
        f"{result.stdout}{result.stderr}"
    )
