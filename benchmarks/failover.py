"""Failover time: the leader killed with SIGKILL mid-canary -> the new leader's next actuation.

Each run starts the contract API server (in this process, so its Lease is observable),
a webhook receiver that records every traffic state it is sent, and two real
``python -m sidecar.cli serve`` processes electing a leader through a Lease. It promotes a
first release (straight to stable), starts a canary of a second one with one-second steps,
waits for two of its actuations, kills the leader with SIGKILL, and measures on this
process's monotonic clock:

    failover = (first traffic state the receiver gets after the kill) - (kill sent)

The receiver is the component that moves traffic, so this is the time traffic stood still.
It also counts, per run, traffic states sent twice (the same ``Idempotency-Key``) and
sequence numbers skipped, which must both be zero, and when the Lease changed holder.

The bound to compare with is ``lease duration + one evaluation interval``: the survivor
takes the lease over once the dead leader's lease expires on its own clock (up to one
retry period later), then resumes the promotion, whose next step is at most one interval
away. Both replicas share one ledger: ``--ledger kubernetes`` (the default: Promotion
objects and ConfigMaps in the contract server, as in a cluster) or ``--ledger sqlite``
(one file, as two replicas on one host would).

``--stop term`` sends SIGTERM instead, as a rolling update does: the leader stops acting
and releases the Lease, so the other replica takes over within a retry period.
``--lease 15,10,2`` runs the chart's defaults.

Last line: ``failover runs=<n> median_s=<x> p95_s=<y> lease_s=<d> bound_s=<b>``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sidecar.client import ApiClient
from sidecar.kube.api import LEASE
from sidecar.local.processes import ManagedProcess, free_port, wait_until
from tests.kubeapi import ContractApiServer
from tests.support.manifests import manifest
from tests.support.processes import serve_app

NAMESPACE = "default"
RUN_TIMEOUT_S = 120.0  # one run, start to finish, at most
EVALUATIONS = frozenset({"verdict", "step", "switched", "promoted", "rolled_back"})


@dataclass(frozen=True)
class Lease:
    duration_s: int
    renew_s: float
    retry_s: float


@dataclass
class Receiver:
    """The webhook end: every traffic state with its arrival time (monotonic)."""

    states: list[tuple[float, str]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.states.append((time.monotonic(), request.headers["Idempotency-Key"]))
        await request.read()
        return web.Response(status=204)

    def after(self, moment: float) -> list[tuple[float, str]]:
        return [(at, key) for at, key in self.states if at > moment]

    def repeated(self) -> int:
        """States delivered more than once (the same promotion and sequence number)."""
        keys = [key for _, key in self.states]
        return len(keys) - len(set(keys))

    def skipped(self, promotion_id: str) -> int:
        """Sequence numbers of the promotion's states that never arrived."""
        sent = {int(k.rpartition(":")[2]) for _, k in self.states if k.startswith(promotion_id)}
        return len(set(range(1, max(sent) + 1)) - sent)


@dataclass(frozen=True)
class Run:
    failover_s: float
    lease_changed_s: float
    evaluated_s: float
    repeated: int
    skipped: int


def release(digest_char: str, version: str) -> dict[str, object]:
    return manifest(digest_char=digest_char, version=version, tag=version)


def policy_text(interval_s: int, steps: int) -> str:
    weights = ", ".join(str(round(100 * (i + 1) / (steps + 1))) for i in range(steps))
    return f"""apiVersion: promgate/v1
kind: PromotionPolicy
metadata: {{name: failover}}
version: "1"
analysis: {{interval: {interval_s}s, confirm: 1, noDataTimeout: 5m, maxProviderHold: 5m}}
stages:
  - name: production
    strategy: {{canary: {{steps: [{weights}], stepDuration: {interval_s}s}}}}
"""


async def one_run(
    workdir: Path, lease: Lease, ledger: str, interval_s: int, *, graceful: bool
) -> Run:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/traffic", receiver.handle)
    runner, webhook_url = await serve_app(app)
    replicas: dict[str, tuple[ManagedProcess, str]] = {}
    try:
        async with ContractApiServer() as kube:
            kubeconfig = kube.write_kubeconfig(workdir / "kubeconfig", namespace=NAMESPACE)
            token = secrets.token_urlsafe(16)
            (workdir / "tokens").write_text(f"admin bench {token}\n")
            steps = int(3 * (lease.duration_s + interval_s) / interval_s) + 4
            (workdir / "policy.yaml").write_text(policy_text(interval_s, steps))
            env = {
                **os.environ,
                "PROMGATE_POLICY": str(workdir / "policy.yaml"),
                "PROMGATE_TOKENS_FILE": str(workdir / "tokens"),
                "PROMGATE_PROMETHEUS_URL": "http://127.0.0.1:9",  # no gates: never asked
                "PROMGATE_LEDGER": ledger,
                "PROMGATE_LEDGER_PATH": str(workdir / "ledger.db"),
                "PROMGATE_ACTUATOR": "webhook",
                "PROMGATE_WEBHOOK_URL": f"{webhook_url}/traffic",
                "PROMGATE_LEADER_ELECTION": "true",
                "PROMGATE_KUBECONFIG": str(kubeconfig),
                "PROMGATE_KUBE_NAMESPACE": NAMESPACE,
                "PROMGATE_LEASE_DURATION_S": str(lease.duration_s),
                "PROMGATE_LEASE_RENEW_DEADLINE_S": str(lease.renew_s),
                "PROMGATE_LEASE_RETRY_PERIOD_S": str(lease.retry_s),
                "PROMGATE_LOG_LEVEL": "warning",
            }
            for identity in ("replica-a", "replica-b"):
                listen = f"127.0.0.1:{free_port()}"
                argv = [sys.executable, "-m", "sidecar.cli", "serve"]
                process = ManagedProcess(
                    argv,
                    workdir / "logs",
                    name=identity,
                    env={**env, "PROMGATE_IDENTITY": identity, "PROMGATE_LISTEN": listen},
                ).start()
                replicas[identity] = (process, f"http://{listen}")
            return await measure(
                kube,
                receiver,
                replicas=replicas,
                token=token,
                lease=lease,
                interval_s=interval_s,
                graceful=graceful,
            )
    except TimeoutError:
        for name, (process, _) in replicas.items():
            print(f"--- {name} (exit {process.returncode}):\n{process.log_tail()}", flush=True)
        raise
    finally:
        for process, _ in replicas.values():
            await process.stop()
        await runner.cleanup()


def holder(kube: ContractApiServer) -> str | None:
    stored = kube.object(LEASE, NAMESPACE, "promgate")
    return None if stored is None else stored["spec"].get("holderIdentity")


async def measure(
    kube: ContractApiServer,
    receiver: Receiver,
    *,
    replicas: dict[str, tuple[ManagedProcess, str]],
    token: str,
    lease: Lease,
    interval_s: int,
    graceful: bool,
) -> Run:
    async def elected() -> bool:
        return holder(kube) in replicas

    await wait_until(elected, 20, what="a leader", interval_s=0.05)
    leader = str(holder(kube))
    killed, leader_url = replicas[leader]
    survivor = next(name for name in replicas if name != leader)
    async with ApiClient(leader_url, token, leader_wait_s=20) as client:
        first = await client.create(release("a", "1.0.0"), "production")
        await wait_until(
            lambda: _phase_is(client, first["id"], "promoted"), 20, what="the first release"
        )
        canary = await client.create(release("b", "1.1.0"), "production")
    before = len(receiver.states)

    async def stepped() -> bool:
        return len(receiver.states) >= before + 2

    await wait_until(stepped, 20, what="two canary steps", interval_s=0.02)
    await asyncio.sleep(interval_s * 0.37)  # not in step with the evaluations
    killed_at, killed_wall = time.monotonic(), time.time()
    # SIGTERM is a planned restart (the lease is released); SIGKILL a crash
    stopping = asyncio.create_task(killed.stop() if graceful else killed.kill())
    deadline = lease.duration_s + lease.retry_s + 3 * interval_s + 10

    async def taken_over() -> bool:
        return holder(kube) == survivor

    await wait_until(taken_over, deadline, what=f"{survivor} holding the lease", interval_s=0.01)
    lease_changed = time.monotonic()

    async def actuated() -> bool:
        return bool(receiver.after(killed_at))

    await wait_until(actuated, deadline, what=f"an actuation by {survivor}", interval_s=0.01)
    await asyncio.sleep(interval_s)  # the states that follow it, to count repeats
    await stopping
    async with ApiClient(replicas[survivor][1], token) as client:
        events = [e async for e in client.events(canary["id"])]
    return Run(
        failover_s=receiver.after(killed_at)[0][0] - killed_at,
        lease_changed_s=lease_changed - killed_at,
        evaluated_s=first_evaluation(events) - killed_wall,
        repeated=receiver.repeated(),
        skipped=receiver.skipped(canary["id"]),
    )


def first_evaluation(events: list[dict[str, object]]) -> float:
    """When (wall clock) the new leader first judged the canary after resuming it."""
    resumed = next(i for i, e in enumerate(events) if e["kind"] == "resumed")
    judged = next(e for e in events[resumed:] if e["kind"] in EVALUATIONS)
    return float(str(judged["at"]))


async def _phase_is(client: ApiClient, promotion_id: str, phase: str) -> bool:
    return (await client.get(promotion_id))["phase"] == phase


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--lease", default="4,3,1", help="duration,renew,retry in seconds")
    parser.add_argument("--interval", type=int, default=1, help="evaluation interval, s")
    parser.add_argument("--ledger", default="kubernetes", choices=["sqlite", "kubernetes"])
    parser.add_argument(
        "--stop", default="kill", choices=["kill", "term"], help="SIGKILL (a crash) or SIGTERM"
    )
    args = parser.parse_args()
    duration, renew, retry = args.lease.split(",")
    lease = Lease(int(duration), float(renew), float(retry))
    bound = lease.duration_s + args.interval
    runs: list[Run] = []
    for number in range(1, max(args.runs, 1) + 1):
        with tempfile.TemporaryDirectory(prefix="promgate-failover-") as tmp:
            run = await asyncio.wait_for(
                one_run(Path(tmp), lease, args.ledger, args.interval, graceful=args.stop == "term"),
                RUN_TIMEOUT_S,
            )
        runs.append(run)
        print(
            f"run {number}: next actuation {run.failover_s:.2f} s after the kill; lease "
            f"taken over {run.lease_changed_s:.2f} s, first evaluation {run.evaluated_s:.2f} s; "
            f"states repeated {run.repeated}, skipped {run.skipped}",
            flush=True,
        )
    failovers = [run.failover_s for run in runs]
    evaluations = [run.evaluated_s for run in runs]
    median = statistics.median(failovers)
    print(
        f"lease {lease.duration_s}/{lease.renew_s:g}/{lease.retry_s:g} s "
        f"(duration/renew deadline/retry), interval and step {args.interval} s, ledger "
        f"{args.ledger}, webhook actuator, leader stopped with SIG{args.stop.upper()}, "
        f"{len(runs)} runs:\n"
        f"  first evaluation by the new leader: median "
        f"{statistics.median(evaluations):.2f} s, p95 {p95(evaluations):.2f} s, "
        f"{statistics.median(evaluations) / bound:.2f} of the bound {bound} s "
        f"(lease duration + one interval)\n"
        f"  next actuation by the new leader: median {median:.2f} s, p95 "
        f"{p95(failovers):.2f} s, {median / bound:.2f} of the bound (a resumed step "
        f"needs a full step of watched traffic first)\n"
        f"  traffic states repeated {sum(r.repeated for r in runs)}, skipped "
        f"{sum(r.skipped for r in runs)}"
    )
    print(
        f"failover runs={len(runs)} median_s={median:.3f} p95_s={p95(failovers):.3f} "
        f"lease_s={lease.duration_s} bound_s={bound}"
    )


if __name__ == "__main__":
    asyncio.run(main())
