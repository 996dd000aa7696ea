"""The SQLite store's statements, one batched handler per kind of write, and row mapping.

A handler gets the arguments of one or more consecutive calls of its kind and runs them
with as few statements as it can (``executemany``), inside the writer's open transaction;
it returns one result per call, in order.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import aiosqlite

from .base import DeadLetter, OutboxItem, WatchRecord

__all__ = [
    "ALL_BATCH_COUNTS",
    "ANNOUNCED",
    "BATCH_COUNTS",
    "DEAD",
    "GET",
    "HANDLERS",
    "LIST",
    "MERGEABLE",
    "OUTBOX",
    "PENDING",
    "dumps",
    "to_dead_letter",
    "to_item",
    "to_records",
    "to_row",
]

Conn = aiosqlite.Connection
SCAN_CHUNK = 5000
Handler = Callable[[Conn, list[Any]], Awaitable[list[Any]]]

COLS = (
    "source, task_id, watched_at, due_at, deadline_at, batch, labels, key, polls, errors, "
    "state, outcome, finished_at"
)  # WatchRecord's field order
# Only constant fragments are ever joined into SQL; every value is a bound parameter.
INSERT_WATCH = f"INSERT INTO watches ({COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"  # noqa: S608
GET = f"SELECT {COLS} FROM watches WHERE source = ? AND task_id = ?"  # noqa: S608
PENDING = f"SELECT {COLS} FROM watches WHERE state = 'pending' ORDER BY due_at, rowid"  # noqa: S608
LIST = f"SELECT {COLS} FROM watches{{where}} ORDER BY rowid LIMIT ? OFFSET ?"  # noqa: S608
OUTBOX = (
    "SELECT sink, seq, event_id, payload, attempts, created_at, next_attempt_at, last_error "
    "FROM outbox WHERE sink = ? ORDER BY seq LIMIT ?"
)
DEAD = "SELECT sink, event_id, payload, reason, at, seq, attempts, last_error FROM dead_letters"
BATCH_COUNTS = "SELECT state, outcome, count(*) FROM watches WHERE batch = ? GROUP BY 1, 2"
ALL_BATCH_COUNTS = (
    "SELECT batch, state, outcome, count(*) FROM watches WHERE batch IS NOT NULL GROUP BY 1, 2, 3"
)
# Events not tied to a watch (batch.finished) that the given sinks have queued or settled.
ANNOUNCED = (
    "SELECT event_id FROM settled WHERE sink IN (SELECT value FROM json_each(?)) "
    "UNION SELECT event_id FROM outbox WHERE standalone = 1 "
    "AND sink IN (SELECT value FROM json_each(?))"
)

_EXISTING = (
    "SELECT task_id FROM watches WHERE source = ? AND task_id IN (SELECT value FROM json_each(?))"
)
_RESCHEDULE = (
    "UPDATE watches SET due_at = ?, polls = ?, errors = ? "
    "WHERE source = ? AND task_id = ? AND state = 'pending'"
)
# A completion's outbox rows go in only while the watch is not done: completing it again,
# even after the first rows were delivered and acked, queues nothing.
_COMPLETE_OUTBOX = (
    "INSERT INTO outbox (sink, event_id, payload, standalone, created_at) SELECT ?, ?, ?, 0, ? "
    "WHERE NOT EXISTS (SELECT 1 FROM watches WHERE source = ? AND task_id = ? AND state = 'done') "
    "ON CONFLICT (sink, event_id) DO NOTHING"
)
_COMPLETE_WATCH = (
    INSERT_WATCH + " ON CONFLICT (source, task_id) DO UPDATE SET state = 'done', "
    "outcome = excluded.outcome, finished_at = excluded.finished_at, polls = excluded.polls, "
    "errors = excluded.errors WHERE watches.state = 'pending'"
)
_ENQUEUE = (
    "INSERT INTO outbox (sink, event_id, payload, standalone, created_at) SELECT ?, ?, ?, 1, ? "
    "WHERE NOT EXISTS (SELECT 1 FROM settled WHERE sink = ? AND event_id = ?) "
    "ON CONFLICT (sink, event_id) DO NOTHING"
)
_SETTLE = (
    "INSERT OR IGNORE INTO settled (sink, event_id, at) SELECT sink, event_id, ? FROM outbox "
    "WHERE sink = ? AND seq = ? AND standalone = 1"
)
_DELETE_ITEM = "DELETE FROM outbox WHERE sink = ? AND seq = ?"
_BURY = (
    "INSERT INTO dead_letters (sink, seq, event_id, payload, reason, attempts, last_error, at) "
    "SELECT sink, seq, event_id, payload, ?, attempts, last_error, ? FROM outbox "
    "WHERE sink = ? AND seq = ?"
)
_RETRY = (
    "UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE sink = ? AND seq = ?"
)


def dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def to_row(
    r: WatchRecord, *, state: str | None = None, memo: dict[int, str] | None = None
) -> tuple[Any, ...]:
    """The watches row of ``r``. ``memo`` (id of a labels mapping -> its JSON) spares
    encoding the one labels dict that every record of a bulk add shares, again and again;
    use it only while those mappings are alive and unchanged (within one call)."""
    labels = "{}"
    if r.labels:
        if memo is None:
            labels = dumps(r.labels)
        elif (labels := memo.get(id(r.labels), "")) == "":
            labels = memo[id(r.labels)] = dumps(r.labels)
    return (
        r.source, r.task_id, r.watched_at, r.due_at, r.deadline_at, r.batch, labels, r.key,
        r.polls, r.errors, state or r.state, r.outcome, r.finished_at,
    )  # fmt: skip


def to_records(rows: Sequence[Sequence[Any]]) -> list[WatchRecord]:
    """Records of rows; records whose labels are equal share one (read-only) dict, as the
    records of one add share theirs in the memory store."""
    parsed: dict[str, Any] = {"{}": {}}
    records = []
    for r in rows:
        labels = parsed.get(r[6])
        if labels is None:
            labels = parsed[r[6]] = json.loads(r[6])
        record = WatchRecord(
            r[0], r[1], r[2], r[3], r[4], r[5], labels, r[7], r[8], r[9], r[10], r[11], r[12]
        )
        records.append(record)
    return records


def to_item(r: Sequence[Any]) -> OutboxItem:
    return OutboxItem(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6], r[7])


def to_dead_letter(r: Sequence[Any]) -> DeadLetter:
    return DeadLetter(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], r[6], r[7])


async def _add(conn: Conn, calls: list[Any]) -> list[Any]:
    # Each call is a list of rows (``to_row``, made by the caller). Which keys exist: one
    # query per source; then one executemany for the new rows of every call.
    by_source: dict[str, list[str]] = {}
    for rows in calls:
        for row in rows:
            by_source.setdefault(row[0], []).append(row[1])
    known: set[tuple[str, str]] = set()
    for source, task_ids in by_source.items():
        found = await conn.execute_fetchall(_EXISTING, (source, json.dumps(task_ids)))
        known.update((source, row[0]) for row in found)
    inserts: list[tuple[Any, ...]] = []
    results: list[Any] = []
    for rows in calls:
        fresh: list[bool] = []
        for row in rows:
            key = (row[0], row[1])
            is_new = key not in known
            if is_new:
                known.add(key)
                inserts.append(row)
            fresh.append(is_new)
        results.append(fresh)
    if inserts:
        await conn.executemany(INSERT_WATCH, inserts)
    return results


async def _reschedule(conn: Conn, calls: list[Any]) -> list[Any]:
    await conn.executemany(_RESCHEDULE, calls)
    return [None] * len(calls)


async def _complete(conn: Conn, calls: list[Any]) -> list[Any]:
    # Every outbox row first, then every watch row: each outbox insert must see its watch's
    # state from before this group. A second completion of one watch within the group is
    # dropped: the first one ends the watch, so it would be a no-op anyway.
    seen: set[tuple[str, str]] = set()
    outbox: list[tuple[Any, ...]] = []
    watches: list[tuple[Any, ...]] = []
    for row, event_id, payload, sinks, now in calls:
        key = (row[0], row[1])
        if key in seen:
            continue
        seen.add(key)
        outbox.extend((sink, event_id, payload, now, key[0], key[1]) for sink in sinks)
        watches.append(row)
    if outbox:
        await conn.executemany(_COMPLETE_OUTBOX, outbox)
    await conn.executemany(_COMPLETE_WATCH, watches)
    return [None] * len(calls)


async def _enqueue(conn: Conn, calls: list[Any]) -> list[Any]:
    rows = [
        (sink, event_id, payload, now, sink, event_id)
        for event_id, payload, sinks, now in calls
        for sink in sinks
    ]
    await conn.executemany(_ENQUEUE, rows)
    return [None] * len(calls)


async def _ack(conn: Conn, calls: list[Any]) -> list[Any]:
    now = calls[-1][2]
    rows = [(sink, seq) for sink, seqs, _ in calls for seq in seqs]
    await conn.executemany(_SETTLE, [(now, sink, seq) for sink, seq in rows])
    await conn.executemany(_DELETE_ITEM, rows)
    return [None] * len(calls)


async def _retry(conn: Conn, calls: list[Any]) -> list[Any]:
    await conn.executemany(_RETRY, calls)
    return [None] * len(calls)


async def _bury(conn: Conn, calls: list[Any]) -> list[Any]:
    await conn.executemany(_BURY, [(reason, now, sink, seq) for sink, seq, reason, now in calls])
    await conn.executemany(_SETTLE, [(now, sink, seq) for sink, seq, _, now in calls])
    await conn.executemany(_DELETE_ITEM, [(sink, seq) for sink, seq, _, _ in calls])
    return [None] * len(calls)


async def _remove(conn: Conn, calls: list[Any]) -> list[Any]:
    (key,) = calls
    cursor = await conn.execute("DELETE FROM watches WHERE source = ? AND task_id = ?", key)
    return [cursor.rowcount > 0]


async def _read(conn: Conn, calls: list[Any]) -> list[Any]:
    ((query, params, convert),) = calls
    rows = await conn.execute_fetchall(query, params) if query else []
    return [convert(list(rows))]


async def _scan(conn: Conn, calls: list[Any]) -> list[Any]:
    # In chunks, each converted as it comes: a million rows never block the event loop for
    # long (every fetchmany is a trip to the connection's thread).
    ((query, params, convert),) = calls
    out: list[Any] = []
    async with conn.execute(query, params) as cursor:
        while rows := list(await cursor.fetchmany(SCAN_CHUNK)):
            out.extend(convert(rows))
    return [out]


HANDLERS: Mapping[str, Handler] = {
    "add": _add,
    "reschedule": _reschedule,
    "complete": _complete,
    "enqueue": _enqueue,
    "ack": _ack,
    "retry": _retry,
    "bury": _bury,
    "remove": _remove,
    "read": _read,
    "scan": _scan,
}
# Kinds whose consecutive calls are merged into one handler call.
MERGEABLE = frozenset({"add", "reschedule", "complete", "enqueue", "ack", "retry", "bury"})
