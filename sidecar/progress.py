"""The live progress view of one promotion, for a terminal and for CI logs alike."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from sidecar.client import RECONNECT_S, TERMINAL_KINDS, ApiClient, Json
from sidecar.domain.artifact import ArtifactRef
from sidecar.domain.promotion import Phase

_LIFECYCLE_KINDS = frozenset({"created", "awaiting_approval", "approved", "switched", "resumed"})
_EXIT_CODES = {
    Phase.PROMOTED: 0,
    Phase.ROLLED_BACK: 1,
    Phase.REFUSED: 1,
    Phase.ABORTED: 3,
    Phase.INCONCLUSIVE: 4,
    Phase.NOT_READY: 1,
}
_PHASE_STYLE = {
    Phase.PROMOTED: "bold green",
    Phase.ROLLED_BACK: "bold red",
    Phase.REFUSED: "bold red",
    Phase.ABORTED: "bold yellow",
    Phase.INCONCLUSIVE: "bold yellow",
    Phase.NOT_READY: "bold red",
}


def outcome_exit_code(phase: str) -> int:
    """Exit code for a final phase: 0 promoted, 1 rolled back, refused or never ready,
    3 aborted, 4 inconclusive."""
    try:
        return _EXIT_CODES.get(Phase(phase), 2)
    except ValueError:
        return 2


def summarize_gates(events: Iterable[Json]) -> dict[str, dict[str, int]]:
    """Breaches per gate and classification over every evaluation the events carry."""
    counts: dict[str, dict[str, int]] = {}
    for event in events:
        for gate in event.get("data", {}).get("gates") or []:
            tally = counts.setdefault(gate["gate"], {"transient": 0, "persistent": 0})
            if gate.get("result") == "breach" and gate.get("classification") in tally:
                tally[gate["classification"]] += 1
    return counts


def waiting_for_evidence(gates: Iterable[Json]) -> str:
    """What a step's gates without data still wait for: ``12 of 50 requests`` for a ratio
    gate short of its ``minRequests``, else the gate's reason; empty when none waits."""
    waiting = []
    for gate in gates:
        if gate.get("result") != "no_data":
            continue
        needed, requests = gate.get("min_requests"), gate.get("requests")
        if needed and requests is not None:
            waiting.append(f"{gate['gate']} {requests:g} of {needed} requests")
        else:
            waiting.append(str(gate.get("reason") or gate["gate"]))
    return "; ".join(waiting)


def number(value: Any) -> str:
    """A gate figure for people: four significant digits, or - when there is none."""
    return "-" if value is None else f"{value:.4g}"


def _short(artifact: str | None) -> str:
    return ArtifactRef.parse(artifact).short_digest if artifact else ""


def _gate_style(gate: Json) -> str:
    classification = gate.get("classification")
    if classification == "persistent":
        return "red"
    if classification == "transient":
        return "yellow"
    return {"pass": "green", "no_data": "dim"}.get(gate.get("result", ""), "yellow")


def _breach(gate: Json) -> str:
    hard = " hard" if gate.get("hard") else ""
    return (
        f"{gate['gate']} {number(gate.get('value'))} vs {number(gate.get('threshold'))}"
        f" ({gate.get('classification') or 'unclassified'}{hard})"
    )


@dataclass
class ProgressView:
    """What is known about a promotion, updated event by event."""

    promotion: Json
    title: str = ""
    gates: list[Json] = field(default_factory=list)
    holding: bool = False  # analysis unavailable: traffic held where it is
    waiting: str = ""  # what the step's gates wait for (too little traffic, no data yet)
    lost: str = ""  # why the sidecar stopped answering, while reconnecting
    waited_in: tuple[Any, Any] | None = None  # the (step, weight) whose wait was announced

    @property
    def phase(self) -> str:
        return str(self.promotion["phase"])

    def apply(self, event: Json) -> str | None:
        """Take in one event; return the plain log line it deserves, if any."""
        data: Json = event.get("data") or {}
        kind = str(event.get("kind", ""))
        before = self.promotion.get("step_index"), self.promotion.get("weight")
        for key, target in (("phase", "phase"), ("weight", "weight"), ("step", "step_index")):
            if key in data:
                self.promotion[target] = data[key]
        reason = data.get("reason") or ""
        if reason:
            self.promotion["reason"] = reason
        if "gates" in data:
            self.gates = list(data["gates"])
        self.lost = ""
        self.waiting = waiting_for_evidence(data.get("gates") or []) if kind == "verdict" else ""
        prefix = f"[{self.title}] " if self.title else ""
        if kind in TERMINAL_KINDS:
            return f"{prefix}{kind}: {self.promotion.get('reason') or ''}"
        if kind == "created":
            return f"{prefix}{self._headline()}"
        if kind in _LIFECYCLE_KINDS:
            return f"{prefix}{kind.replace('_', ' ')}" + (f": {reason}" if reason else "")
        step = self.promotion.get("step_index"), self.promotion.get("weight")
        if kind == "step" or step != before:
            return f"{prefix}step {int(step[0] or 0) + 1}: weight {step[1]}%: {reason}"
        if kind == "verdict" and (data.get("decision") == "hold") != self.holding:
            self.holding = not self.holding
            if self.holding:
                return f"{prefix}holding at {step[1]}%: {reason}"
            return f"{prefix}analysis available again at {step[1]}%"
        breaches = [g for g in data.get("gates") or [] if g.get("result") == "breach"]
        if kind == "verdict" and breaches:
            return f"{prefix}breach at {step[1]}%: " + "; ".join(_breach(g) for g in breaches)
        if self.waiting and self.waited_in != step:  # once a step: windows fill in turns
            self.waited_in = step
            return f"{prefix}waiting for evidence at {step[1]}%: {self.waiting}"
        return None

    def connection_lost(self, why: str, reconnect_s: float) -> str:
        """Note that the sidecar stopped answering; return the plain log line for it."""
        self.lost = why
        prefix = f"[{self.title}] " if self.title else ""
        return f"{prefix}sidecar unreachable ({why}); reconnecting for up to {reconnect_s:g}s"

    def _headline(self) -> str:
        p = self.promotion
        baseline = (
            f"{p.get('baseline_version') or '?'} ({_short(p.get('baseline'))})"
            if p.get("baseline")
            else "none (first release)"
        )
        return (
            f"{p['service']} -> {p['stage']}: candidate {p['version']} "
            f"({_short(p['artifact'])}) vs baseline {baseline}, {p.get('strategy', '')}"
        )

    def render(self) -> RenderableType:
        """The panel: identity, phase, step and weight, the gates, the last reason."""
        p = self.promotion
        phase = Phase(self.phase)
        weight = int(p.get("weight") or 0)
        summary = Table.grid(padding=(0, 2))
        summary.add_column(style="bold")
        summary.add_column()
        summary.add_row("service", f"{p['service']} -> {p['stage']} ({p.get('strategy', '')})")
        summary.add_row("candidate", f"{p['version']}  {_short(p['artifact'])}")
        summary.add_row(
            "baseline",
            f"{p.get('baseline_version') or '?'}  {_short(p['baseline'])}"
            if p.get("baseline")
            else "none (first release)",
        )
        summary.add_row("phase", Text(phase.value, style=_PHASE_STYLE.get(phase, "bold cyan")))
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            ProgressBar(
                total=100,
                completed=weight,
                width=30,
                complete_style="cyan",
                finished_style="green",
            ),
            f"{weight}%  step {int(p.get('step_index') or 0) + 1}",
        )
        summary.add_row("weight", bar)
        gates = Table(expand=False, box=None, header_style="bold", pad_edge=False)
        columns = ["gate", "result", "value vs threshold", "baseline", "classification"]
        with_evidence = any(g.get("e_value") is not None for g in self.gates)
        with_clearance = any(g.get("clearance") is not None for g in self.gates)
        columns += ["e-value"] if with_evidence else []
        columns += ["clearance"] if with_clearance else []
        for column in columns:
            gates.add_column(column)
        for gate in self.gates:
            hard = " (hard)" if gate.get("hard") else ""
            gates.add_row(
                str(gate["gate"]),
                str(gate.get("result", "")),
                f"{number(gate.get('value'))} vs {number(gate.get('threshold'))}{hard}",
                number(gate.get("baseline")),
                str(gate.get("classification") or ""),
                *([number(gate.get("e_value"))] if with_evidence else []),
                *([number(gate.get("clearance"))] if with_clearance else []),
                style=_gate_style(gate),
            )
        if self.waiting:
            summary.add_row("evidence", Text(f"waiting: {self.waiting}", style="yellow"))
        if self.lost:
            summary.add_row(
                "sidecar", Text(f"unreachable ({self.lost}); reconnecting", style="bold yellow")
            )
        parts: list[RenderableType] = [summary]
        if self.gates:
            parts += [Text(""), gates]
        if p.get("reason"):
            parts += [Text(""), Text(str(p["reason"]), style="italic")]
        title = self.title or f"promotion {p['id']}"
        return Panel(Group(*parts), title=title, title_align="left")


async def follow(
    client: ApiClient,
    promotion_id: str,
    console: Console,
    *,
    title: str = "",
    reconnect_s: float = RECONNECT_S,
) -> Json:
    """Show a promotion's progress until it ends; return its final state.

    A terminal redraws one panel; anything else (CI logs) gets one plain line per step
    change, breach, wait for evidence and outcome. A sidecar that restarts meanwhile is
    waited for, up to ``reconnect_s`` (see :meth:`ApiClient.watch`).
    """
    view = ProgressView(await client.get(promotion_id, reconnect_s=reconnect_s), title)

    async def watch(show: Callable[[str | None], None]) -> Json:
        return await client.watch(
            promotion_id,
            lambda event: show(view.apply(event)),
            reconnect_s=reconnect_s,
            on_lost=lambda why: show(view.connection_lost(why, reconnect_s)),
        )

    if console.is_terminal and not console.is_dumb_terminal:
        with Live(view.render(), console=console, auto_refresh=False) as live:
            return await watch(lambda _: live.update(view.render(), refresh=True))

    def write(line: str | None) -> None:
        if line is not None:
            console.print(line, markup=False, highlight=False, soft_wrap=True)

    return await watch(write)
