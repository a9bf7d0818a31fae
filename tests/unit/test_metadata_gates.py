"""Metadata gates: vulnerabilities, provenance, required fields, tests and stack."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.domain.manifest import ReleaseManifest
from sidecar.domain.metadata_gates import _version_matches, metadata_failures
from sidecar.domain.policy import MetadataGates

DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32


def manifest_data(**overrides: Any) -> dict[str, Any]:
    """A manifest that passes every gate below; ``overrides`` replace top-level keys."""
    data: dict[str, Any] = {
        "service": "checkout",
        "artifact": f"registry.example.com/shop/checkout:1.4.2@{DIGEST}",
        "version": "1.4.2",
        "build": {"id": "run-1", "url": "https://ci.example/runs/1"},
        "source": {"repository": "https://git.example/shop/checkout", "commit": "0123abc"},
        "createdAt": "2024-05-01T12:00:00Z",
        "provenance": {"builderId": "https://ci.example/builder", "subjectDigest": DIGEST},
        "checks": {
            "vulnerabilities": {"critical": 0, "high": 2, "medium": 5, "low": 9},
            "tests": {"passed": 10, "failed": 0, "skipped": 1},
        },
        "compatibility": {"postgres": ["15", "16.1"], "redis": ["7"]},
    }
    data.update(overrides)
    for key in [k for k, v in data.items() if v is None]:
        del data[key]
    return data


def manifest(**overrides: Any) -> ReleaseManifest:
    """The manifest of :func:`manifest_data`, validated."""
    return ReleaseManifest.from_data(manifest_data(**overrides))


def gates(**fields: Any) -> MetadataGates:
    """Metadata gates from their wire names."""
    return MetadataGates.model_validate(fields)


STRICT = {
    "maxVulnerabilities": {"critical": 0, "high": 2, "medium": 5, "low": 9},
    "requireProvenance": True,
    "requiredFields": ["build.url", "source.commit", "provenance.builderId"],
    "requirePassingTests": True,
    "stack": {"postgres": "15.4", "redis": "7"},
}


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({}, id="no-gates"),
        pytest.param(STRICT, id="every-gate-at-its-limit"),
    ],
)
def test_passing_manifest_has_no_failures(spec: dict[str, Any]) -> None:
    """A manifest that meets every rule gives an empty list."""
    assert metadata_failures(manifest(), gates(**spec)) == []


@pytest.mark.parametrize(
    ("limits", "found", "expected"),
    [
        pytest.param({"critical": 0}, {"critical": 0, "high": 50}, [], id="only-limited-severity"),
        pytest.param(
            {"critical": 0},
            {"critical": 1},
            [
                "checks.vulnerabilities.critical is 1, above the stage's limit of 0: "
                "fix or accept them, then rebuild"
            ],
            id="critical-over",
        ),
        pytest.param({"high": 3}, {"high": 3}, [], id="at-limit-passes"),
        pytest.param(
            {"critical": 0, "high": 1, "medium": 2, "low": 3},
            {"critical": 1, "high": 2, "medium": 3, "low": 4},
            [
                "checks.vulnerabilities.critical is 1, above the stage's limit of 0: "
                "fix or accept them, then rebuild",
                "checks.vulnerabilities.high is 2, above the stage's limit of 1: "
                "fix or accept them, then rebuild",
                "checks.vulnerabilities.medium is 3, above the stage's limit of 2: "
                "fix or accept them, then rebuild",
                "checks.vulnerabilities.low is 4, above the stage's limit of 3: "
                "fix or accept them, then rebuild",
            ],
            id="every-severity-over-in-severity-order",
        ),
        pytest.param(
            {"low": 0},
            {"low": 1, "critical": 0},
            [
                "checks.vulnerabilities.low is 1, above the stage's limit of 0: "
                "fix or accept them, then rebuild"
            ],
            id="low-over",
        ),
    ],
)
def test_vulnerability_limits(
    limits: dict[str, int], found: dict[str, int], expected: list[str]
) -> None:
    """Each severity over its stage limit is one failure; others are not checked."""
    result = metadata_failures(
        manifest(checks={"vulnerabilities": found}), gates(maxVulnerabilities=limits)
    )
    assert result == expected


def test_missing_scan_fails_when_vulnerabilities_are_limited() -> None:
    """A stage that limits vulnerabilities refuses a manifest without scan counts."""
    assert metadata_failures(manifest(checks={}), gates(maxVulnerabilities={"critical": 0})) == [
        "checks.vulnerabilities is missing, but this stage limits vulnerabilities: "
        "add the image scan's counts to the manifest"
    ]


def test_missing_scan_is_fine_without_limits() -> None:
    """Without vulnerability limits a missing scan is not a failure."""
    assert metadata_failures(manifest(checks={}), gates()) == []


@pytest.mark.parametrize(
    ("required", "provenance", "expected"),
    [
        pytest.param(False, None, [], id="not-required-missing"),
        pytest.param(
            False,
            {"builderId": "b", "subjectDigest": OTHER_DIGEST},
            [],
            id="not-required-mismatch-ignored",
        ),
        pytest.param(True, {"builderId": "b", "subjectDigest": DIGEST}, [], id="required-match"),
        pytest.param(
            True,
            None,
            [
                "provenance is missing, but this stage requires SLSA provenance: "
                "attach the build's provenance summary to the manifest"
            ],
            id="required-missing",
        ),
        pytest.param(
            True,
            {"builderId": "b", "subjectDigest": OTHER_DIGEST},
            [
                f"provenance.subjectDigest {OTHER_DIGEST} does not match the artifact's digest "
                f"{DIGEST}: the provenance belongs to another image"
            ],
            id="required-mismatch",
        ),
    ],
)
def test_provenance(required: bool, provenance: dict[str, str] | None, expected: list[str]) -> None:
    """Provenance, when required, must be present and name the artifact's digest."""
    result = metadata_failures(manifest(provenance=provenance), gates(requireProvenance=required))
    assert result == expected


@pytest.mark.parametrize(
    ("paths", "overrides", "missing"),
    [
        pytest.param(["build.url", "source.commit"], {}, [], id="present"),
        pytest.param(["build.number"], {}, ["build.number"], id="optional-absent"),
        pytest.param(
            ["source.ref", "build.url"],
            {"build": {"id": "run-1"}},
            ["source.ref", "build.url"],
            id="two-missing-in-order",
        ),
        pytest.param(["provenance.builderId"], {}, [], id="camel-case-wire-name"),
        pytest.param(
            ["provenance.builder_id"], {}, ["provenance.builder_id"], id="python-name-not-found"
        ),
        pytest.param(["checks.licences"], {}, ["checks.licences"], id="empty-list-is-missing"),
        pytest.param(["compatibility.postgres"], {}, [], id="dict-key"),
        pytest.param(["secrets"], {}, ["secrets"], id="empty-secrets"),
        pytest.param(["build.url.host"], {}, ["build.url.host"], id="path-through-string"),
        pytest.param(["checks.tests.failed"], {}, [], id="zero-is-present"),
    ],
)
def test_required_fields(paths: list[str], overrides: dict[str, Any], missing: list[str]) -> None:
    """Each dotted path missing or empty in the manifest's JSON is one failure."""
    result = metadata_failures(manifest(**overrides), gates(requiredFields=paths))
    assert result == [
        f"{path} is required by this stage but missing or empty in the manifest" for path in missing
    ]


@pytest.mark.parametrize(
    ("required", "tests", "expected"),
    [
        pytest.param(False, {"failed": 3}, [], id="not-required"),
        pytest.param(True, {"passed": 5, "failed": 0}, [], id="all-pass"),
        pytest.param(True, {"passed": 0, "failed": 0, "skipped": 4}, [], id="only-skipped"),
        pytest.param(
            True,
            {"passed": 5, "failed": 2},
            ["checks.tests.failed is 2; this stage requires no failed tests"],
            id="failed",
        ),
        pytest.param(
            True,
            None,
            ["checks.tests is missing, but this stage requires passing tests"],
            id="missing",
        ),
    ],
)
def test_passing_tests(required: bool, tests: dict[str, int] | None, expected: list[str]) -> None:
    """With requirePassingTests, test results must be present and show no failures."""
    checks = {} if tests is None else {"tests": tests}
    result = metadata_failures(manifest(checks=checks), gates(requirePassingTests=required))
    assert result == expected


@pytest.mark.parametrize(
    ("running", "supported", "matches"),
    [
        pytest.param("15", "15", True, id="same"),
        pytest.param("15.4", "15", True, id="minor-of-supported-major"),
        pytest.param("15.4.2", "15", True, id="patch-of-supported-major"),
        pytest.param("15.4.2", "15.4", True, id="patch-of-supported-minor"),
        pytest.param("15", "15.4", False, id="major-does-not-match-minor"),
        pytest.param("15.4", "15.5", False, id="other-minor"),
        pytest.param("150", "15", False, id="prefix-without-dot"),
        pytest.param("15-alpine", "15", False, id="suffix-without-dot"),
        pytest.param("1", "15", False, id="shorter"),
    ],
)
def test_version_matches(running: str, supported: str, matches: bool) -> None:
    """A supported version matches itself and anything below it after a dot."""
    assert _version_matches(running, supported) is matches


@pytest.mark.parametrize(
    ("stack", "compatibility", "expected"),
    [
        pytest.param({"postgres": "15.4"}, {"postgres": ["15"]}, [], id="major-covers-minor"),
        pytest.param({"postgres": "16"}, {"postgres": ["15", "16"]}, [], id="any-of-list"),
        pytest.param(
            {"postgres": "16"},
            {"postgres": ["15"]},
            ["the release supports postgres ['15'], but this stage runs 16"],
            id="unsupported",
        ),
        pytest.param(
            {"postgres": "15"},
            {"postgres": ["15.4"]},
            ["the release supports postgres ['15.4'], but this stage runs 15"],
            id="minor-does-not-cover-major",
        ),
        pytest.param(
            {"redis": "7", "postgres": "15"},
            {},
            [
                "compatibility.postgres is missing; this stage runs postgres 15: "
                "declare the versions the release supports",
                "compatibility.redis is missing; this stage runs redis 7: "
                "declare the versions the release supports",
            ],
            id="missing-sorted-by-component",
        ),
        pytest.param(
            {"postgres": "15"},
            {"postgres": []},
            ["the release supports postgres [], but this stage runs 15"],
            id="empty-list",
        ),
        pytest.param({}, {"postgres": ["9"]}, [], id="no-stack"),
    ],
)
def test_stack_compatibility(
    stack: dict[str, str], compatibility: dict[str, list[str]], expected: list[str]
) -> None:
    """Every component the stage runs must be among the versions the release supports."""
    result = metadata_failures(manifest(compatibility=compatibility), gates(stack=stack))
    assert result == expected


def test_all_failures_are_reported_in_rule_order() -> None:
    """A manifest breaking every rule gets one failure per rule, in the documented order."""
    bad = manifest(
        provenance=None,
        checks={"vulnerabilities": {"critical": 1}, "tests": {"failed": 1}},
        compatibility={},
        build={"id": "run-1"},
    )
    result = metadata_failures(bad, gates(**STRICT))
    assert [r.split(" ")[0] for r in result] == [
        "checks.vulnerabilities.critical",
        "provenance",
        "build.url",
        "provenance.builderId",
        "checks.tests.failed",
        "compatibility.postgres",
        "compatibility.redis",
    ]
