"""Traces reach a real OTLP/HTTP receiver, linked to the CI build and carrying identity."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from sidecar.analysis.prometheus import NullMetricsSource
from sidecar.domain.artifact import ArtifactRef
from sidecar.domain.promotion import Promotion
from sidecar.engine.context import EngineContext
from sidecar.engine.controller import Controller
from sidecar.ledger.memory import MemoryLedger
from sidecar.local.processes import wait_until
from sidecar.telemetry.metrics import PrometheusRecorder
from sidecar.telemetry.tracing import build_tracer_provider, release_attributes
from sidecar.testing import FakeClock, RecordingActuator
from tests.conftest import HttpServer
from tests.support.manifests import manifest
from tests.support.policies import policy

CI_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CI_SPAN = "00f067aa0ba902b7"


class Receiver:
    """An OTLP/HTTP trace receiver on loopback that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Any] = []

    async def handle(self, request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        for resource in message.resource_spans:
            for scope in resource.scope_spans:
                self.spans.extend(scope.spans)
        return web.Response(status=200)


@pytest.fixture
async def receiver(http_server: HttpServer) -> tuple[Receiver, str]:
    collector = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", collector.handle)
    return collector, await http_server(app)


def attributes(span: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in span.attributes:
        value = item.value
        kind = value.WhichOneof("value")
        values[item.key] = (
            [v.string_value for v in value.array_value.values]
            if kind == "array_value"
            else getattr(value, kind)
        )
    return values


async def test_a_promotion_is_one_trace_linked_to_its_build(
    receiver: tuple[Receiver, str],
) -> None:
    """Every span of a promotion shares one trace whose root links to the CI build span."""
    collector, endpoint = receiver
    provider = build_tracer_provider(endpoint)
    ledger = MemoryLedger()
    controller = Controller(
        EngineContext(
            policy=policy(no_data="5s"),
            ledger=ledger,
            actuator=RecordingActuator(),
            source=NullMetricsSource(),
            recorder=PrometheusRecorder(),
            tracer=provider.get_tracer("promgate"),
            clock=FakeClock(),
        )
    )
    await controller.start()
    build = {"id": "run-77", "url": "https://ci-bot:s3cret@ci.example.com/77",
             "traceparent": f"00-{CI_TRACE}-{CI_SPAN}-01"}  # fmt: skip
    source = {"repository": "https://x-token:s3cret@git.example.com/demo",
              "commit": "0123456789abcdef0123456789abcdef01234567"}  # fmt: skip
    first = await controller.create(
        manifest(digest_char="a", version="1.0.0", tag="1.0.0"), "staging",
        upstream="http://127.0.0.1:9001",
    )  # fmt: skip
    await controller.wait_finished(first.id)
    canary = await controller.create(
        manifest(digest_char="b", version="1.1.0", tag="1.1.0", build=build, source=source),
        "staging",
        upstream="http://127.0.0.1:9002",
    )  # fmt: skip
    await asyncio.wait_for(controller.wait_finished(canary.id), 10)
    await controller.stop()
    await asyncio.to_thread(provider.force_flush)

    trace_id = bytes.fromhex(canary.traceparent.split("-")[1]) if canary.traceparent else b""

    async def root_exported() -> bool:
        return any(s.name == "promgate.promotion" and s.trace_id == trace_id
                   for s in collector.spans)  # fmt: skip

    await wait_until(root_exported, 10, what="the promotion's root span")
    await asyncio.to_thread(provider.shutdown)
    spans = [s for s in collector.spans if s.trace_id == trace_id]
    names = {s.name for s in spans}
    assert {"promgate.promotion", "promgate.actuate", "promgate.evaluate", "promgate.gate",
            "promgate.prometheus.query"} <= names  # fmt: skip
    [root] = [s for s in spans if s.name == "promgate.promotion"]
    assert [(link.trace_id.hex(), link.span_id.hex()) for link in root.links] == [
        (CI_TRACE, CI_SPAN)
    ]
    identity = attributes(root)
    assert identity["oci.manifest.digest"] == canary.artifact.digest
    assert identity["container.image.tags"] == ["1.1.0"]
    assert identity["cicd.pipeline.run.id"] == "run-77"
    assert identity["cicd.pipeline.run.url.full"] == "https://ci.example.com/77"
    assert identity["vcs.repository.url.full"] == "https://git.example.com/demo"
    assert not [a for s in spans for a in attributes(s).values() if "s3cret" in str(a)]
    assert identity["vcs.ref.head.revision"] == canary.manifest["source"]["commit"]
    assert identity["deployment.environment.name"] == "staging"
    assert identity["promgate.policy.version"] == "7"
    assert identity["promgate.outcome"] == "inconclusive"
    queries = [attributes(s) for s in spans if s.name == "promgate.prometheus.query"]
    assert any(canary.artifact.digest in q["db.query.text"] for q in queries)


def test_release_attributes_drop_credentials_a_stored_manifest_still_holds() -> None:
    """A promotion from an older ledger may hold URL credentials; spans never carry them."""
    promotion = Promotion(
        id="p1",
        service="demo",
        stage="staging",
        artifact=ArtifactRef("registry.example.com/demo", "sha256:" + "a" * 64, "1.0.0"),
        version="1.0.0",
        policy_version="7",
        strategy="canary",
        candidate_upstream="",
        manifest={
            "build": {"id": "1", "url": "https://u:s3cret@ci.example.com/1"},
            "source": {"repository": "https://t:s3cret@git.example.com/demo", "commit": "ab"},
        },
        created_at=0.0,
    )
    values = release_attributes(promotion)
    assert values["cicd.pipeline.run.url.full"] == "https://ci.example.com/1"
    assert values["vcs.repository.url.full"] == "https://git.example.com/demo"
