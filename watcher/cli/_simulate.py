"""``watcher simulate``: run the built-in MetaStudio simulator until interrupted."""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
import click

from .._taskid import quote_segment
from ..config._units import parse_bytes, parse_duration, parse_rate
from ._loop import run as run_loop

if TYPE_CHECKING:
    from ..simulator import SimulatorConfig

__all__ = ["simulate"]


def _number(parser: Any, value: str, name: str) -> float:
    try:
        parsed = parser(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None
    if isinstance(parsed, bool) or not isinstance(parsed, int | float):
        raise click.BadParameter(f"not understood: {value!r}", param_hint=name)
    return float(parsed)


def _seconds(value: str, name: str) -> float:
    return _number(parse_duration, value, name)


def _latency(value: str | None) -> float | tuple[float, float]:
    if not value:
        return 0.0
    low, sep, high = value.partition(":")
    if sep:
        return (_seconds(low, "--latency"), _seconds(high, "--latency"))
    return _seconds(value, "--latency")


def _credentials(aks: Sequence[str], sks: Sequence[str]) -> dict[str, str]:
    """``--ak AK --sk SK`` pairs in order, or ``--ak AK:SK``."""
    out: dict[str, str] = {}
    plain: list[str] = []
    for ak in aks:
        key, sep, secret = ak.partition(":")
        if sep:
            out[key] = secret
        else:
            plain.append(ak)
    if len(plain) != len(sks):
        raise click.BadParameter(
            f"{len(plain)} --ak without a secret but {len(sks)} --sk; pair them or use AK:SK",
            param_hint="--ak/--sk",
        )
    out.update(zip(plain, sks, strict=True))
    return out


def _iam_users(values: Sequence[str]) -> dict[tuple[str, str], str]:
    users: dict[tuple[str, str], str] = {}
    for value in values:
        who, sep, password = value.partition(":")
        domain, slash, user = who.partition("/")
        if not (sep and slash and domain and user):
            raise click.BadParameter("use domain/user:password", param_hint="--iam-user")
        users[(domain, user)] = password
    return users


def _read_ids(path: str) -> list[str]:
    with click.open_file(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip() and not line.startswith("#")]


@click.command("simulate")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8080, show_default=True, help="Port to bind (0: any free).")
@click.option("--seed", default=0, show_default=True, help="Seed of everything random.")
@click.option("--project-id", default="sim-project", show_default=True)
@click.option("--rate-limit", default=None, help="Per-tenant requests/second (e.g. 20, 600/min).")
@click.option("--no-retry-after", is_flag=True, help="Answer 429 without Retry-After.")
@click.option(
    "--auth", type=click.Choice(["none", "token", "aksk", "any"]), default="none", show_default=True
)
@click.option("--ak", multiple=True, help="Access key (repeatable; AK:SK or paired with --sk).")
@click.option("--sk", multiple=True, help="Secret key for the matching --ak.")
@click.option("--token", "tokens", multiple=True, help="A static token the gateway accepts.")
@click.option("--iam-user", multiple=True, help="IAM user as domain/user:password (repeatable).")
@click.option("--token-ttl", default="24h", show_default=True, help="Lifetime of IAM tokens.")
@click.option("--duration-median", default="10s", show_default=True, help="Median task life.")
@click.option("--duration-sigma", default=0.5, show_default=True, help="Log-normal sigma.")
@click.option("--duration-min", default="0s", show_default=True)
@click.option("--duration-max", default=None, help="Cap on a task's life.")
@click.option("--total-min", default=1, show_default=True, help="Fewest items per task.")
@click.option("--total-max", default=100, show_default=True, help="Most items per task.")
@click.option("--time-scale", default=1.0, show_default=True, help="Task life runs this fast.")
@click.option("--error-rate", default=0.0, show_default=True, help="Share of 5xx answers.")
@click.option("--latency", default=None, help="Added latency: 50ms, or a range 10ms:200ms.")
@click.option("--malformed-rate", default=0.0, show_default=True, help="Share of bad bodies.")
@click.option("--drop-rate", default=0.0, show_default=True, help="Share of dropped connections.")
@click.option("--outage", is_flag=True, help="Every API request answers 503.")
@click.option("--oversize-body", default=None, help="Answer 200 bodies of this size (e.g. 5MiB).")
@click.option("--clock-skew", default=0.0, show_default=True, help="Seconds added to the clock.")
@click.option(
    "--field-forms",
    type=click.Choice(["documented", "mixed"]),
    default="documented",
    show_default=True,
    help="documented: like API.md's example; mixed: every form API.md allows.",
)
@click.option("--task-ids-file", default=None, help="Fixed task ids, one a line ('-': stdin).")
@click.option(
    "--auto-create/--no-auto-create",
    default=None,
    help="Create unknown ids on first request (default: yes unless --task-ids-file).",
)
@click.option("--page-cap", default=100, show_default=True, help="Most tasks per search answer.")
def simulate(**options: Any) -> None:
    """Run the built-in MetaStudio simulator (task API, IAM tokens, API gateway).

    Tasks are created on first request and progress until they finish; poll one with curl
    to watch it. Stop with Ctrl-C.
    """
    from ..simulator import FaultConfig, SimulatorConfig

    try:
        oversize = options["oversize_body"]
        rate = options["rate_limit"]
        faults = FaultConfig(
            error_rate=options["error_rate"],
            latency=_latency(options["latency"]),
            malformed_rate=options["malformed_rate"],
            drop_rate=options["drop_rate"],
            outage=options["outage"],
            oversize_body=int(_number(parse_bytes, oversize, "--oversize-body")) if oversize else 0,
            clock_skew=options["clock_skew"],
        )
        max_life = options["duration_max"]
        config = SimulatorConfig(
            seed=options["seed"],
            host=options["host"],
            port=options["port"],
            project_id=options["project_id"],
            auto_create=options["auto_create"],
            task_ids=_read_ids(options["task_ids_file"]) if options["task_ids_file"] else None,
            duration_median=_seconds(options["duration_median"], "--duration-median"),
            duration_sigma=options["duration_sigma"],
            duration_min=_seconds(options["duration_min"], "--duration-min"),
            duration_max=_seconds(max_life, "--duration-max") if max_life else None,
            total_range=(options["total_min"], options["total_max"]),
            field_forms=options["field_forms"],
            page_cap=options["page_cap"],
            time_scale=options["time_scale"],
            rate_limit=_number(parse_rate, rate, "--rate-limit") if rate else None,
            retry_after=not options["no_retry_after"],
            auth=options["auth"],
            tokens=frozenset(options["tokens"]),
            credentials=_credentials(options["ak"], options["sk"]),
            iam_users=_iam_users(options["iam_user"]),
            token_ttl=_seconds(options["token_ttl"], "--token-ttl"),
            faults=faults,
        )
    except (ValueError, OSError) as exc:
        raise click.UsageError(str(exc)) from None
    sys.exit(run_loop(_serve, config))


def _banner(url: str, config: SimulatorConfig) -> list[str]:
    example = config.task_ids[0] if config.task_ids else "abc"
    task_url = f"{url}/v2/{quote_segment(config.project_id)}/ies/task/{quote_segment(example)}"
    lines = [
        f"MetaStudio simulator listening on {url} "
        f"(project {config.project_id}, auth {config.auth}, seed {config.seed})",
    ]
    if config.auth == "aksk":
        lines.append(f"  try: sign GET {task_url} with a configured AK (SDK-HMAC-SHA256)")
    else:
        header = ""
        if config.auth != "none":
            header = f'-H "X-Auth-Token: $(curl -s -X POST {url}/_sim/tokens | jq -r .token)" '
        lines.append(f"  try: curl {header}{task_url}")
    lines.append(f"  IAM: POST {url}/v3/auth/tokens    control: {url}/_sim/stats, /_sim/faults")
    lines.append("  Ctrl-C to stop.")
    return lines


async def _serve(config: SimulatorConfig) -> int:
    from ..simulator import Simulator

    sim = Simulator(config)
    try:
        await sim.start()
    except OSError as exc:
        click.echo(f"error: cannot listen on {config.host}:{config.port}: {exc}", err=True)
        return 1
    try:
        for line in _banner(sim.url, config):
            click.echo(line)
        sys.stdout.flush()
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                click.echo(f"received {signal.Signals(signum).name}; stopping", err=True)
                break
    finally:
        await sim.aclose()
    return 0
