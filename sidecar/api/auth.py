"""Bearer tokens mapped to roles, so each API call can be checked and audited by name.

Only SHA-256 digests of tokens are kept in memory, and every lookup compares the given
token with all of them in constant time, so neither timing nor a repr reveals a token.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

from sidecar.errors import AuthError, SettingsError

_LINE_FORMAT = "`<role> <name> <token>`"


class Role(IntEnum):
    """Each role may do everything the roles below it may."""

    VIEWER = 1
    PROMOTER = 2
    APPROVER = 3
    ADMIN = 4

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.upper()]
        except KeyError:
            known = ", ".join(str(role) for role in cls)
            raise ValueError(f"unknown role {text!r}; use one of {known}") from None


@dataclass(frozen=True)
class Principal:
    """Who made a request; ``name`` is what audit rows and events record."""

    name: str
    role: Role


ANONYMOUS = Principal("anonymous", Role.VIEWER)


@dataclass(frozen=True)
class _Entry:
    name: str
    role: Role
    digest: bytes = field(repr=False)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenTable:
    """The configured tokens. Empty means anonymous reads and no writes at all."""

    def __init__(self, entries: Iterable[_Entry] = ()) -> None:
        self._entries = tuple(entries)

    @classmethod
    def load(cls, path: Path | str) -> TokenTable:
        """Read ``<role> <name> <token>`` lines; errors name the line, never the token."""
        path = Path(path)
        where = f"setting tokens_file (PROMGATE_TOKENS_FILE): {path}"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise SettingsError(f"{where}: cannot read it: {reason}") from None
        entries: list[_Entry] = []
        first_line: dict[bytes, int] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) != 3:
                raise SettingsError(
                    f"{where} line {number}: expected {_LINE_FORMAT}, found {len(fields)} field(s)"
                )
            role_text, name, token = fields
            try:
                role = Role.parse(role_text)
            except ValueError as exc:
                raise SettingsError(f"{where} line {number}: {exc}") from None
            entry = _Entry(name, role, _digest(token))
            if entry.digest in first_line:
                raise SettingsError(
                    f"{where} line {number}: the token of {name!r} is already used on line "
                    f"{first_line[entry.digest]}; give every token its own value"
                )
            first_line[entry.digest] = number
            entries.append(entry)
        if not entries:
            raise SettingsError(
                f"{where}: holds no tokens; add {_LINE_FORMAT} lines or unset the setting"
            )
        return cls(entries)

    @classmethod
    def from_pairs(cls, entries: Iterable[tuple[str, str, str]]) -> TokenTable:
        """A table from ``(role, name, token)`` triples, in the order of a tokens file."""
        return cls(_Entry(name, Role.parse(role), _digest(token)) for role, name, token in entries)

    def __repr__(self) -> str:
        names = ", ".join(f"{e.name}={e.role}" for e in self._entries)
        return f"TokenTable({names})"

    def authenticate(self, header_value: str | None, needed: Role = Role.VIEWER) -> Principal:
        """The principal behind an ``Authorization`` header, if its role is at least ``needed``.

        Raises ``AuthError`` with status 401 when the token is missing or unknown and 403
        when its role is too low.
        """
        principal = self.identify(header_value)
        self.authorize(principal, needed)
        return principal

    def identify(self, header_value: str | None) -> Principal:
        """Who sent the header, without checking a role: anonymous when no tokens are
        configured; ``AuthError`` (401) when the token is missing or unknown."""
        if not self._entries:
            return ANONYMOUS
        return self._lookup(_bearer(header_value))

    def authorize(self, principal: Principal, needed: Role) -> None:
        """``AuthError`` unless ``principal`` may act with role ``needed``."""
        if not self._entries and needed > Role.VIEWER:
            raise AuthError(
                "no API tokens are configured, so every write is refused: set "
                f"PROMGATE_TOKENS_FILE to a file of {_LINE_FORMAT} lines"
            )
        if principal.role < needed:
            raise AuthError(
                f"{principal.name} has role {principal.role}; this needs role {needed} or higher",
                status=403,
            )

    def _lookup(self, token: str) -> Principal:
        given = _digest(token)
        found: _Entry | None = None
        for entry in self._entries:  # no early exit: the time must not depend on the match
            if hmac.compare_digest(entry.digest, given) and found is None:
                found = entry
        if found is None:
            raise AuthError("unknown bearer token; check the token or ask for one")
        return Principal(found.name, found.role)


def _bearer(header_value: str | None) -> str:
    scheme, _, token = (header_value or "").strip().partition(" ")
    if not scheme:
        raise AuthError("missing bearer token: send `Authorization: Bearer <token>`")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("the Authorization header must be `Bearer <token>`")
    return token.strip()
