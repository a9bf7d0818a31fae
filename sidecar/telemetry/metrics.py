"""promgate's own Prometheus metrics, all in one Recorder so names stay consistent.

Dashboards and alert rules in ``dashboards/`` and ``alerts/`` read exactly these names.
"""

from __future__ import annotations

from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sidecar.analysis.judge import GateVerdict, StepVerdict
from sidecar.domain.promotion import Promotion


class Recorder(Protocol):
    """Where the engine reports what it measured and decided."""

    def gate_verdicts(self, promotion: Promotion, verdict: StepVerdict) -> None: ...
    def progress(self, promotion: Promotion) -> None: ...
    def finished(self, promotion: Promotion) -> None: ...
    def rollback(self, promotion: Promotion, reason: str) -> None: ...
    def stable_digest(self, service: str, stage: str, digest: str, version: str) -> None: ...
    def decision_latency(self, promotion: Promotion, seconds: float) -> None: ...
    def actuation(self, promotion: Promotion, ok: bool) -> None: ...
    def refused(self, service: str, stage: str, reason: str) -> None: ...
    def tag_mutation(self, repository: str) -> None: ...


class NullRecorder:
    """Records nothing; for library use without metrics."""

    def gate_verdicts(self, promotion: Promotion, verdict: StepVerdict) -> None: ...
    def progress(self, promotion: Promotion) -> None: ...
    def finished(self, promotion: Promotion) -> None: ...
    def rollback(self, promotion: Promotion, reason: str) -> None: ...
    def stable_digest(self, service: str, stage: str, digest: str, version: str) -> None: ...
    def decision_latency(self, promotion: Promotion, seconds: float) -> None: ...
    def actuation(self, promotion: Promotion, ok: bool) -> None: ...
    def refused(self, service: str, stage: str, reason: str) -> None: ...
    def tag_mutation(self, repository: str) -> None: ...


_SS = ("service", "stage")


class PrometheusRecorder:
    """The Recorder behind ``/metrics``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.gate_value = Gauge(
            "promgate_gate_value",
            "Last measured value of a gate",
            [*_SS, "gate", "role"],
            registry=r,
        )
        self.gate_e_value = Gauge(
            "promgate_gate_e_value",
            "Sequential gates: the e-value for a regression (rollback at 1/alpha)",
            [*_SS, "gate"],
            registry=r,
        )
        self.gate_clearance = Gauge(
            "promgate_gate_clearance",
            "Sequential gates with detect: the e-value that the regression is ruled out "
            "(the step may pass at 1/(1-power))",
            [*_SS, "gate"],
            registry=r,
        )
        self.gate_threshold = Gauge(
            "promgate_gate_threshold",
            "Bound the gate's value was judged against",
            [*_SS, "gate"],
            registry=r,
        )
        self.gate_evaluations = Counter(
            "promgate_gate_evaluations",
            "Gate evaluations by result and classification",
            [*_SS, "gate", "result", "classification"],
            registry=r,
        )
        self.decisions = Counter(
            "promgate_step_decisions",
            "Step decisions (pass, wait, hold, rollback)",
            [*_SS, "decision"],
            registry=r,
        )
        self.analysis_unavailable = Gauge(
            "promgate_analysis_unavailable",
            "1 while a promotion holds on an unavailable source",
            _SS,
            registry=r,
        )
        self.weight = Gauge(
            "promgate_candidate_weight_percent",
            "Live traffic share of the candidate",
            _SS,
            registry=r,
        )
        self.step = Gauge(
            "promgate_step_index", "Current step of the active promotion", _SS, registry=r
        )
        self.active = Gauge(
            "promgate_promotion_active", "1 while a promotion is active", _SS, registry=r
        )
        self.outcomes = Counter(
            "promgate_promotions", "Finished promotions by outcome", [*_SS, "outcome"], registry=r
        )
        self.rollbacks = Counter(
            "promgate_rollbacks", "Rollbacks by reason", [*_SS, "reason"], registry=r
        )
        self.digest_info = Gauge(
            "promgate_stage_digest_info",
            "The stable digest of a stage (value is always 1)",
            [*_SS, "digest", "version"],
            registry=r,
        )
        self.latency = Histogram(
            "promgate_decision_latency_seconds",
            "From the start of an evaluation to the applied action",
            _SS,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.actuations = Counter(
            "promgate_actuations", "Traffic changes by result", [*_SS, "result"], registry=r
        )
        self.refusals = Counter(
            "promgate_refusals",
            "Releases refused before traffic moved",
            [*_SS, "reason"],
            registry=r,
        )
        self.tag_mutations = Counter(
            "promgate_tag_mutations",
            "Tags that arrived with a different digest",
            ["repository"],
            registry=r,
        )

        self.leader = Gauge(
            "promgate_leader",
            "1 while this replica leads (runs promotions, moves traffic), 0 while it follows",
            ["identity"],
            registry=r,
        )

    def leading(self, identity: str, leading: bool) -> None:
        """Not part of the engine's Recorder: the sidecar reports its own role."""
        self.leader.labels(identity).set(1 if leading else 0)

    def gate_verdicts(self, promotion: Promotion, verdict: StepVerdict) -> None:
        ss = (promotion.service, promotion.stage)
        for gate in verdict.gates:
            self._gate(ss, gate)
        self.decisions.labels(*ss, verdict.decision.value).inc()
        self.analysis_unavailable.labels(*ss).set(1 if verdict.decision.value == "hold" else 0)

    def _gate(self, ss: tuple[str, str], gate: GateVerdict) -> None:
        if gate.value is not None:
            self.gate_value.labels(*ss, gate.gate, "candidate").set(gate.value)
        if gate.baseline is not None:
            self.gate_value.labels(*ss, gate.gate, "stable").set(gate.baseline)
        if gate.threshold is not None:
            self.gate_threshold.labels(*ss, gate.gate).set(gate.threshold)
        if gate.e_value is not None:
            self.gate_e_value.labels(*ss, gate.gate).set(gate.e_value)
        if gate.clearance is not None:
            self.gate_clearance.labels(*ss, gate.gate).set(gate.clearance)
        classification = gate.classification.value if gate.classification else "none"
        self.gate_evaluations.labels(*ss, gate.gate, gate.result.value, classification).inc()

    def progress(self, promotion: Promotion) -> None:
        ss = (promotion.service, promotion.stage)
        self.weight.labels(*ss).set(promotion.weight)
        self.step.labels(*ss).set(promotion.step_index)
        self.active.labels(*ss).set(1 if promotion.active else 0)

    def finished(self, promotion: Promotion) -> None:
        ss = (promotion.service, promotion.stage)
        self.outcomes.labels(*ss, promotion.phase.value).inc()
        self.active.labels(*ss).set(0)
        self.analysis_unavailable.labels(*ss).set(0)

    def rollback(self, promotion: Promotion, reason: str) -> None:
        self.rollbacks.labels(promotion.service, promotion.stage, reason).inc()

    def stable_digest(self, service: str, stage: str, digest: str, version: str) -> None:
        for labels in list(self.digest_info._metrics):  # drop the old digest
            if labels[:2] == (service, stage):
                self.digest_info.remove(*labels)
        self.digest_info.labels(service, stage, digest, version).set(1)

    def decision_latency(self, promotion: Promotion, seconds: float) -> None:
        self.latency.labels(promotion.service, promotion.stage).observe(seconds)

    def actuation(self, promotion: Promotion, ok: bool) -> None:
        self.actuations.labels(promotion.service, promotion.stage, "ok" if ok else "error").inc()

    def refused(self, service: str, stage: str, reason: str) -> None:
        self.refusals.labels(service, stage, reason).inc()

    def tag_mutation(self, repository: str) -> None:
        self.tag_mutations.labels(repository).inc()
