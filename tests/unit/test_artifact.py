"""ArtifactRef: the OCI reference grammar, normalization, the digest requirement, printing."""

from __future__ import annotations

import pytest

from sidecar.domain.artifact import HOW_TO_GET_DIGEST, ArtifactRef, normalize_repository
from sidecar.errors import ArtifactReferenceError, InputError

HEX = "0123456789abcdef" * 4
DIGEST = f"sha256:{HEX}"
SHA512 = f"sha512:{HEX * 2}"


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
            f"app@sha384:{HEX}{HEX[:32]}",
            "'sha384', which is not registered; use sha256:<64 lower-case hex> or "
            "sha512:<128 lower-case hex>",
            id="unregistered-algorithm",
        ),
        pytest.param(f"app@md5:{HEX[:32]}", "'md5', which is not registered", id="md5"),
        pytest.param(f"app@SHA256:{HEX}", "'SHA256', which is not registered", id="upper-alg"),
        pytest.param(f"app@sha512:{HEX}", "expected sha512: followed by 128", id="sha512-64"),
        pytest.param(f"app@sha512:{HEX * 2}0", "expected sha512: followed by 128", id="sha512-129"),
        pytest.param(
            f"app@sha512:{(HEX * 2).upper()}", "128 lower-case hex", id="sha512-upper-hex"
        ),
        pytest.param(f"app@sha256:{HEX[:63]}", "expected sha256: followed by 64", id="hex-63"),
        pytest.param(f"app@sha256:{HEX}0", "expected sha256: followed by 64", id="hex-65"),
        pytest.param(
            f"app@sha256:{HEX.upper()}", "64 lower-case hex characters", id="upper-case-hex"
        ),
        pytest.param(f"app@sha256:{'g' * 64}", "expected sha256: followed by 64", id="non-hex"),
        pytest.param(f"app@{HEX}", "not an OCI image reference", id="digest-no-algorithm"),
        pytest.param(
            f"x/{'a' * 300}@{DIGEST}",
            "312 characters long once normalized (docker.io/x/aaa",
            id="name-too-long",
        ),
        pytest.param(
            f"{'a' * 245}@{DIGEST}",
            "263 characters long once normalized (docker.io/library/aaa",
            id="name-too-long-with-library",
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
        pytest.param(f"nginx:1.25@{SHA512}", id="sha512"),
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
        pytest.param(SHA512, "0123456789ab", id="sha512"),
    ],
)
def test_short_digest(digest: str, expected: str) -> None:
    """short_digest is the first 12 hex characters without the algorithm prefix."""
    assert ArtifactRef("app", digest).short_digest == expected


def test_parse_accepts_a_sha512_digest() -> None:
    """sha512 is a registered OCI digest algorithm, so a sha512-pinned image is accepted."""
    ref = ArtifactRef.parse(f"registry.example.com/shop/app:1.0@{SHA512}")
    assert (ref.repository, ref.tag, ref.digest) == ("registry.example.com/shop/app", "1.0", SHA512)


@pytest.mark.parametrize(
    ("written", "normalized"),
    [
        pytest.param("nginx", "docker.io/library/nginx", id="official-image"),
        pytest.param("library/nginx", "docker.io/library/nginx", id="library-namespace"),
        pytest.param("docker.io/nginx", "docker.io/library/nginx", id="hub-one-component"),
        pytest.param("docker.io/library/nginx", "docker.io/library/nginx", id="already-normal"),
        pytest.param("index.docker.io/nginx", "docker.io/library/nginx", id="legacy-hub"),
        pytest.param("index.docker.io/library/nginx", "docker.io/library/nginx", id="legacy-lib"),
        pytest.param("bitnami/redis", "docker.io/bitnami/redis", id="hub-namespace"),
        pytest.param("index.docker.io/bitnami/redis", "docker.io/bitnami/redis", id="legacy-ns"),
        pytest.param("shop/checkout/api", "docker.io/shop/checkout/api", id="hub-deep-path"),
        pytest.param("my.org/app", "my.org/app", id="dot-means-registry"),
        pytest.param("registry:5000/app", "registry:5000/app", id="port-means-registry"),
        pytest.param("localhost/app", "localhost/app", id="localhost-is-registry"),
        pytest.param("localhost:5000/app", "localhost:5000/app", id="localhost-port"),
        pytest.param("localhost", "docker.io/library/localhost", id="bare-localhost-is-image"),
        pytest.param("Registry/app", "Registry/app", id="upper-case-means-registry"),
        pytest.param("[::1]:5000/app", "[::1]:5000/app", id="ipv6-registry"),
        pytest.param("ghcr.io/org/app", "ghcr.io/org/app", id="ghcr"),
        pytest.param("registry-1.docker.io/app", "registry-1.docker.io/app", id="other-hub-host"),
        pytest.param("docker.io/my.org/app", "docker.io/my.org/app", id="dot-in-hub-namespace"),
    ],
)
def test_normalize_repository(written: str, normalized: str) -> None:
    """Names are normalized as registry clients resolve them (distribution reference rules)."""
    assert normalize_repository(written) == normalized
    ref = ArtifactRef.parse(f"{written}:1@{DIGEST}")
    assert (ref.name, ref.repository) == (normalized, written)


@pytest.mark.parametrize(
    "spelling",
    ["nginx", "library/nginx", "docker.io/nginx", "docker.io/library/nginx",
     "index.docker.io/nginx", "index.docker.io/library/nginx"],
)  # fmt: skip
def test_spellings_of_one_repository_are_one_artifact(spelling: str) -> None:
    """Every spelling of Docker Hub's nginx is the same artifact, printed as it was written."""
    ref = ArtifactRef.parse(f"{spelling}:1.25@{DIGEST}")
    assert ref == ArtifactRef.parse(f"nginx:1.25@{DIGEST}")
    assert hash(ref) == hash(ArtifactRef("docker.io/library/nginx", DIGEST, "1.25"))
    assert str(ref) == f"{spelling}:1.25@{DIGEST}"


def test_other_registries_and_tags_stay_distinct() -> None:
    """Normalization does not merge what registries keep apart."""
    nginx = ArtifactRef.parse(f"nginx:1.25@{DIGEST}")
    assert nginx != ArtifactRef.parse(f"ghcr.io/library/nginx:1.25@{DIGEST}")
    assert nginx != ArtifactRef.parse(f"registry-1.docker.io/library/nginx:1.25@{DIGEST}")
    assert nginx != ArtifactRef.parse(f"nginx:1.26@{DIGEST}")


def test_pinned_drops_the_tag_and_keeps_the_digest() -> None:
    """A pod template gets ``repository@digest``: the tag is informative only."""
    ref = ArtifactRef.parse("ghcr.io/acme/checkout:1.4.2@sha256:" + "ab" * 32)
    assert ref.pinned == "ghcr.io/acme/checkout@sha256:" + "ab" * 32
