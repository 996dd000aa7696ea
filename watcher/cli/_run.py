"""``watcher run``: the daemon (engine + control API + spool intake) until SIGTERM/SIGINT."""

from __future__ import annotations

import sys

import click

from .._exceptions import ConfigError
from .._log import get_logger
from .._logging import configure_logging
from ._exit import EX_CONFIG, EX_OK
from ._loop import run as run_loop
from ._wait import load_config_or_exit

__all__ = ["EX_SOFTWARE", "EX_UNAVAILABLE", "run"]

EX_UNAVAILABLE = 69  # cannot listen on api.listen
EX_SOFTWARE = 70  # the daemon crashed (a bug): the traceback is in the log

_log = get_logger("watcher.daemon")


def _config_error(exc: ConfigError) -> None:
    for issue in exc.issues:
        click.echo(f"watcher: {issue}", err=True)


@click.command("run")
@click.option(
    "-c",
    "--config",
    "config_path",
    required=True,
    envvar="WATCHER_CONFIG",
    metavar="CONFIG",
    help="Config file (or $WATCHER_CONFIG).",
)
@click.option(
    "--ready-file",
    metavar="PATH",
    help='Once the API listens, write {"url", "listen", "pid"} as JSON here (atomically; '
    "removed at exit). With api.listen port 0 this tells which port was picked.",
)
def run(*, config_path: str, ready_file: str | None) -> None:
    """Run the daemon: watch what arrives over the HTTP API (and the spool directory),
    deliver every result to the sinks.

    Without a `store` key the daemon keeps its state in SQLite (watcher.db in the working
    directory). SIGTERM/SIGINT: stop polling, finish in-flight work and flush sinks within
    daemon.grace (default 30s), exit 0; a restart resumes the rest. SIGHUP reopens file sinks.

    Exit status: 0 stopped by a signal, 64 usage error, 69 cannot listen on api.listen,
    70 internal error, 78 configuration error (also: no API token configured).
    """
    from ..daemon import Daemon, DaemonError

    config = load_config_or_exit(config_path)
    configure_logging(config.log.level, config.log.format)
    try:
        daemon = Daemon(config, ready_file=ready_file)
        code = run_loop(daemon.run)
    except Exception as exc:
        # Task groups wrap what fails inside them; a lone start-up error is still that error.
        cause = _unwrap(exc)
        if isinstance(cause, ConfigError):
            _config_error(cause)
            sys.exit(EX_CONFIG)
        if isinstance(cause, DaemonError):
            click.echo(f"watcher: {cause}", err=True)
            sys.exit(cause.code)
        _log.exception("the daemon crashed")
        sys.exit(EX_SOFTWARE)
    sys.exit(code if code is not None else EX_OK)


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
