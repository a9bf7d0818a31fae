"""PromQL templates: ``$name`` placeholders filled from a release's identity.

Values come from manifests that promgate does not control, so every value is escaped for
a double-quoted PromQL string: a hostile version or tag can only ever become a label
value, never extra PromQL. Templates should therefore put placeholders inside double
quotes (``{version="$version"}``); ``$window`` is the exception and is validated as a
duration instead. In a regex matcher (``=~"$version"``) the value stays inside the quotes
but its regex characters keep their meaning. A literal dollar sign is written ``$$``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from string import Template

from sidecar.errors import QueryError

KNOWN_PLACEHOLDERS: frozenset[str] = frozenset(
    {
        "service",
        "stage",
        "digest",
        "tag",
        "version",
        "repository",
        "role",
        "backend",
        "upstream",
        "window",
    }
)

_DURATION = re.compile(r"[0-9]+(ms|s|m|h|d|w|y)")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def placeholders(template: str) -> set[str]:
    """The placeholder names a template uses, known or not, so a checker can list them all."""
    names: set[str] = set()
    for match in Template.pattern.finditer(template):
        name = match.group("named") or match.group("braced")
        if name:
            names.add(name)
    return names


def escape_label_value(value: str) -> str:
    """Escape ``value`` so that inside ``"..."`` PromQL reads it back unchanged.

    Backslash, double quote, newline, carriage return and tab get their short escapes;
    any other control character becomes ``\\xHH`` so no byte can end the string early.
    """
    out: list[str] = []
    for char in value:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


def render(template: str, identity: Mapping[str, str]) -> str:
    """Fill every placeholder with its escaped value; refuse unknown or missing ones."""
    known = ", ".join(f"${name}" for name in sorted(KNOWN_PLACEHOLDERS))
    used = placeholders(template)
    for name in sorted(used):
        if name not in KNOWN_PLACEHOLDERS:
            raise QueryError(
                f"unknown placeholder ${name} in query {template!r}; known placeholders: {known}"
            )
        if name not in identity:
            given = ", ".join(f"${key}" for key in sorted(identity)) or "none"
            raise QueryError(
                f"placeholder ${name} in query {template!r} has no value here "
                f"(values given: {given}; known placeholders: {known})"
            )
    if "window" in used:
        _check_window(identity["window"])
    values = {name: escape_label_value(value) for name, value in identity.items()}
    try:
        return Template(template).substitute(values)
    except ValueError as exc:
        raise QueryError(
            f"query {template!r} has a '$' that starts no placeholder ({exc}); "
            "write $$ for a literal dollar sign"
        ) from exc


def _check_window(window: str) -> None:
    """A window goes outside quotes (``[$window]``), so only a plain duration is safe."""
    match = _DURATION.fullmatch(window)
    if match is None:
        raise QueryError(
            f"placeholder $window is {window!r}, not a Prometheus duration "
            "like 30s, 5m or 1h (digits then one of ms, s, m, h, d, w, y)"
        )
    if int(window[: match.start(1)]) == 0:
        raise QueryError(f"placeholder $window is {window!r}; a window must be longer than zero")
