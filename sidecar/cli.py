"""The ``promgate`` command: run the sidecar, promote from CI, inspect and steer promotions.

Modules built on pydantic (settings, manifest, policy) are imported by the commands that
use them, so the commands that only talk to the API start without loading pydantic.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from sidecar.client import RECONNECT_S, ApiClient, Json
from sidecar.errors import (
    ConflictError,
    InputError,
    PolicyError,
    PromgateError,
    RefusedError,
    UnreachableError,
)
from sidecar.progress import follow, outcome_exit_code
from sidecar.telemetry.logging import configure_logging

EXIT_ERROR = 2
EXIT_TIMEOUT = 5
EXIT_INTERRUPTED = 130
PIPED_WIDTH = 160


class _Cli(click.Group):
    """Turns promgate's errors into one ``promgate: <message>`` line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RefusedError as exc:
            click.echo(f"promgate: {exc}", err=True)
            if exc.promotion_id:
                click.echo(
                    f"promgate: the refusal is recorded as promotion {exc.promotion_id} "
                    f"(see `promgate status {exc.promotion_id}`)",
                    err=True,
                )
            if isinstance(exc, ConflictError) and exc.active_id:
                click.echo(
                    f"promgate: follow it with `promgate status {exc.active_id} --wait` "
                    f"(same exit codes as `promote --wait`), or stop it with "
                    f"`promgate abort {exc.active_id}`",
                    err=True,
                )
            ctx.exit(1)
        except PromgateError as exc:
            click.echo(f"promgate: {exc}", err=True)
            ctx.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            click.echo("promgate: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)


def _read_token(token_file: Path | None) -> str | None:
    """The bearer token from ``token_file``, else from PROMGATE_TOKEN."""
    if token_file is None:
        return os.environ.get("PROMGATE_TOKEN") or None
    try:
        token = token_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise InputError(f"cannot read token file {token_file}: {exc.strerror}") from None
    if not token:
        raise InputError(f"token file {token_file} is empty")
    return token


def api_command(func: Callable[..., Awaitable[int | None]]) -> Callable[..., None]:
    """Add ``--server`` and ``--token-file``; run ``func(client, ...)`` and exit with its code."""

    def wrapper(
        ctx: click.Context, /, server: str | None, token_file: Path | None, **options: Any
    ) -> None:
        async def run() -> int | None:
            async with ApiClient(server, _read_token(token_file)) as client:
                return await func(client, **options)

        code = asyncio.run(run())
        if code:
            ctx.exit(code)

    functools.update_wrapper(wrapper, func)
    server = click.option(
        "--server",
        envvar="PROMGATE_SERVER",
        metavar="URL",
        help="promgate server base URL [env PROMGATE_SERVER; default http://127.0.0.1:8480]",
    )
    token_file = click.option(
        "--token-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="file holding the bearer token [else env PROMGATE_TOKEN]",
    )
    return server(token_file(click.pass_context(wrapper)))


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """A flag's ``90s``, ``30m`` or ``1h`` as seconds."""
    if value is None:
        return None
    from sidecar.domain.durations import parse_duration  # noqa: PLC0415 - loads pydantic

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


prometheus_bearer_token_option = click.option(
    "--prometheus-bearer-token-file",
    "bearer_token_file",
    envvar="PROMGATE_PROMETHEUS_BEARER_TOKEN_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="file holding a bearer token for Prometheus [env PROMGATE_PROMETHEUS_BEARER_TOKEN_FILE]",
)
"""``--prometheus-bearer-token-file``, for the commands that query Prometheus themselves."""


def wait_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--wait``, ``--timeout`` and ``--reconnect-timeout``: how a command follows a promotion."""
    options = [
        click.option("--wait/--no-wait", default=False, help="follow the promotion until it ends"),
        click.option(
            "--timeout",
            "timeout_s",
            callback=_duration,
            metavar="DURATION",
            help=f"with --wait: stop following after this long and exit {EXIT_TIMEOUT}; "
            "the promotion goes on [default: no limit]",
        ),
        click.option(
            "--reconnect-timeout",
            "reconnect_s",
            callback=_duration,
            metavar="DURATION",
            help=f"with --wait: how long the sidecar may not answer (a restart) before "
            f"exiting {EXIT_ERROR} [default: {RECONNECT_S:g}s]",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


async def _wait_for_outcome(
    client: ApiClient,
    promotion_id: str,
    *,
    timeout_s: float | None,
    reconnect_s: float | None,
    as_json: bool = False,
) -> int:
    """Follow a promotion to its end; its outcome's exit code, or EXIT_TIMEOUT."""
    reconnect_s = RECONNECT_S if reconnect_s is None else reconnect_s
    reattach = f"`promgate status {promotion_id} --wait`"
    try:
        async with asyncio.timeout(timeout_s) as deadline:
            if as_json:
                final = await client.watch(promotion_id, lambda _: None, reconnect_s=reconnect_s)
                click.echo(json.dumps(final, indent=2))
            else:
                final = await follow(client, promotion_id, _console(), reconnect_s=reconnect_s)
    except UnreachableError as exc:
        raise UnreachableError(
            f"{exc}; promotion {promotion_id} may still be running: re-attach with {reattach}",
            why=exc.why,
        ) from None
    except TimeoutError:
        if not deadline.expired():
            raise
        click.echo(
            f"promgate: promotion {promotion_id} did not end within --timeout {timeout_s:g}s "
            f"and goes on; re-attach with {reattach}, or stop it with "
            f"`promgate abort {promotion_id}`",
            err=True,
        )
        return EXIT_TIMEOUT
    return outcome_exit_code(final["phase"])


def _needs_wait(wait: bool, timeout_s: float | None, reconnect_s: float | None) -> None:
    if not wait and (timeout_s is not None or reconnect_s is not None):
        raise InputError("--timeout and --reconnect-timeout only apply with --wait")


def _console() -> Console:
    """Rich output on stdout; piped output gets room instead of being cut to 80 columns."""
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, PIPED_WIDTH)
    return console


def _when(timestamp: Any) -> str:
    if not timestamp:
        return ""
    moment = datetime.datetime.fromtimestamp(float(timestamp), tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _short(artifact: Any) -> str:
    """``repo:tag@sha256:0123456789abcdef...`` -> ``repo:tag@sha256:0123456789ab``."""
    text = str(artifact or "")
    name, at, digest = text.rpartition("@")
    algorithm, colon, encoded = digest.partition(":")
    return f"{name}@{algorithm}:{encoded[:12]}" if at and colon else text


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="promgate", prog_name="promgate")
def cli() -> None:
    """promgate: digest-pinned canary and blue-green releases judged on Prometheus SLOs."""


@cli.command()
@click.option("--policy", type=click.Path(path_type=Path), help="promotion policy file (YAML)")
@click.option("--listen", metavar="HOST:PORT", help="API address")
@click.option("--prometheus-url", metavar="URL", help="Prometheus base URL")
@click.option("--ledger-path", type=click.Path(path_type=Path), help="SQLite ledger file")
@click.option("--proxy-listen", metavar="STAGE=HOST:PORT,...", help="built-in proxy listeners")
@click.option(
    "--actuator", type=click.Choice(["proxy", "webhook", "none"]), help="traffic actuator"
)
def serve(**options: Any) -> None:
    """Run the sidecar: API, promotion engine and traffic actuator (PROMGATE_* env applies)."""
    # Imported here: the sidecar's dependencies are not needed by the client commands.
    from sidecar.app import serve as serve_sidecar  # noqa: PLC0415
    from sidecar.settings import Settings  # noqa: PLC0415

    settings = Settings.load(**options)
    configure_logging(settings.log_level)
    asyncio.run(serve_sidecar(settings))


@cli.command()
@click.option(
    "--manifest",
    "manifest_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="release manifest (JSON)",
)
@click.option("--stage", required=True, help="stage to promote into")
@click.option("--upstream", metavar="URL", help="where the candidate serves, e.g. http://host:port")
@click.option(
    "--backend",
    metavar="NAME",
    help="the slot (server) the candidate runs in; default: the one the stable is not in",
)
@wait_options
@api_command
async def promote(
    client: ApiClient,
    *,
    manifest_file: Path,
    stage: str,
    upstream: str | None,
    backend: str | None,
    wait: bool,
    timeout_s: float | None,
    reconnect_s: float | None,
) -> int:
    """Start a promotion and print its id.

    With --wait, follow it (riding over restarts of the sidecar) and exit 0 promoted,
    1 rolled back, refused or never ready, 3 aborted, 4 inconclusive, 5 --timeout elapsed,
    2 on errors.
    """
    from sidecar.domain.manifest import load_manifest  # noqa: PLC0415

    _needs_wait(wait, timeout_s, reconnect_s)
    manifest, stripped = load_manifest(manifest_file)
    for path in stripped:
        click.echo(f"warning: {manifest_file}: {path}: credentials removed from this URL", err=True)
    promotion = await client.create(manifest.to_json_dict(), stage, upstream, backend)
    if not wait:
        click.echo(promotion["id"])
        return 0
    _console().print(f"promotion {promotion['id']}", highlight=False)
    return await _wait_for_outcome(
        client, promotion["id"], timeout_s=timeout_s, reconnect_s=reconnect_s
    )


@cli.command()
@click.argument("promotion_id", required=False)
@click.option("--service", help="only this service")
@click.option("--stage", help="only this stage")
@click.option("--active", is_flag=True, help="only promotions still running")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@wait_options
@api_command
async def status(
    client: ApiClient,
    *,
    promotion_id: str | None,
    service: str | None,
    stage: str | None,
    active: bool,
    as_json: bool,
    wait: bool,
    timeout_s: float | None,
    reconnect_s: float | None,
) -> int:
    """Show one promotion, or list promotions.

    With ID --wait, re-attach to the promotion and exit as `promote --wait` does (at once
    for one that has ended); with --json, print its final state instead of the live view.
    """
    _needs_wait(wait, timeout_s, reconnect_s)
    if wait:
        if not promotion_id:
            raise InputError("--wait follows one promotion: give its ID, e.g. status ID --wait")
        return await _wait_for_outcome(
            client, promotion_id, timeout_s=timeout_s, reconnect_s=reconnect_s, as_json=as_json
        )
    if promotion_id:
        promotion = await client.get(promotion_id)
        if as_json:
            click.echo(json.dumps(promotion, indent=2))
        else:
            _console().print(_details(promotion))
        return 0
    items = await client.list(service=service, stage=stage, active=active or None)
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return 0
    table = Table(box=None, header_style="bold")
    for column in ("id", "service", "stage", "phase", "weight", "version", "artifact", "updated"):
        table.add_column(column, overflow="fold")
    for p in items:
        table.add_row(
            p["id"],
            p["service"],
            p["stage"],
            p["phase"],
            f"{p.get('weight', 0)}%",
            p.get("version", ""),
            _short(p.get("artifact")),
            _when(p.get("updated_at")),
        )
    _console().print(table if items else "no promotions")
    return 0


def _details(p: Json) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    baseline = f"{p.get('baseline_version') or '?'} {p['baseline']}" if p.get("baseline") else "-"
    rows = [
        ("id", p["id"]),
        ("service", p["service"]),
        ("stage", p["stage"]),
        ("phase", p["phase"] + (f" ({p['classification']})" if p.get("classification") else "")),
        ("strategy", p.get("strategy", "")),
        ("candidate", f"{p.get('version', '')} {p['artifact']}"),
        ("baseline", baseline),
        ("weight", f"{p.get('weight', 0)}% (step {int(p.get('step_index') or 0) + 1})"),
        ("reason", p.get("reason") or "-"),
        ("policy", str(p.get("policy_version", ""))),
        ("approved by", p.get("approved_by") or "-"),
        ("created", _when(p.get("created_at"))),
        ("updated", _when(p.get("updated_at"))),
    ]
    for key, value in rows:
        table.add_row(key, str(value))
    return table


@cli.command()
@click.argument("promotion_id")
@api_command
async def approve(client: ApiClient, *, promotion_id: str) -> None:
    """Approve a promotion that awaits approval."""
    promotion = await client.approve(promotion_id)
    click.echo(f"approved {promotion['id']}: {promotion['phase']}")


@cli.command()
@click.argument("promotion_id")
@api_command
async def abort(client: ApiClient, *, promotion_id: str) -> None:
    """Abort a promotion; traffic returns to the stable release."""
    promotion = await client.abort(promotion_id)
    click.echo(f"aborted {promotion['id']}: {promotion['phase']}")


@cli.command()
@click.option("--promotion", "promotion_id", help="roll back this promotion")
@click.option("--service", help="with --stage: go back one stable digest")
@click.option("--stage", help="with --service: go back one stable digest")
@api_command
async def rollback(
    client: ApiClient, *, promotion_id: str | None, service: str | None, stage: str | None
) -> None:
    """Roll back a promotion, or a service in a stage to its previous stable digest."""
    if promotion_id and not (service or stage):
        promotion = await client.rollback(promotion_id)
        click.echo(f"rolled back {promotion['id']}: {promotion['phase']}")
        return
    if promotion_id or not (service and stage):
        raise InputError("give either --promotion ID, or both --service and --stage")
    history = await client.history(service, stage)
    current = history[-1] if history else None
    stable = await client.rollback_stage(service, stage)
    was = f"{current.get('version', '')} {current['artifact']}" if current else "?"
    click.echo(f"{service} in {stage}: {was} -> {stable.get('version', '')} {stable['artifact']}")


@cli.command()
@click.option("--service", required=True)
@click.option("--stage", required=True)
@click.option("--json", "as_json", is_flag=True, help="print JSON (oldest first) instead")
@api_command
async def history(client: ApiClient, *, service: str, stage: str, as_json: bool) -> None:
    """Stable releases of a service in a stage, newest first."""
    items = await client.history(service, stage)
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    table = Table(box=None, header_style="bold")
    for column in ("promoted", "version", "artifact", "promotion", ""):
        table.add_column(column, overflow="fold")
    for index, item in enumerate(reversed(items)):
        table.add_row(
            _when(item.get("promoted_at")),
            item.get("version", ""),
            _short(item["artifact"]),
            item.get("promotion_id", ""),
            "current" if index == 0 else "",
        )
    _console().print(table if items else f"no stable release of {service} in {stage} yet")


@cli.group()
def policy() -> None:
    """Work with promotion policies."""


@policy.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--prometheus",
    "prometheus_url",
    metavar="URL",
    help="also run every SLO query of --stage for the release in --manifest here",
)
@click.option(
    "--manifest",
    "manifest_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="with --prometheus: the candidate's release manifest (JSON)",
)
@click.option("--stage", help="with --prometheus: the stage whose queries to run")
@click.option(
    "--baseline", metavar="IMAGE@sha256:...", help="with --prometheus: the stage's stable release"
)
@click.option("--baseline-version", metavar="V", help="the baseline's version")
@prometheus_bearer_token_option
def policy_check(
    file: Path,
    *,
    prometheus_url: str | None,
    bearer_token_file: Path | None,
    manifest_file: Path | None,
    stage: str | None,
    baseline: str | None,
    baseline_version: str | None,
) -> None:
    """Validate a policy file; print every problem with its path and fix.

    With --prometheus, also render every SLO query of --stage for the release (and
    --baseline) and print how many series each returns; exit 1 when a query failed or a
    total or value query matched nothing.
    """
    from sidecar.domain.policy import load_policy  # noqa: PLC0415

    try:
        checked = load_policy(file)
    except PolicyError as exc:
        for problem in exc.problems:
            click.echo(str(problem))
        raise click.exceptions.Exit(1) from None
    stages = len(checked.stages)
    click.echo(f"ok: {checked.metadata.name} version {checked.version}, {stages} stages")
    if prometheus_url is None:
        if manifest_file or stage or baseline or baseline_version:
            raise click.UsageError("--manifest, --stage and --baseline need --prometheus URL")
        return
    if manifest_file is None or stage is None:
        raise click.UsageError("--prometheus needs --manifest FILE and --stage NAME")
    if bool(baseline) != bool(baseline_version):
        raise click.UsageError("give --baseline and --baseline-version together")
    from sidecar.query_check import run_check  # noqa: PLC0415

    checks = asyncio.run(
        run_check(
            checked,
            manifest_file=manifest_file,
            stage_name=stage,
            prometheus_url=prometheus_url,
            bearer_token_file=bearer_token_file,
            baseline=baseline,
            baseline_version=baseline_version,
        )
    )
    if not baseline:
        click.echo("no --baseline given: the candidate's queries only")
    for check in checks:
        click.echo(f"{check.gate}  {check.side}  {check.query}: {check.shown}\n    {check.promql}")
    failing = [c for c in checks if not c.ok]
    if failing:
        click.echo(f"{len(failing)} of {len(checks)} queries failed or matched nothing")
        raise click.exceptions.Exit(1)
    click.echo(f"all {len(checks)} queries returned series")


@cli.group()
def schema() -> None:
    """Print JSON Schemas of promgate's inputs."""


@schema.command("manifest")
def schema_manifest() -> None:
    """The release manifest's JSON Schema."""
    from sidecar.domain.manifest import manifest_schema  # noqa: PLC0415

    click.echo(json.dumps(manifest_schema(), indent=2))


@schema.command("traffic")
def schema_traffic() -> None:
    """The traffic state's JSON Schema: what a webhook receiver gets."""
    from sidecar.actuators.base import traffic_state_schema  # noqa: PLC0415

    click.echo(json.dumps(traffic_state_schema(), indent=2))


@schema.command("policy")
def schema_policy() -> None:
    """The promotion policy's JSON Schema."""
    from sidecar.domain.policy import policy_schema  # noqa: PLC0415

    click.echo(json.dumps(policy_schema(), indent=2))


@cli.command()
def demo() -> None:
    """Run the end-to-end demo: real services, Prometheus and the sidecar, on this machine."""
    from sidecar.local.demo import run_demo  # noqa: PLC0415 - the demo is loaded only when run

    code = asyncio.run(run_demo(_console()))
    if code:
        raise click.exceptions.Exit(code)


@cli.command()
@click.option(
    "--policy",
    "policy_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="promotion policy file (YAML) to judge with",
)
@click.option(
    "--manifest",
    "manifest_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="the candidate's release manifest (JSON)",
)
@click.option(
    "--from",
    "start_text",
    required=True,
    metavar="TIME",
    help="window start: RFC 3339 (2024-05-01T12:00:00Z) or epoch seconds",
)
@click.option(
    "--to", "end_text", required=True, metavar="TIME", help="window end, at most 24h after --from"
)
@click.option("--stage", help="stage to replay [default: the policy's first stage]")
@click.option(
    "--baseline",
    metavar="IMAGE@sha256:...",
    help="the release that was stable in the window (required)",
)
@click.option("--baseline-version", metavar="V", help="the baseline's version (required)")
@click.option(
    "--prometheus-url",
    envvar="PROMGATE_PROMETHEUS_URL",
    default="http://127.0.0.1:9090",
    show_default=True,
    metavar="URL",
    help="Prometheus holding the window's data [env PROMGATE_PROMETHEUS_URL]",
)
@prometheus_bearer_token_option
@click.option("--json", "as_json", is_flag=True, help="print the evaluations as JSON")
def replay(
    *,
    policy_file: Path,
    manifest_file: Path,
    start_text: str,
    end_text: str,
    stage: str | None,
    baseline: str | None,
    baseline_version: str | None,
    prometheus_url: str,
    bearer_token_file: Path | None,
    as_json: bool,
) -> None:
    """Re-judge a past window on the data Prometheus kept: the decision each step would have made.

    The weights are what the policy would have set; the data is what really happened (a
    replay cannot change who got traffic). Exit 0 promoted or still running at --to,
    1 rolled back or refused, 3 aborted, 4 inconclusive, 2 on errors.
    """
    from sidecar import replay as replaying  # noqa: PLC0415 - loaded only when run
    from sidecar.domain.manifest import ReleaseManifest  # noqa: PLC0415
    from sidecar.domain.policy import load_policy  # noqa: PLC0415

    times: dict[str, float] = {}
    for flag, text in (("--from", start_text), ("--to", end_text)):
        try:
            times[flag] = replaying.parse_instant(text)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint=f"'{flag}'") from None
    replaying.check_window(times["--from"], times["--to"])
    stable = replaying.baseline_from_flags(baseline, baseline_version)
    checked = load_policy(policy_file)
    manifest = ReleaseManifest.load(manifest_file)
    result = asyncio.run(
        replaying.replay(
            checked,
            manifest.to_json_dict(),
            stage=stage or checked.stages[0].name,
            prometheus_url=prometheus_url,
            bearer_token_file=bearer_token_file,
            start=times["--from"],
            end=times["--to"],
            baseline=stable,
        )
    )
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        for line in replaying.report_lines(result):
            click.echo(line)
    code = replaying.exit_code(result)
    if code:
        raise click.exceptions.Exit(code)


def main() -> None:
    """Console script entry point."""
    cli(prog_name="promgate")


if __name__ == "__main__":
    main()
