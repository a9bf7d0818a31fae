"""Edit one field of a nested JSON/YAML document by path, for table tests of validation."""

from __future__ import annotations

from typing import Any

DELETE = object()


def edited(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``data`` with ``path`` (``a.b.0.c`` or ``a.b[0].c``) set to ``value``, or deleted
    when ``value`` is DELETE."""
    parts = path.replace("[", ".").replace("]", "").split(".")
    target: Any = data
    for part in parts[:-1]:
        target = target[int(part)] if part.isdigit() else target[part]
    last: Any = int(parts[-1]) if parts[-1].isdigit() else parts[-1]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return data
