"""Durations as policies write them (``30s``, ``500ms``, ``2m``, ``1h``), parsed to seconds."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_MAX_DURATION_TEXT = 32


def parse_duration(value: Any) -> float:
    """``"1.5s"``, ``"500ms"``, ``"2m"`` or a number of seconds -> seconds (float)."""
    if isinstance(value, bool):
        raise ValueError("must be a duration like 30s, 500ms or 2m")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value)
        match = _DURATION.match(text) if len(text) <= _MAX_DURATION_TEXT else None
        if not match:
            raise ValueError(f"{value!r} is not a duration; write it like 30s, 500ms, 2m or 1h")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not math.isfinite(seconds):
        raise ValueError("must be a finite duration like 30s")
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    return seconds


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "maxLength": _MAX_DURATION_TEXT, "pattern": _DURATION.pattern},
            ],
            "description": "seconds, or a duration like 30s, 500ms, 2m or 1h",
        }
    ),
]
