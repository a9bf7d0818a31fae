"""ReleaseManifest: parsing, field-path problems, secret safety and the JSON Schema."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from sidecar.domain.artifact import ArtifactRef
from sidecar.domain.manifest import (
    MAX_ITEMS,
    MAX_URL,
    ReleaseManifest,
    credential_paths,
    load_manifest,
    manifest_schema,
)
from sidecar.errors import ManifestError, Problem
from tests.support.edit import DELETE, edited
from tests.support.schemas import unbounded

DIGEST = "sha256:" + "ab" * 32
TRACEPARENT = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"


def valid_manifest() -> dict[str, Any]:
    """A complete manifest using every optional section."""
    return {
        "apiVersion": "promgate/v1",
        "service": "checkout",
        "artifact": f"registry.example.com/shop/checkout:1.4.2@{DIGEST}",
        "version": "1.4.2",
        "build": {
            "id": "run-981",
            "number": 981,
            "url": "https://ci.example/runs/981",
            "traceparent": TRACEPARENT,
        },
        "source": {
            "repository": "https://git.example/shop/checkout",
            "commit": "0123456789abcdef0123456789abcdef01234567",
            "ref": "refs/heads/main",
        },
        "createdAt": "2024-05-01T12:00:00Z",
        "provenance": {
            "predicateType": "https://slsa.dev/provenance/v1",
            "builderId": "https://ci.example/builder",
            "subjectDigest": DIGEST,
            "uri": "oci://registry.example.com/shop/checkout:att",
        },
        "checks": {
            "vulnerabilities": {"critical": 0, "high": 1, "medium": 3, "low": 7},
            "tests": {"passed": 120, "failed": 0, "skipped": 2},
            "licences": ["MIT", "Apache-2.0"],
        },
        "compatibility": {"postgres": ["15", "16"]},
        "config": [{"name": "settings", "ref": "k8s://shop/checkout-config#settings.yaml"}],
        "secrets": [{"name": "db", "ref": "vault://shop/checkout/db#password"}],
    }


def with_change(path: str, value: Any) -> dict[str, Any]:
    """The valid manifest with ``path`` (dots, [i] for list items) set, or deleted for DELETE."""
    return edited(valid_manifest(), path, value)


def problems_of(data: Any) -> list[Problem]:
    """The problems ReleaseManifest.from_data reports for ``data``."""
    with pytest.raises(ManifestError) as caught:
        ReleaseManifest.from_data(data, source="m.json")
    return caught.value.problems


def test_valid_manifest_parses() -> None:
    """A complete manifest parses, with camelCase wire names mapped to fields."""
    manifest = ReleaseManifest.from_data(valid_manifest())
    assert manifest.service == "checkout"
    assert manifest.artifact_ref == ArtifactRef(
        "registry.example.com/shop/checkout", DIGEST, "1.4.2"
    )
    assert manifest.build.traceparent == TRACEPARENT
    assert manifest.source.commit == "0123456789abcdef0123456789abcdef01234567"
    assert manifest.provenance is not None
    assert manifest.provenance.subject_digest == DIGEST
    assert manifest.checks.vulnerabilities is not None
    assert manifest.checks.vulnerabilities.medium == 3
    assert manifest.created_at.year == 2024
    assert manifest.compatibility == {"postgres": ["15", "16"]}
    assert manifest.secrets[0].ref == "vault://shop/checkout/db#password"


def test_minimal_manifest_gets_defaults() -> None:
    """Only required fields: optional sections default to empty, not missing."""
    data = valid_manifest()
    for optional in ("apiVersion", "provenance", "checks", "compatibility", "config", "secrets"):
        del data[optional]
    manifest = ReleaseManifest.from_data(data)
    assert manifest.api_version == "promgate/v1"
    assert manifest.provenance is None
    assert manifest.checks.vulnerabilities is None
    assert manifest.secrets == []


def test_to_json_dict_round_trips() -> None:
    """to_json_dict uses wire names and parses back to an equal manifest."""
    manifest = ReleaseManifest.from_data(valid_manifest())
    data = manifest.to_json_dict()
    assert data["createdAt"] == "2024-05-01T12:00:00Z"
    assert data["provenance"]["subjectDigest"] == DIGEST
    assert ReleaseManifest.from_data(json.loads(json.dumps(data))) == manifest


@pytest.mark.parametrize(
    ("field", "value", "path", "fragment"),
    [
        pytest.param("build.traceparent", "00-abc", "build.traceparent", "W3C traceparent",
                     id="traceparent-short"),
        pytest.param("build.traceparent", TRACEPARENT.upper(), "build.traceparent",
                     "W3C traceparent", id="traceparent-upper"),
        pytest.param("build.id", "", "build.id", "at least 1 character", id="build-id-empty"),
        pytest.param("build.number", -1, "build.number", "greater than or equal to 0",
                     id="build-number-negative"),
        pytest.param("source.commit", "xyz", "source.commit", "should match pattern",
                     id="commit-not-hex"),
        pytest.param("source.commit", "abc12", "source.commit", "should match pattern",
                     id="commit-too-short"),
        pytest.param("source.commit", "ABCDEF0", "source.commit", "should match pattern",
                     id="commit-upper"),
        pytest.param("source.repository", "", "source.repository", "at least 1 character",
                     id="source-repo-empty"),
        pytest.param("artifact", "shop/checkout:1.4.2", "artifact", "has no digest",
                     id="artifact-no-digest"),
        pytest.param("artifact", "Shop@" + DIGEST, "artifact", "not an OCI image reference",
                     id="artifact-upper"),
        pytest.param("service", "Checkout", "service", "should match pattern",
                     id="service-upper"),
        pytest.param("service", "-checkout", "service", "should match pattern",
                     id="service-leading-dash"),
        pytest.param("version", "", "version", "at least 1 character", id="version-empty"),
        pytest.param("version", "v" * 129, "version", "at most 128 characters",
                     id="version-too-long"),
        pytest.param("apiVersion", "promgate/v2", "apiVersion", "should match pattern",
                     id="api-version"),
        pytest.param("createdAt", "yesterday", "createdAt", "datetime", id="created-at-bad"),
        pytest.param("provenance.subjectDigest", "sha256:abc", "provenance.subjectDigest",
                     "should match pattern", id="provenance-digest-short"),
        pytest.param("provenance.builderId", "", "provenance.builderId",
                     "at least 1 character", id="provenance-builder-empty"),
        pytest.param("checks.vulnerabilities.critical", -1, "checks.vulnerabilities.critical",
                     "greater than or equal to 0", id="vulns-negative"),
        pytest.param("checks.tests.failed", "many", "checks.tests.failed", "valid integer",
                     id="tests-failed-not-int"),
        pytest.param("compatibility", {"postgres": "15"}, "compatibility.postgres",
                     "valid list", id="compatibility-not-list"),
        pytest.param("secrets[0].ref", "hunter2", "secrets[0].ref",
                     "never the value itself", id="secret-ref-is-value"),
        pytest.param("config[0].ref", "plain", "config[0].ref", "must be a reference",
                     id="config-ref-not-uri"),
        pytest.param("secrets[0].name", "", "secrets[0].name", "at least 1 character",
                     id="secret-name-empty"),
    ],
)  # fmt: skip
def test_invalid_field_names_its_path(field: str, value: Any, path: str, fragment: str) -> None:
    """An invalid field yields exactly one problem naming its field path and the fault."""
    problems = problems_of(with_change(field, value))
    assert [p.path for p in problems] == [path]
    assert fragment in problems[0].message
    assert problems[0].file == "m.json"
    assert problems[0].fix == "see `promgate schema manifest` for the schema"


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("artifact", id="artifact"),
        pytest.param("service", id="service"),
        pytest.param("version", id="version"),
        pytest.param("build", id="build"),
        pytest.param("source", id="source"),
        pytest.param("createdAt", id="created-at"),
        pytest.param("build.id", id="build-id"),
        pytest.param("source.commit", id="source-commit"),
        pytest.param("provenance.builderId", id="provenance-builder"),
        pytest.param("secrets[0].ref", id="secret-ref"),
    ],
)
def test_missing_required_field_names_its_path(path: str) -> None:
    """A missing required field is reported at its path with the fix 'add this field'."""
    problems = problems_of(with_change(path, DELETE))
    assert [(p.path, p.message, p.fix) for p in problems] == [
        (path, "Field required", "add this field")
    ]


@pytest.mark.parametrize(
    ("field", "path"),
    [
        pytest.param("colour", "colour", id="top-level"),
        pytest.param("build.branch", "build.branch", id="in-build"),
        pytest.param("source.sha", "source.sha", id="in-source"),
        pytest.param("checks.coverage", "checks.coverage", id="in-checks"),
        pytest.param("checks.vulnerabilities.unknown", "checks.vulnerabilities.unknown",
                     id="in-vulnerabilities"),
        pytest.param("provenance.predicate_type", "provenance.predicate_type",
                     id="python-name-beside-wire-name"),
        pytest.param("config[0].namespace", "config[0].namespace", id="in-config-item"),
    ],
)  # fmt: skip
def test_unknown_field_is_refused(field: str, path: str) -> None:
    """A field the schema does not know is refused as 'unknown field' at its path."""
    problems = problems_of(with_change(field, "x"))
    assert [(p.path, p.message, p.fix) for p in problems] == [
        (path, "unknown field", "remove it or check its spelling")
    ]


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        pytest.param(
            {"name": "db", "value": "hunter2"},
            [("secrets[0].ref", "Field required"), ("secrets[0].value", "unknown field")],
            id="value-field",
        ),
        pytest.param(
            {"name": "db", "ref": "hunter2"},
            [
                (
                    "secrets[0].ref",
                    "must be a reference like k8s://namespace/name#key or vault://path#key, "
                    "never the value itself",
                )
            ],
            id="value-as-ref",
        ),
        pytest.param(
            {"name": "db", "ref": "vault://p#k", "value": "hunter2"},
            [("secrets[0].value", "unknown field")],
            id="ref-and-value",
        ),
    ],
)
def test_secret_value_is_refused_without_echoing_it(
    secret: dict[str, str], expected: list[tuple[str, str]]
) -> None:
    """A secret given as a value is refused, and the value appears nowhere in the error."""
    data = valid_manifest()
    data["secrets"] = [secret]
    with pytest.raises(ManifestError) as caught:
        ReleaseManifest.from_data(data, source="m.json")
    error = caught.value
    assert sorted((p.path, p.message) for p in error.problems) == expected
    assert "hunter2" not in str(error)
    assert "hunter2" not in repr(error.problems)
    assert "hunter2" not in repr(error.args)


def test_several_problems_are_all_reported() -> None:
    """Every invalid field is reported at once, not just the first."""
    data = valid_manifest()
    data["service"] = "Bad Name"
    data["build"]["traceparent"] = "nope"
    data["source"]["commit"] = "zzz"
    data["extra"] = 1
    paths = sorted(p.path for p in problems_of(data))
    assert paths == ["build.traceparent", "extra", "service", "source.commit"]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param([], id="list"),
        pytest.param("manifest", id="string"),
        pytest.param(None, id="null"),
    ],
)
def test_non_object_is_refused(data: Any) -> None:
    """A manifest that is not a JSON object gives one root problem."""
    problems = problems_of(data)
    assert [(p.path, p.message, p.file) for p in problems] == [
        ("", "must be a JSON object", "m.json")
    ]


def test_load_reads_a_valid_file(tmp_path: Path) -> None:
    """load() reads and validates a manifest file."""
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(valid_manifest()), encoding="utf-8")
    assert ReleaseManifest.load(path) == ReleaseManifest.from_data(valid_manifest())


@pytest.mark.parametrize(
    ("content", "expected_path", "expected_message"),
    [
        pytest.param('{\n  "service": \n}', "line 3 column 1", "Expecting value", id="bad-json"),
        pytest.param(None, "", "No such file or directory", id="missing-file"),
        pytest.param(json.dumps({"service": "x"}), "artifact", "Field required", id="invalid"),
    ],
)
def test_load_reports_file_problems(
    tmp_path: Path, content: str | None, expected_path: str, expected_message: str
) -> None:
    """load() names the file and where in it the problem is."""
    path = tmp_path / "manifest.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ManifestError) as caught:
        ReleaseManifest.load(path)
    matching = [p for p in caught.value.problems if p.path == expected_path]
    assert matching, caught.value.problems
    assert expected_message in matching[0].message
    assert matching[0].file == str(path)


def test_schema_lists_required_wire_fields() -> None:
    """The JSON Schema requires artifact and the other required fields by wire name."""
    schema = manifest_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "https://promgate.dev/schemas/manifest-v1.json"
    assert schema["type"] == "object"
    assert "artifact" in schema["required"]
    assert set(schema["required"]) == {
        "service",
        "artifact",
        "version",
        "build",
        "source",
        "createdAt",
    }
    assert schema["additionalProperties"] is False
    assert "createdAt" in schema["properties"]
    assert "created_at" not in schema["properties"]


def test_schema_accepts_the_valid_manifest_and_refuses_a_bad_one() -> None:
    """A JSON Schema validator accepts the valid manifest and refuses one without artifact."""
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema is not installed in the venv; schema validation skipped"
    )
    schema = manifest_schema()
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema)
    assert list(validator.iter_errors(valid_manifest())) == []
    broken = copy.deepcopy(valid_manifest())
    del broken["artifact"]
    messages = [e.message for e in validator.iter_errors(broken)]
    assert messages == ["'artifact' is a required property"]


IDENTITY_FIELDS = [
    "service",
    "artifact",
    "version",
    "build.id",
    "build.url",
    "build.traceparent",
    "source.repository",
    "source.commit",
    "source.ref",
    "provenance.builderId",
    "provenance.subjectDigest",
    "provenance.uri",
    "config[0].name",
    "secrets[0].ref",
]


def value_at(data: Any, path: str) -> Any:
    """The value at ``path`` (dots, [i] for list items) of ``data``."""
    for part in path.replace("]", "").replace("[", ".").split("."):
        data = data[int(part)] if part.isdigit() else data[part]
    return data


@pytest.mark.parametrize("field", IDENTITY_FIELDS)
@pytest.mark.parametrize(
    ("char", "named"),
    [
        pytest.param("\x00", "NUL", id="nul"),
        pytest.param("\n", "a newline", id="newline"),
        pytest.param("\r", "a carriage return", id="carriage-return"),
    ],
)
@pytest.mark.parametrize("where", ["end", "middle"])
def test_identity_fields_refuse_nul_and_line_breaks(
    field: str, char: str, named: str, where: str
) -> None:
    """An identity field with NUL, CR or LF is refused at its path, naming the character."""
    original = value_at(valid_manifest(), field)
    changed = original + char if where == "end" else original[:3] + char + original[3:]
    problems = problems_of(with_change(field, changed))
    assert [p.path for p in problems] == [field]
    assert f"contains {named}" in problems[0].message
    assert "must be one line" in problems[0].message


def test_sha512_digests_are_accepted_for_artifact_and_provenance() -> None:
    """sha512 is a registered OCI digest algorithm for the artifact and its provenance."""
    sha512 = "sha512:" + "cd" * 64
    data = with_change("artifact", f"registry.example.com/shop/checkout:1.4.2@{sha512}")
    data["provenance"]["subjectDigest"] = sha512
    manifest = ReleaseManifest.from_data(data)
    assert manifest.artifact_ref.digest == sha512
    assert manifest.provenance is not None and manifest.provenance.subject_digest == sha512


def test_schema_bounds_every_string_list_and_mapping() -> None:
    """No string, list or mapping of the manifest can grow without a limit the schema states."""
    assert unbounded(manifest_schema()) == []


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        ("build.url", "https://ci.example/" + "x" * 900_000, f"at most {MAX_URL} characters"),
        ("build.id", "r" * 257, "at most 256 characters"),
        ("source.repository", "https://git.example/" + "r" * MAX_URL, "at most"),
        ("checks.licences", ["MIT"] * (MAX_ITEMS + 1), f"at most {MAX_ITEMS} items"),
        ("compatibility.postgres", ["15"] * (MAX_ITEMS + 1), f"at most {MAX_ITEMS} items"),
        ("secrets", [{"name": "n", "ref": "vault://a#b"}] * (MAX_ITEMS + 1), "at most"),
        ("build.number", 2**63, "less than or equal to 9223372036854775807"),
    ],
)
def test_oversized_values_are_refused_at_their_path(path: str, value: Any, fragment: str) -> None:
    """A 900 KB build URL, too many items or a number beyond 64 bits is refused, by path."""
    problems = problems_of(with_change(path, value))
    assert [p.path for p in problems] == [path]
    assert fragment in problems[0].message


def test_oversized_mappings_are_refused() -> None:
    data = with_change("compatibility", {f"c{i}": ["1"] for i in range(MAX_ITEMS + 1)})
    assert [p.path for p in problems_of(data)] == ["compatibility"]


CREDENTIALS = {
    "build.url": "https://ci-bot:ghp_s3cret@ci.example/runs/981",
    "source.repository": "https://x-access-token:ghs_s3cret@git.example/shop/checkout",
    "provenance.builderId": "https://bot:s3cret@ci.example/builder",
    "provenance.uri": "oci://robot:s3cret@registry.example.com/shop/checkout:att",
    "secrets[0].ref": "vault://approle:s3cret@vault.example/shop/db#password",
}


def test_credentials_are_removed_from_every_url_field() -> None:
    """URL userinfo never survives validation, and the fields it was removed from are named."""
    data = valid_manifest()
    for path, url in CREDENTIALS.items():
        data = edited(data, path, url)
    assert sorted(credential_paths(data)) == sorted(CREDENTIALS)
    stored = ReleaseManifest.from_data(data).to_json_dict()
    assert "s3cret" not in json.dumps(stored)
    assert stored["build"]["url"] == "https://ci.example/runs/981"
    assert stored["source"]["repository"] == "https://git.example/shop/checkout"
    assert stored["secrets"][0]["ref"] == "vault://vault.example/shop/db#password"
    assert credential_paths(valid_manifest()) == []


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [
        ("[" * 5000 + "]" * 5000, "", "nested too deeply"),
        ('{"build": {"number": ' + "7" * 5000 + "}}", "build.number", "5000 digits"),
    ],
)
def test_load_refuses_hostile_json_naming_file_and_path(
    tmp_path: Path, text: str, path: str, fragment: str
) -> None:
    file = tmp_path / "m.json"
    file.write_text(text)
    with pytest.raises(ManifestError) as caught:
        ReleaseManifest.load(file)
    [problem] = caught.value.problems
    assert (problem.path, problem.file) == (path, str(file))
    assert fragment in problem.message


def test_load_manifest_names_the_fields_whose_credentials_it_removed(tmp_path: Path) -> None:
    file = tmp_path / "m.json"
    file.write_text(json.dumps(with_change("build.url", CREDENTIALS["build.url"])))
    manifest, stripped = load_manifest(file)
    assert stripped == ["build.url"]
    assert manifest.build.url == "https://ci.example/runs/981"
