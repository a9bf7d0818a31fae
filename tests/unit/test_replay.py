"""`promgate replay` against a real Prometheus holding real scraped data.

The module records once: a real Prometheus (1 s scrape) scrapes two real example services,
a stable release and a candidate, under real load sent straight to each; the candidate is
healthy for a while, then fails 30% of its requests. The tests replay windows of that
recording through the real engine, and check the lookups of the historical source and
the command's argument errors.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from click.testing import CliRunner, Result

from sidecar.analysis.prometheus import PrometheusSource
from sidecar.analysis.prometheus_http import PrometheusClient
from sidecar.cli import cli
from sidecar.domain.artifact import ArtifactRef
from sidecar.domain.measurement import Measurement, MeasurementKind
from sidecar.domain.policy import parse_policy
from sidecar.errors import ProviderError
from sidecar.local.demo import demo_digest, demo_manifest
from sidecar.local.loadgen import LoadGenerator
from sidecar.replay import (
    Baseline,
    HistoricalSource,
    Series,
    exit_code,
    replay,
    report_lines,
)
from sidecar.replay.run import ReplayResult, ReplayRow
from sidecar.testing import FakeClock
from tests.support.processes import (
    ManagedProcess,
    free_port,
    start_demo_service,
    start_prometheus,
    wait_for_value,
    wait_until,
)

ON_RECORDING = pytest.mark.asyncio(loop_scope="module")
STABLE, CANDIDATE = "1.0.0", "1.1.0"
BASELINE_REF = f"registry.example.com/shop/demo:{STABLE}@{demo_digest(STABLE)}"
LOAD_RPS = 40.0
HEALTHY_S = 12.0
FAULT_S = 12.0
MAX_RECORDING_S = 120.0

POLICY = """\
apiVersion: promgate/v1
kind: PromotionPolicy
metadata: {name: replay-test}
version: "2024.5.1"
analysis: {interval: 1s, confirm: 3, noDataTimeout: 30s, maxProviderHold: 5s}
stages:
  - name: production            # the first stage: replayed when --stage is not given
    requires: [staging]         # the replay counts it as done for the candidate
    strategy:
      canary: {steps: [20, 50], stepDuration: 10m}   # longer than any window: stays in step 1
    gates:
      slo:
        - name: error-ratio
          ratio:
            bad: sum(demo_requests_total{digest="$digest", code=~"5.."})
            total: sum(demo_requests_total{digest="$digest"})
          max: 0.05
          maxVsBaseline: 2
          minRequests: 10
        - name: slow-ratio
          ratio:
            bad: >-
              sum(demo_request_duration_seconds_count{digest="$digest"})
              - sum(demo_request_duration_seconds_bucket{digest="$digest", le="0.25"})
            total: sum(demo_request_duration_seconds_count{digest="$digest"})
          max: 0.05
          maxVsBaseline: 2
          minRequests: 10
  - name: staging
    strategy: {blueGreen: {preview: 4s, postPromotion: 4s}}
"""


def write_inputs(directory: Path) -> Path:
    """``directory``, holding policy.yaml (POLICY) and the candidate's manifest.json."""
    directory.mkdir(exist_ok=True)
    (directory / "policy.yaml").write_text(POLICY)
    (directory / "manifest.json").write_text(json.dumps(demo_manifest(CANDIDATE)))
    return directory


@dataclass
class Recording:
    prometheus_url: str
    healthy: tuple[float, float]  # epoch seconds, whole
    fault_at: float
    fault: tuple[float, float]  # from before the fault until well after it
    files: Path


async def scraped_until(source: PrometheusSource, moment: float) -> None:
    """Wait until Prometheus holds samples of both services up to ``moment``."""
    promql = 'min(timestamp(demo_requests_total{code="200"}))'

    async def far_enough() -> bool:
        latest = await source.query(promql)
        return latest.value is not None and latest.value >= moment

    await wait_until(far_enough, moment - time.time() + 15, what=f"samples up to {moment}")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def recording(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Recording]:
    """Prometheus's record of a healthy candidate that then fails 30% of its requests."""
    workdir = tmp_path_factory.mktemp("replay")
    started: list[ManagedProcess] = []
    loads: list[LoadGenerator] = []
    source: PrometheusSource | None = None
    try:
        urls = {}
        for version in (STABLE, CANDIDATE):
            process, urls[version] = await start_demo_service(
                workdir, version=version, digest=demo_digest(version)
            )
            started.append(process)
        targets = {v: [url.removeprefix("http://")] for v, url in urls.items()}
        prometheus, prometheus_url = await start_prometheus(workdir, targets, 1.0)
        started.append(prometheus)
        source = PrometheusSource(prometheus_url, timeout_s=5.0, attempts=2)
        for url in urls.values():
            loads.append(
                LoadGenerator(
                    f"{url}/",
                    LOAD_RPS,
                    MAX_RECORDING_S,
                    int(LOAD_RPS * MAX_RECORDING_S),
                )
            )
            loads[-1].start()
        for version in (STABLE, CANDIDATE):
            await wait_for_value(
                source, f'sum(demo_requests_total{{digest="{demo_digest(version)}"}})'
            )
        healthy_from = float(math.ceil(time.time()))
        await scraped_until(source, healthy_from + HEALTHY_S)
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{urls[CANDIDATE]}/admin/fault", json={"error_rate": 0.3}) as response,
        ):
            assert response.status == 200, await response.text()
        fault_at = time.time()
        fault_until = float(math.ceil(fault_at + FAULT_S))
        await scraped_until(source, fault_until)
        for load in loads:
            stats = await load.stop()
            assert stats.statuses[0] == 0, f"connection errors under load: {stats.statuses}"
        yield Recording(
            prometheus_url,
            (healthy_from, healthy_from + HEALTHY_S),
            fault_at,
            (float(math.floor(fault_at - 5)), fault_until),
            write_inputs(workdir / "files"),
        )
    finally:
        for load in loads:
            await load.stop()
        if source is not None:
            await source.close()
        for process in started:
            await process.stop()


def replay_args(rec: Recording, window: tuple[float, float], *extra: str) -> list[str]:
    return [
        "replay",
        "--policy",
        str(rec.files / "policy.yaml"),
        "--manifest",
        str(rec.files / "manifest.json"),
        "--from",
        f"{window[0]:.0f}",
        "--to",
        f"{window[1]:.0f}",
        "--baseline",
        BASELINE_REF,
        "--baseline-version",
        STABLE,
        "--prometheus-url",
        rec.prometheus_url,
        *extra,  # a later --prometheus-url wins
    ]


async def run_cli(args: Sequence[str]) -> Result:
    """The command runs its own event loop, so it runs in a thread of its own."""
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args))


@ON_RECORDING
async def test_a_healthy_window_is_not_rolled_back(recording: Recording) -> None:
    start, end = recording.healthy
    result = await replay(
        parse_policy(yaml.safe_load(POLICY)),
        demo_manifest(CANDIDATE),
        stage="production",
        prometheus_url=recording.prometheus_url,
        start=start,
        end=end,
        baseline=Baseline(ArtifactRef.parse(BASELINE_REF), STABLE),
    )

    assert result.phase == "progressing"  # the step outlasts the window
    assert result.reason.startswith("no final decision by ")
    assert [row.at for row in result.rows] == [start + n for n in range(1, int(HEALTHY_S) + 1)]
    assert {(row.step, row.weight) for row in result.rows} == {(1, 20)}
    assert {row.decision for row in result.rows} <= {"pass", "wait"}
    assert not [g for row in result.rows for g in row.gates if g["result"] == "breach"]
    passed = [row for row in result.rows if row.decision == "pass"]
    assert len(passed) >= HEALTHY_S / 2, [row.reason for row in result.rows]
    gates = {gate["gate"]: gate for gate in passed[-1].gates}
    assert gates["error-ratio"]["value"] == 0.0
    assert gates["error-ratio"]["requests"] >= 10
    assert gates["slow-ratio"]["value"] <= gates["slow-ratio"]["threshold"] == 0.05


@ON_RECORDING
async def test_the_fault_rolls_back_on_a_persistent_breach(recording: Recording) -> None:
    result = await run_cli(replay_args(recording, recording.fault, "--json"))

    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["stage"] == "production"  # the policy's first stage
    assert report["baseline"] == {"artifact": BASELINE_REF, "version": STABLE}
    assert "cannot change who got traffic" in report["caveat"]
    outcome = report["outcome"]
    assert (outcome["phase"], outcome["classification"]) == ("rolled_back", "persistent")
    assert outcome["reason"].startswith("error-ratio: ")
    assert "breach 3 of 3 to confirm" in outcome["reason"]
    rows = report["rows"]
    last = rows[-1]
    assert (last["decision"], last["action"], last["weight"]) == ("rollback", "rollback", 20)
    assert last["at"] == outcome["at"]
    errors = next(g for g in last["gates"] if g["gate"] == "error-ratio")
    assert errors["classification"] == "persistent"
    assert errors["value"] > errors["threshold"] == 0.05
    before = [r for r in rows if parse_iso(r["at"]) < recording.fault_at]
    assert before and {r["decision"] for r in before} <= {"pass", "wait"}
    breaches = [r for r in rows if any(g["result"] == "breach" for g in r["gates"])]
    assert parse_iso(breaches[0]["at"]) > recording.fault_at
    assert parse_iso(outcome["at"]) - recording.fault_at < 8  # three breaches, not more


@ON_RECORDING
async def test_the_plain_report_states_the_caveat_and_the_outcome(recording: Recording) -> None:
    result = await run_cli(replay_args(recording, recording.fault))

    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "replay of demo -> production (canary) under policy replay-test version 2024.5.1"
    )
    assert f"  baseline   {STABLE}  {BASELINE_REF}" in lines
    assert any(line.startswith("  caveat     the weights are what the policy") for line in lines)
    assert lines[-1].startswith("outcome: would have rolled back (persistent) at ")
    assert "error-ratio: " in lines[-1]
    rollback = [line for line in lines if " rollback " in line]
    assert len(rollback) == 1 and "step 1  20%" in rollback[0]
    assert "error-ratio breach" in rollback[0] and "(persistent)" in rollback[0]


@ON_RECORDING
async def test_a_stopped_prometheus_holds_and_never_rolls_back(
    recording: Recording, tmp_path: Path
) -> None:
    process, url = await start_prometheus(tmp_path, {}, 1.0)
    await process.stop()
    with_password = url.replace("http://", "http://replayer:s3cret-pw@")

    result = await run_cli(
        replay_args(recording, recording.fault, "--json", "--prometheus-url", with_password)
    )

    assert result.exit_code == 3, result.output  # aborted: analysis unavailable
    assert "s3cret-pw" not in result.output
    report = json.loads(result.stdout)
    rows = report["rows"]
    assert {r["decision"] for r in rows} == {"hold"}
    assert [r["action"] for r in rows[:-1]] == ["hold"] * (len(rows) - 1)
    assert rows[-1]["action"] == "abort"
    for gate in rows[0]["gates"]:
        assert gate["result"] == "unavailable"
        assert gate["classification"] == "transient"
        assert f"cannot reach Prometheus at {url}: ClientConnectorError" in gate["reason"]
    outcome = report["outcome"]
    assert outcome["phase"] == "aborted" and outcome["classification"] is None
    assert outcome["reason"].startswith("analysis unavailable for 5s (limit 5s): ")


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# --- HistoricalSource lookups -----------------------------------------------------------------

T0 = 1_700_000_000.0


class StubRange:
    """A range client whose answers a test sets per query; counts what was asked."""

    display_url = "http://stub"

    def __init__(self, answers: dict[str, list[Series] | ProviderError]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, float, float, float]] = []
        self.closed = False

    async def range(self, promql: str, start: float, end: float, step: float) -> list[Series]:
        self.asked.append((promql, start, end, step))
        answer = self.answers[promql]
        if isinstance(answer, ProviderError):
            raise answer
        return answer

    async def close(self) -> None:
        self.closed = True


def series(points: dict[float, float], **labels: str) -> Series:
    return Series(labels, sorted((T0 + t, v) for t, v in points.items()))


def source_for(stub: StubRange, clock: FakeClock) -> HistoricalSource:
    return HistoricalSource(stub, clock, start=T0, end=T0 + 60, step=1.0)


async def test_lookups_answer_as_of_the_clock() -> None:
    stub = StubRange(
        {
            "one": [series({0: 1.0, 1: 2.0, 2: 3.0, 5: 6.0})],
            "nan": [series({0: math.nan, 1: 5.0})],
            "none": [],
            "two": [series({0: 1.0, 1: 1.0}, shard="a"), series({1: 2.0}, shard="b")],
        }
    )
    clock = FakeClock(T0)
    source = source_for(stub, clock)

    assert await source.query("one") == Measurement.of(1.0)
    assert await source.query("nan") == Measurement.of(float("nan"))
    assert await source.query("two") == Measurement.of(1.0)  # b has no point yet
    clock.advance(1.5)  # between grid points: the latest one before counts
    assert await source.query("one") == Measurement.of(2.0)
    assert await source.query("nan") == Measurement.of(5.0)
    two = await source.query("two")
    assert two.kind is MeasurementKind.PROVIDER_ERROR
    assert "query 'two': query must aggregate to one series" in two.detail
    assert 'got 2 series at 2023-11-14T22:13:21.500Z: {shard="a"}, {shard="b"}' in two.detail
    clock.advance(1.5)  # t=3: the point at t=2 is one step old, so the series had no value
    stale = await source.query("one")
    assert stale == Measurement.no_data("empty result at 2023-11-14T22:13:23Z")
    clock.advance(2)
    assert await source.query("one") == Measurement.of(6.0)
    assert await source.query("none") == Measurement.no_data("empty result at 2023-11-14T22:13:25Z")
    # Every query was fetched once, for the whole window and 5 minutes before it.
    assert sorted(stub.asked) == [
        (q, T0 - 300, T0 + 60, 1.0) for q in ("nan", "none", "one", "two")
    ]
    await source.close()
    assert stub.closed


async def test_a_failed_fetch_is_a_provider_error_for_every_ask() -> None:
    stub = StubRange({"q": ProviderError("cannot read: ConnectionError: refused")})
    clock = FakeClock(T0)
    source = source_for(stub, clock)

    first, second = await asyncio.gather(source.query("q"), source.query("q"))
    clock.advance(1)
    third = await source.query("q")

    expected = Measurement.provider_error(
        "query 'q': cannot read 2023-11-14T22:08:20Z .. 2023-11-14T22:14:20Z: "
        "cannot read: ConnectionError: refused"
    )
    assert first == second == third == expected
    assert len(stub.asked) == 1


async def test_the_real_client_names_the_window_and_the_cause_and_hides_credentials() -> None:
    port = free_port()  # nothing listens there
    client = PrometheusClient(f"http://ops:hunter2-pw@127.0.0.1:{port}", attempts=1)
    source = HistoricalSource(client, FakeClock(T0), start=T0, end=T0 + 10, step=1.0, lead_s=0)

    measurement = await source.query("up")

    assert measurement.kind is MeasurementKind.PROVIDER_ERROR
    assert measurement.detail.startswith(
        "query 'up': cannot read 2023-11-14T22:13:20Z .. 2023-11-14T22:13:30Z: cannot reach "
        f"Prometheus at http://127.0.0.1:{port}: ClientConnectorError: "
    )
    assert "hunter2" not in measurement.detail and "ops" not in measurement.detail
    await source.close()


# --- argument errors ------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> Path:
    return write_inputs(tmp_path)


def invoke(files: Path, *args: str, baseline: Sequence[str] | None = None) -> Result:
    given = ["--baseline", BASELINE_REF, "--baseline-version", STABLE]
    return CliRunner().invoke(
        cli,
        [
            "replay",
            "--policy",
            str(files / "policy.yaml"),
            "--manifest",
            str(files / "manifest.json"),
            *args,
            *(given if baseline is None else baseline),
        ],
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--from", "yesterday", "--to", "1714564800"],
            "Invalid value for '--from': 'yesterday' is neither an RFC 3339 time "
            "(e.g. 2024-05-01T12:00:00Z) nor epoch seconds (e.g. 1714564800)",
        ),
        (
            ["--from", "1714564800", "--to", "2024-05-01T12:30:00"],
            "Invalid value for '--to': '2024-05-01T12:30:00' has no UTC offset; add Z or one "
            "like +02:00",
        ),
        (
            ["--from", "1714564800000", "--to", "1714564900"],
            "Invalid value for '--from': '1714564800000' looks like epoch milliseconds; "
            "give epoch seconds (e.g. 1714564800)",
        ),
    ],
)
def test_a_bad_time_names_its_flag(files: Path, args: list[str], message: str) -> None:
    result = invoke(files, *args)

    assert result.exit_code == 2
    assert message in " ".join(result.stderr.split())


@pytest.mark.parametrize(
    ("args", "baseline", "message"),
    [
        (
            ["--from", "2024-05-01T12:30:00Z", "--to", "2024-05-01T14:00:00+02:00"],
            None,
            "promgate: --to (2024-05-01T12:00:00Z) must be after --from (2024-05-01T12:30:00Z)",
        ),
        (
            ["--from", "2024-05-01T00:00:00Z", "--to", "2024-05-02T00:00:01Z"],
            None,
            "promgate: the window 2024-05-01T00:00:00Z .. 2024-05-02T00:00:01Z is 24.0h long; "
            "replay at most 24h at a time",
        ),
        (
            ["--from", "2024-05-01T12:00:00Z", "--to", "2999-01-01T00:00:00Z"],
            None,
            "promgate: --to (2999-01-01T00:00:00Z) is in the future; Prometheus holds no data "
            "for it yet",
        ),
        (
            ["--from", "2024-05-01T12:00:00Z", "--to", "2024-05-01T12:10:00Z"],
            [],
            "promgate: --baseline is required: with no stable release to compare with, "
            "promgate promotes a stage's first release at once and judges nothing",
        ),
        (
            ["--from", "2024-05-01T12:00:00Z", "--to", "2024-05-01T12:10:00Z"],
            ["--baseline", BASELINE_REF],
            "promgate: --baseline-version is required with --baseline",
        ),
        (
            ["--from", "2024-05-01T12:00:00Z", "--to", "2024-05-01T12:10:00Z"],
            ["--baseline", "registry.example.com/shop/demo:1.0.0", "--baseline-version", "1"],
            "promgate: --baseline: 'registry.example.com/shop/demo:1.0.0' has no digest",
        ),
        (
            ["--from", "2024-05-01T12:00:00Z", "--to", "2024-05-01T12:10:00Z"],
            ["--baseline", demo_manifest(CANDIDATE)["artifact"], "--baseline-version", "1"],
            "promgate: --baseline has the candidate's own digest",
        ),
        (
            [
                *("--from", "2024-05-01T12:00:00Z", "--to", "2024-05-01T12:10:00Z"),
                *("--prometheus-bearer-token-file", "/nonexistent/token"),
            ],
            None,
            "promgate: cannot read the Prometheus bearer token file /nonexistent/token: No "
            "such file or directory",
        ),
        (
            ["--from", "2024-05-01T12:00:00Z", "--to", "2024-05-01T12:10:00Z", "--stage", "qa"],
            None,
            "promgate: --stage: stage 'qa' is not in policy replay-test; known: production, "
            "staging",
        ),
    ],
)
def test_bad_arguments_exit_2_with_a_precise_message(
    files: Path, args: list[str], baseline: list[str] | None, message: str
) -> None:
    result = invoke(files, *args, baseline=baseline)

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message), result.stderr
    assert result.stdout == ""


def test_replay_is_listed_with_its_exit_codes() -> None:
    result = CliRunner().invoke(cli, ["replay", "--help"])

    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "cannot change who got traffic" in text
    assert "Exit 0 promoted or still running at --to, 1 rolled back or refused" in text


# --- the engine's other paths, on stub data ------------------------------------------------


class Healthy(StubRange):
    """Both releases serve 40 requests a second without an error."""

    def __init__(self) -> None:
        super().__init__({})

    async def range(self, promql: str, start: float, end: float, step: float) -> list[Series]:
        self.asked.append((promql, start, end, step))
        count = int((end - start) / step) + 1
        points = [(start + n * step, 0.0 if "5.." in promql else 40.0 * n) for n in range(count)]
        return [Series({}, points)]


async def replay_on_stub(
    production: dict[str, Any], manifest: dict[str, Any], client: StubRange
) -> ReplayResult:
    """Five seconds of production under POLICY (its first stage updated with
    ``production``) replayed on the stub ``client`` against the stable baseline."""
    policy = yaml.safe_load(POLICY)
    policy["stages"][0].update(production)
    return await replay(
        parse_policy(policy),
        manifest,
        stage="production",
        prometheus_url="http://unused",
        start=T0,
        end=T0 + 5,
        baseline=Baseline(ArtifactRef.parse(BASELINE_REF), STABLE),
        client=client,
    )


async def test_a_stage_that_needs_approval_is_replayed_as_approved() -> None:
    result = await replay_on_stub(
        {"approval": {"required": True}}, demo_manifest(CANDIDATE), Healthy()
    )

    assert result.notes == ["the stage requires approval: assumed given at the start"]
    assert [row.decision for row in result.rows] == ["wait", "pass", "pass", "pass", "pass"]
    assert exit_code(result) == 0


async def test_a_release_the_policy_refuses_is_reported_as_refused() -> None:
    critical = demo_manifest(CANDIDATE)
    critical["checks"]["vulnerabilities"]["critical"] = 2
    stub = Healthy()
    result = await replay_on_stub(
        {"gates": {"metadata": {"maxVulnerabilities": {"critical": 0}}}}, critical, stub
    )

    assert (result.phase, result.rows, stub.asked) == ("refused", [], [])
    assert "metadata gates of stage production refused the release" in result.reason
    assert exit_code(result) == 1
    assert report_lines(result)[-1].startswith("outcome: would have been refused at ")


def test_report_lines_show_each_gates_evidence() -> None:
    """A replayed evaluation shows each gate's numbers, e-value and clearance, so a past
    decision can be explained from the report alone."""
    gates = [
        {"gate": "errors", "result": "pass", "value": 0.004, "threshold": 0.05,
         "e_value": 0.25, "clearance": 31.5},
        {"gate": "slow", "result": "breach", "value": 0.3, "threshold": 0.05,
         "classification": "transient"},
    ]  # fmt: skip
    row = ReplayRow(T0, 1, 20, "wait", "wait", gates, "step time done; waiting for evidence")
    result = ReplayResult(
        "demo", "production", "canary", "r@sha256:" + "b" * 64, "1.1.0",
        "r@sha256:" + "a" * 64, "1.0.0", "p", "1", T0, T0 + 60, 1.0, "", "progressing",
        "still progressing", rows=[row],
    )  # fmt: skip
    [line] = [text for text in report_lines(result) if "waiting for evidence" in text]
    assert "errors pass 0.004 vs 0.05 e-value 0.25 clearance 31.5" in line
    assert line.rstrip().endswith("| step time done; waiting for evidence")
    assert "slow breach 0.3 vs 0.05 (transient)  |" in line
