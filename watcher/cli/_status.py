"""``watcher status``: what a running daemon is doing, or one task, or one batch."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import anyio
import click

from .._taskid import quote_segment
from ._client import ClientError, DaemonClient, Endpoint, config_options, fail, resolve_endpoint
from ._exit import EX_OK, EX_USAGE

__all__ = ["status"]


async def _fetch(
    endpoint: Endpoint, batch: str | None, task_id: str | None, source: str | None
) -> Any:
    async with DaemonClient(endpoint) as client:
        if batch is not None:
            return await client.request("GET", f"/v1/batches/{quote_segment(batch)}")
        if task_id is not None:
            if source is None:
                source = (await client.request("GET", "/v1/status"))["default_source"]
            path = f"/v1/watches/{quote_segment(str(source))}/{quote_segment(task_id)}"
            return await client.request("GET", path)
        return await client.request("GET", "/v1/status")


@click.command("status")
@click.argument("task_id", required=False)
@click.option("--batch", help="Show this batch: totals by outcome, pending, estimated finish.")
@click.option("--source", help="The task's source (default: the daemon's first).")
@config_options
def status(
    *,
    task_id: str | None,
    batch: str | None,
    source: str | None,
    config_path: str | None,
    url: str | None,
    as_json: bool,
) -> None:
    """Show a running daemon's state; with TASK_ID one task, with --batch one batch.

    Exit status: 0 shown, 64 usage, 66 no such task or batch, 69 daemon unreachable,
    76 unexpected answer, 77 token refused, 78 no token configured.
    """
    if task_id is not None and batch is not None:
        fail(EX_USAGE, "give TASK_ID or --batch, not both")
    endpoint = resolve_endpoint(config_path, url)
    try:
        answer = anyio.run(_fetch, endpoint, batch, task_id, source)
    except ClientError as exc:
        fail(exc.code, exc.message)
    if as_json:
        click.echo(json.dumps(answer, ensure_ascii=False))
    elif batch is not None:
        click.echo(_batch_text(answer))
    elif task_id is not None:
        click.echo(_watch_text(answer))
    else:
        click.echo(_daemon_text(answer))
    sys.exit(EX_OK)


def _when(value: str | None) -> str:
    if not value:
        return "-"
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S UTC")


def _batch_text(b: dict[str, Any]) -> str:
    outcomes = ", ".join(f"{n} {name}" for name, n in sorted(b["outcomes"].items())) or "none yet"
    state = "finished" if b["finished"] else f"{b['pending']} pending"
    lines = [
        f"batch {b['batch']}: {b['tasks']} task(s), {state}",
        f"  done:      {b['done']} ({outcomes})",
        f"  started:   {_when(b['started_at'])}",
    ]
    if not b["finished"]:
        lines.append(f"  estimated: {_when(b['estimated_finish_at'])}")
    return "\n".join(lines)


def _watch_text(w: dict[str, Any]) -> str:
    state = w["outcome"] if w["state"] == "done" else "pending"
    lines = [
        f"{w['source']}/{w['task_id']}: {state}",
        f"  polls:     {w['polls']} ({w['errors']} failed in a row)",
        f"  batch:     {w['batch'] or '-'}",
        f"  watched:   {_when(w['watched_at'])}",
    ]
    if w["labels"]:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(w["labels"].items()))
        lines.append(f"  labels:    {labels}")
    if w["state"] == "done":
        lines.append(f"  finished:  {_when(w['finished_at'])}")
    else:
        lines.append(f"  next poll: {_when(w['due_at'])}")
        lines.append(f"  deadline:  {_when(w['deadline_at'])}")
    return "\n".join(lines)


def _daemon_text(s: dict[str, Any]) -> str:
    watches = s["watches"]
    lines = [
        f"watcher {s['version']}: {'ready' if s['ready'] else 'NOT READY'}, "
        f"up {int(s['uptime_seconds'])}s",
        f"  watches: {watches.get('pending', 0)} pending, {watches.get('done', 0)} done",
    ]
    for name, src in s["sources"].items():
        paused = ", PAUSED" if src["paused"] else ""
        lines.append(
            f"  source {name}: {src['polls']} polls, {src['throttled']} throttled, "
            f"{src['current_rate']:g}/{src['rate_limit']:g} req/s{paused}"
        )
    for name, sink in s["sinks"].items():
        lines.append(
            f"  sink {name}: {sink['delivered']} delivered, {sink['queue_depth']} queued, "
            f"{sink['dead_lettered']} dead-lettered"
        )
        if sink["last_error"]:
            lines.append(f"    last error: {sink['last_error']}")
    return "\n".join(lines)
