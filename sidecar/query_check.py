"""``promgate policy check --prometheus``: a stage's SLO queries run for a real release."""

from __future__ import annotations

from pathlib import Path

from sidecar.analysis.check import QueryCheck, check_queries
from sidecar.analysis.prometheus import PrometheusSource
from sidecar.domain.artifact import ArtifactRef
from sidecar.domain.manifest import ReleaseManifest
from sidecar.domain.policy import PromotionPolicy
from sidecar.domain.promotion import Promotion
from sidecar.engine.runner import identities
from sidecar.errors import InputError


async def run_check(
    policy: PromotionPolicy,
    *,
    manifest_file: Path,
    stage_name: str,
    prometheus_url: str,
    bearer_token_file: Path | None,
    baseline: str | None,
    baseline_version: str | None,
) -> list[QueryCheck]:
    """``promgate policy check --prometheus``: the queries of ``stage_name`` for the
    release in ``manifest_file``, run against ``prometheus_url``."""
    try:
        stage = policy.stage(stage_name)
    except KeyError as exc:
        raise InputError(f"--stage: {exc.args[0]}") from None
    manifest = ReleaseManifest.load(manifest_file)
    try:
        stable = ArtifactRef.parse(baseline) if baseline else None
    except InputError as exc:
        raise InputError(f"--baseline: {exc}") from None
    promotion = Promotion(
        id="policy-check",
        service=manifest.service,
        stage=stage.name,
        artifact=manifest.artifact_ref,
        version=manifest.version,
        policy_version=policy.version,
        strategy=stage.strategy.kind,
        candidate_upstream="",
        manifest=manifest.to_json_dict(),
        created_at=0.0,
        baseline=stable,
        baseline_version=baseline_version or "",
    )
    candidate, compared = identities(promotion, stage.kubernetes)
    source = PrometheusSource(prometheus_url, bearer_token_file=bearer_token_file)
    try:
        return await check_queries(stage.gates.slo, candidate, compared, source.count_series)
    finally:
        await source.close()
