"""``watcher wait``: watch ids until every one has ended; JSON lines on stdout."""

from __future__ import annotations

import json
import signal
import sys
from dataclasses import dataclass
from typing import NoReturn

import anyio
import click

from .._exceptions import ConfigError
from .._logging import configure_logging
from .._models import Outcome, ResultEvent
from .._watcher import Watcher
from ..config import Config, parse_duration
from ._exit import EX_CONFIG, EX_ERROR, EX_FAILED, EX_INTERRUPTED, EX_OK, EX_USAGE
from ._ids import collect_ids
from ._progress import ProgressReporter

__all__ = ["exit_code_for", "wait"]

_FAILED = {Outcome.FAILED, Outcome.PARTIAL, Outcome.CANCELLED}
_ERRORED = {Outcome.ERROR, Outcome.TIMED_OUT}


def exit_code_for(outcomes: set[Outcome]) -> int:
    """0 all succeeded, 1 any failed/partial/cancelled, 2 any error or timed out."""
    if outcomes & _ERRORED:
        return EX_ERROR
    if outcomes & _FAILED:
        return EX_FAILED
    return EX_OK


def _fail(code: int, message: str) -> NoReturn:
    click.echo(f"watcher: {message}", err=True)
    sys.exit(code)


def load_config_or_exit(path: str) -> Config:
    from ..config import load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        for issue in exc.issues:
            click.echo(str(issue), err=True)
        sys.exit(EX_CONFIG)


def _duration(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--timeout") from None
    assert isinstance(seconds, float)
    return seconds


@click.command()
@click.argument("task_ids", nargs=-1)
@click.option("--ids-file", metavar="FILE|-", help="Read ids from FILE, one per line (- = stdin).")
@click.option(
    "-c",
    "--config",
    "config_path",
    envvar="WATCHER_CONFIG",
    metavar="CONFIG",
    help="Config file (or $WATCHER_CONFIG).",
)
@click.option("--source", help="Source name from the config (default: the first).")
@click.option("--batch", help="Batch name carried in every event.")
@click.option(
    "--timeout",
    metavar="DURATION",
    help="Give up after this long (e.g. 30m); unfinished tasks end as timed_out.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Live progress on stderr (default: when stderr is a terminal).",
)
def wait(
    *,
    task_ids: tuple[str, ...],
    ids_file: str | None,
    config_path: str | None,
    source: str | None,
    batch: str | None,
    timeout: str | None,
    progress: bool | None,
) -> None:
    """Watch TASK_IDS until every one has ended; print each result as a JSON line.

    Exit status: 0 all succeeded, 1 any failed, partial or cancelled, 2 any error or timed
    out, 64 usage error, 78 configuration error, 130 interrupted.
    """
    if config_path is None:
        _fail(EX_USAGE, "no config: pass -c CONFIG or set WATCHER_CONFIG")
    deadline = _duration(timeout)
    try:
        ids, invalid = collect_ids(task_ids, ids_file)
    except OSError as exc:
        _fail(EX_USAGE, f"cannot read ids: {exc}")
    for task_id, reason in invalid:
        click.echo(f"watcher: invalid task id {task_id!r}: {reason}", err=True)
    if not ids:
        _fail(EX_USAGE, "no valid task ids given" if invalid else "no task ids given")
    config = load_config_or_exit(config_path)
    if source is not None and source not in config.sources:
        _fail(EX_USAGE, f"unknown source {source!r}; the config has: {', '.join(config.sources)}")
    configure_logging(config.log.level, config.log.format)
    run = _WaitRun(config, ids, source, batch, deadline, progress)
    code = anyio.run(run.main)
    if invalid and code < EX_ERROR:
        code = EX_ERROR  # a refused id never got a result: the run did not fully succeed
    sys.exit(code)


def emit(event: ResultEvent) -> None:
    sys.stdout.write(json.dumps(event.to_dict(), ensure_ascii=False) + "\n")
    sys.stdout.flush()


@dataclass(frozen=True, slots=True)
class _WaitRun:
    config: Config
    ids: list[str]
    source: str | None
    batch: str | None
    deadline: float | None
    progress: bool | None

    async def main(self) -> int:
        return await _wait(self)


async def _wait(run: _WaitRun) -> int:
    config, ids, source, progress = run.config, run.ids, run.source, run.progress
    outcomes: set[Outcome] = set()
    async with Watcher(config) as watcher:
        await watcher.add(ids, source=source, batch=run.batch, deadline=run.deadline)
        reporter = ProgressReporter(watcher, len(ids), live=progress)
        interrupted = False
        async with anyio.create_task_group() as tg:

            async def on_signal() -> None:
                nonlocal interrupted
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        interrupted = True
                        tg.cancel_scope.cancel()
                        return

            async def consume() -> None:
                async for event in watcher.results():
                    emit(event)
                    outcomes.add(event.outcome)
                    reporter.record(event.outcome)
                tg.cancel_scope.cancel()

            tg.start_soon(on_signal)
            tg.start_soon(reporter.run)
            tg.start_soon(consume)
        if not reporter.live:
            reporter.log_line()
        if interrupted:
            _report_pending(watcher, ids, source)
            return EX_INTERRUPTED
    return exit_code_for(outcomes)


def _report_pending(watcher: Watcher, ids: list[str], source: str | None) -> None:
    done = {(e.source, e.task_id) for e in watcher.finished_events()}
    name = source or watcher.sources[0]
    pending = [i for i in ids if (name, i) not in done]
    click.echo(f"watcher: interrupted; {len(pending)} task(s) still pending:", err=True)
    for task_id in pending:
        click.echo(f"  {task_id}", err=True)
