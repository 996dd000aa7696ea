"""The ``Store`` seam: durable watches and the outbox of undelivered events.

The engine keeps its due-time heap in memory; the store is the durable record behind it.
On start the engine loads every pending watch and resumes it; every finished watch is
written, together with one outbox row per sink, in ONE transaction (``complete``), so a
crash can never lose a result that was detected, nor deliver one whose watch looks pending.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "DeadLetter",
    "OutboxItem",
    "QueryableStore",
    "Store",
    "WatchRecord",
    "WatchState",
]

WatchState = Literal["pending", "done"]


@dataclass(frozen=True, slots=True)
class WatchRecord:
    """One watch as stored. Times are wall-clock epoch seconds (they must survive restarts)."""

    source: str
    task_id: str
    watched_at: float
    due_at: float
    deadline_at: float | None = None
    batch: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    key: str = ""  # part of the stable event id; distinguishes re-watches of one task
    polls: int = 0
    errors: int = 0
    state: WatchState = "pending"
    outcome: str | None = None  # set once done
    finished_at: float | None = None  # when the engine concluded (epoch), once done


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """An event waiting for one sink. ``seq`` orders items of a sink (oldest first)."""

    sink: str
    seq: int
    event_id: str
    payload: Mapping[str, Any]  # the event's JSON object
    attempts: int = 0
    created_at: float = 0.0  # epoch seconds the event entered the outbox
    next_attempt_at: float = 0.0  # epoch seconds; 0 = now
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event a sink gave up on, kept with the reason (``Store.dead_letter``)."""

    sink: str
    event_id: str
    payload: Mapping[str, Any]
    reason: str
    at: float  # epoch seconds it was given up
    seq: int = 0  # its former outbox seq
    attempts: int = 0
    last_error: str | None = None


@runtime_checkable
class Store(Protocol):
    """Durable state of one watcher process (or, for Redis, of several).

    The caller guarantees: ``open`` is awaited once before anything else and ``aclose`` once
    at the end; calls may come concurrently from many tasks of one event loop; ``(source,
    task_id)`` identifies a watch. Implementations must make ``complete`` atomic, keep
    outbox items until ``ack`` or ``dead_letter``, and return them again after a restart.
    """

    async def open(self) -> None: ...

    async def aclose(self) -> None: ...

    async def add(self, records: Sequence[WatchRecord]) -> list[bool]:
        """Insert watches; for each, True if new, False if ``(source, task_id)`` was known
        (pending or done), in which case the stored one is left untouched."""
        ...

    async def get(self, source: str, task_id: str) -> WatchRecord | None: ...

    async def pending(self) -> list[WatchRecord]:
        """Every watch not yet done (to resume after a restart), oldest due first."""
        ...

    async def reschedule(
        self, source: str, task_id: str, *, due_at: float, polls: int, errors: int
    ) -> None:
        """Record the next due time. May be buffered: losing the newest of these in a crash
        only means a task is polled a little early after restart."""
        ...

    async def complete(
        self,
        record: WatchRecord,
        event_id: str,
        payload: Mapping[str, Any],
        sinks: Sequence[str],
    ) -> None:
        """End the watch (state done, outcome, finished_at, polls from ``record``) and queue
        ``payload`` for every sink in ``sinks``, atomically and durably before returning.
        Completing a watch that is already done is a no-op."""
        ...

    async def enqueue(
        self, event_id: str, payload: Mapping[str, Any], sinks: Sequence[str]
    ) -> None:
        """Queue an event not tied to one watch (e.g. ``batch.finished``); idempotent per
        ``(sink, event_id)``."""
        ...

    async def remove(self, source: str, task_id: str) -> bool:
        """Forget a watch (pending or done); its queued events stay. True if it existed."""
        ...

    async def outbox(self, sink: str, *, limit: int = 100) -> list[OutboxItem]:
        """Up to ``limit`` undelivered items of ``sink``, in ``seq`` order (regardless of
        ``next_attempt_at``: the sink runner decides when to retry)."""
        ...

    async def ack(self, sink: str, seqs: Sequence[int]) -> None:
        """Delivered: remove these items of ``sink``."""
        ...

    async def retry_later(
        self, sink: str, seq: int, *, attempts: int, next_attempt_at: float, error: str
    ) -> None:
        """A delivery failed and will be retried; remember attempts and when."""
        ...

    async def dead_letter(self, sink: str, seq: int, *, reason: str) -> None:
        """Give up on an item: remove it from the outbox and keep it, with the reason, in the
        store's dead-letter record."""
        ...

    async def outbox_size(self, sink: str | None = None) -> int: ...

    async def counts(self) -> Mapping[str, int]:
        """Watches by state: ``{"pending": n, "done": m}``."""
        ...


@runtime_checkable
class QueryableStore(Store, Protocol):
    """What the daemon's API needs beyond ``Store``; both built-in stores provide it.

    ``list`` pages through watches in the order they were first stored.
    """

    async def flush(self) -> None:
        """Return once every call made before it is durable (buffered reschedules too)."""
        ...

    async def list(
        self,
        *,
        batch: str | None = None,
        state: WatchState | None = None,
        source: str | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> builtins.list[WatchRecord]: ...

    async def batch_counts(self, batch: str) -> dict[str, int]:
        """``{"pending": n, <outcome>: m, ...}`` for one batch; outcomes with no watch are
        left out, ``pending`` is always there."""
        ...

    async def dead_letters(
        self, sink: str | None = None, *, limit: int | None = None
    ) -> builtins.list[DeadLetter]:
        """Dead letters (of ``sink``, or all), oldest first."""
        ...
