"""A webhook receiver that turns promgate's traffic states into HAProxy server weights.

Run (loopback only), beside HAProxy started with examples/haproxy/haproxy.cfg:

    python examples/haproxy/receiver.py --listen 127.0.0.1:8470 --socket haproxy.sock \\
        --backend app --servers blue,green --secret-file webhook-secret

and point promgate at it: ``PROMGATE_ACTUATOR=webhook
PROMGATE_WEBHOOK_URL=http://127.0.0.1:8470/traffic PROMGATE_WEBHOOK_SECRET_FILE=webhook-secret``.

Each state's ``backends[].backend`` is a server name of ``--backend``; the state's weight
goes to that server and every server the state does not list gets weight 0. The receiver
keys on the backend name, never on the role: the candidate of one release is the stable
of the next, in the same server. It answers as the webhook contract asks (README,
"The webhook contract"): 200 applied, 409 already applied (a repeat or an older state of
the same promotion), 401 a bad or stale signature, 422 a state it cannot route (a server
it does not know, or a blue-green preview, which this example does not route), 503 when
HAProxy's runtime API cannot be reached, so promgate tries again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from sidecar.actuators.webhook import verify

_log = logging.getLogger("haproxy-receiver")


class RuntimeApiError(Exception):
    """HAProxy's runtime API could not be reached, or refused a command."""


class HaproxyWeights:
    """Sets server weights through HAProxy's runtime API (the stats socket)."""

    def __init__(self, socket_path: str, backend: str, servers: list[str]) -> None:
        self.socket_path = socket_path
        self.backend = backend
        self.servers = servers

    async def command(self, line: str) -> str:
        """Send one runtime API command; HAProxy answers, then closes the connection."""
        try:
            reader, writer = await asyncio.open_unix_connection(self.socket_path)
        except OSError as exc:
            raise RuntimeApiError(f"cannot reach {self.socket_path}: {exc.strerror}") from None
        try:
            writer.write(line.encode() + b"\n")
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()
            await writer.wait_closed()
        return answer.decode(errors="replace").strip()

    async def set(self, weights: dict[str, int]) -> None:
        """Raise weights before lowering others, so no moment has every server at 0."""
        for server, weight in sorted(weights.items(), key=lambda item: -item[1]):
            answer = await self.command(f"set server {self.backend}/{server} weight {weight}")
            if answer:
                raise RuntimeApiError(f"HAProxy refused weight {weight} for {server}: {answer}")


class Receiver:
    """The aiohttp handlers: verify, drop repeats, map backends to servers, apply."""

    def __init__(self, haproxy: HaproxyWeights, secret: bytes) -> None:
        self.haproxy = haproxy
        self.secret = secret
        self.applied: dict[tuple[str, str], tuple[str, int]] = {}  # (service, stage) -> last
        self.lock = asyncio.Lock()

    async def traffic(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(body, self.secret, request.headers):
            return _error(401, "bad, missing or stale webhook signature")
        state: dict[str, Any] = json.loads(body)
        if state.get("preview"):
            return _error(422, "this receiver does not route blue-green previews; use canary")
        weights = dict.fromkeys(self.haproxy.servers, 0)  # not listed: no traffic
        for backend in state["backends"]:
            if backend["backend"] not in weights:
                known = ", ".join(self.haproxy.servers)
                return _error(422, f"unknown server {backend['backend']!r}; known: {known}")
            weights[backend["backend"]] = int(backend["weight"])
        where = (state["service"], state["stage"])
        async with self.lock:
            last = self.applied.get(where, ("", 0))
            if last[0] == state["promotion_id"] and int(state["sequence"]) <= last[1]:
                return _error(409, f"already applied {last[0]}#{last[1]}")
            try:
                await self.haproxy.set(weights)
            except RuntimeApiError as exc:
                return _error(503, str(exc))
            self.applied[where] = (state["promotion_id"], int(state["sequence"]))
        _log.info("applied %s#%s: %s", state["promotion_id"], state["sequence"], weights)
        return web.json_response({"applied": weights})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def build_app(haproxy: HaproxyWeights, secret: bytes) -> web.Application:
    receiver = Receiver(haproxy, secret)
    app = web.Application()
    app.router.add_post("/traffic", receiver.traffic)
    app.router.add_get("/healthz", receiver.healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--listen", default="127.0.0.1:8470", help="HOST:PORT, loopback only")
    parser.add_argument("--socket", required=True, help="HAProxy's stats socket (level admin)")
    parser.add_argument("--backend", required=True, help="the HAProxy backend, e.g. app")
    parser.add_argument("--servers", required=True, help="its servers, e.g. blue,green")
    parser.add_argument("--secret-file", required=True, type=Path, help="promgate's secret")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    if host not in ("127.0.0.1", "::1", "localhost"):
        parser.error("--listen must be a loopback address")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    haproxy = HaproxyWeights(args.socket, args.backend, args.servers.split(","))
    secret = args.secret_file.read_bytes().strip()
    web.run_app(build_app(haproxy, secret), host=host, port=int(port), print=None)


if __name__ == "__main__":
    main()
