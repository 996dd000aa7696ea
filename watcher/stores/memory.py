"""``MemoryStore``: the store of the library and ``watcher wait`` — dicts, nothing durable.

Every call is O(1) per record or item, except the scans ``pending``, ``list`` and
``dead_letters``; ``counts`` and ``batch_counts`` are kept up to date as things change.
Calls never yield to the event loop, so each is atomic with respect to other tasks.

Pending watches are kept lean, because a process may hold a million of them: watches added
together share every field but the task id, so consecutive records that agree on all other
fields share one stored record (the first of them; the key supplies each one's task id), and
a reschedule keeps only what changed (due time, polls, errors) beside that shared record.
Records are rebuilt when read, so ``get`` returns an equal record, not the object given
(records are frozen; don't mutate their ``labels``). A pending watch costs about 45 bytes
here until its first reschedule and about 140 after it, plus its id; done watches keep their
full record.
"""

from __future__ import annotations

import builtins
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from .._exceptions import ClosedError
from .base import DeadLetter, OutboxItem, WatchRecord, WatchState

__all__ = ["MemoryStore"]

# The key of a watch: its bare task id in the first source the store saw (most stores only
# ever see one; a key tuple per watch would cost 64 bytes), (source, task id) in any other.
_Key = str | tuple[str, str]


class _Rescheduled:
    """A pending watch after a reschedule: the record it shares, and what changed since."""

    __slots__ = ("due_at", "errors", "polls", "shared")

    def __init__(self, shared: WatchRecord, due_at: float, polls: int, errors: int) -> None:
        self.shared = shared
        self.due_at = due_at
        self.polls = polls
        self.errors = errors


# A stored record's task id may be another watch's (shared records): the key has the real one.
_Entry = WatchRecord | _Rescheduled


def _same_but_id(a: WatchRecord, b: WatchRecord) -> bool:
    """True if ``a`` and ``b`` agree on every field but the task id."""
    return (
        a.source == b.source
        and a.watched_at == b.watched_at
        and a.due_at == b.due_at
        and a.deadline_at == b.deadline_at
        and a.batch == b.batch
        and a.key == b.key
        and a.polls == b.polls
        and a.errors == b.errors
        and a.state == b.state
        and a.outcome == b.outcome
        and a.finished_at == b.finished_at
        and (a.labels is b.labels or a.labels == b.labels)
    )


def _record(task_id: str, entry: _Entry) -> WatchRecord:
    """The full record of the watch stored as ``entry`` under ``task_id``."""
    if isinstance(entry, _Rescheduled):
        r = entry.shared
        return WatchRecord(
            r.source, task_id, r.watched_at, entry.due_at, r.deadline_at, r.batch, r.labels,
            r.key, entry.polls, entry.errors,
        )  # fmt: skip
    if entry.task_id == task_id:
        return entry
    r = entry
    return WatchRecord(
        r.source, task_id, r.watched_at, r.due_at, r.deadline_at, r.batch, r.labels, r.key,
        r.polls, r.errors, r.state, r.outcome, r.finished_at,
    )  # fmt: skip


def _task_id(key: _Key) -> str:
    return key if isinstance(key, str) else key[1]


def _fields(entry: _Entry) -> WatchRecord:
    """The stored record that holds ``entry``'s source, batch, state and outcome."""
    return entry.shared if isinstance(entry, _Rescheduled) else entry


def _finish(stored: WatchRecord, record: WatchRecord, finished_at: float) -> WatchRecord:
    # Built directly rather than with dataclasses.replace: this runs once per watch.
    return WatchRecord(
        stored.source,
        stored.task_id,
        stored.watched_at,
        stored.due_at,
        stored.deadline_at,
        stored.batch,
        stored.labels,
        stored.key,
        record.polls,
        record.errors,
        "done",
        record.outcome,
        finished_at,
    )


class MemoryStore:
    """A ``Store`` in process memory (plus ``QueryableStore``'s helpers).

    >>> store = MemoryStore()                                         # doctest: +SKIP
    >>> await store.open()
    >>> await store.add([WatchRecord("main", "t1", watched_at=now, due_at=now)])
    [True]
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._state = "new"
        self._watches: dict[_Key, _Entry] = {}
        self._first_source: str | None = None
        self._pending_n = 0
        # batch -> {"pending": n, outcome: m}; kept up to date so batch_counts is O(1).
        self._batches: dict[str, dict[str, int]] = {}
        # Per sink, items by seq; insertion order is seq order (one counter for all sinks).
        self._queues: dict[str, dict[int, OutboxItem]] = {}
        self._queued: dict[tuple[str, str], int] = {}  # (sink, event_id) -> seq, while queued
        self._standalone: set[tuple[str, int]] = set()  # (sink, seq) queued by enqueue()
        # (sink, event_id) of enqueue()d events that left the outbox: enqueue stays
        # idempotent after delivery. Watch events need no such record: the watch is done.
        self._settled: set[tuple[str, str]] = set()
        self._dead: list[DeadLetter] = []
        self._seq = itertools.count(1)

    def __repr__(self) -> str:
        return f"MemoryStore(watches={len(self._watches)}, state={self._state})"

    # --- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        if self._state != "new":
            raise ClosedError("a store can be opened only once")
        self._state = "open"

    async def aclose(self) -> None:
        self._state = "closed"

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

    def _check(self) -> None:
        if self._state != "open":
            raise ClosedError(f"the store is {'closed' if self._state == 'closed' else 'not open'}")

    def _key(self, source: str, task_id: str, *, storing: bool = False) -> _Key:
        if source == self._first_source:
            return task_id
        if storing and self._first_source is None:
            self._first_source = source
            return task_id
        return (source, task_id)

    def _count(self, entry: _Entry, delta: int) -> None:
        record = _fields(entry)
        if record.state == "pending":
            self._pending_n += delta
        if record.batch is None:
            return
        counts = self._batches.setdefault(record.batch, {"pending": 0})
        name = "pending" if record.state == "pending" else str(record.outcome)
        counts[name] = counts.get(name, 0) + delta
        if counts[name] == 0 and name != "pending":
            del counts[name]
        if len(counts) == 1 and counts["pending"] == 0:
            del self._batches[record.batch]

    # --- watches ----------------------------------------------------------------------------

    async def add(self, records: Sequence[WatchRecord]) -> builtins.list[bool]:
        self._check()
        watches = self._watches
        fresh: builtins.list[bool] = []
        shared: WatchRecord | None = None
        for record in records:
            key = self._key(record.source, record.task_id, storing=True)
            if key in watches:
                fresh.append(False)
                continue
            if shared is None or not _same_but_id(shared, record):
                shared = record
            watches[key] = shared
            self._count(shared, 1)
            fresh.append(True)
        return fresh

    async def get(self, source: str, task_id: str) -> WatchRecord | None:
        self._check()
        entry = self._watches.get(self._key(source, task_id))
        return None if entry is None else _record(task_id, entry)

    async def pending(self) -> builtins.list[WatchRecord]:
        self._check()
        # sorted() is stable: equal due times stay in insertion order, as in SqliteStore.
        waiting = [
            _record(_task_id(key), entry)
            for key, entry in self._watches.items()
            if _fields(entry).state == "pending"
        ]
        waiting.sort(key=lambda r: r.due_at)
        return waiting

    async def reschedule(
        self, source: str, task_id: str, *, due_at: float, polls: int, errors: int
    ) -> None:
        if self._state != "open":  # self._check(), inline: this runs after every poll
            self._check()
        key: _Key = task_id if source == self._first_source else (source, task_id)
        entry = self._watches.get(key)
        if isinstance(entry, _Rescheduled):
            entry.due_at, entry.polls, entry.errors = due_at, polls, errors
        elif entry is not None and entry.state == "pending":
            self._watches[key] = _Rescheduled(entry, due_at, polls, errors)
        # else: a late reschedule must never revive or alter a finished watch

    async def complete(
        self,
        record: WatchRecord,
        event_id: str,
        payload: Mapping[str, Any],
        sinks: Sequence[str],
    ) -> None:
        """As ``Store.complete``; a watch the store does not know is stored as done."""
        self._check()
        if record.outcome is None:
            raise ValueError("complete() needs record.outcome")
        key = self._key(record.source, record.task_id, storing=True)
        entry = self._watches.get(key)
        if entry is not None and _fields(entry).state == "done":
            return
        finished_at = record.finished_at if record.finished_at is not None else self._clock()
        stored = _record(record.task_id, entry) if entry is not None else record
        done = _finish(stored, record, finished_at)
        if entry is not None:
            self._count(entry, -1)
        self._watches[key] = done
        self._count(done, 1)
        self._queue(event_id, payload, sinks, standalone=False)

    async def remove(self, source: str, task_id: str) -> bool:
        self._check()
        entry = self._watches.pop(self._key(source, task_id), None)
        if entry is None:
            return False
        self._count(entry, -1)
        return True

    async def counts(self) -> Mapping[str, int]:
        self._check()
        return {"pending": self._pending_n, "done": len(self._watches) - self._pending_n}

    # --- outbox -----------------------------------------------------------------------------

    def _queue(
        self, event_id: str, payload: Mapping[str, Any], sinks: Sequence[str], *, standalone: bool
    ) -> None:
        now = self._clock()
        shared = dict(payload)  # one copy for every sink: items are read-only
        for sink in sinks:
            if (sink, event_id) in self._queued:
                continue
            if standalone and (sink, event_id) in self._settled:
                continue
            seq = next(self._seq)
            item = OutboxItem(sink, seq, event_id, shared, created_at=now)
            self._queues.setdefault(sink, {})[seq] = item
            self._queued[(sink, event_id)] = seq
            if standalone:
                self._standalone.add((sink, seq))

    async def enqueue(
        self, event_id: str, payload: Mapping[str, Any], sinks: Sequence[str]
    ) -> None:
        self._check()
        self._queue(event_id, payload, sinks, standalone=True)

    async def outbox(self, sink: str, *, limit: int = 100) -> builtins.list[OutboxItem]:
        self._check()
        queue = self._queues.get(sink)
        if not queue or limit <= 0:
            return []
        return builtins.list(itertools.islice(queue.values(), limit))

    def _take(self, sink: str, seq: int) -> OutboxItem | None:
        queue = self._queues.get(sink)
        item = queue.pop(seq, None) if queue is not None else None
        if item is None:
            return None
        del self._queued[(sink, item.event_id)]
        if (sink, seq) in self._standalone:
            self._standalone.discard((sink, seq))
            self._settled.add((sink, item.event_id))
        return item

    async def ack(self, sink: str, seqs: Sequence[int]) -> None:
        self._check()
        for seq in seqs:
            self._take(sink, seq)

    async def retry_later(
        self, sink: str, seq: int, *, attempts: int, next_attempt_at: float, error: str
    ) -> None:
        self._check()
        queue = self._queues.get(sink)
        item = queue.get(seq) if queue is not None else None
        if queue is None or item is None:
            return
        # Assigning to an existing key keeps the item's place in the queue.
        queue[seq] = OutboxItem(
            sink, seq, item.event_id, item.payload, attempts, item.created_at, next_attempt_at,
            error,
        )  # fmt: skip

    async def dead_letter(self, sink: str, seq: int, *, reason: str) -> None:
        self._check()
        item = self._take(sink, seq)
        if item is None:
            return
        self._dead.append(
            DeadLetter(
                sink,
                item.event_id,
                item.payload,
                reason,
                self._clock(),
                seq=seq,
                attempts=item.attempts,
                last_error=item.last_error,
            )
        )

    async def outbox_size(self, sink: str | None = None) -> int:
        self._check()
        if sink is not None:
            return len(self._queues.get(sink, ()))
        return sum(len(queue) for queue in self._queues.values())

    # --- QueryableStore ---------------------------------------------------------------------

    async def flush(self) -> None:
        self._check()  # nothing is buffered

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
        self._check()
        matching = (
            (key, entry)
            for key, entry in self._watches.items()
            if (batch is None or _fields(entry).batch == batch)
            and (state is None or _fields(entry).state == state)
            and (source is None or _fields(entry).source == source)
        )
        start = max(offset, 0)
        page = itertools.islice(matching, start, start + max(limit, 0))
        return [_record(_task_id(key), entry) for key, entry in page]

    async def batch_counts(self, batch: str) -> dict[str, int]:
        self._check()
        return dict(self._batches.get(batch, {"pending": 0}))

    async def dead_letters(
        self, sink: str | None = None, *, limit: int | None = None
    ) -> builtins.list[DeadLetter]:
        self._check()
        found = [d for d in self._dead if sink is None or d.sink == sink]
        return found if limit is None else found[:limit]
