"""Turns pydantic validation errors into promgate Problems with field paths, and bounds
parsed JSON (depth, integer size, text) before any model sees it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError

from sidecar.errors import Problem

MAX_INTEGER = 2**63 - 1  # SQLite stores 64-bit integers; JSON numbers beyond are refused
MAX_DEPTH = 32  # nesting of objects and arrays; a manifest needs five
MAX_INTEGER_DIGITS = 4300  # Python's own limit on converting digits to an int

Location = tuple[int | str, ...]


class IntegerTooLong:
    """Stands in for an integer literal too long to convert, so its path can be reported."""

    def __init__(self, digits: int) -> None:
        self.digits = digits


def parse_int(literal: str) -> int | IntegerTooLong:
    """``json.loads``' ``parse_int``: an int, or a marker for a literal too long to convert."""
    if len(literal.lstrip("-")) > MAX_INTEGER_DIGITS:
        return IntegerTooLong(len(literal))
    return int(literal)


def field_path(location: Location) -> str:
    """``("stages", 0, "gates")`` -> ``stages[0].gates``."""
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def walk(data: Any, max_depth: int = MAX_DEPTH) -> Iterator[tuple[Location, Any]]:
    """Every value of parsed JSON with its location, parents first, without recursion;
    containers deeper than ``max_depth`` are yielded but not entered."""
    stack: list[tuple[Location, Any]] = [((), data)]
    while stack:
        location, value = stack.pop()
        yield location, value
        if len(location) >= max_depth:
            continue
        if isinstance(value, dict):
            stack.extend(((*location, str(k)), v) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend(((*location, i), v) for i, v in reversed(list(enumerate(value))))


def string_paths(data: Any) -> Iterator[tuple[str, str]]:
    """(field path, text) of every string value in parsed JSON."""
    for location, value in walk(data):
        if isinstance(value, str):
            yield field_path(location), value


def json_problems(data: Any) -> list[Problem]:
    """What makes parsed JSON unfit to validate or store: too deep, an integer too long,
    text that is not Unicode (a lone surrogate escape), at the path where it is."""
    problems: list[Problem] = []
    for location, value in walk(data):
        path = field_path(location)
        if len(location) >= MAX_DEPTH and isinstance(value, dict | list) and value:
            problems.append(
                Problem(path, f"nested deeper than {MAX_DEPTH} levels", "flatten the data")
            )
        elif isinstance(value, IntegerTooLong):
            problems.append(
                Problem(
                    path,
                    f"integer literal of {value.digits} digits is too large",
                    f"use an integer of at most {MAX_INTEGER}",
                )
            )
        texts = [*value] if isinstance(value, dict) else [value] if isinstance(value, str) else []
        if any(not _is_unicode(text) for text in texts):
            problems.append(
                Problem(path, "text holds a lone surrogate escape", "send valid Unicode text")
            )
    return problems


def _is_unicode(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def problems_from(exc: ValidationError, source: str, fix: str) -> list[Problem]:
    """One Problem per pydantic error, with a readable path and a fix hint."""
    problems = []
    for error in exc.errors(include_url=False):
        location = tuple(p for p in error["loc"] if not _is_union_tag(p))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
            hint = "remove it or check its spelling"
        elif error["type"] == "missing":
            hint = "add this field"
        else:
            hint = str((error.get("ctx") or {}).get("fix", fix))  # a validator may name its fix
        problems.append(Problem(field_path(location), message, hint, source))
    return problems


def _is_union_tag(part: int | str) -> bool:
    """pydantic adds the union member's type name to the location; people do not need it."""
    return isinstance(part, str) and (part.startswith("function-") or "[" in part)
