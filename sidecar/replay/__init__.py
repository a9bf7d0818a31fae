"""Replay: what the policy would have decided over a past window, on the data Prometheus kept.

``promgate replay`` runs the real engine (controller, runner, analyzer, judge and
strategies; nothing here decides anything) against :class:`HistoricalSource`, which
answers each gate query "as of" a fake clock that walks through the window one analysis
interval at a time. The engine's event log then becomes one row per evaluation.

The weights in a replay are what the policy *would have set*; the data is what really
happened, under whatever traffic split was in force at the time. A replay cannot change
who got traffic: a candidate that served 5% of requests then is judged on that 5%, even
where the replayed policy would already have given it 50%.
"""

from sidecar.analysis.prometheus_http import Series
from sidecar.replay.history import HistoricalSource, RangeClient, check_window, parse_instant
from sidecar.replay.report import exit_code, report_lines
from sidecar.replay.run import Baseline, baseline_from_flags, replay

__all__ = [
    "Baseline",
    "HistoricalSource",
    "RangeClient",
    "Series",
    "baseline_from_flags",
    "check_window",
    "exit_code",
    "parse_instant",
    "replay",
    "report_lines",
]
