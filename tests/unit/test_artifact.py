"""ArtifactRef: the OCI reference grammar, the digest requirement, printing."""

from __future__ import annotations

import pytest

from sidecar.domain.artifact import HOW_TO_GET_DIGEST, ArtifactRef
from sidecar.errors import ArtifactReferenceError, InputError

HEX = "0123456789abcdef" * 4
DIGEST = f"sha256:{HEX}"


@pytest.mark.parametrize(
    ("text", "repository", "tag"),
    [
        pytest.param(f"app@{DIGEST}", "app", None, id="bare-name-no-tag"),
        pytest.param(f"app:1.4.2@{DIGEST}", "app", "1.4.2", id="bare-name-tag"),
        pytest.param(f"shop/checkout:v2@{DIGEST}", "shop/checkout", "v2", id="nested-no-host"),
        pytest.param(
            f"registry.example.com/shop/payments/api:2024.01_rc-1@{DIGEST}",
            "registry.example.com/shop/payments/api",
            "2024.01_rc-1",
            id="host-deep-path-tag",
        ),
        pytest.param(
            f"registry.example.com:5000/team/app:1.0@{DIGEST}",
            "registry.example.com:5000/team/app",
            "1.0",
            id="host-port-tag",
        ),
        pytest.param(
            f"localhost:5000/app@{DIGEST}", "localhost:5000/app", None, id="localhost-port-no-tag"
        ),
        pytest.param(f"[::1]:5000/app@{DIGEST}", "[::1]:5000/app", None, id="ipv6-host"),
        pytest.param(
            f"ghcr.io/my-org/my__svc.x:latest@{DIGEST}",
            "ghcr.io/my-org/my__svc.x",
            "latest",
            id="separators-in-path",
        ),
        pytest.param(f"  app:1@{DIGEST}\n", "app", "1", id="surrounding-whitespace-stripped"),
        pytest.param(f"app:{'t' * 128}@{DIGEST}", "app", "t" * 128, id="tag-128-chars"),
    ],
)
def test_parse_valid_reference(text: str, repository: str, tag: str | None) -> None:
    """A valid digest-pinned reference splits into repository, tag and digest."""
    ref = ArtifactRef.parse(text)
    assert ref == ArtifactRef(repository=repository, digest=DIGEST, tag=tag)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param(f"Shop/App@{DIGEST}", "is not an OCI image reference", id="upper-case-path"),
        pytest.param(f"App@{DIGEST}", "lower-case repository", id="upper-case-single-name"),
        pytest.param(
            f"registry.example/Shop/app@{DIGEST}",
            "is not an OCI image reference",
            id="upper-case-after-host",
        ),
        pytest.param(f"app:-x@{DIGEST}", "is not an OCI image reference", id="tag-leading-dash"),
        pytest.param(f"app:.x@{DIGEST}", "is not an OCI image reference", id="tag-leading-dot"),
        pytest.param(f"app:a+b@{DIGEST}", "is not an OCI image reference", id="tag-plus"),
        pytest.param(f"app:{'t' * 129}@{DIGEST}", "is not an OCI image reference", id="tag-129"),
        pytest.param(f"app:@{DIGEST}", "is not an OCI image reference", id="tag-empty"),
        pytest.param(f"app:vé1@{DIGEST}", "is not an OCI image reference", id="tag-non-ascii"),
        pytest.param(f"app--/x@{DIGEST}", "is not an OCI image reference", id="trailing-sep"),
        pytest.param(f"app @{DIGEST}", "is not an OCI image reference", id="inner-space"),
        pytest.param(f"app:1\t@{DIGEST}", "is not an OCI image reference", id="inner-tab"),
        pytest.param(f"app@sha256:{HEX[:32]} {HEX[32:]}", "not an OCI", id="space-in-digest"),
        pytest.param(
            f"app@sha512:{HEX * 2}", "expected sha256: followed by 64", id="wrong-algorithm"
        ),
        pytest.param(f"app@sha256:{HEX[:63]}", "expected sha256: followed by 64", id="hex-63"),
        pytest.param(f"app@sha256:{HEX}0", "expected sha256: followed by 64", id="hex-65"),
        pytest.param(
            f"app@sha256:{HEX.upper()}", "64 lower-case hex characters", id="upper-case-hex"
        ),
        pytest.param(f"app@sha256:{'g' * 64}", "expected sha256: followed by 64", id="non-hex"),
        pytest.param(f"app@{HEX}", "not an OCI image reference", id="digest-no-algorithm"),
        pytest.param(
            f"x/{'a' * 300}@{DIGEST}", "302 characters long; the limit is 255", id="name-too-long"
        ),
    ],
)
def test_parse_invalid_reference(text: str, fragment: str) -> None:
    """A malformed reference raises ArtifactReferenceError saying what is wrong."""
    with pytest.raises(ArtifactReferenceError) as caught:
        ArtifactRef.parse(text)
    assert fragment in str(caught.value)
    assert isinstance(caught.value, InputError)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("app", id="bare-name"),
        pytest.param("app:1.4.2", id="tag-only"),
        pytest.param("registry.example.com:5000/team/app:1.0", id="host-port-tag"),
        pytest.param("localhost:5000/app", id="host-port-no-tag"),
    ],
)
def test_parse_refuses_reference_without_digest(text: str) -> None:
    """A reference without a digest is refused with a message on how to get the digest."""
    with pytest.raises(ArtifactReferenceError) as caught:
        ArtifactRef.parse(text)
    message = str(caught.value)
    assert f"{text!r} has no digest" in message
    assert HOW_TO_GET_DIGEST in message
    assert "crane digest IMAGE:TAG" in message
    assert "IMAGE:TAG@sha256:<64 hex>" in message


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="spaces"),
        pytest.param("\n\t", id="newline-tab"),
        pytest.param(None, id="none"),
        pytest.param(42, id="not-a-string"),
    ],
)
def test_parse_refuses_empty_reference(text: object) -> None:
    """An empty or non-string reference is refused and says how to get a pinned one."""
    with pytest.raises(ArtifactReferenceError) as caught:
        ArtifactRef.parse(text)  # type: ignore[arg-type]
    assert str(caught.value) == "artifact reference is empty; " + HOW_TO_GET_DIGEST


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f"app@{DIGEST}", id="no-tag"),
        pytest.param(f"app:1.4.2@{DIGEST}", id="tag"),
        pytest.param(f"registry.example.com:5000/team/app:1.0@{DIGEST}", id="host-port"),
        pytest.param(f"[::1]:5000/a/b/c@{DIGEST}", id="ipv6-nested"),
    ],
)
def test_str_round_trips(text: str) -> None:
    """str() prints the canonical form that parses back to an equal reference."""
    ref = ArtifactRef.parse(text)
    assert str(ref) == text
    assert ArtifactRef.parse(str(ref)) == ref


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        pytest.param(ArtifactRef("app", DIGEST, "1"), "app:1@" + DIGEST, id="tag"),
        pytest.param(ArtifactRef("app", DIGEST), "app@" + DIGEST, id="none-tag"),
        pytest.param(ArtifactRef("app", DIGEST, ""), "app@" + DIGEST, id="empty-tag-omitted"),
    ],
)
def test_str_of_constructed_reference(ref: ArtifactRef, expected: str) -> None:
    """A reference built directly prints its tag only when there is one."""
    assert str(ref) == expected


@pytest.mark.parametrize(
    ("digest", "expected"),
    [
        pytest.param(DIGEST, "0123456789ab", id="first-12-hex"),
        pytest.param("sha256:" + "f" * 64, "ffffffffffff", id="all-f"),
    ],
)
def test_short_digest(digest: str, expected: str) -> None:
    """short_digest is the first 12 hex characters without the algorithm prefix."""
    assert ArtifactRef("app", digest).short_digest == expected
