"""Exit codes (sysexits.h), shared by every subcommand."""

from __future__ import annotations

import sys

import click

EX_OK = 0
EX_FAILED = 1  # some task failed, was partial or cancelled
EX_ERROR = 2  # some task ended in error or timed out
EX_USAGE = 64
EX_CONFIG = 78
EX_INTERRUPTED = 130


def run_cli(group: click.Group) -> None:
    """Run ``group``; click's own usage errors exit 64 instead of its default 2.

    Exit code 2 means "a task errored or timed out" for ``watcher wait``, so a usage error
    must not share it.
    """
    try:
        code = group.main(standalone_mode=False)
    except click.exceptions.UsageError as exc:
        exc.show()
        sys.exit(EX_USAGE)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(EX_INTERRUPTED)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else EX_OK)
