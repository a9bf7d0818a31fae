"""The sequential judge end to end: a real regression is confirmed by its e-value."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import E2E_POLICY, REGRESSION, StackFactory, bounded, gates_of

pytestmark = pytest.mark.e2e

STAGE = "production"
STABLE, CANDIDATE = "1.0.0", "1.1.0"
LOAD_RPS = 60.0


def sequential_policy(workdir: Path) -> Path:
    """The e2e policy with its production ratio gates judged sequentially."""
    policy = yaml.safe_load(E2E_POLICY.read_text())
    for stage in policy["stages"]:
        if stage["name"] == STAGE:
            for gate in stage["gates"]["slo"]:
                gate.update(judge="sequential", margin=0.2, minStepRequests=50)
    path = workdir / "sequential-policy.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


@bounded(90)
async def test_regression_is_confirmed_by_its_e_value(
    stack_factory: StackFactory, workdir: Path
) -> None:
    """30% errors on the candidate: the e-value crosses 1/alpha and the canary rolls back,
    with the e-value in the verdict, the reason and the sidecar's metrics."""
    stack = await stack_factory(versions={STAGE: [STABLE, CANDIDATE]},
                                policy=sequential_policy(workdir))  # fmt: skip
    await stack.seed(STAGE, STABLE)
    stack.start_load(STAGE, LOAD_RPS)
    await stack.wait_scraped()
    await stack.service(CANDIDATE, STAGE).fault(**REGRESSION)

    result = await stack.promote_in_background(CANDIDATE, STAGE)

    assert result.code == 1, result
    promotion = await stack.client.get(result.stdout.split()[1])
    assert (promotion["phase"], promotion["classification"]) == ("rolled_back", "persistent")
    assert "regression confirmed: e-value" in promotion["reason"], promotion["reason"]
    confirmed = [g for _, g in gates_of(await stack.events(promotion["id"]))
                 if g["classification"] == "persistent"]  # fmt: skip
    # alpha 1% over two sequential gates and two steps: 1 / 0.0025 = 400
    assert confirmed and all(g["e_value"] >= 400 for g in confirmed), confirmed
    assert "promgate_gate_e_value{" in await stack.sidecar_metrics()
