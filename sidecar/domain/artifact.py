"""Artifact identity: an OCI image reference pinned by digest, named as registries name it.

The grammar and the normalization follow the distribution reference rules, so ``nginx``,
``docker.io/nginx``, ``docker.io/library/nginx`` and ``index.docker.io/library/nginx``
are one repository, and a tag moved under any of those spellings is one tag mutation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sidecar.errors import ArtifactReferenceError

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_REFERENCE = re.compile(
    rf"(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>[A-Za-z0-9_+.-]+:[^\s]+))?"
)
_MAX_NAME = 255

DEFAULT_DOMAIN = "docker.io"
_LEGACY_DEFAULT_DOMAIN = "index.docker.io"
_OFFICIAL_NAMESPACE = "library"

DIGEST_ALGORITHMS: dict[str, int] = {"sha256": 64, "sha512": 128}
"""The digest algorithms the OCI image spec registers, with their length in hex characters."""

DIGEST_PATTERN = (
    "^(?:" + "|".join(f"{alg}:[a-f0-9]{{{n}}}" for alg, n in DIGEST_ALGORITHMS.items()) + ")$"
)
_DIGEST = re.compile(DIGEST_PATTERN)
_ALLOWED_DIGESTS = " or ".join(
    f"{alg}:<{n} lower-case hex>" for alg, n in DIGEST_ALGORITHMS.items()
)

HOW_TO_GET_DIGEST = (
    "pin the image by digest, e.g. `crane digest IMAGE:TAG`, "
    "`docker buildx imagetools inspect IMAGE:TAG`, or the digest your build step printed, "
    "then pass IMAGE:TAG@sha256:<64 hex>"
)


def normalize_repository(name: str) -> str:
    """The repository a registry resolves ``name`` to: ``nginx`` -> ``docker.io/library/nginx``.

    The first path component names a registry only if it contains ``.`` or ``:``, is
    ``localhost``, or has upper case (Docker Hub namespaces cannot); otherwise the image is
    on Docker Hub, whose legacy name ``index.docker.io`` means the same, and whose
    one-component names are official images under ``library/``.
    """
    first, slash, rest = name.partition("/")
    is_domain = first == "localhost" or "." in first or ":" in first or first != first.lower()
    domain, path = (first, rest) if slash and is_domain else (DEFAULT_DOMAIN, name)
    if domain == _LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"{_OFFICIAL_NAMESPACE}/{path}"
    return f"{domain}/{path}"


@dataclass(frozen=True, order=True)
class ArtifactRef:
    """An image reference ``repository[:tag]@algorithm:hex``; the tag is informative only.

    ``repository`` keeps the spelling given, for people; ``name`` is the normalized
    repository, and equality, ordering and tag memory use it, so two spellings of one
    image are one artifact.
    """

    repository: str = field(compare=False)
    digest: str
    tag: str | None = None
    name: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", normalize_repository(self.repository))

    @classmethod
    def parse(cls, text: str) -> ArtifactRef:
        """Parse and validate a reference; refuse one without a registered digest."""
        if not isinstance(text, str) or not text.strip():
            raise ArtifactReferenceError("artifact reference is empty; " + HOW_TO_GET_DIGEST)
        text = text.strip()
        match = _REFERENCE.fullmatch(text)
        if match is None:
            raise ArtifactReferenceError(
                f"{text!r} is not an OCI image reference "
                "(expected repository[:tag]@sha256:<64 hex>, lower-case repository)"
            )
        repository, tag, digest = match.group("name", "tag", "digest")
        ref_name = normalize_repository(repository)
        if len(ref_name) > _MAX_NAME:
            raise ArtifactReferenceError(
                f"repository name is {len(ref_name)} characters long once normalized "
                f"({ref_name[:40]}...); the limit is {_MAX_NAME}"
            )
        if digest is None:
            raise ArtifactReferenceError(
                f"{text!r} has no digest, and promgate promotes only digest-pinned images: "
                + HOW_TO_GET_DIGEST
            )
        check_digest(digest, f"{text!r}")
        return cls(repository=repository, digest=digest, tag=tag)

    @property
    def short_digest(self) -> str:
        """The first 12 hex characters, for people."""
        return self.digest.partition(":")[2][:12]

    @property
    def pinned(self) -> str:
        """``repository@digest``: what a pod template runs, with no tag to drift."""
        return f"{self.repository}@{self.digest}"

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        return f"{self.repository}{tag}@{self.digest}"


def check_digest(digest: str, where: str) -> None:
    """Refuse a digest that is not ``algorithm:hex`` of a registered algorithm and length."""
    if _DIGEST.fullmatch(digest):
        return
    algorithm = digest.partition(":")[0]
    length = DIGEST_ALGORITHMS.get(algorithm)
    if length is None:
        raise ArtifactReferenceError(
            f"{where} has digest algorithm {algorithm!r}, which is not registered; "
            f"use {_ALLOWED_DIGESTS}"
        )
    raise ArtifactReferenceError(
        f"{where} has digest {digest!r}; expected {algorithm}: followed by {length} "
        "lower-case hex characters"
    )
