"""``SqliteStore``: one SQLite file in WAL mode; the daemon's default store.

One connection (``aiosqlite``, so one thread) and ONE writer (``_groupcommit``): every call
is queued and run in order; writes are grouped, up to ``batch_max`` calls gathered for at
most ``batch_window`` seconds, into one transaction, and runs of calls of one kind into one
``executemany`` each, so 500 concurrent ``complete`` calls cost a handful of statements and
one COMMIT. A caller is answered after its batch committed; ``reschedule`` alone returns at
once (it is still applied in order), unless ``max_queue`` calls are waiting: that is the
back-pressure. Reads take the same queue, so a read sees every call made before it.

Durability: ``synchronous=NORMAL``. With WAL, ``COMMIT`` returns after the transaction is
written to the WAL file, and only checkpoints fsync. A killed process (even ``kill -9``)
therefore loses nothing that committed: the data is in the OS's page cache. Only an OS crash
or a power cut can lose the last transactions (never corrupt the file). Even then no
detected result is lost for good: its watch is pending again, is polled again and completes
again with the same event id, so a sink sees at most a duplicate, which it tolerates anyway;
what can go is an ``add`` acknowledged in the last moment before the cut.
``synchronous="FULL"`` (an fsync per commit, amortised by group commit) is there for hosts
where that matters.

On open, the file's directory must exist (a typo in the path must not create directories),
``PRAGMA quick_check`` runs (it reads the whole file: well under a second for a million
watches, and a damaged file is refused at start rather than at some later write; pass
``quick_check=False`` to skip it), and the schema is migrated (``PRAGMA user_version``); a
file written by a newer watcher is refused.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import json
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import aiosqlite

from .._exceptions import ClosedError, ConfigError, ConfigIssue
from . import _sqlops as sql
from ._groupcommit import GroupCommitWriter, WriterStats
from ._lock import DatabaseLock, LockHeldError
from ._sqlschema import SCHEMA_VERSION, migrate
from .base import DeadLetter, OutboxItem, WatchRecord, WatchState

__all__ = ["SqliteStore", "WriterStats"]

_T = TypeVar("_T")
Synchronous = Literal["NORMAL", "FULL"]


def _scalar(rows: builtins.list[Any]) -> int:
    return int(rows[0][0])


def _counts(rows: builtins.list[Any]) -> dict[str, int]:
    return {"pending": 0, "done": 0, **{state: n for state, n in rows}}


def _batch_counts(rows: builtins.list[Any]) -> dict[str, int]:
    counts = {"pending": 0}
    for state, outcome, n in rows:
        name = "pending" if state == "pending" else str(outcome)
        counts[name] = counts.get(name, 0) + n
    return counts


def _first_column(rows: builtins.list[Any]) -> set[Any]:
    return {row[0] for row in rows}


def _ended_batches(rows: builtins.list[Any]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    running: set[str] = set()
    for batch, state, outcome, n in rows:
        if state == "pending":
            running.add(batch)
        else:
            outcomes = counts.setdefault(batch, {})
            outcomes[str(outcome)] = outcomes.get(str(outcome), 0) + n
    return {batch: outcomes for batch, outcomes in counts.items() if batch not in running}


class SqliteStore:
    """A durable ``Store`` (plus ``QueryableStore``'s helpers) in one SQLite file.

    >>> async with SqliteStore("/var/lib/watcher/watcher.db") as store:  # doctest: +SKIP
    ...     await store.add(records)

    ``stats`` counts commits and batches (``stats.commits`` shows group commit at work).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Synchronous = "NORMAL",
        quick_check: bool = True,
        batch_window: float = 0.005,
        batch_max: int = 500,
        max_queue: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        self.path = str(path)
        self._synchronous = synchronous
        self._quick_check = quick_check
        self._window = batch_window
        self._batch_max = batch_max
        self._max_queue = max_queue
        self._clock = clock
        self._state = "new"
        self._conn: aiosqlite.Connection | None = None
        self._lock: DatabaseLock | None = None
        self._writer: GroupCommitWriter | None = None
        self._stats = WriterStats()

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r}, state={self._state})"

    @property
    def stats(self) -> WriterStats:
        return self._writer.stats if self._writer is not None else self._stats

    # --- lifecycle --------------------------------------------------------------------------

    def _refuse(self, message: str) -> ConfigError:
        return ConfigError([ConfigIssue("store.path", f"{self.path}: {message}")])

    async def open(self) -> None:
        """Open (creating the file if needed), check and migrate; start the writer."""
        if self._state != "new":
            raise ClosedError("a store can be opened only once")
        self._state = "closed"  # until it is open
        memory = self.path == ":memory:"
        parent = Path(self.path).parent
        if not memory and not parent.is_dir():
            raise self._refuse(f"directory {str(parent)!r} does not exist; create it first")
        if not memory:
            self._take_lock()
        try:
            # isolation_level=None: no implicit transactions; the writer says BEGIN and COMMIT.
            self._conn = await aiosqlite.connect(self.path, isolation_level=None)
            await self._setup(self._conn, memory=memory)
        except BaseException as exc:
            await self._close_connection()  # and the lock
            if isinstance(exc, sqlite3.Error):
                raise self._refuse(f"cannot use this database: {exc}") from exc
            raise
        self._writer = GroupCommitWriter(
            self._conn, sql.HANDLERS, sql.MERGEABLE, window=self._window, batch_max=self._batch_max
        )
        self._writer.start()
        self._state = "open"

    def _take_lock(self) -> None:
        lock = DatabaseLock(self.path)
        try:
            lock.acquire()
        except LockHeldError as held:
            by = f" (pid {held.holder})" if held.holder else ""
            raise self._refuse(
                f"in use by another watcher process{by}; one process per database"
            ) from None
        except OSError as exc:
            raise self._refuse(f"cannot lock {lock.path}: {exc.strerror or exc}") from exc
        self._lock = lock

    def _release_lock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    async def _setup(self, conn: aiosqlite.Connection, *, memory: bool) -> None:
        mode = await conn.execute_fetchall("PRAGMA journal_mode = WAL")
        if not memory and next(iter(mode))[0] != "wal":
            raise self._refuse("WAL mode is not available on this file system")
        await conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        # No table references another today (a removed watch keeps its queued events); on,
        # so that a later migration's foreign keys are enforced from the start.
        await conn.execute("PRAGMA foreign_keys = ON")
        await conn.execute("PRAGMA busy_timeout = 5000")
        if self._quick_check:
            found = [row[0] for row in await conn.execute_fetchall("PRAGMA quick_check")]
            if found != ["ok"]:
                raise self._refuse(f"damaged (PRAGMA quick_check: {'; '.join(found[:3])})")
        version = next(iter(await conn.execute_fetchall("PRAGMA user_version")))[0]
        if version > SCHEMA_VERSION:
            raise self._refuse(
                f"written by a newer watcher (schema {version}; this one knows {SCHEMA_VERSION})"
            )
        await migrate(conn)

    async def aclose(self) -> None:
        """Apply everything queued (buffered reschedules too), then close. Idempotent."""
        if self._state != "open":
            self._state = "closed"
            return
        self._state = "closed"
        writer = self._writer
        assert writer is not None
        await writer.stop()
        if writer.failure is None and self._conn is not None:
            with contextlib.suppress(sqlite3.Error):  # planner statistics only
                await self._conn.execute("PRAGMA optimize")
        await self._close_connection()

    async def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        try:
            if conn is not None:
                await conn.close()
        finally:
            self._release_lock()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _w(self) -> GroupCommitWriter:
        if self._state != "open" or self._writer is None:
            raise ClosedError(f"the store is {'not open' if self._state == 'new' else 'closed'}")
        return self._writer

    async def _write(self, kind: str, args: Any) -> Any:
        return await self._w().call(kind, args, write=True)

    async def _read(
        self, query: str, params: Sequence[Any], convert: Callable[[builtins.list[Any]], _T]
    ) -> _T:
        result: _T = await self._w().call("read", (query, params, convert), write=False)
        return result

    async def _scan(self, query: str, params: Sequence[Any]) -> builtins.list[WatchRecord]:
        args = (query, params, sql.to_records)
        result: builtins.list[WatchRecord] = await self._w().call("scan", args, write=False)
        return result

    # --- Store ------------------------------------------------------------------------------

    async def add(self, records: Sequence[WatchRecord]) -> builtins.list[bool]:
        self._w()
        if not records:
            return []
        memo: dict[int, str] = {}
        rows = []
        for start in range(0, len(records), sql.SCAN_CHUNK):
            if start:
                await asyncio.sleep(0)  # a bulk add must not hold the event loop for long
            chunk = records[start : start + sql.SCAN_CHUNK]
            rows += [sql.to_row(record, memo=memo) for record in chunk]
        result: builtins.list[bool] = await self._write("add", rows)
        return result

    async def get(self, source: str, task_id: str) -> WatchRecord | None:
        def convert(rows: builtins.list[Any]) -> WatchRecord | None:
            return sql.to_records(rows)[0] if rows else None

        return await self._read(sql.GET, (source, task_id), convert)

    async def pending(self) -> builtins.list[WatchRecord]:
        return await self._scan(sql.PENDING, ())

    async def reschedule(
        self, source: str, task_id: str, *, due_at: float, polls: int, errors: int
    ) -> None:
        """Queued and applied in order; returns at once unless the queue is full."""
        writer = self._w()
        wait = writer.backlog >= self._max_queue
        args = (due_at, polls, errors, source, task_id)
        future = writer.submit("reschedule", args, write=True, wait=wait)
        if future is not None:
            await future

    async def complete(
        self,
        record: WatchRecord,
        event_id: str,
        payload: Mapping[str, Any],
        sinks: Sequence[str],
    ) -> None:
        """As ``Store.complete``; a watch the store does not know is stored as done."""
        if record.outcome is None:
            raise ValueError("complete() needs record.outcome")
        now = self._clock()
        if record.finished_at is None:
            record = dataclasses.replace(record, finished_at=now)
        row = sql.to_row(record, state="done")
        await self._write("complete", (row, event_id, sql.dumps(payload), tuple(sinks), now))

    async def enqueue(
        self, event_id: str, payload: Mapping[str, Any], sinks: Sequence[str]
    ) -> None:
        await self._write("enqueue", (event_id, sql.dumps(payload), tuple(sinks), self._clock()))

    async def remove(self, source: str, task_id: str) -> bool:
        result: bool = await self._write("remove", (source, task_id))
        return result

    async def outbox(self, sink: str, *, limit: int = 100) -> builtins.list[OutboxItem]:
        params = (sink, max(limit, 0))
        return await self._read(sql.OUTBOX, params, lambda rows: [sql.to_item(r) for r in rows])

    async def ack(self, sink: str, seqs: Sequence[int]) -> None:
        if not seqs:
            self._w()
            return
        await self._write("ack", (sink, tuple(seqs), self._clock()))

    async def retry_later(
        self, sink: str, seq: int, *, attempts: int, next_attempt_at: float, error: str
    ) -> None:
        await self._write("retry", (attempts, next_attempt_at, error, sink, seq))

    async def dead_letter(self, sink: str, seq: int, *, reason: str) -> None:
        await self._write("bury", (sink, seq, reason, self._clock()))

    async def outbox_size(self, sink: str | None = None) -> int:
        if sink is None:
            return await self._read("SELECT count(*) FROM outbox", (), _scalar)
        return await self._read("SELECT count(*) FROM outbox WHERE sink = ?", (sink,), _scalar)

    async def counts(self) -> Mapping[str, int]:
        return await self._read("SELECT state, count(*) FROM watches GROUP BY 1", (), _counts)

    # --- QueryableStore ---------------------------------------------------------------------

    async def flush(self) -> None:
        await self._read("", (), lambda rows: None)

    async def list(
        self,
        *,
        batch: str | None = None,
        state: WatchState | None = None,
        source: str | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> builtins.list[WatchRecord]:
        """Watches matching every filter given, in the order they were first stored."""
        where: builtins.list[str] = []
        params: builtins.list[Any] = []
        for column, value in (("batch", batch), ("state", state), ("source", source)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        query = sql.LIST.format(where=f" WHERE {' AND '.join(where)}" if where else "")
        params += [max(limit, 0), max(offset, 0)]
        return await self._scan(query, params)

    async def batch_counts(self, batch: str) -> dict[str, int]:
        return await self._read(sql.BATCH_COUNTS, (batch,), _batch_counts)

    async def unannounced_batches(
        self, sinks: Sequence[str], event_id: Callable[[str], str]
    ) -> dict[str, dict[str, int]]:
        """``{batch: {outcome: n}}`` of the batches none of whose watches is pending and whose
        event (``event_id(batch)``) none of ``sinks`` has queued or delivered: what a crash
        between a batch's last result and its announcement leaves behind."""
        ended = await self._read(sql.ALL_BATCH_COUNTS, (), _ended_batches)
        if not ended or not sinks:
            return {}
        names = json.dumps(list(sinks))
        announced = await self._read(sql.ANNOUNCED, (names, names), _first_column)
        return {batch: n for batch, n in ended.items() if event_id(batch) not in announced}

    async def dead_letters(
        self, sink: str | None = None, *, limit: int | None = None
    ) -> builtins.list[DeadLetter]:
        where = " WHERE sink = ?" if sink is not None else ""
        params: builtins.list[Any] = [sink] if sink is not None else []
        params.append(-1 if limit is None else max(limit, 0))  # LIMIT -1: no limit
        query = f"{sql.DEAD}{where} ORDER BY id LIMIT ?"
        return await self._read(query, params, lambda rows: [sql.to_dead_letter(r) for r in rows])
