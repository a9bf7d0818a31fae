"""Ledger bytes written per second while a promotion runs, by the size of its manifest.

A running promotion saves its state at every evaluation. Were the manifest part of what
is saved, a large manifest would multiply the ledger's write rate; stored once, it costs
only its first write. The benchmark runs the same canary (1 s interval, waiting for data)
on a real SQLite ledger, once with a small manifest (the baseline) and once with the
largest manifest a 1 MiB request body can carry within the schema's bounds, each for
``--seconds``, ``--runs`` times, and prints the median write rate of each and their ratio.

Writes are measured as the bytes this process wrote (``/proc/self/io`` ``wchar``) with
logging off, so they are the ledger's. Last line:
``ledger_writes small_kib_s=<x> large_kib_s=<y> ratio=<y/x>``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sidecar.analysis.prometheus import NullMetricsSource
from sidecar.domain.policy import parse_policy_text
from sidecar.engine.clock import SystemClock
from sidecar.engine.context import EngineContext
from sidecar.engine.controller import Controller
from sidecar.ledger.sqlite import SqliteLedger
from sidecar.telemetry.metrics import PrometheusRecorder
from sidecar.testing import RecordingActuator
from tests.support.manifests import manifest

POLICY = """
apiVersion: promgate/v1
kind: PromotionPolicy
metadata: {name: ledger-writes}
version: "1"
analysis: {interval: 1s, noDataTimeout: 1h, maxProviderHold: 1h}
stages:
  - name: dev
    strategy: {canary: {steps: [10, 50], stepDuration: 1h}}
    gates:
      slo:
        - name: error-ratio
          ratio: {bad: 'sum(bad{digest="$digest"})', total: 'sum(total{digest="$digest"})'}
          max: 0.05
"""


def written_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no wchar line")


def large_manifest() -> dict[str, Any]:
    """The largest manifest a 1 MiB body carries within the bounds: 500 long references."""
    refs = [{"name": f"n{i}", "ref": "vault://p/" + "x" * 2000} for i in range(250)]
    return manifest(digest_char="b", tag="1.1.0", version="1.1.0", config=refs, secrets=refs)


async def write_rate(candidate: dict[str, Any], seconds: float) -> float:
    """KiB/s the ledger writes while ``candidate`` is promoted (its steady state)."""
    with tempfile.TemporaryDirectory() as directory:
        ledger = SqliteLedger(Path(directory) / "ledger.db")
        await ledger.open()
        controller = Controller(
            EngineContext(
                policy=parse_policy_text(POLICY, "benchmark policy"),
                ledger=ledger,
                actuator=RecordingActuator(),
                source=NullMetricsSource(),
                recorder=PrometheusRecorder(),
                tracer=TracerProvider().get_tracer("bench"),
                clock=SystemClock(),
            )
        )
        await controller.start()
        try:
            first = await controller.create(manifest(), "dev")
            await controller.wait_finished(first.id)
            await controller.create(candidate, "dev")
            await asyncio.sleep(2)  # the create and the first step are written
            start, began = written_bytes(), time.monotonic()
            await asyncio.sleep(seconds)
            return (written_bytes() - start) / (time.monotonic() - began) / 1024
        finally:
            await controller.stop()
            await ledger.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per run")
    parser.add_argument("--runs", type=int, default=3, help="runs per manifest size")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    small, large = [], []
    for run in range(args.runs):
        small.append(await write_rate(manifest(digest_char="b", tag="1.1.0"), args.seconds))
        large.append(await write_rate(large_manifest(), args.seconds))
        print(f"run {run + 1}: small {small[-1]:.1f} KiB/s, large {large[-1]:.1f} KiB/s")
    small_kib, large_kib = statistics.median(small), statistics.median(large)
    print(
        f"ledger_writes small_kib_s={small_kib:.1f} large_kib_s={large_kib:.1f} "
        f"ratio={large_kib / small_kib:.2f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
