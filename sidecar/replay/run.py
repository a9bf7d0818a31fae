"""Running a replay: the real engine over the window, on a clock that walks through it."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry import trace

from sidecar.actuators.null import NullActuator
from sidecar.analysis.prometheus_http import PrometheusClient
from sidecar.domain.artifact import ArtifactRef
from sidecar.domain.manifest import ReleaseManifest
from sidecar.domain.policy import PromotionPolicy, Stage
from sidecar.domain.promotion import Phase, Promotion, PromotionEvent, StableRelease
from sidecar.engine.context import EngineContext
from sidecar.engine.controller import Controller
from sidecar.errors import InputError, RefusedError
from sidecar.ledger.memory import MemoryLedger
from sidecar.replay.history import HistoricalSource, RangeClient, iso
from sidecar.telemetry.metrics import NullRecorder
from sidecar.testing import FakeClock

MAX_EVALUATIONS = 100_000
REPLAY_TIMEOUT_S = 15.0  # a range query over a long window takes longer than an instant one
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
    bearer_token_file: Path | None = None,
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
    range_client = client or PrometheusClient(
        prometheus_url,
        setting="--prometheus-url",
        bearer_token_file=bearer_token_file,
        timeout_s=REPLAY_TIMEOUT_S,
    )
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
        prometheus_url=range_client.display_url,
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
