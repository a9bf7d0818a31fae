"""``promgate serve`` that dies at a chosen point of a promotion's final step, for crash tests.

Run as ``python tests/support/crashing_sidecar.py serve`` with the sidecar's usual
``PROMGATE_*`` environment plus:

- ``CRASH_DIGEST``: the candidate digest whose 100% split is the final actuation;
- ``CRASH_POINT``: ``before-apply`` (die just before the webhook POST of that split) or
  ``after-apply:N`` (die right after the N-th ledger write that follows the actuator
  returning from it; 0 is the instant the actuator returns);
- ``CRASH_LOG``: a file that gets one line per ledger write after the final actuation, so
  a test can tell how many writes there were when the process survived.

It dies with ``os._exit(137)``: no cleanup, no flush, as a SIGKILL would leave things.
Everything else is the real sidecar: the real SQLite ledger, the real webhook actuator.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sidecar import cli
from sidecar.actuators.base import TrafficState
from sidecar.actuators.webhook import WebhookActuator
from sidecar.ledger.sqlite import SqliteLedger

KILLED = 137  # the status a shell reports for a process killed by SIGKILL


def _die() -> None:
    os._exit(KILLED)


def install(digest: str, point: str, log: Path) -> None:
    """Wrap the webhook actuator and the SQLite ledger's writes to die at ``point``."""
    before = point == "before-apply"
    after = None if before else int(point.removeprefix("after-apply:"))
    writes_since_final: list[int] = []  # one element once the final actuation returned

    def final(state: TrafficState) -> bool:
        return any(b.digest == digest and b.weight == 100 for b in state.backends)

    apply = WebhookActuator.apply

    async def apply_then_maybe_die(self: WebhookActuator, state: TrafficState) -> None:
        if before and final(state):
            _die()
        await apply(self, state)
        if final(state) and not writes_since_final:
            writes_since_final.append(0)
            if after == 0:
                _die()

    write = SqliteLedger._write

    async def write_then_maybe_die(
        self: SqliteLedger, operation: str, work: Callable[[Any], Any]
    ) -> Any:
        result = await write(self, operation, work)
        if writes_since_final:
            writes_since_final[0] += 1
            with log.open("a") as lines:
                lines.write(f"{writes_since_final[0]} {operation}\n")
            if writes_since_final[0] == after:
                _die()
        return result

    WebhookActuator.apply = apply_then_maybe_die  # type: ignore[method-assign]
    SqliteLedger._write = write_then_maybe_die  # type: ignore[method-assign]


if __name__ == "__main__":
    install(os.environ["CRASH_DIGEST"], os.environ["CRASH_POINT"], Path(os.environ["CRASH_LOG"]))
    sys.argv[0] = "promgate"
    cli.main()
