"""Run real components on this machine: child processes and a loopback-only Prometheus.

The demo command and the tests start the same processes the same way, so both get
logs in files (a child writing into an unread pipe can block), ports bound to
127.0.0.1 only, and waits that poll against a deadline instead of sleeping.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import aiohttp
import yaml

_LOG_TAIL_CHARS = 2000


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_until(
    predicate: Callable[[], Awaitable[bool]],
    timeout_s: float,
    *,
    what: str,
    interval_s: float = 0.1,
) -> None:
    """Poll ``predicate`` until it is true; raise TimeoutError naming ``what`` at the deadline.

    The predicate is checked once more at the deadline, so a slow last poll still counts.
    Exceptions from the predicate propagate: it decides what counts as "not yet".
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        if await predicate():
            return
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError(f"timed out after {timeout_s:g}s waiting for {what}")
        await asyncio.sleep(min(interval_s, remaining))


async def url_is_ok(url: str, timeout_s: float = 2.0) -> bool:
    """Whether GET ``url`` answers 200; False when nothing listens yet or it fails."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.get(url) as response,
        ):
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


class ManagedProcess:
    """A child process whose output goes to a log file and which is always reaped.

    It does not depend on an event loop, so one started in a fixture can be stopped
    from another loop or after the loop that started it has closed.
    """

    def __init__(
        self,
        argv: Sequence[str],
        log_dir: Path,
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        if not argv:
            raise ValueError("ManagedProcess needs a command to run")
        self.argv = list(argv)
        self.name = name or Path(self.argv[0]).name
        self.log_path = _claim_log_file(log_dir, self.name)
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        """Start the process once; its stdout and stderr both go to ``log_path``."""
        if self._popen is not None:
            raise RuntimeError(f"{self.name} was already started (pid {self._popen.pid})")
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=self._cwd,
            )
        return self

    @property
    def pid(self) -> int:
        return self._started().pid

    @property
    def returncode(self) -> int | None:
        """The exit status once the process has ended, otherwise None."""
        return self._started().poll()

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    async def stop(self, timeout_s: float = 5.0) -> int:
        """SIGTERM, then SIGKILL if the process outlives ``timeout_s``; returns the exit status."""
        popen = self._started()
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            try:
                return await asyncio.to_thread(popen.wait, timeout_s)
            except subprocess.TimeoutExpired:
                popen.kill()
        return await asyncio.to_thread(popen.wait)

    async def kill(self) -> int:
        """SIGKILL at once, as a crash would; returns the exit status."""
        popen = self._started()
        if popen.poll() is None:
            popen.kill()
        return await asyncio.to_thread(popen.wait)

    def log_text(self) -> str:
        """Everything the process has written so far."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = _LOG_TAIL_CHARS) -> str:
        """The end of the log, short enough to put into an error message."""
        return self.log_text()[-chars:]

    async def __aenter__(self) -> ManagedProcess:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _started(self) -> subprocess.Popen[bytes]:
        if self._popen is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self._popen


def prometheus_binary() -> str:
    """The ``prometheus`` executable on PATH, or an error that says how to install it."""
    found = shutil.which("prometheus")
    if found is None:
        raise RuntimeError(
            "the prometheus binary is not on PATH; on Debian/Ubuntu run "
            "`apt-get install prometheus`, elsewhere download it from "
            "https://prometheus.io/download/ and put it on PATH"
        )
    return found


async def start_prometheus(
    workdir: Path,
    targets: Mapping[str, list[str]],
    scrape_interval_s: float = 1.0,
    port: int | None = None,
    *,
    ready_timeout_s: float = 30.0,
    labels: Mapping[str, Mapping[str, str]] | None = None,
) -> tuple[ManagedProcess, str]:
    """Start Prometheus on 127.0.0.1 scraping ``targets`` (job -> ``host:port`` list).

    ``labels`` adds target labels per job (e.g. the stage a target serves).
    Returns once ``/-/ready`` answers, with the process and its base URL. Being ready
    does not mean a target has been scraped: the first scrape of a new target can come
    several seconds later, so wait for the data itself before judging a query.
    """
    if scrape_interval_s <= 0:
        raise ValueError(f"scrape_interval_s must be positive, got {scrape_interval_s}")
    for job, addresses in targets.items():
        for address in addresses:
            if "://" in address or "/" in address:
                raise ValueError(f"target {address!r} of job {job!r} must be host:port")
    port = port or free_port()
    home = workdir / f"prometheus-{port}"
    home.mkdir(parents=True, exist_ok=True)
    interval = f"{round(scrape_interval_s * 1000)}ms"
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": job,
                "static_configs": [
                    {"targets": list(addresses), "labels": dict((labels or {}).get(job, {}))}
                ],
            }
            for job, addresses in targets.items()
        ],
    }
    config_file = home / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    base_url = f"http://127.0.0.1:{port}"
    process = ManagedProcess(
        [
            prometheus_binary(),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
        ],
        home,
        name="prometheus",
    ).start()

    async def ready() -> bool:
        if not process.running:
            raise RuntimeError(
                f"prometheus exited with status {process.returncode} before it was ready; "
                f"log {process.log_path}:\n{process.log_tail()}"
            )
        return await url_is_ok(f"{base_url}/-/ready")

    try:
        await wait_until(ready, ready_timeout_s, what=f"prometheus at {base_url} to be ready")
    except TimeoutError as exc:
        await process.stop()
        raise TimeoutError(f"{exc}; log {process.log_path}:\n{process.log_tail()}") from exc
    except BaseException:
        await process.stop()
        raise
    return process, base_url


def _claim_log_file(directory: Path, name: str) -> Path:
    """Create ``name.log`` (or ``name-N.log`` if taken) so two processes never share a log."""
    directory.mkdir(parents=True, exist_ok=True)
    number = 1
    while True:
        candidate = directory / (f"{name}.log" if number == 1 else f"{name}-{number}.log")
        try:
            candidate.open("xb").close()
        except FileExistsError:
            number += 1
        else:
            return candidate
