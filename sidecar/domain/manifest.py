"""The release manifest: what travels with an artifact from CI to every stage.

Every string and list is bounded (the limits are in the JSON Schema), so a manifest
cannot grow the ledger, the API's answers or spans without limit. Credentials in a URL
(``https://user:token@host/...``) are removed from every string before anything is
stored; :func:`credential_paths` names the fields they were removed from.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from sidecar.domain.artifact import DIGEST_PATTERN, ArtifactRef
from sidecar.domain.validation import (
    MAX_INTEGER,
    json_problems,
    parse_int,
    problems_from,
    string_paths,
)
from sidecar.errors import ArtifactReferenceError, ManifestError, Problem
from sidecar.redaction import has_userinfo, strip_userinfo

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_REFERENCE_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$")

MAX_URL = 2048  # characters in a URL or reference
MAX_TEXT = 256  # characters in an id, name, ref or version-like string
MAX_ITEMS = 256  # entries in a list or mapping


_WITHOUT_CREDENTIALS = AfterValidator(strip_userinfo)
Url = Annotated[str, StringConstraints(max_length=MAX_URL), _WITHOUT_CREDENTIALS]
RequiredUrl = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_URL), _WITHOUT_CREDENTIALS
]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT), _WITHOUT_CREDENTIALS]
RequiredText = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_TEXT), _WITHOUT_CREDENTIALS
]
Count = Annotated[int, Field(ge=0, le=MAX_INTEGER)]


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

    id: RequiredText = Field(description="CI run id, e.g. GitHub Actions run id")
    number: Count | None = None
    url: Url | None = Field(default=None, description="link to the CI run")
    traceparent: str | None = Field(
        default=None,
        max_length=55,
        description="W3C traceparent of the CI build span, to link traces",
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

    repository: RequiredUrl = Field(description="repository URL")
    commit: str = Field(pattern=r"^[0-9a-f]{7,64}$", max_length=64, description="full commit hash")
    ref: Text | None = Field(default=None, description="branch or tag, e.g. refs/heads/main")

    _identity = field_validator("repository", "commit", "ref", mode="before")(_one_line)


class Provenance(_Model):
    """A SLSA provenance summary; its subject digest must match the artifact's."""

    predicate_type: Url = Field(alias="predicateType", default="https://slsa.dev/provenance/v1")
    builder_id: RequiredUrl = Field(alias="builderId")
    subject_digest: str = Field(alias="subjectDigest", pattern=DIGEST_PATTERN, max_length=135)
    uri: Url | None = Field(default=None, description="where the signed attestation lives")

    _identity = field_validator(
        "predicate_type", "builder_id", "subject_digest", "uri", mode="before"
    )(_one_line)


class Vulnerabilities(_Model):
    """Counts of known vulnerabilities by severity from the image scan."""

    critical: Count = 0
    high: Count = 0
    medium: Count = 0
    low: Count = 0


class TestResults(_Model):
    """The test run's totals."""

    passed: Count = 0
    failed: Count = 0
    skipped: Count = 0


class Checks(_Model):
    """Results of the checks CI ran on this artifact."""

    vulnerabilities: Vulnerabilities | None = None
    tests: TestResults | None = None
    licences: list[Text] = Field(default_factory=list, max_length=MAX_ITEMS)


class Reference(_Model):
    """A config or secret *reference*. Values never travel in a manifest."""

    name: RequiredText
    ref: Url = Field(description="e.g. k8s://namespace/secret-name#key or vault://path#key")

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

    api_version: str = Field(
        default="promgate/v1", alias="apiVersion", pattern=r"^promgate/v1$", max_length=11
    )
    service: Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", max_length=63)]
    artifact: str = Field(
        max_length=MAX_URL,
        description="repository[:tag]@sha256:<64 hex> (or sha512:<128 hex>)",
    )
    version: str = Field(min_length=1, max_length=128)
    build: Build
    source: Source
    created_at: datetime = Field(alias="createdAt")
    provenance: Provenance | None = None
    checks: Checks = Field(default_factory=Checks)
    compatibility: dict[Text, Annotated[list[Text], Field(max_length=MAX_ITEMS)]] = Field(
        default_factory=dict,
        max_length=MAX_ITEMS,
        description="component -> versions this release works with, e.g. postgres: ['15', '16']",
    )
    config: list[Reference] = Field(default_factory=list, max_length=MAX_ITEMS)
    secrets: list[Reference] = Field(default_factory=list, max_length=MAX_ITEMS)

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
        return cls.from_data(_read_json(Path(path)), source=str(path))


def load_manifest(path: Path | str) -> tuple[ReleaseManifest, list[str]]:
    """A manifest file, validated, and the fields whose URL credentials were removed."""
    data = _read_json(Path(path))
    return ReleaseManifest.from_data(data, source=str(path)), credential_paths(data)


def _read_json(path: Path) -> Any:
    """A JSON file's data, bounded like an API body; every failure names the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_int=parse_int)
    except OSError as exc:
        raise ManifestError(
            f"cannot read {path}", [Problem("", exc.strerror or str(exc), "", str(path))]
        ) from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise ManifestError(
            f"{path} is not JSON", [Problem(where, exc.msg, "fix the JSON", str(path))]
        ) from None
    except (RecursionError, UnicodeDecodeError):
        raise ManifestError(
            f"{path} is not JSON",
            [Problem("", "not UTF-8 JSON, or nested too deeply", "fix the JSON", str(path))],
        ) from None
    problems = json_problems(data)
    if problems:
        raise ManifestError(f"{path} is invalid", [replace(p, file=str(path)) for p in problems])
    return data


def credential_paths(data: Any) -> list[str]:
    """Field paths of the strings in raw manifest data that carry URL credentials, which
    validation removes: what to warn the sender about."""
    return [path for path, text in string_paths(data) if has_userinfo(text)]


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema users validate manifests against in CI."""
    schema = ReleaseManifest.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://promgate.dev/schemas/manifest-v1.json"
    return schema
