"""The Grafana dashboard: valid provisioning JSON, and every panel query works on real data.

There is no Grafana here, so the queries are checked the way Grafana would run them: a real
Prometheus scrapes a real ``PrometheusRecorder`` (fed a realistic promotion through the
Recorder methods) and a real ``ProxyActuator`` serving requests, and every panel target is
run against it with the dashboard variables substituted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.exposition import generate_latest

from sidecar.actuators.base import Backend, TrafficState
from sidecar.actuators.proxy import ProxyActuator
from sidecar.analysis.judge import (
    Classification,
    GateResult,
    GateVerdict,
    StepVerdict,
    decide,
)
from sidecar.domain.artifact import ArtifactRef
from sidecar.domain.promotion import Phase, Promotion
from sidecar.local.processes import wait_until
from sidecar.telemetry.metrics import PrometheusRecorder
from tests.conftest import HttpServer, PrometheusFactory

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboards" / "promgate.json"
REPOSITORY = "registry.example.com/shop/checkout"
STABLE = "sha256:" + "a" * 64
CANDIDATE = "sha256:" + "b" * 64
OLDER = "sha256:" + "c" * 64
# What Grafana would put in for "All" and for its interval macros.
ALL = {"service": ".*", "stage": ".*", "gate": ".*"}
ONE = {"service": "checkout", "stage": "production", "gate": "error-ratio"}
MACROS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}
# Panels must show these series (the dashboard's reason to exist).
REQUIRED_METRICS = {
    "promgate_candidate_weight_percent",
    "promgate_promotion_active",
    "promgate_step_index",
    "promgate_gate_value",
    "promgate_gate_threshold",
    "promgate_gate_e_value",
    "promgate_gate_clearance",
    "promgate_gate_evaluations_total",
    "promgate_step_decisions_total",
    "promgate_rollbacks_total",
    "promgate_promotions_total",
    "promgate_decision_latency_seconds_bucket",
    "promgate_analysis_unavailable",
    "promgate_stage_digest_info",
    "promgate_actuations_total",
    "promgate_refusals_total",
    "promgate_tag_mutations_total",
    "promgate_proxy_requests_total",
    "promgate_proxy_request_duration_seconds_bucket",
    "promgate_proxy_backend_weight",
}
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _panels() -> list[dict[str, Any]]:
    return list(_dashboard()["panels"])


def _targets() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in _panels():
        for target in panel["targets"]:
            yield panel, target


def _substitute(expr: str, values: dict[str, str]) -> str:
    known = {**values, **MACROS}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in known:
            raise AssertionError(f"unknown variable ${name} in {expr!r}")
        return known[name]

    return _VARIABLE.sub(replace, expr)


def _variables() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in _dashboard()["templating"]["list"]}


# --- the JSON itself -------------------------------------------------------------------


def test_dashboard_is_provisioning_ready() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "promgate-overview"
    assert dashboard["schemaVersion"] == 39
    assert dashboard.get("id") is None, "a provisioned dashboard must not carry a database id"
    assert "__inputs" not in dashboard, "import placeholders do not work with provisioning"
    variables = _variables()
    datasource = variables["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    for name in ("service", "stage", "gate"):
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["datasource"]["uid"] == "${datasource}"
        assert variable["query"]["query"] == variable["definition"]
    assert variables["service"]["definition"] == (
        "label_values(promgate_candidate_weight_percent, service)"
    )
    assert variables["stage"]["definition"].startswith(
        "label_values(promgate_candidate_weight_percent"
    )


def test_every_panel_is_complete_and_placed() -> None:
    panels = _panels()
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"
    occupied: dict[tuple[int, int], str] = {}
    for panel in panels:
        title = panel["title"]
        grid = panel["gridPos"]
        assert {"x", "y", "w", "h"} <= grid.keys(), title
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, title
        for cell in itertools.product(
            range(grid["x"], grid["x"] + grid["w"]), range(grid["y"], grid["y"] + grid["h"])
        ):
            assert cell not in occupied, f"{title!r} overlaps {occupied[cell]!r}"
            occupied[cell] = title
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        assert panel["targets"], f"{title!r} has no target"
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), f"{title!r} repeats a refId"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", title
            assert target["expr"].strip(), title
            _substitute(target["expr"], ALL)  # only known variables


def test_panels_cover_what_promgate_exports() -> None:
    exprs = " ".join(target["expr"] for _, target in _targets())
    missing = {name for name in REQUIRED_METRICS if name not in exprs}
    assert missing == set()
    repeated = [panel for panel in _panels() if panel.get("repeat")]
    assert [panel["repeat"] for panel in repeated] == ["gate", "gate"]  # values, evidence
    legends = [target["legendFormat"] for target in repeated[0]["targets"]]
    assert any("threshold" in legend for legend in legends), "threshold must be its own series"
    evidence = [target["legendFormat"] for target in repeated[1]["targets"]]
    assert any("e-value" in e for e in evidence) and any("clearance" in e for e in evidence)


def test_transient_and_persistent_breaches_are_coloured_apart() -> None:
    (panel,) = [p for p in _panels() if p["title"].startswith("Gate evaluations")]
    colours = {
        override["matcher"]["options"]: override["properties"][0]["value"]["fixedColor"]
        for override in panel["fieldConfig"]["overrides"]
    }
    assert colours["breach / transient"] != colours["breach / persistent"]
    assert colours["breach / persistent"] == "red"


# --- every query against a real Prometheus with real promgate metrics -----------------


def _promotion(service: str, stage: str, digest: str, **changes: Any) -> Promotion:
    base = Promotion(
        id=f"{service}-{stage}-{digest[7:11]}",
        service=service,
        stage=stage,
        artifact=ArtifactRef.parse(f"registry.example.com/shop/{service}:1.4.0@{digest}"),
        version="1.4.0",
        policy_version="2026.11.1",
        strategy="canary",
        candidate_upstream="http://127.0.0.1:9",
        manifest={},
        created_at=0.0,
        phase=Phase.PROGRESSING,
        baseline=ArtifactRef.parse(f"registry.example.com/shop/{service}:1.3.0@{STABLE}"),
    )
    return base.evolve(**changes)


def _gate(
    name: str,
    result: GateResult,
    classification: Classification | None = None,
    value: float | None = 0.01,
) -> GateVerdict:
    threshold = 0.05 if result is not GateResult.UNAVAILABLE else None
    return GateVerdict(name, result, classification, value, 0.01, threshold, False, f"{name}: x")


def _record_history(recorder: PrometheusRecorder) -> None:
    """What happened before the dashboard is looked at: one rollback, one promotion, refusals."""
    recorder.stable_digest("checkout", "staging", OLDER, "1.2.0")
    recorder.stable_digest("checkout", "production", STABLE, "1.3.0")
    recorder.stable_digest("payments", "production", STABLE, "7.0.1")

    # staging: 1.4.0 breached error-ratio three times in a row and was rolled back.
    staging = _promotion("checkout", "staging", CANDIDATE, weight=100)
    recorder.progress(staging)
    for classification in (Classification.TRANSIENT,) * 2 + (Classification.PERSISTENT,):
        breach = _gate("error-ratio", GateResult.BREACH, classification, value=0.2)
        recorder.gate_verdicts(staging, decide([breach, _gate("slow-ratio", GateResult.PASS)]))
    recorder.decision_latency(staging, 0.04)
    recorder.rollback(staging, "persistent_breach")
    recorder.actuation(staging, ok=True)
    recorder.finished(staging.evolve(phase=Phase.ROLLED_BACK, weight=0))

    # a fixed 1.4.1 was promoted in staging.
    fixed = _promotion("checkout", "staging", "sha256:" + "d" * 64)
    recorder.gate_verdicts(fixed, decide([_gate("error-ratio", GateResult.PASS)]))
    recorder.finished(fixed.evolve(phase=Phase.PROMOTED, weight=100))
    recorder.stable_digest("checkout", "staging", fixed.artifact.digest, "1.4.1")

    # refusals before any traffic moved, and a tag that came back with another digest.
    recorder.refused("checkout", "production", "vulnerabilities")
    recorder.refused("payments", "production", "tag_mutation")
    recorder.tag_mutation(REPOSITORY)

    # payments in production: Prometheus unreachable, traffic held.
    held = _promotion("payments", "production", CANDIDATE, weight=20, step_index=0)
    recorder.progress(held)
    unavailable = _gate("error-ratio", GateResult.UNAVAILABLE, Classification.TRANSIENT, None)
    recorder.gate_verdicts(held, decide([unavailable]))
    recorder.actuation(held, ok=False)


async def _live_promotion(
    recorder: PrometheusRecorder, proxy_url: str, session: aiohttp.ClientSession
) -> None:
    """checkout in production: a canary that keeps evaluating while traffic flows."""
    weights = itertools.cycle((20, 20, 20, 50, 50, 50))
    for tick in itertools.count():
        weight = next(weights)
        promotion = _promotion(
            "checkout", "production", CANDIDATE, weight=weight, step_index=int(weight == 50)
        )
        recorder.progress(promotion)
        slow = (
            _gate("slow-ratio", GateResult.BREACH, Classification.TRANSIENT, value=0.08)
            if tick % 7 == 3
            else _gate("slow-ratio", GateResult.PASS, value=0.02)
        )
        errors = replace(
            _gate("error-ratio", GateResult.PASS, value=0.004),
            e_value=0.5 + tick % 3,
            clearance=2.0**tick,
        )
        verdict: StepVerdict = decide([errors, slow])
        recorder.gate_verdicts(promotion, verdict)
        recorder.decision_latency(promotion, 0.01 + (tick % 5) * 0.02)
        recorder.actuation(promotion, ok=True)
        for path in ("/", "/", "/fail"):
            async with session.get(proxy_url + path) as response:
                await response.read()
        await asyncio.sleep(0.2)


def _upstream(name: str) -> web.Application:
    async def ok(_: web.Request) -> web.Response:
        return web.Response(text=name)

    async def fail(_: web.Request) -> web.Response:
        return web.Response(status=503, text=f"{name} unavailable")

    app = web.Application()
    app.router.add_get("/fail", fail)
    app.router.add_get("/{tail:.*}", ok)
    return app


@pytest.fixture
async def proxy() -> AsyncIterator[ProxyActuator]:
    actuator = ProxyActuator(
        {"production": ("127.0.0.1", 0)}, metrics_listen=("127.0.0.1", 0), timeout_s=5.0
    )
    await actuator.start()
    try:
        yield actuator
    finally:
        await actuator.close()


async def _query(session: aiohttp.ClientSession, base_url: str, promql: str) -> dict[str, Any]:
    async with session.get(f"{base_url}/api/v1/query", params={"query": promql}) as response:
        body: dict[str, Any] = await response.json()
    if body.get("status") != "success":
        raise AssertionError(f"Prometheus rejected {promql!r}: {body}")
    data: dict[str, Any] = body["data"]
    return data


def _has_finite_value(data: dict[str, Any]) -> bool:
    if data["resultType"] in ("scalar", "string"):
        values = [data["result"][1]]
    else:
        values = [sample["value"][1] for sample in data["result"]]
    return any(math.isfinite(float(value)) for value in values if value is not None)


@contextlib.asynccontextmanager
async def _running(task_factory: Callable[[], Any]) -> AsyncIterator[asyncio.Task[None]]:
    task: asyncio.Task[None] = asyncio.create_task(task_factory())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_every_panel_query_runs_on_real_promgate_metrics(
    prometheus_factory: PrometheusFactory, http_server: HttpServer, proxy: ProxyActuator
) -> None:
    recorder = PrometheusRecorder()

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(recorder.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    metrics_app = web.Application()
    metrics_app.router.add_get("/metrics", metrics)
    recorder_url = await http_server(metrics_app)
    stable_url = await http_server(_upstream("stable"))
    candidate_url = await http_server(_upstream("candidate"))
    await proxy.apply(
        TrafficState(
            "checkout-production-bbbb",
            1,
            "checkout",
            "production",
            (
                Backend(STABLE, stable_url, 50, "stable"),
                Backend(CANDIDATE, candidate_url, 50, "candidate"),
            ),
        )
    )
    proxy_url = f"http://127.0.0.1:{proxy.bound_port('production')}"
    _record_history(recorder)

    _, prometheus = await prometheus_factory(
        {
            "promgate": [recorder_url.removeprefix("http://")],
            "promgate-proxy": [f"127.0.0.1:{proxy.metrics_port}"],
        },
        scrape_interval_s=1.0,
    )
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        _running(lambda: _live_promotion(recorder, proxy_url, session)) as live,
    ):
        # ~20 requests through the proxy before Prometheus has even scraped once.
        for _ in range(20):
            async with session.get(proxy_url + "/") as response:
                assert response.status == 200

        async def scraped() -> bool:
            if live.done():
                live.result()  # surface the error that stopped the live promotion
            data = await _query(session, prometheus, "promgate_candidate_weight_percent")
            return bool(data["result"])

        await wait_until(scraped, 30, what="promgate metrics in Prometheus", interval_s=0.25)

        # Variables resolve to the recorded labels.
        for name, expected in ONE.items():
            definition = _variables()[name]["definition"]
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", definition)
            assert match, definition
            selector = _substitute(match.group(1), ALL)
            async with session.get(
                f"{prometheus}/api/v1/label/{match.group(2)}/values", params={"match[]": selector}
            ) as response:
                values = (await response.json())["data"]
            assert expected in values, f"${name} offers {values}"

        queries = {
            f"{panel['title']} [{target['refId']}]": _substitute(target["expr"], ALL)
            for panel, target in _targets()
        }
        pending = dict(queries)

        async def every_panel_has_data() -> bool:
            if live.done():
                live.result()
            for key, promql in list(pending.items()):
                if _has_finite_value(await _query(session, prometheus, promql)):
                    del pending[key]
            return not pending

        try:
            await wait_until(every_panel_has_data, 45, what="data in every panel", interval_s=0.5)
        except TimeoutError as exc:
            raise AssertionError(f"panels without data: {json.dumps(pending, indent=1)}") from exc

        # One concrete selection, as a person would pick it: every query still succeeds.
        for _, target in _targets():
            await _query(session, prometheus, _substitute(target["expr"], ONE))
