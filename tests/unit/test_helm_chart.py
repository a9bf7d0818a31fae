"""The Helm chart, rendered offline with Helm's own SDK and checked against Kubernetes' schemas.

No cluster is needed: ``helm_python`` renders and lints with Helm's Go code, and
``kubernetes_validate`` checks every built-in object against the Kubernetes 1.30 OpenAPI
schemas. Custom resources (ServiceMonitor, PrometheusRule) have no schema there and are
checked field by field.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from sidecar.domain.policy import parse_policy_text
from sidecar.settings import Settings

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "alerts" / "promgate.rules.yaml"
CHART = REPO / "helm" / "promgate"
CHART_RULES = CHART / "files" / "promgate.rules.yaml"
KUBERNETES = "1.30.0"
NAMESPACE = "delivery"
DIGEST = "sha256:" + "e" * 64
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}
EVERYTHING_ON = {
    "image": {"digest": DIGEST},
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus"}},
    "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus"}},
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
    "actuator": "webhook",
    "webhook": {
        "url": "https://router.example.com/promgate",
        "secret": {"existingSecret": "promgate-webhook", "key": "hmac"},
    },
    "ledger": {"persistence": {"enabled": False}},
}


def _render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    with helm_python.Chart.load(CHART) as chart:
        rendered = chart.render(values or {}, name="pg", namespace=NAMESPACE)
    documents: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if PurePosixPath(path).suffix not in {".yaml", ".yml"}:
            continue  # NOTES.txt and friends
        documents.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return documents


def _one(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in documents if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[d['kind'] for d in documents]}"
    return found[0]


def _container(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = _one(documents, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def _env(documents: list[dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in _container(documents)["env"]}


def _mount_of(documents: list[dict[str, Any]], path: str) -> dict[str, Any]:
    """The volume (from the pod spec) whose mount contains ``path``."""
    pod = _one(documents, "Deployment")["spec"]["template"]["spec"]
    for mount in _container(documents)["volumeMounts"]:
        if PurePosixPath(path).is_relative_to(mount["mountPath"]):
            (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
            assert isinstance(volume, dict)
            return volume
    raise AssertionError(f"nothing is mounted at {path}")


def _variants() -> Iterator[tuple[str, dict[str, Any]]]:
    yield "defaults", {}
    yield "everything on", EVERYTHING_ON
    yield "webhook, no persistence", WEBHOOK


@pytest.mark.parametrize(("name", "values"), list(_variants()))
def test_every_builtin_object_is_valid_kubernetes(name: str, values: dict[str, Any]) -> None:
    documents = _render(values)
    assert documents, name
    for doc in documents:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{name}: {doc['kind']} {doc['metadata']['name']}: {exc}") from exc
        assert doc["metadata"]["namespace"] == NAMESPACE


def test_default_render_has_the_expected_objects() -> None:
    kinds = sorted(doc["kind"] for doc in _render())
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "PersistentVolumeClaim",
        "Service",
        "ServiceAccount",
    ]


def test_monitoring_resources_are_well_formed() -> None:
    documents = _render(EVERYTHING_ON)
    service = _one(documents, "Service")
    deployment = _one(documents, "Deployment")

    monitor = _one(documents, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert selector == deployment["spec"]["selector"]["matchLabels"]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["interval"] == "15s"

    rule = _one(documents, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus"
    assert set(rule["spec"]) == {"groups"}
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for item in group["rules"]:
            assert ("record" in item) != ("alert" in item) and item["expr"]


def test_chart_rules_are_a_copy_of_the_alert_rules() -> None:
    assert CHART_RULES.read_bytes() == RULES.read_bytes(), (
        f"{CHART_RULES} differs from {RULES}; copy it: cp {RULES} {CHART_RULES}"
    )


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicaCount": "two"}, "/replicaCount"),
        ({"replicaCount": 2}, "/replicaCount"),
        ({"tokens": "admin ci s3cr3t"}, "/tokens"),
        ({"tokens": {"existingSecret": "t", "value": "s3cr3t"}}, "/tokens"),
        ({"webhook": {"secret": "hmac-key"}}, "/webhook/secret"),
        ({"image": {"digest": "sha256:abc"}}, "/image/digest"),
        ({"image": {"repository": "r.example.com/promgate@sha256:" + "e" * 64}}, "/image"),
        ({"actuator": "istio"}, "/actuator"),
        ({"actuator": "webhook"}, "/webhook/url"),
        ({"prometheusUrl": "prometheus:9090"}, "/prometheusUrl"),
        ({"securityContext": {"readOnlyRootFilesystem": False}}, "/securityContext"),
        ({"securityContext": {"runAsNonRoot": False}}, "/securityContext"),
        ({"proxy": {"listeners": [{"stage": "Prod", "port": 8080}]}}, "/proxy/listeners"),
        ({"serviceMonitor": {"enabled": "yes"}}, "/serviceMonitor"),
        ({"listenHost": "http://0.0.0.0"}, "/listenHost"),
        ({"tokenz": {"existingSecret": "t"}}, "tokenz"),
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any], complaint: str) -> None:
    with helm_python.Chart.load(CHART) as chart, pytest.raises(helm_python.HelmValuesError) as exc:
        chart.validate_schema(values)
    assert complaint in str(exc.value)


@pytest.mark.parametrize(("name", "values"), list(_variants()))
def test_schema_accepts_good_values(name: str, values: dict[str, Any]) -> None:
    with helm_python.Chart.load(CHART) as chart:
        chart.validate_schema(values)


def test_container_runs_non_root_with_a_read_only_root() -> None:
    documents = _render()
    pod = _one(documents, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    context = _container(documents)["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    # The only writable places are volumes: the ledger and /tmp.
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


def test_serves_promgate_with_probes_on_the_api_port() -> None:
    documents = _render(EVERYTHING_ON)
    container = _container(documents)
    assert container["command"] + container["args"] == ["promgate", "serve"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "api"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "api"}
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container_ports == {"api": 8480, "px-staging": 8081, "live": 8080}
    service_ports = {p["name"]: (p["port"], p["targetPort"]) for p in _service_ports(documents)}
    assert service_ports == {name: (port, name) for name, port in container_ports.items()}


def _service_ports(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ports: list[dict[str, Any]] = _one(documents, "Service")["spec"]["ports"]
    return ports


@pytest.mark.parametrize(("name", "values"), list(_variants()))
def test_environment_is_valid_promgate_settings(name: str, values: dict[str, Any]) -> None:
    """Every PROMGATE_* variable is a real setting, and together they load."""
    env = _env(_render(values))
    settings = {
        key.removeprefix("PROMGATE_").lower(): value.replace("$(POD_IP)", "10.1.2.3")
        for key, value in env.items()
        if key.startswith("PROMGATE_")
    }
    unknown = settings.keys() - Settings.model_fields.keys()
    assert unknown == set(), f"{name}: no such settings {unknown}"
    loaded = Settings.load(**settings)
    assert loaded.listen == "10.1.2.3:8480"
    assert str(loaded.ledger_path) == "/var/lib/promgate/ledger.db"
    # Files the settings name are mounted from the right places.
    assert "configMap" in _mount_of(_render(values), str(loaded.policy))


def test_settings_follow_the_values() -> None:
    env = _env(_render(EVERYTHING_ON))
    assert env["PROMGATE_PROXY_LISTEN"] == "staging=$(POD_IP):8081,production=$(POD_IP):8080"
    assert env["PROMGATE_OTLP_ENDPOINT"] == "http://otel-collector.observability.svc:4318"
    assert env["PROMGATE_ACTUATOR"] == "proxy"
    webhook = _env(_render(WEBHOOK))
    assert webhook["PROMGATE_ACTUATOR"] == "webhook"
    assert webhook["PROMGATE_WEBHOOK_URL"] == "https://router.example.com/promgate"
    assert "PROMGATE_PROXY_LISTEN" not in webhook
    assert _env(_render({"listenHost": "0.0.0.0"}))["PROMGATE_LISTEN"] == "0.0.0.0:8480"


def test_secrets_come_only_from_existing_secrets() -> None:
    documents = _render(EVERYTHING_ON)
    assert not [doc for doc in documents if doc["kind"] == "Secret"]
    tokens_file = _env(documents)["PROMGATE_TOKENS_FILE"]
    assert _mount_of(documents, tokens_file)["secret"]["secretName"] == "promgate-tokens"
    assert "PROMGATE_TOKENS_FILE" not in _env(_render())

    webhook = _render(WEBHOOK)
    secret_file = _env(webhook)["PROMGATE_WEBHOOK_SECRET_FILE"]
    assert secret_file == "/etc/promgate/webhook/hmac"
    assert _mount_of(webhook, secret_file)["secret"]["secretName"] == "promgate-webhook"


def test_policy_config_map_holds_a_valid_policy() -> None:
    documents = _render()
    config_map = _one(documents, "ConfigMap")
    policy = parse_policy_text(config_map["data"]["policy.yaml"], "chart policy")
    assert [stage.name for stage in policy.stages] == ["production"]
    deployment = _one(documents, "Deployment")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert len(annotations["checksum/policy"]) == 64, "a policy change must roll the pod"
    changed = _render({"policy": {**_default_values()["policy"], "version": "2"}})
    changed_annotations = _one(changed, "Deployment")["spec"]["template"]["metadata"]
    assert changed_annotations["annotations"]["checksum/policy"] != annotations["checksum/policy"]


def _default_values() -> dict[str, Any]:
    with helm_python.Chart.load(CHART) as chart:
        return chart.values


def test_ledger_storage() -> None:
    documents = _render()
    claim = _one(documents, "PersistentVolumeClaim")
    volume = _mount_of(documents, "/var/lib/promgate/ledger.db")
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert _one(documents, "Deployment")["spec"]["strategy"]["type"] == "Recreate"

    ephemeral = _render(WEBHOOK)
    assert not [doc for doc in ephemeral if doc["kind"] == "PersistentVolumeClaim"]
    assert "emptyDir" in _mount_of(ephemeral, "/var/lib/promgate/ledger.db")

    existing = _render({"ledger": {"persistence": {"enabled": True, "existingClaim": "mine"}}})
    assert not [doc for doc in existing if doc["kind"] == "PersistentVolumeClaim"]
    claimed = _mount_of(existing, "/var/lib/promgate/ledger.db")
    assert claimed["persistentVolumeClaim"]["claimName"] == "mine"


@pytest.mark.parametrize(("name", "values"), list(_variants()))
def test_helm_lint_finds_nothing_wrong(name: str, values: dict[str, Any]) -> None:
    report = helm_python.lint(CHART, values, strict=True, kube_version=f"v{KUBERNETES}")
    assert report["errors"] == [], f"{name}: {report}"
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [], f"{name}: {problems}"
