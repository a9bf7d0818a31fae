"""A Kubernetes-mode stack: the contract API server, two promgate replicas, real services.

No Kubernetes API server runs here, so the cluster is :class:`ContractApiServer` in the
test's own process; everything promgate writes goes through it and is validated there.
Two example service processes stand for the workloads: one serves the stable digest, one
the candidate's. A test gateway plays the Gateway implementation: it reads the HTTPRoute's
weights and, through each Service's selector, the Deployments behind it and the digest
their pod template runs, and sends each request to the process serving that digest. A
real Prometheus scrapes both processes, and two ``promgate serve`` processes (leader
election on, the Kubernetes ledger and actuator) run against the contract server.
"""

from __future__ import annotations

import os
import random
import secrets
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.client import ApiClient
from sidecar.kube.api import DEPLOYMENT, HTTPROUTE, LEASE, SERVICE, Object
from sidecar.local.demo import demo_digest
from sidecar.local.loadgen import LoadGenerator
from tests.e2e.conftest import Service, start_example_services, wait_scraped
from tests.kubeapi import ContractApiServer
from tests.support.processes import (
    REPO_ROOT,
    ManagedProcess,
    free_port,
    start_prometheus,
    wait_answering,
    wait_until,
)

POLICY = REPO_ROOT / "examples" / "kubernetes" / "e2e-policy.yaml"
APP_NAMESPACE = "shop"  # where the workloads, Services and the route live
PROMGATE_NAMESPACE = "promgate"  # where the ledger and the Lease live
STAGE = "production"
REPOSITORY = "registry.example.com/shop/demo"
ROUTE = "demo"
LEASE_S = 4.0  # short leases so a failover test finishes in seconds
LOAD_MAX_SECONDS = 150.0


def image(version: str) -> str:
    return f"{REPOSITORY}@{demo_digest(version)}"


def deployment(name: str, labels: dict[str, str], version: str) -> Object:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": APP_NAMESPACE, "labels": dict(labels)},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": image(version),
                            "ports": [{"name": "http", "containerPort": 8080}],
                        }
                    ]
                },
            },
        },
    }


def service(name: str, selector: dict[str, str]) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": APP_NAMESPACE},
        "spec": {
            "selector": dict(selector),
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }


def http_route() -> Object:
    """The route a user wrote: the weighted rule promgate drives, and one it must not touch."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": ROUTE, "namespace": APP_NAMESPACE},
        "spec": {
            "parentRefs": [{"name": "public", "namespace": "gateways"}],
            "hostnames": ["demo.example.com"],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [
                        {"name": "demo", "port": 80, "weight": 100},
                        {"name": "demo-candidate", "port": 80, "weight": 0},
                    ],
                },
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}],
                    "filters": [
                        {
                            "type": "RequestHeaderModifier",
                            "requestHeaderModifier": {"add": [{"name": "X-Admin", "value": "1"}]},
                        }
                    ],
                    "backendRefs": [{"name": "demo", "port": 80}],
                },
            ],
        },
    }


def rule_weights(route: Object) -> tuple[int, ...]:
    """The weights of the route's first rule, in backendRef order."""
    return tuple(int(ref.get("weight", 1)) for ref in route["spec"]["rules"][0]["backendRefs"])


def _image(deployment: Object) -> str:
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@dataclass
class Replica:
    """One ``promgate serve`` process of the pair."""

    identity: str
    port: int
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class KubeStack:
    """See the module docstring; ``start`` brings it up, ``stop`` always tears it down."""

    workdir: Path
    versions: Sequence[str]
    server: ContractApiServer = field(default_factory=ContractApiServer)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    services: dict[str, Service] = field(default_factory=dict)  # by the digest it serves
    processes: list[ManagedProcess] = field(default_factory=list)
    replicas: list[Replica] = field(default_factory=list)
    loads: list[LoadGenerator] = field(default_factory=list)
    prometheus_url: str = ""

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    async def start(self) -> KubeStack:
        await self.server.start()
        self.kubeconfig = self.server.write_kubeconfig(
            self.workdir / "kubeconfig", namespace=PROMGATE_NAMESPACE
        )
        labels = {"app": "demo"}
        self.server.seed(deployment("demo", labels, self.versions[0]))
        self.server.seed(service("demo", labels))
        self.server.seed(service("demo-candidate", {"app": "demo-candidate"}))
        self.server.seed(http_route())
        started = await start_example_services(self.logs, {STAGE: self.versions})
        self.services = {demo_digest(s.version): s for s in started.values()}
        prometheus, self.prometheus_url = await start_prometheus(
            self.workdir,
            {STAGE: [s.target for s in self.services.values()]},
            scrape_interval_s=1.0,
            labels={STAGE: {"stage": STAGE}},
        )
        self.processes.append(prometheus)
        tokens = self.workdir / "tokens"
        tokens.write_text(f"admin e2e {self.token}\n")
        tokens.chmod(0o600)
        for identity in ("promgate-a", "promgate-b"):
            replica = Replica(identity, free_port())
            self.replicas.append(replica)
            await self.start_replica(replica)
        return self

    def replica_env(self, replica: Replica) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROMGATE_")}
        env.update(
            PROMGATE_POLICY=str(POLICY),
            PROMGATE_LISTEN=f"127.0.0.1:{replica.port}",
            PROMGATE_PROMETHEUS_URL=self.prometheus_url,
            PROMGATE_PROMETHEUS_TIMEOUT_S="2",
            PROMGATE_TOKENS_FILE=str(self.workdir / "tokens"),
            PROMGATE_LEDGER="kubernetes",
            PROMGATE_ACTUATOR="kubernetes",
            PROMGATE_KUBECONFIG=str(self.kubeconfig),
            PROMGATE_KUBE_NAMESPACE=PROMGATE_NAMESPACE,
            PROMGATE_LEADER_ELECTION="true",
            PROMGATE_IDENTITY=replica.identity,
            PROMGATE_LEASE_DURATION_S=str(LEASE_S),
            PROMGATE_LEASE_RENEW_DEADLINE_S=str(LEASE_S * 0.75),
            PROMGATE_LEASE_RETRY_PERIOD_S="0.5",
            PROMGATE_LOG_LEVEL="info",
        )
        return env

    async def start_replica(self, replica: Replica) -> None:
        replica.process = ManagedProcess(
            [sys.executable, "-m", "sidecar.cli", "serve"],
            self.logs,
            name=replica.identity,
            env=self.replica_env(replica),
            cwd=self.workdir,
        ).start()
        await wait_answering(
            replica.process, f"{replica.url}/readyz", 30, what=f"{replica.identity} to be ready"
        )

    async def stop(self) -> None:
        for load in self.loads:
            await load.stop()
        for replica in self.replicas:
            if replica.process is not None and replica.process.running:
                await replica.process.stop()
        for process in [*self.processes, *(s.process for s in self.services.values())]:
            if process.running:
                await process.stop()
        await self.server.close()

    # ---- the cluster, as the test reads it --------------------------------------------

    def holder(self) -> str | None:
        lease = self.server.object(LEASE, PROMGATE_NAMESPACE, "promgate")
        return None if lease is None else lease["spec"].get("holderIdentity") or None

    async def leader(self, identity: str | None = None) -> Replica:
        """The replica holding the Lease (``identity``, when given), once one does: within
        two lease durations, as a takeover after a crash needs."""
        wanted = {identity} if identity else {r.identity for r in self.replicas}

        async def held() -> bool:
            return self.holder() in wanted

        await wait_until(held, 2 * LEASE_S + 5, what=f"one of {sorted(wanted)} to hold the Lease")
        return next(r for r in self.replicas if r.identity == self.holder())

    def client(self, replica: Replica) -> ApiClient:
        return ApiClient(replica.url, self.token)

    def route(self) -> Object:
        route = self.server.object(HTTPROUTE, APP_NAMESPACE, ROUTE)
        assert route is not None
        return route

    def route_weights_written(self) -> list[tuple[int, ...]]:
        """The first rule's weights in every route write promgate made, in order."""
        return [rule_weights(w.body) for w in self.server.writes_of(HTTPROUTE, ROUTE)]

    def deployment(self, name: str) -> Object | None:
        return self.server.object(DEPLOYMENT, APP_NAMESPACE, name)

    def image_of(self, name: str) -> str | None:
        found = self.deployment(name)
        return None if found is None else _image(found)

    def backend_url(self, service_name: str) -> str | None:
        """Where a request to ``service_name`` lands: the process serving the digest of a
        ready Deployment the Service selects."""
        svc = self.server.object(SERVICE, APP_NAMESPACE, service_name)
        if svc is None:
            return None
        selector = svc["spec"].get("selector") or {}
        urls = []
        for found in self.server.objects(DEPLOYMENT, APP_NAMESPACE):
            labels = found["spec"]["template"]["metadata"].get("labels") or {}
            ready = int((found.get("status") or {}).get("readyReplicas") or 0)
            if _selects(selector, labels) and ready > 0:
                serving = self.services.get(_image(found).rpartition("@")[2])
                urls.append(None if serving is None else serving.url)
        if len(urls) > 1 or None in urls:
            raise AssertionError(
                f"Service {service_name} selects {len(urls)} ready workloads: {urls}"
            )
        return urls[0] if urls else None

    def gateway(self) -> Callable[[], str | None]:
        """Pick each request's upstream by the route's weights, as a Gateway would."""
        rng = random.Random()

        def pick() -> str | None:
            refs = [r for r in self.route()["spec"]["rules"][0]["backendRefs"] if r["weight"]]
            if not refs:
                return None
            ref = rng.choices(refs, weights=[r["weight"] for r in refs])[0]
            url = self.backend_url(ref["name"])
            return None if url is None else url + "/"

        return pick

    def start_load(self, rate: float) -> LoadGenerator:
        load = LoadGenerator(
            self.gateway(),
            rate,
            max_seconds=LOAD_MAX_SECONDS,
            max_requests=int(rate * LOAD_MAX_SECONDS),
        )
        load.start()
        self.loads.append(load)
        return load

    async def fault(self, version: str, **fault: Any) -> None:
        """POST /admin/fault to the process serving ``version``."""
        await self.services[demo_digest(version)].fault(**fault)

    async def wait_scraped(self) -> None:
        await wait_scraped(self.prometheus_url, [STAGE], len(self.services))
