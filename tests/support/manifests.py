"""A factory of valid release manifests, so each test states only what it changes."""

from __future__ import annotations

from typing import Any


def manifest(
    service: str = "demo",
    digest_char: str = "a",
    tag: str | None = "1.0.0",
    version: str = "1.0.0",
    **overrides: Any,
) -> dict[str, Any]:
    """A manifest as JSON data for ``service`` at digest ``sha256:<digest_char * 64>``.

    ``digest_char`` is one hex character; ``tag=None`` leaves the reference untagged.
    Each override replaces a top-level field (use the wire names, e.g. ``createdAt``);
    an override of ``None`` removes the field.
    """
    digest = "sha256:" + digest_char * 64
    tagged = f":{tag}" if tag else ""
    data: dict[str, Any] = {
        "apiVersion": "promgate/v1",
        "service": service,
        "artifact": f"registry.example.com/{service}{tagged}@{digest}",
        "version": version,
        "build": {"id": f"run-{version}", "number": 1, "url": "https://ci.example.com/run/1"},
        "source": {
            "repository": f"https://git.example.com/{service}",
            "commit": "0123456789abcdef0123456789abcdef01234567",
            "ref": "refs/heads/main",
        },
        "createdAt": "2024-05-01T12:00:00Z",
        "provenance": {
            "predicateType": "https://slsa.dev/provenance/v1",
            "builderId": "https://ci.example.com/builder",
            "subjectDigest": digest,
        },
        "checks": {
            "vulnerabilities": {"critical": 0, "high": 0, "medium": 1, "low": 3},
            "tests": {"passed": 120, "failed": 0, "skipped": 2},
            "licences": ["Apache-2.0"],
        },
        "compatibility": {"postgres": ["15", "16"]},
        "config": [{"name": "settings", "ref": f"k8s://default/{service}-config#settings"}],
        "secrets": [{"name": "db-password", "ref": f"vault://secret/{service}#db"}],
    }
    for key, value in overrides.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data
