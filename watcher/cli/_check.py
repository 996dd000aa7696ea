"""``watcher check``: validate a config file and print it as watcher will use it."""

from __future__ import annotations

import anyio
import click

from .._exceptions import ConfigError, ConfigIssue
from ._exit import EX_CONFIG


def _describe(issue: ConfigIssue) -> str:
    # File-level problems (unreadable, empty, YAML syntax) have no key path to name.
    if issue.path:
        return str(issue)
    where = issue.file or "<config>"
    if issue.line is not None:
        where += f":{issue.line}"
    return f"{where}: {issue.message}"


@click.command("check")
@click.option(
    "-c",
    "--config",
    "path",
    required=True,
    envvar="WATCHER_CONFIG",
    metavar="FILE",
    help="Config file to validate ('-' reads standard input). Env: WATCHER_CONFIG.",
)
@click.pass_context
def check(ctx: click.Context, path: str) -> None:
    """Validate a config file and print the effective config, secrets masked.

    Every problem is reported, one per line as FILE:LINE KEY.PATH: MESSAGE, and the exit
    status is 78 (EX_CONFIG) if there is any.
    """
    from .._assembly import check_components
    from ..config._loader import dump_effective, load, plugin_warnings, read_text

    try:
        text, name = read_text(path)
        loaded = load(text, name)
    except ConfigError as exc:
        for issue in exc.issues:
            click.echo(_describe(issue), err=True)
        count = len(exc.issues)
        click.echo(f"invalid: {path} ({count} problem{'' if count == 1 else 's'})", err=True)
        ctx.exit(EX_CONFIG)
    warnings = plugin_warnings(loaded)
    for warning in warnings:
        click.echo(f"warning: {_describe(warning)}", err=True)
    built = anyio.run(check_components, loaded.config)
    if built:
        for issue in built:
            click.echo(_describe(issue), err=True)
        count = len(built)
        click.echo(f"invalid: {path} ({count} problem{'' if count == 1 else 's'})", err=True)
        ctx.exit(EX_CONFIG)
    click.echo(dump_effective(loaded.config), nl=False)
    click.echo(f"ok: {name}", err=True)
