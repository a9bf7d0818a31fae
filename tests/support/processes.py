"""Test helpers around real processes and servers; the process core lives in sidecar.localrun."""

from __future__ import annotations

import sys
from pathlib import Path

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from sidecar.analysis.prometheus import MetricsSource
from sidecar.domain.measurement import Measurement
from sidecar.localrun import (
    ManagedProcess,
    free_port,
    prometheus_binary,
    start_prometheus,
    url_is_ok,
    wait_until,
)

__all__ = [
    "DEMO_SERVICE",
    "ManagedProcess",
    "free_port",
    "metric_value",
    "prometheus_binary",
    "serve_app",
    "start_demo_service",
    "start_prometheus",
    "wait_for_value",
    "wait_until",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_SERVICE = REPO_ROOT / "examples" / "service" / "demo_service.py"


async def serve_app(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on 127.0.0.1 with a kernel-chosen port; returns the runner and base URL.

    The short shutdown timeout keeps cleanup quick when a handler is still waiting.
    """
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


async def start_demo_service(
    log_dir: Path,
    *,
    version: str,
    digest: str,
    error_rate: float = 0.0,
    latency_ms: float = 5.0,
    timeout_s: float = 15.0,
) -> tuple[ManagedProcess, str]:
    """Start the example service as a subprocess and wait until /healthz answers."""
    port = free_port()
    process = ManagedProcess(
        [
            sys.executable,
            str(DEMO_SERVICE),
            f"--port={port}",
            f"--version={version}",
            f"--digest={digest}",
            f"--error-rate={error_rate}",
            f"--latency-ms={latency_ms}",
        ],
        log_dir,
        name=f"demo-{version}",
    ).start()
    base_url = f"http://127.0.0.1:{port}"

    async def healthy() -> bool:
        if not process.running:
            raise RuntimeError(f"demo service exited early:\n{process.log_tail()}")
        return await url_is_ok(f"{base_url}/healthz")

    try:
        await wait_until(healthy, timeout_s, what=f"demo service {version} at {base_url}")
    except BaseException:
        await process.stop()
        raise
    return process, base_url


async def wait_for_value(
    source: MetricsSource, promql: str, timeout_s: float = 30.0
) -> Measurement:
    """Poll a query until it yields a value: Prometheus scrapes a new target only after a while."""
    last = Measurement.no_data("not queried yet")

    async def has_value() -> bool:
        nonlocal last
        last = await source.query(promql)
        return last.is_value

    try:
        await wait_until(has_value, timeout_s, what=f"a value for {promql!r}", interval_s=0.25)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; last result: {last}") from exc
    return last


def metric_value(exposition: str, name: str, labels: dict[str, str]) -> float | None:
    """The sample ``name{labels}`` in a text exposition, or None if the series is absent."""
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None
