"""Replay: what the policy would have decided over a past window, on the data Prometheus kept.

``promgate replay`` runs the real engine (controller, runner, analyzer, judge and
strategies; nothing here decides anything) against :class:`HistoricalSource`, which
answers each gate query "as of" a fake clock that walks through the window one analysis
interval at a time. The engine's event log then becomes one row per evaluation.

The weights in a replay are what the policy *would have set*; the data is what really
happened, under whatever traffic split was in force at the time. A replay cannot change
who got traffic: a candidate that served 5% of requests then is judged on that 5%, even
where the replayed policy would already have given it 50%.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry import trace
from yarl import URL

from sidecar.actuators.null import NullActuator
from sidecar.domain.artifact import ArtifactRef
from sidecar.domain.manifest import ReleaseManifest
from sidecar.domain.measurement import Measurement
from sidecar.domain.policy import PromotionPolicy, Stage
from sidecar.domain.promotion import Phase, Promotion, PromotionEvent, StableRelease
from sidecar.engine.clock import Clock
from sidecar.engine.context import EngineContext
from sidecar.engine.controller import Controller
from sidecar.errors import InputError, ProviderError, RefusedError, SettingsError
from sidecar.ledger.memory import MemoryLedger
from sidecar.progress import outcome_exit_code
from sidecar.telemetry.metrics import NullRecorder
from sidecar.testing import FakeClock

MAX_WINDOW_S = 24 * 3600.0
MAX_EVALUATIONS = 100_000
CAVEAT = (
    "the weights are what the policy would have set; the data is what really happened, "
    "under the traffic split in force at the time (a replay cannot change who got traffic)"
)
REPLAY_ACTOR = "promgate-replay"
_NO_BASELINE = (
    "--baseline is required: with no stable release to compare with, promgate promotes a "
    "stage's first release at once and judges nothing; give the release that was stable in "
    "the window (--baseline IMAGE@sha256:... --baseline-version V)"
)

_POINTS_PER_REQUEST = 10_000  # Prometheus refuses more than 11,000 points per series
_SHOWN_SERIES = 3
_SHOWN_CHARS = 400
_EPOCH = re.compile(r"^[0-9]+(\.[0-9]+)?$")
_LATEST_EPOCH_S = 1e11  # year 5138: a larger number is milliseconds, not seconds


# --- times ------------------------------------------------------------------------------


def parse_instant(text: str) -> float:
    """RFC 3339 with an offset (``2024-05-01T12:00:00Z``) or epoch seconds -> epoch seconds.

    Raises ValueError with a message fit to show next to the flag's name.
    """
    text = text.strip()
    if _EPOCH.match(text):
        seconds = float(text)
        if seconds >= _LATEST_EPOCH_S:
            raise ValueError(
                f"{text!r} looks like epoch milliseconds; give epoch seconds "
                f"(e.g. {seconds / 1000:.0f}) or an RFC 3339 time"
            )
        return seconds
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an RFC 3339 time (e.g. 2024-05-01T12:00:00Z) "
            "nor epoch seconds (e.g. 1714564800)"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(
            f"{text!r} has no UTC offset; add Z or one like +02:00 (e.g. 2024-05-01T12:00:00Z)"
        )
    return moment.timestamp()


def iso(timestamp: float) -> str:
    """``2024-05-01T12:00:00Z``, with milliseconds only when the time has them."""
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    spec = "seconds" if float(timestamp).is_integer() else "milliseconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


def check_window(start: float, end: float, now: float | None = None) -> None:
    """Refuse a window that is empty, reversed, too long or still in the future."""
    now = time.time() if now is None else now
    if end <= start:
        raise InputError(f"--to ({iso(end)}) must be after --from ({iso(start)})")
    if end > now + 60:
        raise InputError(f"--to ({iso(end)}) is in the future; Prometheus holds no data for it yet")
    if end - start > MAX_WINDOW_S:
        raise InputError(
            f"the window {iso(start)} .. {iso(end)} is {(end - start) / 3600:.1f}h long; "
            f"replay at most {MAX_WINDOW_S / 3600:g}h at a time"
        )


# --- the range client ---------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """One series of a range query: its labels and (timestamp, value) points, oldest first."""

    labels: Mapping[str, str]
    points: Sequence[tuple[float, float]]


class RangeClient(Protocol):
    """Blocking range queries; every failure is a ProviderError whose text names the cause."""

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[Series]: ...

    def close(self) -> None: ...


class PrometheusRangeClient:
    """``prometheus-api-client``'s range queries, reduced to typed series.

    Credentials in the URL are sent as basic auth and kept out of every message. TLS
    certificates are verified. Long windows are fetched in chunks below Prometheus's limit
    of 11,000 points per series.
    """

    def __init__(self, base_url: str, *, timeout_s: int = 15, attempts: int = 3) -> None:
        # Imported here: only a replay needs the client and its requests dependency.
        from prometheus_api_client.prometheus_connect import (  # noqa: PLC0415
            PrometheusConnect,
        )
        from urllib3.util.retry import Retry  # noqa: PLC0415

        url = _parse_base_url(base_url)
        user = url.user or ""
        password = url.password or ""
        self._secrets = sorted(
            {s for s in (url.raw_user, url.raw_password, url.user, url.password) if s},
            key=len,
            reverse=True,
        )
        self.display_url = str(url.with_user(None)).rstrip("/")
        options: dict[str, Any] = {"auth": (user, password)} if user or password else {}
        self._client = PrometheusConnect(
            url=self.display_url,
            disable_ssl=False,
            timeout=timeout_s,
            retry=Retry(
                total=max(attempts - 1, 0),
                backoff_factor=0.2,
                status_forcelist=[429, 500, 502, 503, 504],
                raise_on_status=False,
            ),
            **options,
        )

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[Series]:
        merged: dict[tuple[tuple[str, str], ...], dict[float, float]] = {}
        chunk = step * (_POINTS_PER_REQUEST - 1)
        at = start
        while at <= end:
            upto = min(at + chunk, end)
            for labels, points in self._fetch(promql, at, upto, step):
                merged.setdefault(tuple(sorted(labels.items())), {}).update(points)
            at = upto + step
        return [Series(dict(labels), sorted(points.items())) for labels, points in merged.items()]

    def close(self) -> None:
        close: Callable[[], None] | None = getattr(self._client, "close", None)
        if close is not None:
            close()

    def _fetch(
        self, promql: str, start: float, end: float, step: float
    ) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        try:
            result: Any = self._client.custom_query_range(
                promql,
                start_time=datetime.datetime.fromtimestamp(start, tz=datetime.UTC),
                end_time=datetime.datetime.fromtimestamp(end, tz=datetime.UTC),
                step=f"{step:g}",
            )
        except Exception as exc:  # the client raises requests', urllib3's and its own
            raise ProviderError(
                self._redact(
                    f"cannot read {iso(start)} .. {iso(end)} from Prometheus at "
                    f"{self.display_url}: {type(exc).__name__}: {_clip(str(exc))}"
                )
            ) from None
        return _parse_matrix(result)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _parse_base_url(base_url: str) -> URL:
    """An absolute http(s) URL; the error does not echo the text, which may hold a password."""
    try:
        url = URL(base_url)
    except ValueError:
        url = URL()
    if url.scheme not in ("http", "https") or not url.host:
        raise SettingsError(
            "--prometheus-url must look like http(s)://[user:password@]host[:port][/path]"
        )
    return url


def _parse_matrix(result: Any) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
    """The ``result`` of a range query: a list of ``{metric, values: [[t, "v"], ...]}``."""
    if not isinstance(result, list):
        raise ProviderError(f"range result is not a list: {_clip(repr(result))}")
    parsed = []
    for series in result:
        metric = series.get("metric") if isinstance(series, dict) else None
        values = series.get("values") if isinstance(series, dict) else None
        if not isinstance(metric, dict) or not isinstance(values, list):
            raise ProviderError(f"range series is not {{metric, values}}: {_clip(repr(series))}")
        points = []
        for pair in values:
            try:
                points.append((float(pair[0]), float(pair[1])))
            except (TypeError, ValueError, IndexError, KeyError):
                raise ProviderError(f"sample is not [time, value]: {_clip(repr(pair))}") from None
        parsed.append(({str(k): str(v) for k, v in metric.items()}, points))
    return parsed


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def _labels(labels: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items())) + "}"


# --- the historical source ----------------------------------------------------------------


@dataclass(frozen=True)
class _Fetched:
    series: Sequence[Series] = ()
    error: str | None = None


class HistoricalSource:
    """A :class:`~sidecar.analysis.prometheus.MetricsSource` that answers as of ``clock.now()``.

    The first ask for a query fetches the whole window once as a range query with the
    analysis interval as its step (in a thread: the client blocks); later asks only look
    up the cache. Each point of a range result is what an instant query at that time
    would have returned: Prometheus has already applied its 5-minute lookback and its
    staleness markers. So the answer as of ``now`` is each series' point at the latest
    grid time at or before ``now``; a series without a point within one step of ``now``
    had no value then. One series is a value, none is no data, several are a provider
    error (a gate needs one number), as with the live source. A failed fetch is a
    provider error for every ask of that query: the replay holds, it never rolls back.
    """

    def __init__(
        self,
        client: RangeClient,
        clock: Clock,
        *,
        start: float,
        end: float,
        step: float,
        lead_s: float = 300.0,
    ) -> None:
        if step <= 0 or end < start:
            raise ValueError(f"need step > 0 and end >= start (got {step=}, {start=}, {end=})")
        self._client = client
        self._clock = clock
        self._start = start - lead_s
        self._end = end
        self._step = step
        self._slack = min(1e-3, step / 1000)
        self._fetches: dict[str, asyncio.Task[_Fetched]] = {}

    async def query(self, promql: str) -> Measurement:
        task = self._fetches.get(promql)
        if task is None:
            task = asyncio.create_task(self._fetch(promql), name=f"fetch {promql[:60]}")
            self._fetches[promql] = task
        fetched = await asyncio.shield(task)
        if fetched.error is not None:
            return Measurement.provider_error(f"query {promql!r}: {fetched.error}")
        return self._lookup(promql, fetched.series, self._clock.now())

    async def close(self) -> None:
        for task in self._fetches.values():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.to_thread(self._client.close)

    async def _fetch(self, promql: str) -> _Fetched:
        try:
            series = await asyncio.to_thread(
                self._client.query_range, promql, self._start, self._end, self._step
            )
        except ProviderError as exc:
            return _Fetched(error=str(exc))
        return _Fetched(series=series)

    def _lookup(self, promql: str, series: Sequence[Series], now: float) -> Measurement:
        found: list[tuple[Series, float]] = []
        for one in series:
            index = bisect.bisect_right(one.points, now + self._slack, key=_time) - 1
            if index < 0:
                continue
            at, value = one.points[index]
            if now - at < self._step - self._slack:
                found.append((one, value))
        if not found:
            return Measurement.no_data(f"empty result at {iso(now)}")
        if len(found) > 1:
            shown = ", ".join(_labels(s.labels) for s, _ in found[:_SHOWN_SERIES])
            more = f" and {len(found) - _SHOWN_SERIES} more" if len(found) > _SHOWN_SERIES else ""
            return Measurement.provider_error(
                f"query {promql!r}: query must aggregate to one series (e.g. sum(...) or "
                f"sum by () (...)), got {len(found)} series at {iso(now)}: "
                f"{_clip(shown)}{more}"
            )
        return Measurement.of(found[0][1])


def _time(point: tuple[float, float]) -> float:
    return point[0]


# --- the replay -----------------------------------------------------------------------------


class _ReplayClock(FakeClock):
    """A fake clock that parks the sleeper for good once a sleep would pass ``end``.

    The runner sleeps between evaluations, so parking it there stops the promotion at the
    end of the window without an exception; the replay then stops the controller.
    """

    def __init__(self, start: float, end: float) -> None:
        super().__init__(start)
        self.end = end
        self.past_end = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        if self.now() + max(seconds, 0.0) > self.end + 1e-6:
            self.past_end.set()
            await asyncio.Event().wait()  # cancelled by Controller.stop
        await super().sleep(seconds)


@dataclass(frozen=True)
class Baseline:
    """The release that was stable in the stage during the window."""

    artifact: ArtifactRef
    version: str


@dataclass(frozen=True)
class ReplayRow:
    """One evaluation: when, at which step and weight, what the gates said, what followed."""

    at: float
    step: int  # 1-based
    weight: int
    decision: str
    action: str
    gates: list[dict[str, Any]]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": iso(self.at),
            "step": self.step,
            "weight": self.weight,
            "decision": self.decision,
            "action": self.action,
            "gates": self.gates,
            "reason": self.reason,
        }


@dataclass
class ReplayResult:
    """The replayed promotion: what it was, each evaluation, and where it ended."""

    service: str
    stage: str
    strategy: str
    candidate: str
    candidate_version: str
    baseline: str
    baseline_version: str
    policy_name: str
    policy_version: str
    start: float
    end: float
    interval: float
    prometheus_url: str
    phase: str  # a terminal phase, or where it still was at the end of the window
    reason: str
    ended_at: float | None = None
    classification: str | None = None
    step: int = 0
    weight: int = 0
    rows: list[ReplayRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return Phase(self.phase).terminal

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "stage": self.stage,
            "strategy": self.strategy,
            "candidate": {"artifact": self.candidate, "version": self.candidate_version},
            "baseline": {"artifact": self.baseline, "version": self.baseline_version},
            "policy": {"name": self.policy_name, "version": self.policy_version},
            "from": iso(self.start),
            "to": iso(self.end),
            "interval_s": self.interval,
            "prometheus": self.prometheus_url,
            "caveat": CAVEAT,
            "notes": self.notes,
            "rows": [row.to_dict() for row in self.rows],
            "outcome": {
                "phase": self.phase,
                "finished": self.finished,
                "at": iso(self.ended_at) if self.ended_at is not None else None,
                "classification": self.classification,
                "step": self.step,
                "weight": self.weight,
                "reason": self.reason,
            },
        }


async def replay(
    policy: PromotionPolicy,
    manifest_data: Any,
    *,
    stage: str,
    prometheus_url: str,
    start: float,
    end: float,
    baseline: Baseline | None,
    client: RangeClient | None = None,
) -> ReplayResult:
    """Re-judge ``[start, end]`` of a past release with the real engine and stored data.

    Times are whole seconds (Prometheus range queries are). ``client`` replaces the
    Prometheus client, e.g. in tests; it is closed at the end. Raises InputError for bad
    input; a release the policy refuses comes back as a result with phase ``refused``.
    """
    start, end = math.floor(start), math.floor(end)
    manifest = ReleaseManifest.from_data(manifest_data)
    target = _stage(policy, stage)
    interval = policy.analysis_for(target).interval
    if baseline is None:
        raise InputError(_NO_BASELINE)
    if baseline.artifact.digest == manifest.artifact_ref.digest:
        raise InputError(
            f"--baseline has the candidate's own digest ({baseline.artifact.short_digest}); "
            "give the release that was stable before the candidate"
        )
    if end - start < interval:
        raise InputError(
            f"the window ({end - start:g}s) is shorter than the analysis interval of stage "
            f"{target.name} ({interval:g}s): no evaluation fits in it"
        )
    if (end - start) / interval > MAX_EVALUATIONS:
        raise InputError(
            f"the window holds {(end - start) / interval:.0f} evaluations at the "
            f"{interval:g}s interval of stage {target.name}; at most {MAX_EVALUATIONS} "
            "fit in one replay: shorten the window"
        )
    range_client = client if client is not None else PrometheusRangeClient(prometheus_url)
    display_url = getattr(range_client, "display_url", "")
    clock = _ReplayClock(start, end)
    source = HistoricalSource(range_client, clock, start=start, end=end, step=interval)
    ledger = MemoryLedger()
    controller = Controller(
        EngineContext(
            policy=policy,
            ledger=ledger,
            actuator=NullActuator(),
            source=source,
            recorder=NullRecorder(),
            tracer=trace.NoOpTracer(),
            clock=clock,
        )
    )
    result = ReplayResult(
        service=manifest.service,
        stage=target.name,
        strategy=target.strategy.kind,
        candidate=str(manifest.artifact_ref),
        candidate_version=manifest.version,
        baseline=str(baseline.artifact),
        baseline_version=baseline.version,
        policy_name=policy.metadata.name,
        policy_version=policy.version,
        start=start,
        end=end,
        interval=interval,
        prometheus_url=display_url,
        phase=Phase.PENDING.value,
        reason="",
    )
    try:
        await _seed(ledger, manifest, target, baseline, start)
        try:
            promotion = await controller.create(manifest_data, target.name, actor=REPLAY_ACTOR)
        except RefusedError as exc:
            result.phase, result.reason, result.ended_at = Phase.REFUSED.value, str(exc), start
            return result
        if promotion.phase is Phase.AWAITING_APPROVAL:
            result.notes.append("the stage requires approval: assumed given at the start")
            await controller.approve(promotion.id, REPLAY_ACTOR)
        await _run_until_end(controller, clock, promotion.id)
        final = await controller.get(promotion.id)
        events = await controller.events(promotion.id)
    finally:
        await controller.stop()
        await source.close()
    _conclude(result, final, events)
    return result


def _stage(policy: PromotionPolicy, name: str) -> Stage:
    try:
        return policy.stage(name)
    except KeyError as exc:
        raise InputError(f"--stage: {exc.args[0]}") from None


async def _seed(
    ledger: MemoryLedger,
    manifest: ReleaseManifest,
    stage: Stage,
    baseline: Baseline,
    start: float,
) -> None:
    """Required stages count as done for the candidate; the baseline is the stable release."""
    for required in stage.requires:
        await ledger.push_stable(
            StableRelease(
                manifest.service,
                required,
                manifest.artifact_ref,
                "",
                "replay-seed",
                start,
                manifest.version,
            )
        )
    await ledger.push_stable(
        StableRelease(
            manifest.service,
            stage.name,
            baseline.artifact,
            "",
            "replay-baseline",
            start,
            baseline.version,
        )
    )


async def _run_until_end(controller: Controller, clock: _ReplayClock, promotion_id: str) -> None:
    """Wait until the promotion ends or its runner would sleep past the window's end."""
    finished = asyncio.create_task(controller.wait_finished(promotion_id))
    past_end = asyncio.create_task(clock.past_end.wait())
    try:
        await asyncio.wait({finished, past_end}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        past_end.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await past_end
    if not finished.done():
        await controller.stop()
    await finished  # re-raises an engine error, if the runner met one


def _conclude(result: ReplayResult, final: Promotion, events: Sequence[PromotionEvent]) -> None:
    """Turn the event log into rows: each evaluation at the step and weight it judged."""
    step, weight = 0, 0
    for event in events:
        data = event.data
        if "decision" in data:
            result.rows.append(
                ReplayRow(
                    at=event.at,
                    step=step + 1,
                    weight=weight,
                    decision=str(data["decision"]),
                    action=str(data.get("action", "")),
                    gates=list(data.get("gates") or []),
                    reason=str(data.get("reason") or ""),
                )
            )
        if event.kind == final.phase.value and final.phase.terminal:
            result.ended_at = event.at
        step = int(data.get("step", step))
        weight = int(data.get("weight", weight))
    result.phase = final.phase.value
    result.classification = final.classification
    result.step = final.step_index + 1
    result.weight = final.weight
    if final.phase.terminal:
        result.reason = final.reason
    else:
        result.reason = (
            f"no final decision by {iso(result.end)}: still {final.phase.value} at step "
            f"{final.step_index + 1}, weight {final.weight}%"
        )


# --- what the CLI prints ----------------------------------------------------------------------


def baseline_from_flags(reference: str | None, version: str | None) -> Baseline:
    """``--baseline`` and ``--baseline-version`` as a Baseline; both are required."""
    if not reference:
        raise InputError(_NO_BASELINE)
    if not version:
        raise InputError(
            "--baseline-version is required with --baseline: gate queries may select the "
            "baseline by $version"
        )
    try:
        return Baseline(ArtifactRef.parse(reference), version)
    except InputError as exc:
        raise InputError(f"--baseline: {exc}") from None


def exit_code(result: ReplayResult) -> int:
    """0 promoted or still running at the end of the window, else the outcome's exit code."""
    return outcome_exit_code(result.phase) if result.finished else 0


def report_lines(result: ReplayResult) -> list[str]:
    """The header, one line per evaluation, and the outcome, as plain text."""
    lines = [
        f"replay of {result.service} -> {result.stage} ({result.strategy}) under policy "
        f"{result.policy_name} version {result.policy_version}",
        f"  candidate  {result.candidate_version}  {result.candidate}",
        f"  baseline   {result.baseline_version}  {result.baseline}",
        f"  window     {iso(result.start)} .. {iso(result.end)} "
        f"({_duration(result.end - result.start)}), evaluated every {result.interval:g}s"
        + (f", data from {result.prometheus_url}" if result.prometheus_url else ""),
        f"  caveat     {CAVEAT}",
        *(f"  note       {note}" for note in result.notes),
        "",
    ]
    lines += [_row_line(row) for row in result.rows] or ["(no evaluation in the window)"]
    decisions: dict[str, int] = {}
    for row in result.rows:
        decisions[row.decision] = decisions.get(row.decision, 0) + 1
    counted = ", ".join(f"{n} {decision}" for decision, n in sorted(decisions.items()))
    lines += ["", f"{len(result.rows)} evaluations" + (f": {counted}" if counted else "")]
    if result.finished:
        when = f" at {iso(result.ended_at)}" if result.ended_at is not None else ""
        kind = f" ({result.classification})" if result.classification else ""
        verb = _OUTCOME_VERBS.get(result.phase, result.phase)
        lines.append(f"outcome: would have {verb}{kind}{when}: {result.reason}")
    else:
        lines.append(f"outcome: {result.reason}")
    return lines


_OUTCOME_VERBS = {
    Phase.ROLLED_BACK.value: "rolled back",
    Phase.INCONCLUSIVE.value: "stopped as inconclusive",
    Phase.REFUSED.value: "been refused",
}


def _row_line(row: ReplayRow) -> str:
    gates = ", ".join(_gate_text(gate) for gate in row.gates) or "no gates"
    return (
        f"{iso(row.at)}  step {row.step} {row.weight:>3}%  {row.decision:<8} {row.action:<12} "
        f"{gates}  | {row.reason}"
    )


def _gate_text(gate: Mapping[str, Any]) -> str:
    text = f"{gate.get('gate')} {gate.get('result')}"
    if gate.get("value") is not None or gate.get("threshold") is not None:
        text += f" {_number(gate.get('value'))} vs {_number(gate.get('threshold'))}"
    if gate.get("classification"):
        text += f" ({gate['classification']}{' hard' if gate.get('hard') else ''})"
    return text


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"


def _duration(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return (
        "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n)
        or "0s"
    )
