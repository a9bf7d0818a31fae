"""Promotion objects a person applies, taken in by a real engine over the Kubernetes ledger."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.sdk.trace import TracerProvider

from sidecar.actuators.null import NullActuator
from sidecar.analysis.prometheus import NullMetricsSource
from sidecar.domain.promotion import Phase
from sidecar.engine.context import EngineContext
from sidecar.engine.controller import Controller
from sidecar.kube.api import CONFIGMAP, PROMOTION, KubeApi
from sidecar.kube.intake import PromotionIntake
from sidecar.ledger.kubernetes import KubernetesLedger
from sidecar.local.processes import wait_until
from sidecar.telemetry.metrics import PrometheusRecorder
from sidecar.testing import FakeClock
from tests.kubeapi import ContractApiServer
from tests.support.kube import NAMESPACE, contract_api
from tests.support.manifests import manifest
from tests.support.policies import policy
from tests.support.processes import REPO_ROOT


class Cluster:
    """A contract server, a Kubernetes ledger, an engine on it and the intake."""

    def __init__(self, server: ContractApiServer, api: KubeApi) -> None:
        self.server = server
        self.ledger = KubernetesLedger(api, NAMESPACE, policy=policy())
        self.controller = Controller(
            EngineContext(
                policy=policy(),
                ledger=self.ledger,
                actuator=NullActuator(),
                source=NullMetricsSource(),
                recorder=PrometheusRecorder(),
                tracer=TracerProvider().get_tracer("test"),
                clock=FakeClock(),
            )
        )
        self.intake = PromotionIntake(api, NAMESPACE, self.controller)

    def apply(self, name: str, spec: dict[str, Any]) -> None:
        """What ``kubectl apply`` of a Promotion does."""
        self.server.seed(
            {
                "apiVersion": PROMOTION.api_version,
                "kind": PROMOTION.kind,
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": spec,
            }
        )

    def status(self, name: str) -> dict[str, Any]:
        stored = self.server.object(PROMOTION, NAMESPACE, name)
        assert stored is not None
        return dict(stored.get("status") or {})


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with contract_api(tmp_path) as (server, api):
        built = Cluster(server, api)
        await built.ledger.open()
        await built.controller.start()
        try:
            yield built
        finally:
            await built.controller.stop()


async def test_an_applied_promotion_runs_under_its_own_name(cluster: Cluster) -> None:
    spec = {"stage": "staging", "manifest": manifest(digest_char="a", version="1.0.0")}
    cluster.apply("checkout-1-0-0", spec)
    assert await cluster.intake.poll_once() == ["checkout-1-0-0"]
    done = await cluster.controller.wait_finished("checkout-1-0-0")
    assert done.phase is Phase.PROMOTED

    async def shown() -> bool:
        return cluster.status("checkout-1-0-0").get("phase") == "promoted"

    await wait_until(shown, 5, what="the promoted phase in the status", interval_s=0.01)
    stored = cluster.server.object(PROMOTION, NAMESPACE, "checkout-1-0-0")
    assert stored is not None and stored["spec"] == spec
    created = (await cluster.ledger.events("checkout-1-0-0"))[0]
    assert created.data["actor"] == f"kubernetes:{NAMESPACE}/checkout-1-0-0"
    assert await cluster.intake.poll_once() == []  # taken in once
    # every write was accepted (the server validates each): no transaction is left half-done
    stages = cluster.server.objects(CONFIGMAP, NAMESPACE)
    assert stages and not [o for o in stages if "journal" in (o.get("data") or {})]
    assert {w.subresource for w in cluster.server.writes_of(PROMOTION)} == {"", "status"}


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        pytest.param(
            {"stage": "staging", "manifest": manifest(artifact=None)},
            r"spec\.manifest: .*artifact",
            id="invalid-manifest",
        ),
        pytest.param(
            {"stage": "nowhere", "manifest": manifest()},
            r"unknown stage 'nowhere'.*use one of: staging",
            id="unknown-stage",
        ),
    ],
)
async def test_an_unreadable_promotion_is_refused_in_its_status_once(
    cluster: Cluster, spec: dict[str, Any], reason: str
) -> None:
    cluster.apply("bad", spec)
    assert await cluster.intake.poll_once() == ["bad"]
    status = cluster.status("bad")
    assert status["phase"] == "refused"
    assert re.search(reason, status["reason"], re.DOTALL), status["reason"]
    assert await cluster.intake.poll_once() == []
    assert await cluster.controller.list() == []


async def test_a_promotion_refused_by_a_rule_is_stored_as_a_refused_promotion(
    cluster: Cluster,
) -> None:
    """A release the policy refuses is a promotion too: its record says why."""
    cluster.apply("prod-first", {"stage": "production", "manifest": manifest()})
    assert await cluster.intake.poll_once() == ["prod-first"]
    refused = await cluster.controller.get("prod-first")
    assert refused.phase is Phase.REFUSED and "requires" in refused.reason
    status = cluster.status("prod-first")
    assert (status["phase"], status["ledger"]["record"]["id"]) == ("refused", "prod-first")
    assert await cluster.intake.poll_once() == []


async def test_promotions_promgate_created_itself_are_left_alone(cluster: Cluster) -> None:
    created = await cluster.controller.create(manifest(), "staging", actor="cli")
    await cluster.controller.wait_finished(created.id)
    assert await cluster.intake.poll_once() == []
    assert [p.id for p in await cluster.controller.list()] == [created.id]


async def test_the_example_promotion_is_taken_in(cluster: Cluster) -> None:
    example = yaml.safe_load((REPO_ROOT / "examples/kubernetes/promotion.yaml").read_text())
    cluster.apply(example["metadata"]["name"], example["spec"])
    name = example["metadata"]["name"]
    assert await cluster.intake.poll_once() == [name]
    assert (await cluster.controller.get(name)).version == example["spec"]["manifest"]["version"]
