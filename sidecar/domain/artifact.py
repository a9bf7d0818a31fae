"""Artifact identity: an OCI image reference pinned by digest."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sidecar.errors import ArtifactReferenceError

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"sha256:[a-f0-9]{64}"
_REFERENCE = re.compile(
    rf"^(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>[A-Za-z0-9_+.-]+:[^\s]+))?$"
)
_DIGEST_ONLY = re.compile(rf"^{_DIGEST}$")
_MAX_NAME = 255

HOW_TO_GET_DIGEST = (
    "pin the image by digest, e.g. `crane digest IMAGE:TAG`, "
    "`docker buildx imagetools inspect IMAGE:TAG`, or the digest your build step printed, "
    "then pass IMAGE:TAG@sha256:<64 hex>"
)


@dataclass(frozen=True, order=True)
class ArtifactRef:
    """An image reference ``repository[:tag]@sha256:<hex>``; the tag is informative only."""

    repository: str
    digest: str
    tag: str | None = None

    @classmethod
    def parse(cls, text: str) -> ArtifactRef:
        """Parse and validate a reference; refuse one without a sha256 digest."""
        if not isinstance(text, str) or not text.strip():
            raise ArtifactReferenceError("artifact reference is empty; " + HOW_TO_GET_DIGEST)
        text = text.strip()
        match = _REFERENCE.match(text)
        if match is None:
            raise ArtifactReferenceError(
                f"{text!r} is not an OCI image reference "
                "(expected repository[:tag]@sha256:<64 hex>, lower-case repository)"
            )
        name, tag, digest = match.group("name", "tag", "digest")
        if len(name) > _MAX_NAME:
            raise ArtifactReferenceError(
                f"repository name is {len(name)} characters long; the limit is {_MAX_NAME}"
            )
        if digest is None:
            raise ArtifactReferenceError(
                f"{text!r} has no digest, and promgate promotes only digest-pinned images: "
                + HOW_TO_GET_DIGEST
            )
        if not _DIGEST_ONLY.match(digest):
            raise ArtifactReferenceError(
                f"{text!r} has digest {digest!r}; expected sha256: followed by 64 lower-case hex "
                "characters"
            )
        return cls(repository=name, digest=digest, tag=tag)

    @property
    def short_digest(self) -> str:
        """The first 12 hex characters, for people."""
        return self.digest.removeprefix("sha256:")[:12]

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        return f"{self.repository}{tag}@{self.digest}"
