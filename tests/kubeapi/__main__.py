"""``python -m tests.kubeapi --kubeconfig FILE [--namespace NS]``: a standalone contract
API server for benchmarks and out-of-process use. Prints its URL, runs until SIGTERM or
SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from tests.kubeapi.server import ContractApiServer


async def _serve(kubeconfig: Path, namespace: str, rollout_delay_s: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with ContractApiServer(rollout_delay_s=rollout_delay_s) as server:
        server.write_kubeconfig(kubeconfig, namespace=namespace)
        print(server.url, flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.kubeapi", description=__doc__)
    parser.add_argument(
        "--kubeconfig", type=Path, required=True, help="where to write a kubeconfig that reaches it"
    )
    parser.add_argument("--namespace", default="default", help="the kubeconfig context's namespace")
    parser.add_argument(
        "--rollout-delay", type=float, default=0.2, help="seconds before a Deployment rolls out"
    )
    args = parser.parse_args()
    asyncio.run(_serve(args.kubeconfig, args.namespace, args.rollout_delay))


if __name__ == "__main__":
    main()
