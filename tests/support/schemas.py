"""Checks on the JSON Schemas promgate publishes."""

from __future__ import annotations

from typing import Any


def unbounded(schema: Any, path: str = "#") -> list[str]:
    """Schema locations of strings without maxLength, arrays without maxItems and open
    mappings without maxProperties; enums, constants and date-times are bounded anyway."""
    found: list[str] = []
    if isinstance(schema, dict):
        kind = schema.get("type")
        kinds = kind if isinstance(kind, list) else [kind]
        closed = "enum" in schema or "const" in schema or schema.get("format") == "date-time"
        if "string" in kinds and "maxLength" not in schema and not closed:
            found.append(path)
        if "array" in kinds and "maxItems" not in schema:
            found.append(path)
        extra = schema.get("additionalProperties")
        if "object" in kinds and extra not in (None, False) and "maxProperties" not in schema:
            found.append(path)
        for key, value in schema.items():
            found.extend(unbounded(value, f"{path}/{key}"))
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            found.extend(unbounded(value, f"{path}/{index}"))
    return found
