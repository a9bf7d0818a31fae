"""Test helpers around real processes and servers; the core lives in sidecar.local.processes."""

from __future__ import annotations

import sys
from pathlib import Path

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from sidecar.analysis.prometheus import MetricsSource
from sidecar.domain.measurement import Measurement
from sidecar.local.processes import (
    ManagedProcess,
    free_port,
    start_prometheus,
    url_is_ok,
    wait_until,
)

__all__ = [
    "DEMO_SERVICE",
    "REPO_ROOT",
    "ManagedProcess",
    "free_port",
    "launch_demo_service",
    "metric_value",
    "serve_app",
    "start_demo_service",
    "start_prometheus",
    "url_is_ok",
    "wait_answering",
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


def launch_demo_service(
    log_dir: Path,
    *,
    port: int,
    version: str,
    digest: str,
    error_rate: float = 0.0,
    latency_ms: float = 5.0,
    name: str | None = None,
) -> ManagedProcess:
    """Start the example service on 127.0.0.1:``port`` as a subprocess, without waiting."""
    return ManagedProcess(
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
        name=name or f"demo-{version}",
    ).start()


async def wait_answering(
    process: ManagedProcess,
    url: str,
    timeout_s: float,
    *,
    what: str,
    interval_s: float = 0.1,
    request_timeout_s: float = 2.0,
) -> None:
    """Poll ``url`` until it answers 200; fail at once, with its log, if ``process`` exits."""

    async def answering() -> bool:
        if not process.running:
            raise RuntimeError(
                f"{process.name} exited with {process.returncode} while waiting for {what}:\n"
                f"{process.log_tail()}"
            )
        return await url_is_ok(url, timeout_s=request_timeout_s)

    await wait_until(answering, timeout_s, what=what, interval_s=interval_s)


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
    process = launch_demo_service(
        log_dir,
        port=port,
        version=version,
        digest=digest,
        error_rate=error_rate,
        latency_ms=latency_ms,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        await wait_answering(
            process, f"{base_url}/healthz", timeout_s, what=f"demo service {version} at {base_url}"
        )
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
