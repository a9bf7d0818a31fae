"""Refusals end to end: each bad input gets its exit code and a message that says what to fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sidecar.errors import ProblemsError
from tests.e2e.conftest import Stack, StackFactory, bounded, demo_digest, demo_manifest
from tests.support.processes import url_is_ok

pytestmark = pytest.mark.e2e

STAGE = "production"
REPOSITORY = "registry.example.com/shop/demo"

BROKEN_POLICY = """\
apiVersion: promgate/v1
kind: PromotionPolicy
metadata: {name: broken}
version: "1"
analysis: {interval: 1s, confirm: 0}
stages:
  - name: production
    requires: [staging]
    strategy:
      canary: {steps: [50, 25], stepDuration: 5 seconds}
"""
BROKEN_PATHS = (
    "analysis.confirm",
    "stages[0].strategy.canary.steps",
    "stages[0].strategy.canary.stepDuration",
    "stages[0].requires[0]",
)


async def _promote(stack: Stack, manifest: Path, *, wait: bool = True) -> tuple[int, str, str]:
    result = await stack.cli(
        "promote",
        "--manifest",
        str(manifest),
        "--stage",
        STAGE,
        "--upstream",
        "http://127.0.0.1:9",
        *(["--wait"] if wait else []),
        timeout_s=30,
    )
    return result.code, result.stdout, result.stderr


@bounded(60)
async def test_manifest_refusals_name_the_problem_and_the_fix(
    stack_factory: StackFactory,
) -> None:
    """No digest, broken JSON and wrong fields: exit 2, with the file, line or field path."""
    stack = await stack_factory(versions={STAGE: []}, prometheus=False)

    untagged = stack.manifest_file("1.0.0", artifact=f"{REPOSITORY}:1.0.0")
    code, _, stderr = await _promote(stack, untagged)
    assert code == 2, stderr
    assert f"{untagged}: artifact:" in stderr, stderr
    assert "has no digest" in stderr and "crane digest IMAGE:TAG" in stderr, stderr
    assert "IMAGE:TAG@sha256:<64 hex>" in stderr, stderr
    digestless = demo_manifest("1.0.0") | {"artifact": f"{REPOSITORY}:1.0.0"}
    with pytest.raises(ProblemsError) as refused:  # the server refuses it the same way
        await stack.client.create(digestless, STAGE)
    assert [p.path for p in refused.value.problems] == ["manifest.artifact"]
    assert "crane digest" in refused.value.problems[0].message

    lines = json.dumps(demo_manifest("1.0.0"), indent=2).splitlines()
    broken_line = next(i for i, line in enumerate(lines) if '"version"' in line)
    lines[broken_line] += ","  # a doubled comma
    not_json = stack.workdir / "not-json.json"
    not_json.write_text("\n".join(lines))
    code, _, stderr = await _promote(stack, not_json)
    assert code == 2, stderr
    assert f"{not_json} is not JSON" in stderr, stderr
    assert f"{not_json}: line {broken_line + 1} column" in stderr, stderr

    wrong = demo_manifest("1.0.0")
    wrong["build"]["number"] = "twelve"
    wrong["source"]["comit"] = wrong["source"].pop("commit")
    wrong_fields = stack.workdir / "wrong-fields.json"
    wrong_fields.write_text(json.dumps(wrong, indent=2))
    code, _, stderr = await _promote(stack, wrong_fields)
    assert code == 2, stderr
    assert f"{wrong_fields}: build.number: Input should be a valid integer" in stderr, stderr
    assert f"{wrong_fields}: source.commit: Field required (fix: add this field)" in stderr
    assert f"{wrong_fields}: source.comit: unknown field" in stderr, stderr
    assert await stack.client.list() == [], "a manifest refused by the CLI reached the server"


@bounded(60)
async def test_a_moved_tag_is_refused_naming_both_digests(stack_factory: StackFactory) -> None:
    """The same repo:tag with another digest after the first was accepted: exit 1."""
    stack = await stack_factory(versions={STAGE: []}, prometheus=False)
    accepted = stack.manifest_file("1.0.0")
    code, stdout, stderr = await _promote(stack, accepted)
    assert code == 0, (stdout, stderr)

    first, moved = demo_digest("1.0.0"), demo_digest("1.0.0-rebuilt")
    mutated = stack.manifest_file("1.0.0", artifact=f"{REPOSITORY}:1.0.0@{moved}")
    code, stdout, stderr = await _promote(stack, mutated)

    assert code == 1, (stdout, stderr)
    assert f"tag {REPOSITORY}:1.0.0 was seen with digest {first} and now points to {moved}" in (
        stderr
    ), stderr
    assert f"({REPOSITORY}@{moved})" in stderr, stderr
    refused = [p for p in await stack.client.list() if p["phase"] == "refused"]
    assert len(refused) == 1 and moved in refused[0]["artifact"], refused
    assert f"promgate status {refused[0]['id']}" in stderr, stderr
    history = await stack.client.history("demo", STAGE)
    assert [h["artifact"] for h in history] == [f"{REPOSITORY}:1.0.0@{first}"], history
    assert 'promgate_tag_mutations_total{repository="' + REPOSITORY + '"} 1.0' in (
        await stack.sidecar_metrics()
    )


@bounded(60)
async def test_a_broken_policy_is_reported_by_check_and_stops_serve(workdir: Path) -> None:
    """`policy check` exits 1 listing file, path and fix per problem; `serve` exits 2 with
    the same problems and never listens."""
    policy = workdir / "broken-policy.yaml"
    policy.write_text(BROKEN_POLICY)
    stack = Stack(workdir, versions={STAGE: []}, prometheus=False, policy=policy)
    try:
        check = await stack.cli("policy", "check", str(policy), timeout_s=30)
        assert check.code == 1, check
        problems = check.stdout.splitlines()
        assert len(problems) == len(BROKEN_PATHS), check
        for path, line in zip(BROKEN_PATHS, problems, strict=True):
            assert line.startswith(f"{policy}: {path}: "), line
            assert "(fix: " in line, line

        serve = await stack.serve_until_exit(timeout_s=30)
        assert serve.code == 2, serve
        assert f"promgate: {policy} is invalid: {len(problems)} problem(s)" in serve.stderr
        for line in problems:
            assert f"  - {line}" in serve.stderr, serve
        assert not await url_is_ok(f"{stack.api_url}/healthz"), "serve started anyway"
        assert not (workdir / "ledger.db").exists(), "serve opened its ledger anyway"
    finally:
        await stack.stop()
