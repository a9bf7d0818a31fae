"""Turns pydantic validation errors into promgate Problems with field paths."""

from __future__ import annotations

from pydantic import ValidationError

from sidecar.errors import Problem


def field_path(location: tuple[int | str, ...]) -> str:
    """``("stages", 0, "gates")`` -> ``stages[0].gates``."""
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


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
