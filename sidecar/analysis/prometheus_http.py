"""The one Prometheus HTTP API client, shared by live analysis and replay.

It speaks ``/api/v1/query``, ``/api/v1/query_range`` and ``/-/ready`` over one aiohttp
session, sends the endpoint's credentials (basic auth from the URL, or a bearer token
file) as a header and masks them in every message,
retries what another attempt may cure (refused or reset connections, timeouts, 5xx,
429 after its ``Retry-After``) with jittered backoff, and maps every failure into the
error tree: ProviderTimeoutError, ProviderHTTPError, QueryError (the query itself was
refused: bad PromQL, or a result that is not an instant vector), ProviderError otherwise.
Answers come back as plain :class:`Sample` and :class:`Series` values.
"""

from __future__ import annotations

import datetime
import email.utils
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type
from tenacity.wait import wait_random_exponential

from sidecar.analysis.endpoint import Endpoint
from sidecar.errors import (
    ProviderError,
    ProviderHTTPError,
    ProviderTimeoutError,
    QueryError,
    SettingsError,
)
from sidecar.redaction import credential_forms, redact

POINTS_PER_REQUEST = 10_000  # Prometheus refuses more than 11,000 points per series
_SHOWN_CHARS = 400


@dataclass(frozen=True)
class Sample:
    """One element of an instant vector (a scalar is one sample without labels)."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Series:
    """One series of a range query: its labels and (timestamp, value) points, oldest first."""

    labels: Mapping[str, str]
    points: Sequence[tuple[float, float]]


class _Transient(Exception):
    """Carries a provider error that another attempt may cure, and how long the server
    asked us to wait before it (``Retry-After``), if it did."""

    def __init__(self, error: ProviderError, retry_after_s: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after_s = retry_after_s


class PrometheusClient:
    """Queries against one Prometheus; one session, per-attempt timeout, bounded retries.

    A ``Retry-After`` up to ``timeout_s`` is waited for before the next attempt; a longer
    one ends the retries at once (the caller holds and asks again later, which is kinder
    to a rate-limited server than blocking an evaluation for minutes). A bearer token
    file is read again for every request, so a rotated token (Kubernetes projects a new
    service account token every hour) is used at once.
    """

    def __init__(
        self,
        base_url: str,
        *,
        setting: str = "the Prometheus URL",
        bearer_token_file: Path | None = None,
        timeout_s: float = 5.0,
        attempts: int = 3,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 2.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._endpoint = Endpoint.parse(base_url, setting)
        if timeout_s <= 0 or attempts < 1 or backoff_initial_s < 0 or backoff_max_s < 0:
            raise SettingsError(
                "Prometheus client needs timeout_s > 0, attempts >= 1 and backoffs >= 0 "
                f"(got timeout_s={timeout_s}, attempts={attempts}, "
                f"backoff_initial_s={backoff_initial_s}, backoff_max_s={backoff_max_s})"
            )
        self._base_url = self._endpoint.display_url
        self._token_file = bearer_token_file
        self._token = ""
        if bearer_token_file is not None:
            if self._endpoint.headers:
                raise SettingsError(
                    f"{setting} carries a user or password and a bearer token file is given "
                    "too; use one of them"
                )
            try:
                self._token = _read_token(bearer_token_file)
            except OSError as exc:
                raise SettingsError(_token_problem(bearer_token_file, exc)) from None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._backoff = wait_random_exponential(multiplier=backoff_initial_s, max=backoff_max_s)
        self._session = session
        self._owns_session = session is None

    @property
    def display_url(self) -> str:
        """The base URL without credentials, safe for logs and messages."""
        return self._endpoint.display_url

    def redact(self, text: str) -> str:
        """``text`` without the endpoint's credentials, for text built outside the client."""
        return redact(text, [*credential_forms(self._endpoint.url), self._token])

    async def instant(self, query: str, at: float | None = None) -> list[Sample]:
        """An instant query (as of ``at``, epoch seconds; default now): its samples."""
        params = {"query": query} if at is None else {"query": query, "time": f"{at:.3f}"}
        return _vector(await self._get("/api/v1/query", params))

    async def range(self, query: str, start: float, end: float, step: float) -> list[Series]:
        """A range query over ``[start, end]`` every ``step`` seconds, fetched in chunks
        below Prometheus's per-series point limit and merged, each series oldest first."""
        if step <= 0 or end < start:
            raise QueryError(
                f"a range query needs step > 0 and end >= start ({step=}, {start=}, {end=})"
            )
        merged: dict[tuple[tuple[str, str], ...], dict[float, float]] = {}
        chunk = step * (POINTS_PER_REQUEST - 1)
        at = start
        while at <= end:  # ends: ``at`` grows by more than ``chunk`` > 0 each time
            upto = min(at + chunk, end)
            span = {"start": f"{at:.3f}", "end": f"{upto:.3f}", "step": str(step)}
            for one in _matrix(await self._get("/api/v1/query_range", {"query": query, **span})):
                merged.setdefault(tuple(sorted(one.labels.items())), {}).update(one.points)
            at = upto + step
        return [Series(dict(labels), sorted(points.items())) for labels, points in merged.items()]

    async def is_ready(self) -> bool:
        """Whether Prometheus says it is ready to serve queries; False on any failure."""
        try:
            async with self._client().get(
                f"{self._base_url}/-/ready", headers=self._headers(), timeout=self._timeout
            ) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError, ProviderError):
            return False

    async def close(self) -> None:
        """Close the session if this client created it; a given session stays open."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self) -> dict[str, str]:
        """The Authorization header: the URL's basic auth, or the token file as it is now."""
        if self._token_file is None:
            return self._endpoint.headers
        try:
            self._token = _read_token(self._token_file)
        except OSError as exc:
            raise ProviderError(_token_problem(self._token_file, exc)) from None
        return {"Authorization": f"Bearer {self._token}"}

    def _client(self) -> aiohttp.ClientSession:
        """One session for all requests, created on first use inside the running loop."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _get(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        """The ``data`` object of a successful answer, after up to ``attempts`` tries."""
        retrying = AsyncRetrying(
            stop=self._stop,
            wait=self._wait,
            retry=retry_if_exception_type(_Transient),
            reraise=True,
        )
        try:
            return await retrying(self._get_once, path, params)
        except _Transient as exc:
            error, tries = exc.error, retrying.statistics["attempt_number"]
            raise type(error)(f"{error} (gave up after {tries} attempt(s))") from error

    def _wait(self, state: RetryCallState) -> float:
        """The server's Retry-After when it gave one, else jittered exponential backoff."""
        retry_after = _retry_after_of(state)
        return self._backoff(state) if retry_after is None else retry_after

    def _stop(self, state: RetryCallState) -> bool:
        """After the last attempt, or when the server asks for a wait over the timeout."""
        retry_after = _retry_after_of(state)
        too_long = retry_after is not None and retry_after > self._timeout_s
        return state.attempt_number >= self._attempts or too_long

    async def _get_once(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        """One HTTP round trip, with aiohttp's exceptions translated to the error tree."""
        headers = self._headers()
        try:
            async with self._client().get(
                self._base_url + path, params=params, headers=headers, timeout=self._timeout
            ) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
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
                    self.redact(
                        f"cannot reach Prometheus at {self.display_url}: "
                        f"{type(exc).__name__}: {exc}"
                    )
                )
            ) from exc
        return self._check_answer(status, body, retry_after)

    def _check_answer(self, status: int, body: str, retry_after: str | None) -> dict[str, Any]:
        """Sort an answer into data, a rejected query, or a (possibly transient) HTTP error."""
        answer = _parse_json(body)
        said = self.redact(_error_text(answer) or clip(body))
        if status in (400, 422):
            raise QueryError(f"Prometheus rejected the query (HTTP {status}): {said}")
        if status >= 500 or status == 429:
            wait_s = retry_after_s(retry_after, _now()) if retry_after is not None else None
            asked = f" and asked to wait {wait_s:g}s" if wait_s is not None else ""
            raise _Transient(
                ProviderHTTPError(
                    f"Prometheus at {self.display_url} answered HTTP {status}{asked}: {said}"
                ),
                wait_s,
            )
        if status != 200:
            raise ProviderHTTPError(
                f"Prometheus at {self.display_url} answered HTTP {status}: {said}"
            )
        if answer is None or answer.get("status") != "success":
            raise ProviderError(f"Prometheus answered HTTP 200 without a successful result: {said}")
        data = answer.get("data")
        if not isinstance(data, dict):
            raise ProviderError(f"Prometheus answer has no data object: {said}")
        return data


def _read_token(path: Path) -> str:
    """The token in ``path``; OSError when it cannot be read or is not one token."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise OSError(0, "the file is not UTF-8 text") from None
    if not token or any(char.isspace() for char in token):
        raise OSError(0, "the file must hold one token, on one line")
    return token


def _token_problem(path: Path, exc: OSError) -> str:
    return (
        f"cannot read the Prometheus bearer token file {path}: {exc.strerror or exc}; "
        "point PROMGATE_PROMETHEUS_BEARER_TOKEN_FILE at a readable file holding the token"
    )


def _retry_after_of(state: RetryCallState) -> float | None:
    error = state.outcome.exception() if state.outcome is not None else None
    return error.retry_after_s if isinstance(error, _Transient) else None


def retry_after_s(value: str, now: datetime.datetime) -> float | None:
    """A ``Retry-After`` header (delay seconds or an HTTP date) as seconds from ``now``;
    None when it is neither. Pure, for table tests."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max((when - now).total_seconds(), 0.0)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _vector(data: dict[str, Any]) -> list[Sample]:
    """An instant query's samples; a scalar is one sample without labels."""
    result_type, result = data.get("resultType"), data.get("result")
    if result_type == "scalar":
        return [Sample({}, _pair(result)[1])]
    if result_type != "vector":
        raise QueryError(
            f"query returned a {result_type} result; a gate needs an instant vector "
            "or scalar (wrap a range selector in a function such as rate())"
        )
    if not isinstance(result, list):
        raise ProviderError(f"vector result is not a list: {clip(repr(result))}")
    samples = []
    for sample in result:
        if not isinstance(sample, dict):
            raise ProviderError(f"vector sample is not an object: {clip(repr(sample))}")
        samples.append(Sample(_labels(sample), _pair(sample.get("value"))[1]))
    return samples


def _matrix(data: dict[str, Any]) -> list[Series]:
    """A range query's series: a list of ``{metric, values: [[t, "v"], ...]}``."""
    result_type, result = data.get("resultType"), data.get("result")
    if result_type != "matrix" or not isinstance(result, list):
        raise ProviderError(f"range result is not a matrix: {clip(repr(data))}")
    parsed = []
    for series in result:
        values = series.get("values") if isinstance(series, dict) else None
        if not isinstance(values, list):
            raise ProviderError(f"range series is not {{metric, values}}: {clip(repr(series))}")
        parsed.append(Series(_labels(series), [_pair(pair) for pair in values]))
    return parsed


def _labels(series: dict[str, Any]) -> dict[str, str]:
    metric = series.get("metric", {})
    if not isinstance(metric, dict):
        raise ProviderError(f"series labels are not an object: {clip(repr(series))}")
    return {str(k): str(v) for k, v in metric.items()}


def _pair(pair: object) -> tuple[float, float]:
    """A ``[timestamp, "value"]`` pair as floats; Prometheus sends NaN and Inf as text."""
    if not isinstance(pair, list) or len(pair) != 2:
        raise ProviderError(f"sample is not [timestamp, value]: {clip(repr(pair))}")
    try:
        return float(pair[0]), float(pair[1])
    except (TypeError, ValueError):
        raise ProviderError(f"sample {clip(repr(pair))} is not [timestamp, number]") from None


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
