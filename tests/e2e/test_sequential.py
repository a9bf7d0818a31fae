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


def sequential_policy(
    workdir: Path, analysis: dict[str, object] | None = None, **options: object
) -> Path:
    """The e2e policy with its production ratio gates judged sequentially (``options``
    added to each of them, ``analysis`` to its analysis settings)."""
    policy = yaml.safe_load(E2E_POLICY.read_text())
    policy["analysis"].update(analysis or {})
    for stage in policy["stages"]:
        if stage["name"] == STAGE:
            for gate in stage["gates"]["slo"]:
                gate.update(judge="sequential", margin=0.2, minStepRequests=50, **options)
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
    # alpha 1% split over the two sequential gates only (evidence carries over the steps)
    assert confirmed and all(g["e_value"] >= 200 for g in confirmed), confirmed
    assert all(g["e_threshold"] == pytest.approx(200) for g in confirmed), confirmed
    assert "promgate_gate_e_value{" in await stack.sidecar_metrics()


@bounded(90)
async def test_a_step_waits_until_the_regression_is_ruled_out(
    stack_factory: StackFactory, workdir: Path
) -> None:
    """With ``detect`` a healthy canary's first step goes on past its 5 s until its gates
    have ruled out a 2x regression (here through ``detectFloor``: the example service
    has no errors and no slow requests, so twice the baseline says nothing), then moves
    on and promotes; every verdict carries the clearance."""
    # about 170 clean candidate requests clear it: some 15 s at 15 rps; allow for a slow
    # machine before the step would stop as inconclusive
    policy = sequential_policy(workdir, {"noDataTimeout": "60s"}, detect=2, detectFloor=0.02)
    stack = await stack_factory(versions={STAGE: [STABLE, CANDIDATE]}, policy=policy)
    await stack.seed(STAGE, STABLE)
    stack.start_load(STAGE, LOAD_RPS)
    await stack.wait_scraped()

    result = await stack.promote_in_background(CANDIDATE, STAGE)

    assert result.code == 0, result
    promotion = await stack.client.get(result.stdout.split()[1])
    assert promotion["phase"] == "promoted", promotion["reason"]
    events = await stack.events(promotion["id"])
    steps = [e for e in events if e["kind"] == "step"]
    assert len(steps) == 2, [e["kind"] for e in events]
    assert steps[1]["at"] - steps[0]["at"] > 5.0 + 1.0  # past stepDuration, and then some
    waits = [e for e in events if "waiting for evidence" in (e.get("data") or {}).get("reason", "")]
    assert waits, [e.get("data", {}).get("reason") for e in events]
    assert "not yet ruled out (clearance" in waits[0]["data"]["reason"]
    moved = {g["gate"]: g for g in steps[1]["data"]["gates"]}
    assert set(moved) == {"error-ratio", "slow-ratio"}
    assert all(g["cleared"] and g["clearance"] >= 20 for g in moved.values()), moved
    assert "promgate_gate_clearance{" in await stack.sidecar_metrics()
