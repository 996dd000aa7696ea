"""``watcher wait``: watch ids until every one has ended; JSON lines on stdout."""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass
from typing import NoReturn

import anyio
import click

from .._exceptions import ConfigError
from .._logging import configure_logging
from .._models import Outcome
from .._watcher import Watcher
from ..config import Config, parse_duration
from ._exit import EX_CONFIG, EX_ERROR, EX_FAILED, EX_INTERRUPTED, EX_OK, EX_USAGE
from ._ids import collect_ids
from ._loop import run as run_loop
from ._progress import ProgressReporter
from ._specs import parse_sink, parse_store

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
    "--sink",
    "sink_specs",
    multiple=True,
    metavar="SPEC",
    help="stdout, file:PATH or webhook:URL (repeatable; replaces the config's sinks). "
    "A webhook's secret comes from $WATCHER_WEBHOOK_SECRET.",
)
@click.option(
    "--store",
    "store_spec",
    metavar="SPEC",
    help="memory or sqlite:PATH. With sqlite, rerunning the same command after a crash "
    "continues where it stopped.",
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
    sink_specs: tuple[str, ...],
    store_spec: str | None,
    progress: bool | None,
) -> None:
    """Watch TASK_IDS until every one has ended; print each result as a JSON line.

    Exit status: 0 all succeeded, 1 any failed, partial or cancelled, 2 any error or timed
    out, 64 usage error, 78 configuration error, 130 interrupted.
    """
    if config_path is None:
        _fail(EX_USAGE, "no config: pass -c CONFIG or set WATCHER_CONFIG")
    deadline = _duration(timeout)
    overrides: dict[str, object] = {}
    if sink_specs:
        overrides["sinks"] = [parse_sink(spec) for spec in sink_specs]
    if store_spec is not None:
        overrides["store"] = parse_store(store_spec)
    try:
        ids, invalid = collect_ids(task_ids, ids_file)
    except (OSError, UnicodeDecodeError) as exc:
        _fail(EX_USAGE, f"cannot read ids: {exc}")
    for task_id, reason in invalid:
        click.echo(f"watcher: invalid task id {task_id!r}: {reason}", err=True)
    if not ids:
        _fail(EX_USAGE, "no valid task ids given" if invalid else "no task ids given")
    config = load_config_or_exit(config_path).model_copy(update=overrides)
    if source is not None and source not in config.sources:
        _fail(EX_USAGE, f"unknown source {source!r}; the config has: {', '.join(config.sources)}")
    configure_logging(config.log.level, config.log.format)
    run = _WaitRun(config, ids, source, batch, deadline, progress)
    try:
        code = run_loop(run.main)
    except ConfigError as exc:  # found only when building the parts: plugins, paths, secrets
        for issue in exc.issues:
            click.echo(str(issue), err=True)
        sys.exit(EX_CONFIG)
    if invalid and code < EX_ERROR:
        code = EX_ERROR  # a refused id never got a result: the run did not fully succeed
    sys.exit(code)


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


# How long sinks may take to deliver what is queued once every task has ended.
_DRAIN_GRACE = 60.0


async def _wait(run: _WaitRun) -> int:
    ids, outcomes = run.ids, dict[str, Outcome]()
    async with Watcher(run.config) as watcher:
        source = run.source or watcher.sources[0]
        await watcher.add(ids, source=source, batch=run.batch, deadline=run.deadline)
        reporter = ProgressReporter(watcher, len(ids), live=run.progress)
        wanted = set(ids)
        await _earlier_outcomes(watcher, ids, source, outcomes, reporter)
        stop: str | None = None
        async with anyio.create_task_group() as tg:

            async def on_signal() -> None:
                nonlocal stop
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        stop = "interrupted"
                        tg.cancel_scope.cancel()
                        return

            async def collect() -> None:
                # In the order tasks end, so progress and the pending list stay true.
                if len(outcomes) < len(wanted):
                    async for event in watcher.results(follow=True):
                        if event.source != source or event.task_id not in wanted:
                            continue
                        if event.task_id not in outcomes:
                            outcomes[event.task_id] = event.outcome
                            reporter.record(event.outcome)
                        if len(outcomes) == len(wanted):
                            break
                tg.cancel_scope.cancel()

            async def overall_timeout(seconds: float) -> None:
                # Deadlines end a task at its next poll, which may wait for a request slot
                # (or an auth pause); --timeout bounds the whole run regardless.
                await anyio.sleep(seconds + 1.0)
                await watcher.expire(source=source)

            async def credentials_check() -> None:
                nonlocal stop
                while True:
                    await anyio.sleep(0.2)
                    error = watcher.auth_refused(source)
                    if error is not None:
                        click.echo(
                            f"watcher: source {source!r} refused the credentials "
                            f"before any task could be polled: {error}; check the "
                            "source's auth settings",
                            err=True,
                        )
                        stop = "auth"
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(on_signal)
            tg.start_soon(reporter.run)
            tg.start_soon(collect)
            tg.start_soon(credentials_check)
            if run.deadline is not None:
                tg.start_soon(overall_timeout, run.deadline)
        if not reporter.live:
            reporter.log_line()
        if stop == "interrupted":
            _report_pending(ids, outcomes)
            return EX_INTERRUPTED
        if stop == "auth":
            return EX_CONFIG
        code = exit_code_for(set(outcomes.values()))
        if not await _deliver_rest(watcher, run.config):
            code = max(code, EX_ERROR)
    return code


async def _earlier_outcomes(
    watcher: Watcher,
    ids: list[str],
    source: str,
    outcomes: dict[str, Outcome],
    reporter: ProgressReporter,
) -> None:
    """Outcomes a resumable store holds from an earlier run of the same wait."""
    for task_id in ids:
        if not watcher.is_pending(task_id, source=source):
            outcomes[task_id] = await watcher.outcome(task_id, source=source)
            reporter.record(outcomes[task_id])


async def _deliver_rest(watcher: Watcher, config: Config) -> bool:
    """Give the sinks time to deliver what is queued; say so when they could not."""
    if await watcher.drain(_DRAIN_GRACE):
        return True
    kept = config.store.type != "memory"
    what = (
        "they stay queued in the store and are sent on the next run"
        if kept
        else "with the memory store they are lost (use --store sqlite:PATH to keep them)"
    )
    click.echo(
        "watcher: some results could not be delivered to every sink within "
        f"{_DRAIN_GRACE:.0f}s; {what}",
        err=True,
    )
    return False


def _report_pending(ids: list[str], outcomes: dict[str, Outcome]) -> None:
    pending = [i for i in ids if i not in outcomes]
    click.echo(f"watcher: interrupted; {len(pending)} task(s) still pending:", err=True)
    for task_id in pending:
        click.echo(f"  {task_id}", err=True)
