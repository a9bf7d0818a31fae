"""The release manifest: what travels with an artifact from CI to every stage."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sidecar.domain.artifact import DIGEST_PATTERN, ArtifactRef
from sidecar.domain.validation import problems_from
from sidecar.errors import ArtifactReferenceError, ManifestError, Problem

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_REFERENCE_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


_LINE_BREAKERS = {"\x00": "NUL", "\n": "a newline", "\r": "a carriage return"}


def _one_line(value: Any) -> Any:
    """Identity ends up in logs, headers, ledger keys and queries: one line, no NUL."""
    if isinstance(value, str):
        for char, name in _LINE_BREAKERS.items():
            if char in value:
                raise ValueError(
                    f"contains {name} ({char!r}); identity fields must be one line of text: "
                    "remove it"
                )
    return value


class Build(_Model):
    """The CI run that produced the artifact."""

    id: str = Field(min_length=1, description="CI run id, e.g. GitHub Actions run id")
    number: int | None = Field(default=None, ge=0)
    url: str | None = Field(default=None, description="link to the CI run")
    traceparent: str | None = Field(
        default=None, description="W3C traceparent of the CI build span, to link traces"
    )

    @field_validator("traceparent")
    @classmethod
    def _traceparent(cls, value: str | None) -> str | None:
        if value is not None and not _TRACEPARENT.match(value):
            raise ValueError("must be a W3C traceparent: 00-<32 hex>-<16 hex>-<2 hex>")
        return value

    _identity = field_validator("id", "url", "traceparent", mode="before")(_one_line)


class Source(_Model):
    """Where the code came from."""

    repository: str = Field(min_length=1, description="repository URL")
    commit: str = Field(pattern=r"^[0-9a-f]{7,64}$", description="full commit hash")
    ref: str | None = Field(default=None, description="branch or tag, e.g. refs/heads/main")

    _identity = field_validator("repository", "commit", "ref", mode="before")(_one_line)


class Provenance(_Model):
    """A SLSA provenance summary; its subject digest must match the artifact's."""

    predicate_type: str = Field(alias="predicateType", default="https://slsa.dev/provenance/v1")
    builder_id: str = Field(alias="builderId", min_length=1)
    subject_digest: str = Field(alias="subjectDigest", pattern=DIGEST_PATTERN)
    uri: str | None = Field(default=None, description="where the signed attestation lives")

    _identity = field_validator(
        "predicate_type", "builder_id", "subject_digest", "uri", mode="before"
    )(_one_line)


class Vulnerabilities(_Model):
    """Counts of known vulnerabilities by severity from the image scan."""

    critical: int = Field(default=0, ge=0)
    high: int = Field(default=0, ge=0)
    medium: int = Field(default=0, ge=0)
    low: int = Field(default=0, ge=0)


class TestResults(_Model):
    """The test run's totals."""

    passed: int = Field(default=0, ge=0)
    failed: int = Field(default=0, ge=0)
    skipped: int = Field(default=0, ge=0)


class Checks(_Model):
    """Results of the checks CI ran on this artifact."""

    vulnerabilities: Vulnerabilities | None = None
    tests: TestResults | None = None
    licences: list[str] = Field(default_factory=list)


class Reference(_Model):
    """A config or secret *reference*. Values never travel in a manifest."""

    name: str = Field(min_length=1)
    ref: str = Field(description="e.g. k8s://namespace/secret-name#key or vault://path#key")

    @field_validator("ref")
    @classmethod
    def _ref(cls, value: str) -> str:
        if not _REFERENCE_SCHEME.match(value):
            raise ValueError(
                "must be a reference like k8s://namespace/name#key or vault://path#key, "
                "never the value itself"
            )
        return value

    _identity = field_validator("name", "ref", mode="before")(_one_line)


class ReleaseManifest(_Model):
    """Identity and evidence of one release; validated before anything else happens."""

    api_version: str = Field(default="promgate/v1", alias="apiVersion", pattern=r"^promgate/v1$")
    service: Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    artifact: str = Field(description="repository[:tag]@sha256:<64 hex> (or sha512:<128 hex>)")
    version: str = Field(min_length=1, max_length=128)
    build: Build
    source: Source
    created_at: datetime = Field(alias="createdAt")
    provenance: Provenance | None = None
    checks: Checks = Field(default_factory=Checks)
    compatibility: dict[str, list[str]] = Field(
        default_factory=dict,
        description="component -> versions this release works with, e.g. postgres: ['15', '16']",
    )
    config: list[Reference] = Field(default_factory=list)
    secrets: list[Reference] = Field(default_factory=list)

    @field_validator("artifact")
    @classmethod
    def _artifact(cls, value: str) -> str:
        try:
            ArtifactRef.parse(value)
        except ArtifactReferenceError as exc:
            raise ValueError(str(exc)) from None
        return value

    _identity = field_validator("service", "artifact", "version", mode="before")(_one_line)

    @property
    def artifact_ref(self) -> ArtifactRef:
        return ArtifactRef.parse(self.artifact)

    def to_json_dict(self) -> dict[str, Any]:
        """The manifest as JSON data, with its wire (camelCase) names."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @classmethod
    def from_data(cls, data: Any, *, source: str = "manifest") -> ReleaseManifest:
        """Validate parsed JSON; every problem is reported with its field path."""
        if not isinstance(data, dict):
            raise ManifestError(
                f"{source} is invalid",
                [Problem("", "must be a JSON object", "see `promgate schema manifest`", source)],
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ManifestError(
                f"{source} is invalid",
                problems_from(exc, source, "see `promgate schema manifest` for the schema"),
            ) from None

    @classmethod
    def load(cls, path: Path | str) -> ReleaseManifest:
        """Read and validate a manifest file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ManifestError(
                f"cannot read {path}", [Problem("", exc.strerror or str(exc), "", str(path))]
            ) from None
        except json.JSONDecodeError as exc:
            raise ManifestError(
                f"{path} is not JSON",
                [
                    Problem(
                        f"line {exc.lineno} column {exc.colno}", exc.msg, "fix the JSON", str(path)
                    )
                ],
            ) from None
        return cls.from_data(data, source=str(path))


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema users validate manifests against in CI."""
    schema = ReleaseManifest.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://promgate.dev/schemas/manifest-v1.json"
    return schema
