"""What the CLI prints for a replay, and the exit code it ends with."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sidecar.domain.promotion import Phase
from sidecar.progress import number, outcome_exit_code
from sidecar.replay.history import iso
from sidecar.replay.run import CAVEAT, ReplayResult, ReplayRow


def exit_code(result: ReplayResult) -> int:
    """0 promoted or still running at the end of the window, else the outcome's exit code."""
    return outcome_exit_code(result.phase) if result.finished else 0


def report_lines(result: ReplayResult) -> list[str]:
    """The header, one line per evaluation, and the outcome, as plain text."""
    lines = [
        f"replay of {result.service} -> {result.stage} ({result.strategy}) under policy "
        f"{result.policy_name} version {result.policy_version}",
        f"  candidate  {result.candidate_version}  {result.candidate}",
        f"  baseline   {result.baseline_version}  {result.baseline}",
        f"  window     {iso(result.start)} .. {iso(result.end)} "
        f"({_duration(result.end - result.start)}), evaluated every {result.interval:g}s"
        + (f", data from {result.prometheus_url}" if result.prometheus_url else ""),
        f"  caveat     {CAVEAT}",
        *(f"  note       {note}" for note in result.notes),
        "",
    ]
    lines += [_row_line(row) for row in result.rows] or ["(no evaluation in the window)"]
    decisions: dict[str, int] = {}
    for row in result.rows:
        decisions[row.decision] = decisions.get(row.decision, 0) + 1
    counted = ", ".join(f"{n} {decision}" for decision, n in sorted(decisions.items()))
    lines += ["", f"{len(result.rows)} evaluations" + (f": {counted}" if counted else "")]
    if result.finished:
        when = f" at {iso(result.ended_at)}" if result.ended_at is not None else ""
        kind = f" ({result.classification})" if result.classification else ""
        verb = _OUTCOME_VERBS.get(result.phase, result.phase)
        lines.append(f"outcome: would have {verb}{kind}{when}: {result.reason}")
    else:
        lines.append(f"outcome: {result.reason}")
    return lines


_OUTCOME_VERBS = {
    Phase.ROLLED_BACK.value: "rolled back",
    Phase.INCONCLUSIVE.value: "stopped as inconclusive",
    Phase.REFUSED.value: "been refused",
}


def _row_line(row: ReplayRow) -> str:
    gates = ", ".join(_gate_text(gate) for gate in row.gates) or "no gates"
    return (
        f"{iso(row.at)}  step {row.step} {row.weight:>3}%  {row.decision:<8} {row.action:<12} "
        f"{gates}  | {row.reason}"
    )


def _gate_text(gate: Mapping[str, Any]) -> str:
    text = f"{gate.get('gate')} {gate.get('result')}"
    if gate.get("value") is not None or gate.get("threshold") is not None:
        text += f" {number(gate.get('value'))} vs {number(gate.get('threshold'))}"
    if gate.get("classification"):
        text += f" ({gate['classification']}{' hard' if gate.get('hard') else ''})"
    if gate.get("e_value") is not None:
        text += f" e-value {number(gate['e_value'])}"
    if gate.get("clearance") is not None:
        text += f" clearance {number(gate['clearance'])}"
    return text


def _duration(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return (
        "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n)
        or "0s"
    )
