"""Metrics sources: the Prometheus HTTP API, reduced to one Measurement per query.

A source never raises for a provider problem. An unreachable or failing Prometheus must
hold a promotion, not roll it back, so every failure becomes
``Measurement.provider_error`` with a detail that names the query and the cause.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import aiohttp
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from sidecar.analysis.endpoint import Endpoint
from sidecar.domain.measurement import Measurement
from sidecar.errors import (
    ProviderError,
    ProviderHTTPError,
    ProviderTimeoutError,
    QueryError,
    SettingsError,
)

_SHOWN_SERIES = 3
_SHOWN_CHARS = 400


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


class _Transient(Exception):
    """Carries a provider error that another attempt may cure (refused, timeout, 5xx, 429)."""

    def __init__(self, error: ProviderError) -> None:
        super().__init__(str(error))
        self.error = error


class PrometheusSource:
    """Instant queries against one Prometheus, retried with jittered backoff when transient."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 5.0,
        attempts: int = 3,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 2.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._endpoint = Endpoint.parse(base_url)
        if timeout_s <= 0 or attempts < 1 or backoff_initial_s < 0 or backoff_max_s < 0:
            raise SettingsError(
                "Prometheus client needs timeout_s > 0, attempts >= 1 and backoffs >= 0 "
                f"(got timeout_s={timeout_s}, attempts={attempts}, "
                f"backoff_initial_s={backoff_initial_s}, backoff_max_s={backoff_max_s})"
            )
        self._base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._session = session
        self._owns_session = session is None

    @property
    def display_url(self) -> str:
        """The base URL without credentials, safe for logs and messages."""
        return self._endpoint.display_url

    async def query(self, promql: str) -> Measurement:
        """Run ``promql`` as an instant query and reduce the answer to one measurement."""
        try:
            return _to_measurement(await self._fetch(promql))
        except ProviderError as exc:
            return Measurement.provider_error(self._endpoint.redact(f"query {promql!r}: {exc}"))

    async def count_series(self, promql: str) -> int:
        """How many series an instant query returns (a scalar is one); raises
        ProviderError (QueryError for a rejected query) instead of a measurement."""
        data = await self._fetch(promql)
        result_type, result = data.get("resultType"), data.get("result")
        if result_type == "scalar":
            return 1
        if result_type != "vector" or not isinstance(result, list):
            raise QueryError(f"query returned a {result_type} result, not an instant vector")
        return len(result)

    async def is_ready(self) -> bool:
        """Whether Prometheus says it is ready to serve queries; False on any failure."""
        try:
            async with self._client().get(
                f"{self._base_url}/-/ready", timeout=self._timeout
            ) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def close(self) -> None:
        """Close the session if this source created it; a given session stays open."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        """One session for all queries, created on first use inside the running loop."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _fetch(self, promql: str) -> dict[str, Any]:
        """The ``data`` object of a successful answer, after up to ``attempts`` tries."""
        tries = 0

        async def attempt() -> dict[str, Any]:
            nonlocal tries
            tries += 1
            return await self._fetch_once(promql)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_random_exponential(
                multiplier=self._backoff_initial_s, max=self._backoff_max_s
            ),
            retry=retry_if_exception_type(_Transient),
            reraise=True,
        )
        try:
            return await retrying(attempt)
        except _Transient as exc:
            error = exc.error
            raise type(error)(f"{error} (gave up after {tries} attempt(s))") from error

    async def _fetch_once(self, promql: str) -> dict[str, Any]:
        """One HTTP round trip, with aiohttp's exceptions translated to the error tree."""
        try:
            async with self._client().get(
                f"{self._base_url}/api/v1/query", params={"query": promql}, timeout=self._timeout
            ) as response:
                status = response.status
                body = await response.text(errors="replace")
        except TimeoutError as exc:
            raise _Transient(
                ProviderTimeoutError(
                    f"Prometheus at {self.display_url} did not answer "
                    f"within the {self._timeout_s:g}s timeout"
                )
            ) from exc
        except aiohttp.ClientError as exc:
            raise _Transient(
                ProviderError(
                    f"cannot reach Prometheus at {self.display_url}: {type(exc).__name__}: {exc}"
                )
            ) from exc
        return self._check_answer(status, body)

    def _check_answer(self, status: int, body: str) -> dict[str, Any]:
        """Sort an answer into data, a rejected query, or a (possibly transient) HTTP error."""
        answer = _parse_json(body)
        prometheus_error = _error_text(answer)
        if status in (400, 422):
            raise QueryError(
                f"Prometheus rejected the query (HTTP {status}): {prometheus_error or clip(body)}"
            )
        if status != 200:
            error = ProviderHTTPError(
                f"Prometheus at {self.display_url} answered HTTP {status}: "
                f"{prometheus_error or clip(body)}"
            )
            if status >= 500 or status == 429:
                raise _Transient(error)
            raise error
        if answer is None or answer.get("status") != "success":
            raise ProviderError(
                f"Prometheus answered HTTP 200 without a successful result: "
                f"{prometheus_error or clip(body)}"
            )
        data = answer.get("data")
        if not isinstance(data, dict):
            raise ProviderError(f"Prometheus answer has no data object: {clip(body)}")
        return data


def _to_measurement(data: dict[str, Any]) -> Measurement:
    """A single number, no data, or a QueryError when the query is not shaped for a gate."""
    result_type = data.get("resultType")
    result = data.get("result")
    if result_type == "scalar":
        return Measurement.of(_sample_value(result))
    if result_type != "vector":
        raise QueryError(
            f"query returned a {result_type} result; a gate needs an instant vector "
            "or scalar (wrap a range selector in a function such as rate())"
        )
    if not isinstance(result, list):
        raise ProviderError(f"vector result is not a list: {clip(repr(result))}")
    if not result:
        return Measurement.no_data("empty result")
    if len(result) > 1:
        raise QueryError(many_series([_metric(series) for series in result]))
    sample = result[0]
    if not isinstance(sample, dict):
        raise ProviderError(f"vector sample is not an object: {clip(repr(sample))}")
    return Measurement.of(_sample_value(sample.get("value")))


def _sample_value(pair: object) -> float:
    """The float of a ``[timestamp, "value"]`` pair; Prometheus sends NaN and Inf as text."""
    if not isinstance(pair, list) or len(pair) != 2:
        raise ProviderError(f"sample is not [timestamp, value]: {clip(repr(pair))}")
    try:
        return float(pair[1])
    except (TypeError, ValueError) as exc:
        raise ProviderError(f"sample value {pair[1]!r} is not a number") from exc


def many_series(labels: Sequence[Mapping[str, Any] | None], at: str = "") -> str:
    """Why a result of several series cannot be a gate's value, naming the first few
    (None: a series whose labels could not be read)."""
    shown = ", ".join(_labels(one) for one in labels[:_SHOWN_SERIES])
    more = f" and {len(labels) - _SHOWN_SERIES} more" if len(labels) > _SHOWN_SERIES else ""
    return (
        "query must aggregate to one series (e.g. sum(...) or sum by () (...)), "
        f"got {len(labels)} series{at}: {clip(shown)}{more}"
    )


def _metric(series: object) -> Mapping[str, Any] | None:
    metric = series.get("metric") if isinstance(series, dict) else None
    return metric if isinstance(metric, dict) else None


def _labels(labels: Mapping[str, Any] | None) -> str:
    if labels is None:
        return "{?}"
    return "{" + ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items())) + "}"


def _parse_json(body: str) -> dict[str, Any] | None:
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


def _error_text(answer: dict[str, Any] | None) -> str:
    """Prometheus's own ``errorType: error`` text, which says what is wrong with a query."""
    if answer is None or answer.get("status") != "error":
        return ""
    return f"{answer.get('errorType', 'error')}: {answer.get('error', '')}"


def clip(text: str) -> str:
    """``text`` on one line and cut short, for a message."""
    text = " ".join(text.split())
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."
