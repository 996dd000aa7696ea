"""``watcher add``: hand task ids to a running daemon (``POST /v1/watches``)."""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
import click

from ..config import parse_duration
from ._client import (
    EX_DATAERR,
    ClientError,
    DaemonClient,
    Endpoint,
    config_options,
    fail,
    resolve_endpoint,
)
from ._exit import EX_OK, EX_USAGE
from ._ids import collect_ids

__all__ = ["add"]

_CHUNK = 10_000  # ids per request: far below the daemon's limits of 100k ids and 4 MiB


def _labels(pairs: tuple[str, ...]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--label")
        labels[key] = value
    return labels


def _deadline(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--deadline") from None
    assert isinstance(seconds, float)
    return seconds


async def _send(endpoint: Endpoint, ids: list[str], fields: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {"accepted": [], "duplicates": [], "invalid": []}
    async with DaemonClient(endpoint) as client:
        for start in range(0, len(ids), _CHUNK):
            body = {"task_ids": ids[start : start + _CHUNK], **fields}
            answer = await client.request("POST", "/v1/watches", body=body)
            for key in ("accepted", "duplicates", "invalid"):
                merged[key].extend(answer.get(key, []))
            merged["source"], merged["batch"] = answer.get("source"), answer.get("batch")
    return merged


@click.command("add")
@click.argument("task_ids", nargs=-1)
@click.option("--ids-file", metavar="FILE|-", help="Read ids from FILE, one per line (- = stdin).")
@click.option("--batch", help="Batch name: one batch.finished event when all its tasks ended.")
@click.option("--source", help="Source name from the daemon's config (default: its first).")
@click.option("--label", "label_pairs", multiple=True, metavar="KEY=VALUE", help="Repeatable.")
@click.option("--deadline", metavar="DURATION", help="Give up on each task after this (e.g. 2h).")
@config_options
def add(
    *,
    task_ids: tuple[str, ...],
    ids_file: str | None,
    batch: str | None,
    source: str | None,
    label_pairs: tuple[str, ...],
    deadline: str | None,
    config_path: str | None,
    url: str | None,
    as_json: bool,
) -> None:
    """Ask a running daemon (`watcher run`) to watch TASK_IDS.

    Ids already watched are reported as duplicates (not an error). Exit status: 0 done,
    64 usage, 65 some ids were invalid or the request was refused, 69 daemon unreachable,
    76 unexpected answer, 77 token refused, 78 no token configured.
    """
    labels = _labels(label_pairs)
    seconds = _deadline(deadline)
    try:
        ids, invalid = collect_ids(task_ids, ids_file)
    except OSError as exc:
        fail(EX_USAGE, f"cannot read ids: {exc.strerror or exc}")
    if not ids and not invalid:
        fail(EX_USAGE, "no task ids given")
    endpoint = resolve_endpoint(config_path, url)
    fields: dict[str, Any] = {}
    for key, value in (("batch", batch), ("source", source), ("deadline", seconds)):
        if value is not None:
            fields[key] = value
    if labels:
        fields["labels"] = labels
    try:
        result = anyio.run(_send, endpoint, ids, fields) if ids else _empty()
    except ClientError as exc:
        fail(exc.code, exc.message)
    # Ids refused here never reached the daemon; report them the way it would.
    result["invalid"] = [{"task_id": i, "reason": r} for i, r in invalid] + result["invalid"]
    _report(result, as_json)
    sys.exit(EX_DATAERR if result["invalid"] else EX_OK)


def _empty() -> dict[str, Any]:
    return {"accepted": [], "duplicates": [], "invalid": [], "source": None, "batch": None}


def _report(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False))
        return
    where = f" in source {result['source']}" if result.get("source") else ""
    if result.get("batch"):
        where += f", batch {result['batch']}"
    accepted, duplicates = len(result["accepted"]), len(result["duplicates"])
    line = f"watching {accepted} new task(s){where}"
    if duplicates:
        line += f"; {duplicates} already watched"
    click.echo(line)
    for item in result["invalid"]:
        click.echo(f"watcher: invalid task id {item['task_id']!r}: {item['reason']}", err=True)
