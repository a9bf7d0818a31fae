"""Metadata gates: rules on the release manifest, checked before any traffic moves."""

from __future__ import annotations

from typing import Any

from sidecar.domain.manifest import ReleaseManifest
from sidecar.domain.policy import MetadataGates

_SEVERITIES = ("critical", "high", "medium", "low")


def metadata_failures(manifest: ReleaseManifest, gates: MetadataGates) -> list[str]:
    """Every rule the manifest breaks, each as a sentence that says what and how to fix it."""
    failures: list[str] = []
    failures += _vulnerability_failures(manifest, gates)
    failures += _provenance_failures(manifest, gates)
    failures += _required_field_failures(manifest, gates)
    failures += _test_failures(manifest, gates)
    failures += _stack_failures(manifest, gates)
    return failures


def _vulnerability_failures(manifest: ReleaseManifest, gates: MetadataGates) -> list[str]:
    if not gates.max_vulnerabilities:
        return []
    found = manifest.checks.vulnerabilities
    if found is None:
        return [
            "checks.vulnerabilities is missing, but this stage limits vulnerabilities: "
            "add the image scan's counts to the manifest"
        ]
    failures = []
    for severity in _SEVERITIES:
        limit = gates.max_vulnerabilities.get(severity)  # type: ignore[call-overload]
        count = getattr(found, severity)
        if limit is not None and count > limit:
            failures.append(
                f"checks.vulnerabilities.{severity} is {count}, above the stage's limit of "
                f"{limit}: fix or accept them, then rebuild"
            )
    return failures


def _provenance_failures(manifest: ReleaseManifest, gates: MetadataGates) -> list[str]:
    if not gates.require_provenance:
        return []
    if manifest.provenance is None:
        return [
            "provenance is missing, but this stage requires SLSA provenance: "
            "attach the build's provenance summary to the manifest"
        ]
    if manifest.provenance.subject_digest != manifest.artifact_ref.digest:
        return [
            f"provenance.subjectDigest {manifest.provenance.subject_digest} does not match "
            f"the artifact's digest {manifest.artifact_ref.digest}: the provenance belongs "
            "to another image"
        ]
    return []


def _required_field_failures(manifest: ReleaseManifest, gates: MetadataGates) -> list[str]:
    data = manifest.to_json_dict()
    return [
        f"{path} is required by this stage but missing or empty in the manifest"
        for path in gates.required_fields
        if _lookup(data, path) in (None, "", [], {})
    ]


def _test_failures(manifest: ReleaseManifest, gates: MetadataGates) -> list[str]:
    if not gates.require_passing_tests:
        return []
    tests = manifest.checks.tests
    if tests is None:
        return ["checks.tests is missing, but this stage requires passing tests"]
    if tests.failed:
        return [f"checks.tests.failed is {tests.failed}; this stage requires no failed tests"]
    return []


def _stack_failures(manifest: ReleaseManifest, gates: MetadataGates) -> list[str]:
    failures = []
    for component, running in sorted(gates.stack.items()):
        supported = manifest.compatibility.get(component)
        if supported is None:
            failures.append(
                f"compatibility.{component} is missing; this stage runs {component} {running}: "
                "declare the versions the release supports"
            )
        elif not any(_version_matches(running, v) for v in supported):
            failures.append(
                f"the release supports {component} {supported}, but this stage runs {running}"
            )
    return failures


def _version_matches(running: str, supported: str) -> bool:
    """``15`` matches ``15`` and ``15.4``; ``15.4`` does not match ``15.5``."""
    return running == supported or running.startswith(supported + ".")


def _lookup(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data
