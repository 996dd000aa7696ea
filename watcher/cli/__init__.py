"""The ``watcher`` command. Only the CLI configures logging and installs signal handlers."""

from __future__ import annotations

import click

from .._version import __version__
from ._exit import EX_CONFIG, EX_USAGE

__all__ = ["EX_CONFIG", "EX_USAGE", "cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="watcher")
def cli() -> None:
    """Wait on remote tasks until they finish, and deliver every result reliably."""


def _register() -> None:
    # Each subcommand lives in the module named after it.
    from ._add import add
    from ._check import check
    from ._demo import demo
    from ._run import run
    from ._simulate import simulate
    from ._status import status
    from ._wait import wait

    for command in (add, check, demo, run, simulate, status, wait):
        cli.add_command(command)


_register()


def main() -> None:
    """Console-script entry point; click maps usage errors to exit code 64 (see ``_exit``)."""
    from ._exit import run_cli

    run_cli(cli)
