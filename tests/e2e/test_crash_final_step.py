"""The sidecar killed at any instant of a promotion's final step keeps the truth after restart.

Whenever it dies (before the final actuation, while the webhook receiver holds the
request, just after the receiver answers, or after any ledger write that follows), the
restarted sidecar must end with the stage's stable digest equal to the digest the last
applied traffic state (as the receiver saw it) sends all traffic to, the promotion
promoted with its final actuation recorded once, and the next canary comparing with that
release. The sidecar is a real process with its SQLite ledger and the webhook actuator;
the precise points between ledger writes come from ``tests/support/crashing_sidecar.py``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from sidecar.errors import PromgateError
from tests.e2e.conftest import Stack, WebhookReceiver, bounded, demo_digest, demo_manifest
from tests.support.processes import REPO_ROOT, wait_until

pytestmark = pytest.mark.e2e

STAGE = "production"
SERVICE = "demo"
LAUNCHER = REPO_ROOT / "tests" / "support" / "crashing_sidecar.py"
MAX_WRITES = 8  # more ledger writes after the final actuation than any version makes
POLICY = f"""
apiVersion: promgate/v1
kind: PromotionPolicy
metadata: {{name: crash}}
version: "crash-1"
analysis: {{interval: 50ms, noDataTimeout: 1h, maxProviderHold: 1h}}
stages:
  - name: {STAGE}   # no gates: the one step passes once it has lasted 200ms, then promote
    strategy: {{canary: {{steps: [25], stepDuration: 200ms}}}}
"""


class FinalStepReceiver(WebhookReceiver):
    """The test's webhook receiver, which can hold the final state's POST (the one that
    sends all traffic to ``final_digest``) before or after applying it, and tells when it
    answers that POST."""

    def __init__(self, secret: bytes) -> None:
        super().__init__(secret)
        self.final_digest = ""
        self.hold: str | None = None  # None, "before-applying" or "after-applying"
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.answered = asyncio.Event()

    def expect_final(self, digest: str, hold: str | None = None) -> None:
        self.final_digest, self.hold = digest, hold
        self.held, self.release, self.answered = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def _receive(self, request: web.Request) -> web.Response:
        state = json.loads(await request.read())
        final = any(
            b["digest"] == self.final_digest and b["weight"] == 100 for b in state["backends"]
        )
        if final and self.hold == "before-applying":
            self.held.set()
            await self.release.wait()
            return web.json_response({"error": "not applied"}, status=503)
        response = await super()._receive(request)
        if final and self.hold == "after-applying":
            self.held.set()
            await self.release.wait()
        if final:
            self.answered.set()
        return response

    def routes_all_to(self) -> list[str]:
        """The digests the receiver's current state sends 100% of traffic to."""
        state = self.state.get(STAGE) or {}
        return [b["digest"] for b in state.get("backends", []) if b["weight"] == 100]


class CrashStack(Stack):
    """A stack whose sidecar runs under the crashing launcher while ``crash`` (the
    launcher's CRASH_* variables) is set, and is the plain sidecar otherwise."""

    def __init__(self, workdir: Path, **options: Any) -> None:
        super().__init__(workdir, **options)
        self.crash: dict[str, str] = {}

    def sidecar_argv(self) -> list[str]:
        if self.crash:
            return [sys.executable, str(LAUNCHER), "serve"]
        return super().sidecar_argv()

    def sidecar_env(self, **overrides: str) -> dict[str, str]:
        return super().sidecar_env(**{**self.crash, **overrides})


@pytest.fixture
async def crash_stack(workdir: Path) -> AsyncIterator[tuple[CrashStack, FinalStepReceiver]]:
    """A sidecar (no Prometheus, no services: the receiver only records upstreams) with
    the webhook actuator and a first release of the demo service promoted."""
    policy = workdir / "crash-policy.yaml"
    policy.write_text(POLICY)
    receiver = FinalStepReceiver(b"crash-test-secret-0123456789")
    await receiver.start()
    stack = CrashStack(
        workdir, versions={STAGE: []}, prometheus=False, receiver=receiver, policy=policy
    )
    try:
        await stack.start()
        created = await stack.client.create(demo_manifest("1.0.0"), STAGE, _upstream("1.0.0"))
        await _wait_final(stack, created["id"])
        yield stack, receiver
    finally:
        await stack.stop()


def _upstream(version: str) -> str:
    return f"http://127.0.0.1:9/{version}"  # never contacted: the receiver routes nothing


async def _wait_final(stack: Stack, promotion_id: str, timeout_s: float = 20) -> dict[str, Any]:
    """Until the promotion is promoted and its final actuation recorded; the promotion."""
    found: dict[str, Any] = {}

    async def recorded() -> bool:
        found.update(await stack.client.get(promotion_id))
        if found["phase"] != "promoted":
            return False
        return any(
            e["kind"] == "actuation" and e["data"]["sequence"] == found["actuation_seq"]
            for e in await stack.events(promotion_id)
        )

    await wait_until(recorded, timeout_s, what=f"{promotion_id} promoted and recorded")
    return found


async def _start_canary(
    stack: Stack, receiver: FinalStepReceiver, version: str, previous: str, problems: list[str]
) -> str:
    """Create the canary of ``version``; it should compare with ``previous`` and send it 75%
    (else a problem is noted); returns its id."""
    created = await stack.client.create(demo_manifest(version), STAGE, _upstream(version))
    split = {b["digest"]: b["weight"] for b in receiver.state[STAGE]["backends"]}
    if created["baseline"] != demo_manifest(previous)["artifact"] or split != {
        demo_digest(previous): 75,
        demo_digest(version): 25,
    }:
        problems.append(
            f"the canary of {version} compares with {created['baseline']} and routes {split}, "
            f"not with {previous}, the release the last one promoted"
        )
    return str(created["id"])


async def _restart_and_check(
    stack: CrashStack,
    receiver: FinalStepReceiver,
    promotion_id: str,
    version: str,
    *,
    what: str,
    problems: list[str],
) -> None:
    """Restart the plain sidecar on the same ledger; note each way the invariant breaks."""
    await stack.kill_sidecar()  # if it still runs; and a fresh client either way
    stack.crash = {}
    receiver.expect_final("")
    await stack.start_sidecar()
    try:
        final = await _wait_final(stack, promotion_id, timeout_s=10)
    except TimeoutError:
        final = await stack.client.get(promotion_id)
        problems.append(f"killed {what}: the promotion is {final['phase']}, and its final "
                        f"actuation #{final['actuation_seq']} is not recorded")  # fmt: skip
    routed, stable = receiver.routes_all_to(), (await stack.client.history(SERVICE, STAGE))[-1]
    if routed != [demo_digest(version)] or stable["artifact"] != demo_manifest(version)["artifact"]:
        problems.append(
            f"killed {what}: the receiver routes everything to {routed}, the stable history "
            f"ends with {stable['artifact']} (promotion {stable['promotion_id']}), "
            f"the promotion of {version} is {final['phase']}"
        )
    actuations = [
        e for e in await stack.events(promotion_id)
        if e["kind"] == "actuation" and e["data"]["sequence"] == final["actuation_seq"]
    ]  # fmt: skip
    if len(actuations) != 1:
        problems.append(f"killed {what}: the final actuation is recorded {len(actuations)} times")
    assert receiver.rejected == []


async def _exited_or_done(stack: CrashStack, promotion_id: str) -> bool:
    """Wait until the launcher died, or the final step completed with it alive; whether it died."""
    assert stack.sidecar is not None
    sidecar = stack.sidecar

    async def settled() -> bool:
        if not sidecar.running:
            return True
        try:
            promotion = await stack.client.get(promotion_id)
            events = await stack.events(promotion_id)
        except PromgateError:  # it died while answering
            return not sidecar.running
        return promotion["phase"] == "promoted" and any(
            e["kind"] == "actuation" and e["data"]["sequence"] == promotion["actuation_seq"]
            for e in events
        )

    await wait_until(settled, 20, what="the sidecar to die or finish the final step")
    return not sidecar.running


@bounded(60)
async def test_killed_before_or_after_the_final_actuation_or_any_write_after_it(
    crash_stack: tuple[CrashStack, FinalStepReceiver],
) -> None:
    """The sidecar dies just before the final webhook POST, the instant it returns, and
    right after each ledger write that follows it (N = 1, 2, ... until no N-th write comes
    in the final step): every restart ends consistent."""
    stack, receiver = crash_stack
    previous, survived_at, problems = "1.0.0", None, []
    points = ["before-apply", *(f"after-apply:{n}" for n in range(MAX_WRITES + 1))]
    for index, point in enumerate(points, start=1):
        version = f"1.{index}.0"
        log = stack.workdir / f"writes-{index}.log"
        await stack.kill_sidecar()
        stack.crash = {"CRASH_DIGEST": demo_digest(version), "CRASH_POINT": point,
                       "CRASH_LOG": str(log)}  # fmt: skip
        await stack.start_sidecar()
        receiver.expect_final(demo_digest(version))
        promotion_id = await _start_canary(stack, receiver, version, previous, problems)
        died = await _exited_or_done(stack, promotion_id)
        writes = log.read_text().splitlines() if log.exists() else []
        if point != "before-apply" and not died:
            n = int(point.split(":")[1])
            assert len(writes) < n, (point, writes)  # survived only because no N-th write came
            survived_at = n
        await _restart_and_check(
            stack, receiver, promotion_id, version, what=point, problems=problems
        )
        previous = version
        if survived_at is not None:
            break
    assert survived_at is not None, f"still dying after {MAX_WRITES} writes"
    await _start_canary(stack, receiver, "9.0.0", previous, problems)
    assert not problems, "\n".join(problems)


RECEIVER_KILLS: list[tuple[str, str | None, float]] = [
    ("held before applying", "before-applying", 0.0),
    ("held after applying", "after-applying", 0.0),
    *((f"{ms} ms after answering", None, ms / 1000) for ms in (0, 5, 10, 20, 30, 50)),
]
"""(what, how the receiver holds the final POST, delay after its answer) per kill."""


@bounded(60)
async def test_killed_while_the_receiver_holds_or_just_after_it_answers(
    crash_stack: tuple[CrashStack, FinalStepReceiver],
) -> None:
    """SIGKILL while the receiver holds the final POST (before or after applying it), and
    0 to 50 ms after it answered: every restart ends consistent."""
    stack, receiver = crash_stack
    previous, problems = "1.0.0", []
    for index, (what, hold, delay_s) in enumerate(RECEIVER_KILLS, start=1):
        version = f"2.{index}.0"
        receiver.expect_final(demo_digest(version), hold)
        promotion_id = await _start_canary(stack, receiver, version, previous, problems)
        if hold is not None:
            await asyncio.wait_for(receiver.held.wait(), 20)
        else:
            await asyncio.wait_for(receiver.answered.wait(), 20)
            await asyncio.sleep(delay_s)  # the kill's distance from the answer is the point
        await stack.kill_sidecar()
        receiver.release.set()
        await _restart_and_check(
            stack, receiver, promotion_id, version, what=what, problems=problems
        )
        previous = version
    await _start_canary(stack, receiver, "9.0.0", previous, problems)
    assert not problems, "\n".join(problems)
