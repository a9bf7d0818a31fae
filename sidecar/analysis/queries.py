"""PromQL templates: ``$name`` placeholders filled from a release's identity.

Values come from manifests that promgate does not control, so every value is escaped for
a double-quoted PromQL string, and a placeholder is accepted only where that escaping
holds: inside a double-quoted string (``{version="$version"}``). Single-quoted and
backtick strings, comments and bare PromQL are refused, as is a placeholder right after a
backslash; ``$window`` alone may also stand in a range or after ``offset``
(``[$window]``), where it is validated as a duration. So a hostile version or tag can only
ever become a string value, never extra PromQL. In a regex matcher (``=~"$version"``) the
value stays inside the quotes but its regex characters keep their meaning. A literal
dollar sign is written ``$$``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from string import Template

from sidecar.domain.kubernetes import KubernetesTarget, Role, side_names
from sidecar.errors import QueryError

KUBERNETES_PLACEHOLDERS: frozenset[str] = frozenset({"namespace", "workload", "pod", "k8sService"})
"""A side's Kubernetes identity: its namespace, Deployment, pod-name regex and Service;
known only in a stage with a ``kubernetes`` target."""
KNOWN_PLACEHOLDERS: frozenset[str] = KUBERNETES_PLACEHOLDERS | frozenset(
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
DURATION_PLACEHOLDER = "window"
"""The one placeholder whose value is a validated duration, so it may stand outside quotes."""

_DURATION = re.compile(r"[0-9]+(ms|s|m|h|d|w|y)")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_OFFSET = re.compile(r"(?<![A-Za-z0-9_:])offset$", re.IGNORECASE)


class Context(Enum):
    """Where in a PromQL template a placeholder stands, as the PromQL lexer would see it."""

    DOUBLE_QUOTED = "inside a double-quoted string"
    SINGLE_QUOTED = "inside a single-quoted string, which the escaping does not cover"
    RAW = "inside a backtick raw string, which cannot escape anything"
    COMMENT = "inside a comment, which its value could end"
    ESCAPE = "right after a backslash, which would escape its value's first character"
    DURATION = "in a range or offset, where only a duration may stand"
    CODE = "outside any string, where its value would be read as PromQL"


_OPENERS = {
    '"': Context.DOUBLE_QUOTED,
    "'": Context.SINGLE_QUOTED,
    "`": Context.RAW,
    "#": Context.COMMENT,
}
_CLOSERS = {Context.DOUBLE_QUOTED: '"', Context.SINGLE_QUOTED: "'", Context.RAW: "`"}


@dataclass(frozen=True)
class PlaceholderUse:
    """One ``$name`` in a template: its name, where it starts, and its lexical context."""

    name: str
    offset: int
    context: Context


def placeholders(template: str) -> set[str]:
    """The placeholder names a template uses, known or not, so a checker can list them all."""
    return {use.name for use in placeholder_uses(template)}


def placeholder_uses(template: str) -> list[PlaceholderUse]:
    """Every placeholder in ``template`` with its context, from a small PromQL lexer.

    The lexer knows what decides where a value lands: double- and single-quoted strings
    with backslash escapes, backtick raw strings, ``#`` comments to the end of the line,
    and range brackets. A ``$`` that starts no placeholder is skipped here; rendering
    refuses it.
    """
    uses: list[PlaceholderUse] = []
    state = Context.CODE
    brackets = 0
    i = 0
    while i < len(template):
        char = template[i]
        if char == "$":
            name, end = _placeholder_at(template, i)
            if name is not None:
                context = _code_context(template[:i], brackets) if state is Context.CODE else state
                uses.append(PlaceholderUse(name, i, context))
            i = end
            continue
        if state is Context.CODE:
            state = _OPENERS.get(char, Context.CODE)
            brackets += {"[": 1, "]": -1}.get(char, 0)
        elif state is Context.COMMENT:
            state = Context.CODE if char == "\n" else state
        elif char == _CLOSERS[state]:
            state = Context.CODE
        elif char == "\\" and state is not Context.RAW:
            name, end = _placeholder_at(template, i + 1)
            if name is not None:
                uses.append(PlaceholderUse(name, i + 1, Context.ESCAPE))
            i = max(end, i + 2)
            continue
        i += 1
    return uses


def _placeholder_at(template: str, i: int) -> tuple[str | None, int]:
    """The placeholder name starting at ``template[i]`` (None if none) and where it ends."""
    match = Template.pattern.match(template, i)
    if match is None:
        return None, i
    if match.group("escaped") is not None or match.group("invalid") is not None:
        return None, max(match.end(), i + 1)
    return match.group("named") or match.group("braced"), match.end()


def _code_context(before: str, brackets: int) -> Context:
    """Outside strings a placeholder is a duration only right after ``[``, ``offset``, or a
    subquery's ``:`` inside brackets."""
    head = before.rstrip()
    if head.endswith("[") or _OFFSET.search(head) or (brackets > 0 and head.endswith(":")):
        return Context.DURATION
    return Context.CODE


def misplaced(use: PlaceholderUse) -> tuple[str, str] | None:
    """What is wrong with where ``use`` stands and the fix, or None if its value is safe there."""
    if use.context is Context.DOUBLE_QUOTED:
        return None
    if use.name == DURATION_PLACEHOLDER:
        if use.context is Context.DURATION:
            return None
        return (
            f"${use.name} is {use.context.value}",
            f"put ${use.name} in a range or after offset, e.g. rate(x[${use.name}])",
        )
    if use.context is Context.ESCAPE:
        return (f"${use.name} is {use.context.value}", f"remove the backslash before ${use.name}")
    return (
        f"${use.name} is {use.context.value}",
        f'put it inside a double-quoted label value: use {{{use.name}="${use.name}"}}',
    )


def template_problems(template: str) -> list[tuple[str, str]]:
    """Unknown and misplaced placeholders of ``template``, each as (what, fix)."""
    known = ", ".join(f"${name}" for name in sorted(KNOWN_PLACEHOLDERS))
    uses = placeholder_uses(template)
    problems = [
        (f"unknown placeholder ${name}", f"use one of the known placeholders: {known}")
        for name in sorted({use.name for use in uses} - KNOWN_PLACEHOLDERS)
    ]
    problems.extend(p for p in map(misplaced, uses) if p is not None)
    return problems


def kubernetes_identity(
    target: KubernetesTarget | None,
    strategy: str,
    role: Role,
    backend: str,
    default_namespace: str,
) -> dict[str, str]:
    """The Kubernetes placeholders' values for one side: ``$namespace``, ``$workload`` (its
    Deployment), ``$pod`` (a regex of its pod names, for ``pod=~"$pod"``) and
    ``$k8sService``; none without a target, where the policy check refuses them."""
    if target is None:
        return {}
    names = side_names(target, strategy, role, backend)
    return {
        "namespace": target.namespace_or(default_namespace),
        "workload": names.workload,
        "pod": names.pod,
        "k8sService": names.service,
    }


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
    """Fill every placeholder with its escaped value; refuse unknown, misplaced or missing
    ones, so a template that skipped the policy check cannot inject either."""
    known = ", ".join(f"${name}" for name in sorted(KNOWN_PLACEHOLDERS))
    problems = template_problems(template)
    if problems:
        listed = "; ".join(f"{what} (fix: {fix})" for what, fix in problems)
        raise QueryError(f"query {template!r} is refused: {listed}")
    used = placeholders(template)
    for name in sorted(used):
        if name not in identity:
            given = ", ".join(f"${key}" for key in sorted(identity)) or "none"
            raise QueryError(
                f"placeholder ${name} in query {template!r} has no value here "
                f"(values given: {given}; known placeholders: {known})"
            )
    if DURATION_PLACEHOLDER in used:
        _check_window(identity[DURATION_PLACEHOLDER])
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
