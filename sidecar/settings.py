"""Sidecar settings: every field is also read from a ``PROMGATE_<FIELD>`` variable.

Secrets are never settings themselves: a setting names the file or variable that holds
one (``webhook_secret_file``, ``tokens_file``), and reprs never show secret contents.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sidecar.domain.validation import field_path
from sidecar.errors import SettingsError
from sidecar.leadership.election import LeaseTiming


def parse_address(text: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` -> ``("127.0.0.1", 8080)``."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not host:port, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


def parse_stage_addresses(text: str) -> dict[str, tuple[str, int]]:
    """``"staging=127.0.0.1:8081,production=127.0.0.1:8080"`` -> a stage -> address map."""
    result: dict[str, tuple[str, int]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        stage, sep, address = item.partition("=")
        if not sep or not stage:
            raise ValueError(f"{item!r} is not stage=host:port")
        result[stage.strip()] = parse_address(address)
    return result


def default_identity() -> str:
    """The pod's name where Kubernetes sets POD_NAME (the chart does), else hostname-pid."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    """How one sidecar runs. Defaults give the embedded set-up: SQLite and the built-in proxy."""

    model_config = SettingsConfigDict(env_prefix="PROMGATE_", frozen=True, extra="forbid")

    policy: Path = Field(
        default=Path("examples/policy.yaml"), description="the promotion policy file (YAML)"
    )
    listen: str = Field(default="127.0.0.1:8480", description="API address, host:port")
    prometheus_url: str = Field(
        default="http://127.0.0.1:9090", description="Prometheus base URL used for SLO gates"
    )
    prometheus_bearer_token_file: Path | None = Field(
        default=None,
        description="file holding a bearer token for Prometheus (e.g. a service account "
        "token), read again for every query; not with credentials in prometheus_url",
    )
    prometheus_timeout_s: float = Field(default=5.0, gt=0, description="per-query timeout")
    prometheus_attempts: int = Field(default=3, ge=1, description="tries per query")
    ledger: str = Field(
        default="sqlite",
        description="durable state backend: sqlite, memory or kubernetes (in-cluster, for HA)",
    )
    ledger_path: Path = Field(default=Path(".promgate/ledger.db"), description="SQLite ledger file")
    actuator: str = Field(
        default="proxy",
        description="traffic actuator: proxy, webhook, kubernetes (deploys to the stages' "
        "kubernetes targets in the policy), none",
    )
    proxy_listen: str = Field(
        default="production=127.0.0.1:8080",
        description="built-in proxy listeners, stage=host:port[,stage=host:port]",
    )
    proxy_metrics_listen: str | None = Field(
        default=None, description="address of the proxy's own metrics endpoint, host:port"
    )
    webhook_url: str | None = Field(default=None, description="where the webhook actuator POSTs")
    webhook_secret_file: Path | None = Field(
        default=None,
        description="file holding the secret that signs webhook states (whsec_<base64> or raw)",
    )
    tokens_file: Path | None = Field(
        default=None,
        description="bearer tokens, one per line: `<role> <name> <token>`; roles viewer, "
        "promoter, approver, admin",
    )
    otlp_endpoint: str | None = Field(
        default=None, description="OTLP/HTTP endpoint for traces, e.g. http://collector:4318"
    )
    kubeconfig: Path | None = Field(
        default=None,
        description="kubeconfig file for the Kubernetes API; unset: the Pod's service account "
        "in a cluster, else $KUBECONFIG or ~/.kube/config",
    )
    kube_namespace: str | None = Field(
        default=None,
        description="namespace for promgate's own objects; unset: the Pod's namespace, else the "
        "kubeconfig context's, else default",
    )
    leader_election: bool | None = Field(
        default=None,
        description="run only while holding a coordination.k8s.io/v1 Lease, so replicas "
        "can share one ledger; unset: on when the ledger is kubernetes",
    )
    lease_name: str = Field(
        default="promgate", description="the Lease replicas elect a leader with"
    )
    lease_duration_s: int = Field(
        default=15,
        ge=1,
        description="seconds a Lease lasts unrenewed before another replica takes it over",
    )
    lease_renew_deadline_s: float = Field(
        default=10.0,
        gt=0,
        description="seconds the leader acts after its last successful renewal; shorter "
        "than lease_duration_s, so two leaders never overlap",
    )
    lease_retry_period_s: float = Field(
        default=2.0, gt=0, description="seconds between tries to renew or acquire the Lease"
    )
    identity: str = Field(
        default_factory=default_identity,
        description="this replica's name in the Lease; default POD_NAME, else hostname-pid",
    )
    log_level: str = Field(default="info", description="debug, info, warning or error")
    max_body_bytes: int = Field(default=1 << 20, gt=0, description="largest accepted request body")

    @model_validator(mode="after")
    def _lease_timing(self) -> Settings:
        try:
            LeaseTiming(
                self.lease_duration_s, self.lease_renew_deadline_s, self.lease_retry_period_s
            )
        except ValueError as exc:
            raise ValueError(
                f"settings lease_duration_s, lease_renew_deadline_s, lease_retry_period_s "
                f"(PROMGATE_LEASE_*): {exc}"
            ) from None
        return self

    @property
    def elects_leader(self) -> bool:
        """Whether this replica campaigns for the Lease (None: when the ledger is shared)."""
        if self.leader_election is None:
            return self.ledger == "kubernetes"
        return self.leader_election

    @field_validator("listen", "proxy_metrics_listen")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            parse_address(value)
        return value

    @field_validator("proxy_listen")
    @classmethod
    def _stages(cls, value: str) -> str:
        parse_stage_addresses(value)
        return value

    @classmethod
    def load(cls, **overrides: object) -> Settings:
        """Environment first, then ``overrides`` (e.g. CLI flags that were given)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        try:
            return cls(**given)  # type: ignore[arg-type]
        except ValidationError as exc:
            lines = []
            for error in exc.errors(include_url=False):
                name = field_path(tuple(error["loc"]))
                message = error["msg"].removeprefix("Value error, ")
                if name:
                    message = f"setting {name} (PROMGATE_{name.upper()}): {message}"
                lines.append(message)
            raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None

    def webhook_secret(self) -> bytes | None:
        """Read the webhook secret from its file; the value never enters settings or logs."""
        path = self.webhook_secret_file
        if path is None:
            return None
        try:
            return path.read_bytes().strip()
        except OSError as exc:
            raise SettingsError(
                f"setting webhook_secret_file: cannot read {path}: {exc.strerror}"
            ) from None
