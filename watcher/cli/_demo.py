"""``watcher demo``: the built-in simulator and a watch of a few hundred tasks, no setup."""

from __future__ import annotations

import json
import statistics
import sys
from collections import Counter

import anyio
import click

from .._logging import configure_logging
from .._models import Outcome, ResultEvent
from .._watcher import Watcher
from ..config import Config
from ._exit import EX_OK
from ._loop import run as run_loop
from ._progress import ProgressReporter

__all__ = ["demo"]

_AK, _SK = "DEMOACCESSKEY0000001", "demo-secret-key"


def demo_config(endpoint: str, project_id: str, rate: float) -> Config:
    """A config pointing at the in-process simulator, signed with AK/SK like production."""
    return Config.model_validate(
        {
            "sources": {
                "metastudio": {
                    "type": "metastudio",
                    "endpoint": endpoint,
                    "project_id": project_id,
                    "auth": {"type": "aksk", "ak": _AK, "sk": _SK},
                    "rate_limit": rate,
                    "status_map": {"2": "cancelled"},
                }
            },
            "sinks": [],  # the summary table is the demo's output; --json adds events
            # Lives are compressed ~100x, so are the waits between polls.
            "polling": {
                "deadline": "2m",
                "backoff": {"min": "250ms", "initial": "500ms", "max": "2s", "progress_max": "3s"},
            },
        }
    )


@click.command()
@click.option("--tasks", default=300, show_default=True, help="How many tasks to watch.")
@click.option("--rate", default=60.0, show_default=True, help="watcher's requests/second.")
@click.option(
    "--api-limit",
    default=80.0,
    show_default=True,
    help="The simulated API's per-tenant limit (requests/second).",
)
@click.option("--seed", default=7, show_default=True, help="Seed of the simulated tasks.")
@click.option("--json", "as_json", is_flag=True, help="Also print every event as a JSON line.")
def demo(tasks: int, rate: float, api_limit: float, seed: int, as_json: bool) -> None:
    """Watch simulated MetaStudio tasks whose lives are compressed into ~15 seconds."""
    configure_logging("warning")
    sys.exit(run_loop(_demo, tasks, rate, api_limit, seed, as_json))


async def _demo(tasks: int, rate: float, api_limit: float, seed: int, as_json: bool) -> int:
    from ..simulator import Simulator, SimulatorConfig

    sim_config = SimulatorConfig(
        seed=seed,
        rate_limit=api_limit,
        auth="aksk",
        credentials={_AK: _SK},
        duration_median=5.0,
        duration_sigma=0.5,
        duration_min=1.0,
        duration_max=11.0,
        total_range=(10, 500),
    )
    ids = [f"demo{seed:04d}{i:06d}" for i in range(tasks)]
    events: list[ResultEvent] = []
    async with Simulator(sim_config) as sim:
        click.echo(
            f"simulator on {sim.url}; watching {tasks} tasks at {rate:g} req/s "
            f"(API limit {api_limit:g}/s)",
            err=True,
        )
        started = anyio.current_time()
        async with Watcher(demo_config(sim.url, sim_config.project_id, rate), seed=seed) as w:
            await w.add(ids, batch="demo")
            reporter = ProgressReporter(w, tasks, interval=2.0)
            async with anyio.create_task_group() as tg:
                tg.start_soon(reporter.run)
                async for event in w.results():
                    events.append(event)
                    reporter.record(event.outcome)
                    if as_json:
                        click.echo(json.dumps(event.to_dict(), ensure_ascii=False))
                tg.cancel_scope.cancel()
        elapsed = anyio.current_time() - started
        stats = sim.stats()
    _summary(events, elapsed, stats.throttled, stats.max_requests_in_1s, stats.requests)
    return EX_OK


def _summary(
    events: list[ResultEvent], elapsed: float, throttled: int, peak: int, requests: int
) -> None:
    from rich.console import Console
    from rich.table import Table

    outcomes = Counter(e.outcome for e in events)
    latencies = [
        (e.detected_at - e.snapshot.end_time).total_seconds()
        for e in events
        if e.snapshot is not None and e.snapshot.end_time is not None
    ]
    table = Table(title=f"watcher demo: {len(events)} tasks in {elapsed:.1f}s")
    table.add_column("outcome")
    table.add_column("tasks", justify="right")
    for outcome in Outcome:
        if outcomes[outcome]:
            table.add_row(outcome.value, str(outcomes[outcome]))
    table.add_section()
    polls = sum(e.polls for e in events)
    table.add_row("polls per task", f"{polls / max(len(events), 1):.1f}")
    if latencies:
        ordered = sorted(latencies)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        table.add_row("detection latency p50", f"{statistics.median(ordered):.2f}s")
        table.add_row("detection latency p95", f"{p95:.2f}s")
    table.add_row("requests the API saw", str(requests))
    table.add_row("most requests in 1 s", str(peak))
    table.add_row("429s from the API", str(throttled))
    Console(stderr=False).print(table)
