"""Credentials are removed from URLs and masked in free text."""

from __future__ import annotations

import pytest

from sidecar.redaction import REDACTED, has_userinfo, redact, strip_userinfo


@pytest.mark.parametrize(
    ("url", "stripped"),
    [
        ("https://ci.example/runs/1", "https://ci.example/runs/1"),
        ("https://user:pw@ci.example/runs/1", "https://ci.example/runs/1"),
        ("https://token@github.com/org/repo.git", "https://github.com/org/repo.git"),
        ("https://u:p@ss@host:8443/x?q=a@b", "https://host:8443/x?q=a@b"),
        ("git+ssh://git@github.com/org/repo", "git+ssh://github.com/org/repo"),
        ("HTTP://U:P@[::1]:80/", "HTTP://[::1]:80/"),
        ("https://host/path@v1", "https://host/path@v1"),
        ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
        ("not a url", "not a url"),
    ],
)
def test_strip_userinfo_drops_only_the_authority_credentials(url: str, stripped: str) -> None:
    assert strip_userinfo(url) == stripped
    assert has_userinfo(url) == (url != stripped)


def test_redact_masks_secrets_and_userinfo_in_text() -> None:
    text = "bad request from https://hook:s3cret@h.example/t; I was told s3cret and p@ss"
    redacted = redact(text, ["s3cret", "p@ss", ""])
    assert "s3cret" not in redacted and "p@ss" not in redacted
    assert "https://h.example/t" in redacted
    assert redacted.count(REDACTED) == 2
