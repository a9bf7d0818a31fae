"""Metrics sources: the Prometheus HTTP API, reduced to one Measurement per query.

A source never raises for a provider problem. An unreachable or failing Prometheus must
hold a promotion, not roll it back, so every failure becomes
``Measurement.provider_error`` with a detail that names the query and the cause. The
HTTP side (retries, credentials, error mapping) is :mod:`sidecar.analysis.prometheus_http`,
which replay uses too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from sidecar.analysis.prometheus_http import PrometheusClient, clip
from sidecar.domain.measurement import Measurement
from sidecar.errors import ProviderError, QueryError

_SHOWN_SERIES = 3


class MetricsSource(Protocol):
    """Where analysis gets its numbers; implementations turn failures into measurements."""

    async def query(self, promql: str) -> Measurement:
        """Run an instant query; provider problems come back as ``provider_error``."""
        ...

    async def close(self) -> None:
        """Release connections; the source is not used afterwards."""
        ...


class NullMetricsSource:
    """A source for setups without Prometheus: every query has no data, so nothing rolls back."""

    async def query(self, promql: str) -> Measurement:
        return Measurement.no_data("no metrics source configured")

    async def close(self) -> None:
        """Nothing to release."""


class PrometheusSource:
    """Instant queries against one Prometheus through the shared :class:`PrometheusClient`,
    each reduced to one measurement."""

    def __init__(
        self,
        base_url: str,
        *,
        bearer_token_file: Path | None = None,
        timeout_s: float = 5.0,
        attempts: int = 3,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 2.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._client = PrometheusClient(
            base_url,
            bearer_token_file=bearer_token_file,
            timeout_s=timeout_s,
            attempts=attempts,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
            session=session,
        )

    @property
    def display_url(self) -> str:
        """The base URL without credentials, safe for logs and messages."""
        return self._client.display_url

    async def query(self, promql: str) -> Measurement:
        """Run ``promql`` as an instant query and reduce the answer to one measurement."""
        try:
            samples = await self._client.instant(promql)
            if len(samples) > 1:
                raise QueryError(many_series([sample.labels for sample in samples]))
        except ProviderError as exc:
            return Measurement.provider_error(self._client.redact(f"query {promql!r}: {exc}"))
        return Measurement.of(samples[0].value) if samples else Measurement.no_data("empty result")

    async def count_series(self, promql: str) -> int:
        """How many series an instant query returns (a scalar is one); raises
        ProviderError (QueryError for a rejected query) instead of a measurement."""
        return len(await self._client.instant(promql))

    async def is_ready(self) -> bool:
        """Whether Prometheus says it is ready to serve queries; False on any failure."""
        return await self._client.is_ready()

    async def close(self) -> None:
        """Close the session if this source created it; a given session stays open."""
        await self._client.close()


def many_series(labels: Sequence[Mapping[str, Any]], at: str = "") -> str:
    """Why a result of several series cannot be a gate's value, naming the first few."""
    shown = ", ".join(_labels(one) for one in labels[:_SHOWN_SERIES])
    more = f" and {len(labels) - _SHOWN_SERIES} more" if len(labels) > _SHOWN_SERIES else ""
    return (
        "query must aggregate to one series (e.g. sum(...) or sum by () (...)), "
        f"got {len(labels)} series{at}: {clip(shown)}{more}"
    )


def _labels(labels: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items())) + "}"
