"""OpenTelemetry tracing: one trace per promotion, linked to the CI build that made it.

The promotion's root span context is stored with the promotion (``traceparent``), so
spans made after a restart still join the same trace. Export is batched off the event
loop; the OTLP exporter blocks, so it must never run on it.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from sidecar.domain.promotion import Promotion
from sidecar.redaction import strip_userinfo

_PROPAGATOR = TraceContextTextMapPropagator()


def build_tracer_provider(
    otlp_endpoint: str | None, service_name: str = "promgate"
) -> TracerProvider:
    """A provider exporting over OTLP/HTTP when an endpoint is set, else recording nothing."""
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if otlp_endpoint:
        endpoint = otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint), schedule_delay_millis=500)
        )
    return provider


def context_from_traceparent(traceparent: str | None) -> Any:
    """An OTel context whose parent is the span named by ``traceparent`` (or empty)."""
    if not traceparent:
        return None
    return _PROPAGATOR.extract({"traceparent": traceparent})


def link_from_traceparent(traceparent: str | None) -> list[Link]:
    """A link to the CI build's span, so a trace viewer jumps from release to build."""
    ctx = context_from_traceparent(traceparent)
    if ctx is None:
        return []
    span_context = trace.get_current_span(ctx).get_span_context()
    return [Link(span_context, {"promgate.link": "ci.build"})] if span_context.is_valid else []


def traceparent_of(span: trace.Span) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def promotion_parent(promotion: Promotion) -> Any:
    """The context under which every span of ``promotion`` is made."""
    return context_from_traceparent(promotion.traceparent)


def release_attributes(promotion: Promotion) -> dict[str, Any]:
    """Semantic-convention attributes that tie a span to commit, build and digest.

    URLs lose their credentials here too, in case a ledger written before manifests were
    cleaned still holds some."""
    manifest = promotion.manifest
    build = manifest.get("build", {})
    source = manifest.get("source", {})
    attributes: dict[str, Any] = {
        "oci.manifest.digest": promotion.artifact.digest,
        "container.image.name": promotion.artifact.repository,
        "deployment.environment.name": promotion.stage,
        "service.name": promotion.service,
        "service.version": promotion.version,
        "promgate.promotion.id": promotion.id,
        "promgate.policy.version": promotion.policy_version,
        "promgate.strategy": promotion.strategy,
    }
    if promotion.artifact.tag:
        attributes["container.image.tags"] = [promotion.artifact.tag]
    optional = {
        "vcs.ref.head.revision": source.get("commit"),
        "vcs.repository.url.full": _without_credentials(source.get("repository")),
        "vcs.ref.head.name": source.get("ref"),
        "cicd.pipeline.run.id": build.get("id"),
        "cicd.pipeline.run.url.full": _without_credentials(build.get("url")),
        "promgate.baseline.digest": promotion.baseline.digest if promotion.baseline else None,
    }
    attributes.update({k: v for k, v in optional.items() if v is not None})
    return attributes


def _without_credentials(url: Any) -> str | None:
    return strip_userinfo(url) if isinstance(url, str) else None
