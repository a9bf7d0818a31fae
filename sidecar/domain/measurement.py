"""What one metrics query yielded: a value, no data, or a provider error; never mixed."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class MeasurementKind(StrEnum):
    """The three outcomes of a query; each leads to a different decision."""

    VALUE = "value"
    NO_DATA = "no_data"
    PROVIDER_ERROR = "provider_error"


@dataclass(frozen=True)
class Measurement:
    """One query result. ``value`` is set only for VALUE; ``detail`` explains the others."""

    kind: MeasurementKind
    value: float | None = None
    detail: str = ""
    not_a_number: bool = False  # NO_DATA because a series held NaN or Inf, not from no series

    @classmethod
    def of(cls, value: float) -> Measurement:
        """A value; NaN and infinities become no_data, as Prometheus's NaN carries none."""
        if math.isnan(value) or math.isinf(value):
            return cls(MeasurementKind.NO_DATA, detail=f"query returned {value}", not_a_number=True)
        return cls(MeasurementKind.VALUE, value=value)

    @classmethod
    def no_data(cls, detail: str = "empty result") -> Measurement:
        """The query ran and matched nothing."""
        return cls(MeasurementKind.NO_DATA, detail=detail)

    @classmethod
    def provider_error(cls, detail: str) -> Measurement:
        """The source could not answer: down, timeout, 5xx or a rejected query."""
        return cls(MeasurementKind.PROVIDER_ERROR, detail=detail)

    @property
    def is_value(self) -> bool:
        return self.kind is MeasurementKind.VALUE

    @property
    def matched_nothing(self) -> bool:
        """The query ran and no series matched (not NaN, not an error)."""
        return self.kind is MeasurementKind.NO_DATA and not self.not_a_number

    def __str__(self) -> str:
        return f"{self.value:g}" if self.value is not None else f"{self.kind.value} ({self.detail})"
