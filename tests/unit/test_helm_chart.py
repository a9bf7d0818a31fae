"""The Helm chart, rendered offline with Helm's own SDK and checked against Kubernetes' schemas.

No cluster is needed: ``helm_python`` renders and lints with Helm's Go code, built-in
objects are checked with ``kubernetes_validate`` against the Kubernetes 1.30 OpenAPI
schemas, and ServiceMonitor and PrometheusRule against the published prometheus-operator
CRDs (tests/support/k8s_schemas.py). The chart is tested in both modes: the Kubernetes
controller (the defaults) and the embedded mode (SQLite, proxy or webhook, one pod).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from sidecar.domain.policy import parse_policy_text
from sidecar.settings import Settings
from tests.support.k8s_schemas import KUBERNETES, assert_valid

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "alerts" / "promgate.rules.yaml"
DASHBOARDS = REPO / "dashboards"
RUNBOOK = REPO / "docs" / "runbook.md"
CHART = REPO / "helm" / "promgate"
CHART_RULES = CHART / "files" / "promgate.rules.yaml"
CHART_DASHBOARDS = CHART / "files" / "dashboards"
NAMESPACE = "delivery"
DIGEST = "sha256:" + "e" * 64
POD = {"metadata.name": "pg-promgate-7d9f-abcde", "metadata.namespace": NAMESPACE}
EMBEDDED = {"replicaCount": 1, "ledger": {"backend": "sqlite"}, "actuator": "proxy"}
MONITORING = {
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus"}},
    "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus"}},
}
EVERYTHING_ON = {
    **MONITORING,
    "image": {"digest": DIGEST},
    "tokens": {"existingSecret": "promgate-tokens"},
    "otlpEndpoint": "http://otel-collector.observability.svc:4318",
    "kubernetes": {
        "targetNamespaces": ["shop", NAMESPACE],
        "resourceNames": {
            "deployments": ["checkout"],
            "services": ["checkout", "checkout-canary"],
            "httpRoutes": ["checkout"],
        },
    },
    "networkPolicy": {
        "enabled": True,
        "ingressFrom": [{"namespaceSelector": {"matchLabels": {"team": "ci"}}}],
        "apiServer": {"cidrs": ["10.0.0.1/32"], "ports": [443]},
        "extraEgress": [{"ports": [{"port": 4318, "protocol": "TCP"}]}],
    },
}
EMBEDDED_PROXY = {
    **EMBEDDED,
    **MONITORING,
    "image": {"digest": DIGEST},
    "tokens": {"existingSecret": "promgate-tokens"},
    "otlpEndpoint": "http://otel-collector.observability.svc:4318",
    "proxy": {
        "listeners": [
            {"stage": "staging", "port": 8081},
            {"stage": "production", "port": 8080, "portName": "live"},
        ]
    },
}
WEBHOOK = {
    **EMBEDDED,
    "actuator": "webhook",
    "webhook": {
        "url": "https://router.example.com/promgate",
        "secret": {"existingSecret": "promgate-webhook", "key": "hmac"},
    },
    "ledger": {"backend": "sqlite", "persistence": {"enabled": False}},
}
# What promgate may touch, per API group: anything else in a Role is a finding.
ALLOWED_RESOURCES = {
    "coordination.k8s.io": {"leases"},
    "promgate.dev": {"promotions", "promotions/status"},
    "": {"configmaps", "events", "pods", "services"},
    "apps": {"deployments"},
    "gateway.networking.k8s.io": {"httproutes"},
}
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


def _variants() -> Iterator[tuple[str, dict[str, Any]]]:
    yield "defaults (kubernetes)", {}
    yield "kubernetes, everything on", EVERYTHING_ON
    yield "kubernetes ledger, webhook", {"actuator": "webhook", "webhook": WEBHOOK["webhook"]}
    yield "sqlite ledger, kubernetes actuator", {**EMBEDDED, "actuator": "kubernetes"}
    yield "embedded, proxy", EMBEDDED_PROXY
    yield "embedded, webhook, no persistence", WEBHOOK


VARIANTS = list(_variants())


def _render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [doc for _, doc in _render_with_text(values)]


def _render_with_text(values: dict[str, Any] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(the template's rendered text, one object) for every object the chart renders."""
    with helm_python.Chart.load(CHART) as chart:
        rendered = chart.render(values or {}, name="pg", namespace=NAMESPACE)
    documents: list[tuple[str, dict[str, Any]]] = []
    for path, text in sorted(rendered.items()):
        if PurePosixPath(path).suffix not in {".yaml", ".yml"}:
            continue  # NOTES.txt and friends
        documents.extend((text, doc) for doc in yaml.safe_load_all(text) if doc)
    return documents


def _of(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents if doc["kind"] == kind]


def _one(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = _of(documents, kind)
    assert len(found) == 1, f"expected one {kind}, got {[d['kind'] for d in documents]}"
    return found[0]


def _pod(documents: list[dict[str, Any]]) -> dict[str, Any]:
    pod: dict[str, Any] = _one(documents, "Deployment")["spec"]["template"]["spec"]
    return pod


def _container(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = _pod(documents)["containers"]
    assert isinstance(container, dict)
    return container


def _env(documents: list[dict[str, Any]]) -> dict[str, str]:
    """The container's environment as the pod would see it (downward API resolved)."""
    env: dict[str, str] = {}
    for item in _container(documents)["env"]:
        if "valueFrom" in item:
            field = item["valueFrom"]["fieldRef"]["fieldPath"]
            env[item["name"]] = POD.get(field, f"<{field}>")
        else:
            env[item["name"]] = item["value"]
    return env


def _mount_of(documents: list[dict[str, Any]], path: str) -> dict[str, Any]:
    """The volume (from the pod spec) whose mount contains ``path``."""
    for mount in _container(documents)["volumeMounts"]:
        if PurePosixPath(path).is_relative_to(mount["mountPath"]):
            (volume,) = [v for v in _pod(documents)["volumes"] if v["name"] == mount["name"]]
            assert isinstance(volume, dict)
            return volume
    raise AssertionError(f"nothing is mounted at {path}")


def _default_values() -> dict[str, Any]:
    with helm_python.Chart.load(CHART) as chart:
        return chart.values


def _schema_complaint(values: dict[str, Any]) -> str:
    with helm_python.Chart.load(CHART) as chart, pytest.raises(helm_python.HelmValuesError) as exc:
        chart.validate_schema(values)
    return str(exc.value)


# --- every object is valid -----------------------------------------------------------------


@pytest.mark.parametrize(("name", "values"), VARIANTS)
def test_every_rendered_object_is_valid(name: str, values: dict[str, Any]) -> None:
    """Built-ins pass Kubernetes 1.30 strictly; ServiceMonitor and PrometheusRule their CRDs."""
    documents = _render(values)
    assert documents, name
    for doc in documents:
        assert_valid(doc, name)
        assert doc["metadata"]["namespace"] in {NAMESPACE, "shop"}, doc["metadata"]


def test_the_validation_can_fail() -> None:
    """A misspelt field in a built-in or a custom resource is reported."""
    documents = _render(EVERYTHING_ON)
    deployment = copy.deepcopy(_one(documents, "Deployment"))
    deployment["spec"]["replica"] = 2
    with pytest.raises(AssertionError, match="replica"):
        assert_valid(deployment, "typo")
    monitor = copy.deepcopy(_one(documents, "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["interval"] = "soon"
    with pytest.raises(AssertionError, match="interval"):
        assert_valid(monitor, "typo")


def test_the_promotion_crd_is_a_valid_crd() -> None:
    """Helm installs crds/ before the templates; each file is a valid apiextensions/v1 CRD."""
    with helm_python.Chart.load(CHART) as chart:
        crds = chart.crds
    assert crds, "the chart ships no CRDs"
    names = []
    for crd in crds:
        document = yaml.safe_load(crd["data"])
        assert document["apiVersion"] == "apiextensions.k8s.io/v1"
        kubernetes_validate.validate(document, KUBERNETES, strict=True)
        names.append(document["metadata"]["name"])
    assert "promotions.promgate.dev" in names


def test_default_render_has_the_expected_objects() -> None:
    kinds = sorted(doc["kind"] for doc in _render())
    assert kinds == [
        "ConfigMap",  # the dashboard
        "ConfigMap",  # the policy
        "Deployment",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Role",  # promgate's own objects
        "Role",  # the workloads of the release namespace
        "RoleBinding",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]


def test_embedded_render_has_the_expected_objects() -> None:
    kinds = sorted(doc["kind"] for doc in _render({**EMBEDDED, "dashboards": {"enabled": False}}))
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "PersistentVolumeClaim",
        "Service",
        "ServiceAccount",
    ]


# --- the Kubernetes mode -------------------------------------------------------------------


def test_two_replicas_elect_a_leader_by_default() -> None:
    documents = _render()
    deployment = _one(documents, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    env = _env(documents)
    assert env["PROMGATE_LEDGER"] == "kubernetes"
    assert env["PROMGATE_ACTUATOR"] == "kubernetes"
    assert env["PROMGATE_LEADER_ELECTION"] == "true"
    assert env["PROMGATE_LEASE_NAME"] == "pg-promgate"
    assert env["PROMGATE_IDENTITY"] == env["POD_NAME"] == POD["metadata.name"]
    assert env["PROMGATE_KUBE_NAMESPACE"] == NAMESPACE
    assert "PROMGATE_LEDGER_PATH" not in env
    settings = _settings(documents)
    assert settings.leader_election is True
    assert (settings.lease_duration_s, settings.lease_renew_deadline_s) == (15, 10)
    assert settings.lease_retry_period_s == 2
    assert _pod(documents)["automountServiceAccountToken"] is True
    # Nothing on a volume: the state is in the API server.
    assert [v["name"] for v in _pod(documents)["volumes"]] == ["policy", "tmp"]


def test_replicas_roll_one_at_a_time_and_a_budget_keeps_one() -> None:
    documents = _render()
    strategy = _one(documents, "Deployment")["spec"]["strategy"]
    assert strategy == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    budget = _one(documents, "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    selector = _one(documents, "Deployment")["spec"]["selector"]
    assert budget["spec"]["selector"] == selector
    affinity = _pod(documents)["affinity"]["podAntiAffinity"]
    (term,) = affinity["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["labelSelector"] == selector
    # One replica alone is not held by a budget (a drain would wait forever).
    assert not _of(_render({"replicaCount": 1}), "PodDisruptionBudget")


def test_embedded_mode_is_one_recreated_pod_without_api_access() -> None:
    documents = _render(EMBEDDED)
    assert _one(documents, "Deployment")["spec"]["replicas"] == 1
    assert _one(documents, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert not _of(documents, "PodDisruptionBudget")
    assert not _of(documents, "Role") and not _of(documents, "RoleBinding")
    assert _pod(documents)["automountServiceAccountToken"] is False
    env = _env(documents)
    assert env["PROMGATE_LEDGER"] == "sqlite"
    assert env["PROMGATE_LEADER_ELECTION"] == "false"
    assert "PROMGATE_LEASE_NAME" not in env and "PROMGATE_KUBE_NAMESPACE" not in env


@pytest.mark.parametrize(("name", "values"), VARIANTS)
def test_probes(name: str, values: dict[str, Any]) -> None:
    """Liveness and startup on /healthz, readiness on /readyz (followers are ready too)."""
    container = _container(_render(values))
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "api"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "api"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "api"}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30, name


# --- RBAC ----------------------------------------------------------------------------------


def _rules(documents: list[dict[str, Any]], namespace: str, name: str) -> list[dict[str, Any]]:
    (role,) = [
        doc
        for doc in _of(documents, "Role")
        if doc["metadata"]["namespace"] == namespace and doc["metadata"]["name"] == name
    ]
    rules: list[dict[str, Any]] = role["rules"]
    return rules


def _grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str, tuple[str, ...]]]:
    """(group, resource, verb, resourceNames) for every permission the rules give."""
    return {
        (group, resource, verb, tuple(rule.get("resourceNames", ())))
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


@pytest.mark.parametrize(("name", "values"), VARIANTS)
def test_rbac_is_namespaced_and_least_privilege(name: str, values: dict[str, Any]) -> None:
    documents = _render(values)
    kinds = {doc["kind"] for doc in documents}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}, name
    for role in _of(documents, "Role"):
        for rule in role["rules"]:
            assert rule.keys() <= {"apiGroups", "resources", "verbs", "resourceNames"}, rule
            assert "*" not in rule["verbs"] and "*" not in rule["apiGroups"], rule
            assert "*" not in rule["resources"], rule
            for group in rule["apiGroups"]:
                assert set(rule["resources"]) <= ALLOWED_RESOURCES[group], (name, rule)
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
    for binding in _of(documents, "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role"
        (subject,) = binding["subjects"]
        assert subject == {
            "kind": "ServiceAccount",
            "name": _pod(documents)["serviceAccountName"],
            "namespace": NAMESPACE,
        }


def test_every_rbac_rule_says_what_it_is_for() -> None:
    """Each rule of every Role is preceded by a comment line in the rendered manifest."""
    for text, doc in _render_with_text(EVERYTHING_ON):
        if doc["kind"] != "Role":
            continue
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        rule_lines = [i for i, line in enumerate(lines) if line.startswith("- apiGroups:")]
        assert rule_lines
        for index in rule_lines:
            assert lines[index - 1].startswith("#"), f"uncommented rule: {lines[index]}"


def test_own_role_covers_the_lease_the_ledger_and_events() -> None:
    documents = _render()
    grants = _grants(_rules(documents, NAMESPACE, "pg-promgate"))
    lease = ("pg-promgate",)
    assert grants == {
        ("coordination.k8s.io", "leases", "create", ()),
        ("coordination.k8s.io", "leases", "get", lease),
        ("coordination.k8s.io", "leases", "update", lease),
        ("promgate.dev", "promotions", "get", ()),
        ("promgate.dev", "promotions", "list", ()),
        ("promgate.dev", "promotions", "create", ()),
        ("promgate.dev", "promotions", "update", ()),
        ("promgate.dev", "promotions/status", "get", ()),
        ("promgate.dev", "promotions/status", "update", ()),
        ("", "configmaps", "get", ()),
        ("", "configmaps", "list", ()),
        ("", "configmaps", "create", ()),
        ("", "configmaps", "update", ()),
        ("", "configmaps", "delete", ()),
        ("", "events", "create", ()),
    }
    # The Lease the Role names is the one promgate is told to use.
    renamed = _render({"leaderElection": {"enabled": True, "leaseName": "gate"}})
    assert _env(renamed)["PROMGATE_LEASE_NAME"] == "gate"
    names = {g[3] for g in _grants(_rules(renamed, NAMESPACE, "pg-promgate")) if g[2] == "update"}
    assert ("gate",) in names


def test_workload_roles_follow_the_target_namespaces_and_names() -> None:
    documents = _render(EVERYTHING_ON)
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in _of(documents, "Role")}
    assert roles == {
        (NAMESPACE, "pg-promgate"),
        (NAMESPACE, "pg-promgate-workloads"),
        ("shop", "pg-promgate-workloads"),
    }
    deployments = ("checkout", "checkout-candidate", "checkout-blue", "checkout-green")
    services = ("checkout", "checkout-canary")
    for namespace in ("shop", NAMESPACE):
        grants = _grants(_rules(documents, namespace, "pg-promgate-workloads"))
        writes = {g for g in grants if g[2] in WRITE_VERBS}
        assert writes == {
            ("apps", "deployments", "create", ()),
            ("apps", "deployments", "update", deployments),
            ("apps", "deployments", "patch", deployments),
            ("", "services", "create", ()),
            ("", "services", "update", services),
            ("gateway.networking.k8s.io", "httproutes", "update", ("checkout",)),
        }
        reads = {(g[1], g[2]) for g in grants if g[2] not in WRITE_VERBS}
        assert reads == {
            ("deployments", "get"),
            ("deployments", "list"),
            ("pods", "get"),
            ("pods", "list"),
            ("services", "get"),
            ("httproutes", "get"),
        }
    # Without names, updates reach every object of those kinds in the target namespace.
    unnamed = _grants(_rules(_render(), NAMESPACE, "pg-promgate-workloads"))
    assert ("gateway.networking.k8s.io", "httproutes", "update", ()) in unnamed


def test_one_pod_on_sqlite_may_still_drive_the_cluster() -> None:
    """The kubernetes actuator with the SQLite ledger: workload Role, no Lease, one pod."""
    documents = _render({**EMBEDDED, "actuator": "kubernetes"})
    assert [r["metadata"]["name"] for r in _of(documents, "Role")] == ["pg-promgate-workloads"]
    assert _pod(documents)["automountServiceAccountToken"] is True
    assert _env(documents)["PROMGATE_LEADER_ELECTION"] == "false"
    assert _one(documents, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}


def test_no_workload_role_without_the_kubernetes_actuator() -> None:
    documents = _render({"actuator": "webhook", "webhook": WEBHOOK["webhook"]})
    assert [r["metadata"]["name"] for r in _of(documents, "Role")] == ["pg-promgate"]


# --- network policy ------------------------------------------------------------------------


def _ports(rule: dict[str, Any]) -> set[tuple[Any, str]]:
    return {(p["port"], p["protocol"]) for p in rule["ports"]}


def test_network_policy_admits_the_api_and_reaches_what_promgate_calls() -> None:
    policy = _one(_render(EVERYTHING_ON), "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["ingress"]
    assert _ports(ingress) == {("api", "TCP")}
    assert ingress["from"] == [{"namespaceSelector": {"matchLabels": {"team": "ci"}}}]
    dns, api_server, prometheus, otlp = policy["egress"]
    assert _ports(dns) == {(53, "UDP"), (53, "TCP")}
    assert _ports(api_server) == {(443, "TCP")}
    assert api_server["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    assert _ports(prometheus) == {(9090, "TCP")}
    assert _ports(otlp) == {(4318, "TCP")}

    embedded = _one(_render(EMBEDDED_PROXY), "NetworkPolicy")["spec"]
    (ingress,) = embedded["ingress"]
    assert _ports(ingress) == {("api", "TCP"), ("px-staging", "TCP"), ("live", "TCP")}
    assert len(embedded["egress"]) == 2, "no API server egress without API use"
    assert not _of(_render({"networkPolicy": {"enabled": False}}), "NetworkPolicy")


# --- monitoring ----------------------------------------------------------------------------


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lowercase, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for line in markdown.splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            text = re.sub(r"[^\w\- ]", "", heading.group(1).lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def _alert_rules(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    spec = _one(documents, "PrometheusRule")["spec"]
    return [rule for group in spec["groups"] for rule in group["rules"] if "alert" in rule]


def test_monitoring_resources_are_well_formed() -> None:
    documents = _render(EVERYTHING_ON)
    service = _one(documents, "Service")
    monitor = _one(documents, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert selector == _one(documents, "Deployment")["spec"]["selector"]["matchLabels"]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["interval"] == "15s"

    rule = _one(documents, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus"
    assert set(rule["spec"]) == {"groups"}
    # The alert rules, each with a runbook_url added and nothing else changed.
    groups = copy.deepcopy(rule["spec"]["groups"])
    for group in groups:
        for item in group["rules"]:
            if "alert" in item:
                item["annotations"].pop("runbook_url")
    assert groups == yaml.safe_load(RULES.read_text())["groups"]


def test_every_alert_links_its_runbook_section() -> None:
    anchors = _anchors(RUNBOOK.read_text())
    alerts = _alert_rules(_render(MONITORING))
    assert len(alerts) == 7
    base = f"{_default_values()['docs']['url']}/runbook.md#"
    for alert in alerts:
        url = alert["annotations"]["runbook_url"]
        assert url.startswith(base), url
        anchor = url.removeprefix(base)
        assert anchor in anchors, f"{alert['alert']}: {RUNBOOK} has no section #{anchor}"
    moved = _alert_rules(_render({**MONITORING, "docs": {"url": "https://docs.example.com"}}))
    assert {a["annotations"]["runbook_url"] for a in moved} == {
        f"https://docs.example.com/runbook.md#{a['alert'].lower()}" for a in alerts
    }


def test_anchor_parsing_can_fail() -> None:
    assert _anchors("## PromgateRollback\n### Who may\n") == {"promgaterollback", "who-may"}
    assert "promgaterollback" not in _anchors("## Promgate Rollback\n")


def test_chart_rules_are_a_copy_of_the_alert_rules() -> None:
    assert CHART_RULES.read_bytes() == RULES.read_bytes(), (
        f"{CHART_RULES} differs from {RULES}; copy it: cp {RULES} {CHART_RULES}"
    )


def test_chart_dashboards_are_a_copy_of_the_dashboards() -> None:
    ours = {p.name: p.read_bytes() for p in DASHBOARDS.glob("*.json")}
    chart = {p.name: p.read_bytes() for p in CHART_DASHBOARDS.glob("*.json")}
    assert ours, f"no dashboards in {DASHBOARDS}"
    assert chart.keys() == ours.keys(), f"copy them: cp {DASHBOARDS}/*.json {CHART_DASHBOARDS}/"
    for name, content in ours.items():
        assert chart[name] == content, f"{CHART_DASHBOARDS / name} differs; cp it from {DASHBOARDS}"
    assert not any(p.is_symlink() for p in CHART_DASHBOARDS.iterdir()), "Helm skips symlinks"


def test_dashboard_config_maps_are_labelled_for_the_grafana_sidecar() -> None:
    documents = _render()
    dashboards = [
        d for d in _of(documents, "ConfigMap") if "grafana_dashboard" in d["metadata"]["labels"]
    ]
    assert len(dashboards) == len(list(DASHBOARDS.glob("*.json")))
    for config_map in dashboards:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((key, text),) = config_map["data"].items()
        assert json.loads(text) == json.loads((DASHBOARDS / key).read_text())
    # Helm merges maps: a label of the defaults is dropped by setting it to null.
    labels = {"grafana_dashboard": None, "grafana": "promgate"}
    relabelled = _render({"dashboards": {"enabled": True, "labels": labels}})
    (config_map,) = [
        d for d in _of(relabelled, "ConfigMap") if "grafana" in d["metadata"]["labels"]
    ]
    assert "grafana_dashboard" not in config_map["metadata"]["labels"]
    assert len(_of(_render({"dashboards": {"enabled": False}}), "ConfigMap")) == 1


# --- values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicaCount": "two"}, "/replicaCount"),
        ({"replicaCount": 2, "ledger": {"backend": "sqlite"}}, "needs ledger.backend=kubernetes"),
        ({"ledger": {"backend": "sqlite"}}, "one process writes the SQLite ledger"),
        ({"replicaCount": 3, "leaderElection": {"enabled": False}}, "needs leaderElection"),
        ({"replicaCount": 2, "actuator": "proxy"}, "cannot use actuator=proxy"),
        ({"ledger": {"backend": "etcd"}}, "value must be one of 'kubernetes', 'sqlite'"),
        ({"actuator": "istio"}, "value must be one of 'kubernetes', 'proxy', 'webhook', 'none'"),
        ({"leaderElection": {"enabled": "yes"}}, "/leaderElection/enabled"),
        ({"leaderElection": {"enabled": True, "leaseDurationSeconds": 0}}, "/leaderElection"),
        ({"leaderElection": {"enabled": True, "leaseName": "Gate!"}}, "/leaderElection/leaseName"),
        ({"kubernetes": {"targetNamespaces": ["Shop"]}}, "/kubernetes/targetNamespaces/0"),
        ({"kubernetes": {"targetNamespace": "shop"}}, "targetNamespace"),
        ({"kubernetes": {"resourceNames": {"routes": ["x"]}}}, "routes"),
        ({"networkPolicy": {"enabled": True, "apiServer": {"cidrs": ["10.0.0.1"]}}}, "/cidrs/0"),
        ({"podDisruptionBudget": {"minAvailable": 0}}, "/podDisruptionBudget/minAvailable"),
        ({"dashboards": {"enabled": True, "labels": {"grafana_dashboard": 1}}}, "/dashboards"),
        ({"docs": {"url": "docs/"}}, "/docs/url"),
        ({"tokens": "admin ci s3cr3t"}, "/tokens"),
        ({"tokens": {"existingSecret": "t", "value": "s3cr3t"}}, "/tokens"),
        ({"webhook": {"secret": "hmac-key"}}, "/webhook/secret"),
        ({"image": {"digest": "sha256:abc"}}, "/image/digest"),
        ({"image": {"repository": "r.example.com/promgate@sha256:" + "e" * 64}}, "/image"),
        ({"actuator": "webhook"}, "/webhook/url"),
        ({"prometheusUrl": "prometheus:9090"}, "/prometheusUrl"),
        ({"securityContext": {"readOnlyRootFilesystem": False}}, "/securityContext"),
        ({"securityContext": {"runAsNonRoot": False}}, "/securityContext"),
        ({**EMBEDDED, "proxy": {"listeners": [{"stage": "Prod", "port": 8080}]}}, "/proxy"),
        ({"serviceMonitor": {"enabled": "yes"}}, "/serviceMonitor"),
        ({"listenHost": "http://0.0.0.0"}, "/listenHost"),
        ({"tokenz": {"existingSecret": "t"}}, "tokenz"),
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any], complaint: str) -> None:
    assert complaint in _schema_complaint(values)


@pytest.mark.parametrize(("name", "values"), VARIANTS)
def test_schema_accepts_good_values(name: str, values: dict[str, Any]) -> None:
    with helm_python.Chart.load(CHART) as chart:
        chart.validate_schema(values)


@pytest.mark.parametrize(("name", "values"), VARIANTS)
def test_helm_lint_finds_nothing_wrong(name: str, values: dict[str, Any]) -> None:
    report = helm_python.lint(CHART, values, strict=True, kube_version=f"v{KUBERNETES}")
    assert report["errors"] == [], f"{name}: {report}"
    assert report["messages"] == [], f"{name}: {report['messages']}"


def test_chart_metadata() -> None:
    with helm_python.Chart.load(CHART) as chart:
        metadata = chart.metadata
    assert metadata["home"].startswith("https://")
    assert metadata["sources"] and metadata["maintainers"]
    assert metadata["icon"].endswith("docs/promgate.svg")
    assert (REPO / "docs" / "promgate.svg").read_text().lstrip().startswith("<svg")
    assert _default_values()["docs"]["url"].startswith(metadata["home"])
    assert "Kubernetes" in metadata["description"]


# --- the pod -------------------------------------------------------------------------------


def _settings(documents: list[dict[str, Any]]) -> Settings:
    env = _env(documents)
    settings = {
        key.removeprefix("PROMGATE_").lower(): value.replace("$(POD_IP)", "10.1.2.3")
        for key, value in env.items()
        if key.startswith("PROMGATE_")
    }
    unknown = settings.keys() - Settings.model_fields.keys()
    assert unknown == set(), f"no such settings {unknown}"
    return Settings.load(**settings)


@pytest.mark.parametrize(("name", "values"), VARIANTS)
def test_environment_is_valid_promgate_settings(name: str, values: dict[str, Any]) -> None:
    """Every PROMGATE_* variable is a real setting, and together they load."""
    documents = _render(values)
    loaded = _settings(documents)
    assert loaded.listen == "10.1.2.3:8480"
    # Files the settings name are mounted from the right places.
    assert "configMap" in _mount_of(documents, str(loaded.policy))
    if loaded.ledger == "sqlite":
        assert str(loaded.ledger_path) == "/var/lib/promgate/ledger.db"
        _mount_of(documents, str(loaded.ledger_path))


def test_container_runs_non_root_with_a_read_only_root() -> None:
    documents = _render()
    pod = _pod(documents)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    context = _container(documents)["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    # The only writable place is /tmp (and the SQLite ledger's volume in the embedded mode).
    assert "emptyDir" in _mount_of(documents, "/tmp/x")


def test_image_is_pinned_by_digest_when_given() -> None:
    assert _container(_render({"image": {"digest": DIGEST}}))["image"] == (
        f"registry.example.com/promgate/promgate@{DIGEST}"
    )
    tagged = _render({"image": {"tag": "0.1.0-rc1"}})
    assert _container(tagged)["image"] == "registry.example.com/promgate/promgate:0.1.0-rc1"
    with helm_python.Chart.load(CHART) as chart:
        app_version = chart.metadata["appVersion"]
    assert _container(_render())["image"].endswith(f":{app_version}")


def test_embedded_proxy_serves_promgate_and_the_listeners() -> None:
    documents = _render(EMBEDDED_PROXY)
    container = _container(documents)
    assert container["command"] + container["args"] == ["promgate", "serve"]
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container_ports == {"api": 8480, "px-staging": 8081, "live": 8080}
    ports = _one(documents, "Service")["spec"]["ports"]
    service_ports = {p["name"]: (p["port"], p["targetPort"]) for p in ports}
    assert service_ports == {name: (port, name) for name, port in container_ports.items()}
    # The kubernetes actuator serves only the API.
    assert [p["name"] for p in _container(_render())["ports"]] == ["api"]


def test_settings_follow_the_values() -> None:
    env = _env(_render(EMBEDDED_PROXY))
    assert env["PROMGATE_PROXY_LISTEN"] == "staging=$(POD_IP):8081,production=$(POD_IP):8080"
    assert env["PROMGATE_OTLP_ENDPOINT"] == "http://otel-collector.observability.svc:4318"
    assert env["PROMGATE_ACTUATOR"] == "proxy"
    webhook = _env(_render(WEBHOOK))
    assert webhook["PROMGATE_ACTUATOR"] == "webhook"
    assert webhook["PROMGATE_WEBHOOK_URL"] == "https://router.example.com/promgate"
    assert "PROMGATE_PROXY_LISTEN" not in webhook
    assert _env(_render({"listenHost": "0.0.0.0"}))["PROMGATE_LISTEN"] == "0.0.0.0:8480"
    lease = {"enabled": True, "leaseDurationSeconds": 30, "renewDeadlineSeconds": 20}
    tuned = _settings(_render({"leaderElection": lease}))
    assert (tuned.lease_duration_s, tuned.lease_renew_deadline_s) == (30, 20)


def test_secrets_come_only_from_existing_secrets() -> None:
    documents = _render(EVERYTHING_ON)
    assert not _of(documents, "Secret")
    tokens_file = _env(documents)["PROMGATE_TOKENS_FILE"]
    assert _mount_of(documents, tokens_file)["secret"]["secretName"] == "promgate-tokens"
    assert "PROMGATE_TOKENS_FILE" not in _env(_render())

    webhook = _render(WEBHOOK)
    secret_file = _env(webhook)["PROMGATE_WEBHOOK_SECRET_FILE"]
    assert secret_file == "/etc/promgate/webhook/hmac"
    assert _mount_of(webhook, secret_file)["secret"]["secretName"] == "promgate-webhook"


def test_policy_config_map_holds_a_valid_policy() -> None:
    documents = _render()
    (config_map,) = [
        d for d in _of(documents, "ConfigMap") if d["metadata"]["name"].endswith("-policy")
    ]
    policy = parse_policy_text(config_map["data"]["policy.yaml"], "chart policy")
    assert [stage.name for stage in policy.stages] == ["production"]
    annotations = _one(documents, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert len(annotations["checksum/policy"]) == 64, "a policy change must roll the pod"
    changed = _render({"policy": {**_default_values()["policy"], "version": "2"}})
    changed_annotations = _one(changed, "Deployment")["spec"]["template"]["metadata"]
    assert changed_annotations["annotations"]["checksum/policy"] != annotations["checksum/policy"]


def test_sqlite_ledger_storage() -> None:
    documents = _render(EMBEDDED)
    claim = _one(documents, "PersistentVolumeClaim")
    volume = _mount_of(documents, "/var/lib/promgate/ledger.db")
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]

    ephemeral = _render(WEBHOOK)
    assert not _of(ephemeral, "PersistentVolumeClaim")
    assert "emptyDir" in _mount_of(ephemeral, "/var/lib/promgate/ledger.db")

    existing = _render(
        {
            **EMBEDDED,
            "ledger": {
                "backend": "sqlite",
                "persistence": {"enabled": True, "existingClaim": "mine"},
            },
        }
    )
    assert not _of(existing, "PersistentVolumeClaim")
    claimed = _mount_of(existing, "/var/lib/promgate/ledger.db")
    assert claimed["persistentVolumeClaim"]["claimName"] == "mine"
    assert not _of(_render(), "PersistentVolumeClaim"), "the kubernetes ledger needs no volume"


def test_policy_from_an_existing_config_map() -> None:
    """A policy kept in its own file: the chart mounts the user's ConfigMap instead."""
    documents = _render({"existingPolicyConfigMap": "checkout-policy"})
    assert not [d for d in _of(documents, "ConfigMap") if d["metadata"]["name"].endswith("-policy")]
    settings = _settings(documents)
    volume = _mount_of(documents, str(settings.policy))
    assert volume["configMap"]["name"] == "checkout-policy"
    assert volume["configMap"]["items"] == [{"key": "policy.yaml", "path": "policy.yaml"}]
    assert "annotations" not in _one(documents, "Deployment")["spec"]["template"]["metadata"]
    for doc in documents:
        assert_valid(doc, "existing policy ConfigMap")
    annotated = _render({"existingPolicyConfigMap": "p", "podAnnotations": {"team": "delivery"}})
    pod_metadata = _one(annotated, "Deployment")["spec"]["template"]["metadata"]
    assert pod_metadata["annotations"] == {"team": "delivery"}
    assert "/existingPolicyConfigMap" in _schema_complaint({"existingPolicyConfigMap": "Policy!"})
