"""``promgate policy check --prometheus``: every SLO query of a stage, run for a real
release against a real Prometheus scraping real example services."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from sidecar.analysis.check import QueryCheck
from sidecar.analysis.prometheus import PrometheusSource
from sidecar.local.demo import demo_digest, demo_manifest
from tests.conftest import DemoServiceFactory, PrometheusFactory
from tests.support.processes import REPO_ROOT, wait_for_value

POLICY = REPO_ROOT / "examples" / "e2e-policy.yaml"
STAGE = "production"
STABLE, CANDIDATE = "1.0.0", "1.1.0"
TOTAL = 'sum(demo_requests_total{{stage="production", digest="{digest}"}})'


@dataclass(frozen=True)
class Ran:
    code: int
    output: str


async def promgate(*args: str, cwd: Path) -> Ran:
    """``promgate ARGS`` as a process; its exit code and output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar.cli", *args, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, _ = await process.communicate()
    return Ran(process.returncode or 0, out.decode())


@pytest.fixture
async def served(
    workdir: Path, demo_service_factory: DemoServiceFactory, prometheus_factory: PrometheusFactory
) -> str:
    """Both versions serving in production, scraped with a stage label; Prometheus' URL."""
    urls = {}
    for version in (STABLE, CANDIDATE):
        _, urls[version] = await demo_service_factory(version=version, digest=demo_digest(version))
    targets = [url.removeprefix("http://") for url in urls.values()]
    _, base_url = await prometheus_factory(
        {STAGE: targets}, scrape_interval_s=1.0, labels={STAGE: {"stage": STAGE}}
    )
    async with aiohttp.ClientSession() as session:
        for url in urls.values():
            for _ in range(5):
                async with session.get(url + "/") as response:
                    assert response.status == 200
    source = PrometheusSource(base_url)
    try:
        for version in (STABLE, CANDIDATE):
            await wait_for_value(source, TOTAL.format(digest=demo_digest(version)))
    finally:
        await source.close()
    (workdir / "manifest.json").write_text(json.dumps(demo_manifest(CANDIDATE)))
    return base_url


async def test_every_query_of_the_stage_returns_its_series(served: str, workdir: Path) -> None:
    """Candidate and baseline both serve: every query returns its one series, rendered
    for its side, and the check exits 0."""
    ran = await promgate(
        "policy", "check", str(POLICY), "--prometheus", served, "--manifest", "manifest.json",
        "--stage", STAGE, "--baseline", f"shop/demo@{demo_digest(STABLE)}",
        "--baseline-version", STABLE, cwd=workdir,
    )  # fmt: skip
    assert ran.code == 0, ran.output
    for side, version in (("candidate", CANDIDATE), ("baseline", STABLE)):
        for gate in ("error-ratio", "slow-ratio"):
            assert f"{gate}  {side}  total: 1 series\n" in ran.output, ran.output
        assert TOTAL.format(digest=demo_digest(version)).replace("{{", "{") in ran.output
    assert "all 8 queries returned series" in ran.output, ran.output


async def test_a_baseline_query_that_matches_nothing_fails_the_check(
    served: str, workdir: Path
) -> None:
    """A baseline digest that serves nowhere: its total queries match nothing, the output
    names them, rendered, and the check exits 1."""
    absent = "sha256:" + "0" * 64
    ran = await promgate(
        "policy", "check", str(POLICY), "--prometheus", served, "--manifest", "manifest.json",
        "--stage", STAGE, "--baseline", f"shop/demo@{absent}", "--baseline-version", "0.9.0",
        cwd=workdir,
    )  # fmt: skip
    assert ran.code == 1, ran.output
    assert (
        "error-ratio  baseline  total: 0 series (matched nothing: the gate would have no "
        f"evidence)\n    {TOTAL.format(digest=absent).replace('{{', '{')}"
    ) in ran.output, ran.output
    assert "failed or matched nothing" in ran.output


async def test_an_unreachable_prometheus_fails_every_query(workdir: Path) -> None:
    """Nothing listens at the URL: every query is an error, named, and the check exits 1."""
    (workdir / "manifest.json").write_text(json.dumps(demo_manifest(CANDIDATE)))
    ran = await promgate(
        "policy", "check", str(POLICY), "--prometheus", "http://127.0.0.1:9", "--manifest",
        "manifest.json", "--stage", STAGE, cwd=workdir,
    )  # fmt: skip
    assert ran.code == 1, ran.output
    assert "no --baseline given: the candidate's queries only" in ran.output
    assert "error-ratio  candidate  total: error: cannot reach Prometheus" in ran.output
    assert "4 of 4 queries failed or matched nothing" in ran.output


@pytest.mark.parametrize(
    ("check", "ok", "shown"),
    [
        pytest.param(QueryCheck("g", "candidate", "bad", "q", 0), True,
                     "0 series (no bad events yet, or a wrong query)", id="bad-empty"),
        pytest.param(QueryCheck("g", "baseline", "total", "q", 0), False,
                     "0 series (matched nothing: the gate would have no evidence)",
                     id="total-empty"),
        pytest.param(QueryCheck("g", "baseline", "query", "q", 2), True, "2 series",
                     id="several"),
        pytest.param(QueryCheck("g", "candidate", "total", "q", None, "HTTP 503"), False,
                     "error: HTTP 503", id="failed"),
    ],
)  # fmt: skip
def test_what_a_query_check_says(check: QueryCheck, ok: bool, shown: str) -> None:
    """A bad-event query may match nothing (no bad event yet); no other query may."""
    assert (check.ok, check.shown) == (ok, shown)


async def test_a_missing_bearer_token_file_is_refused_before_any_query(workdir: Path) -> None:
    """The token file is read before the first query; a missing one is bad input (exit 2)."""
    (workdir / "manifest.json").write_text(json.dumps(demo_manifest(CANDIDATE)))
    ran = await promgate(
        "policy", "check", str(POLICY), "--prometheus", "http://127.0.0.1:9", "--manifest",
        "manifest.json", "--stage", STAGE, "--prometheus-bearer-token-file", "absent-token",
        cwd=workdir,
    )  # fmt: skip
    assert ran.code == 2, ran.output
    assert "cannot read the Prometheus bearer token file absent-token" in ran.output
