"""Test doubles for code that uses watcher: a handler-driven source and zero-delay backoff.

>>> from watcher.testing import FakeSource, ZeroBackoff, finished
>>> source = FakeSource(lambda task_id, poll: finished(task_id) if poll >= 2 else running(task_id))
>>> # async with Watcher(sources={"fake": source}, policy=ZeroBackoff()) as w: ...
"""

from __future__ import annotations

import inspect
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ._exceptions import ClosedError, SourceError
from ._models import TaskSnapshot
from .backoff import Bounds, PollHistory

__all__ = ["FakeSource", "MemorySink", "ZeroBackoff", "finished", "running"]

Handler = Callable[[str, int], "TaskSnapshot | Awaitable[TaskSnapshot]"]

_EPOCH_MS = 1_744_276_967_708


def running(task_id: str, *, done: int = 0, total: int = 10, **raw: Any) -> TaskSnapshot:
    """A snapshot of a task still in progress."""
    return TaskSnapshot.from_fields(
        task_id,
        status=1,
        total_count=total,
        success_count=done,
        failure_count=0,
        begin_time=_EPOCH_MS,
        end_time=None,
        raw={"task_id": task_id, **raw},
    )


def finished(
    task_id: str, *, succeeded: int = 10, failed: int = 0, status: object = 0, **raw: Any
) -> TaskSnapshot:
    """A snapshot of a finished task (end_time set, every item counted)."""
    return TaskSnapshot.from_fields(
        task_id,
        status=status,
        total_count=succeeded + failed,
        success_count=succeeded,
        failure_count=failed,
        begin_time=_EPOCH_MS,
        end_time=_EPOCH_MS + 1000,
        raw={"task_id": task_id, **raw},
    )


class FakeSource:
    """A ``Source`` whose answers come from ``handler(task_id, poll_number)``.

    ``poll_number`` counts from 1 per task. The handler returns a snapshot (or an awaitable
    of one) or raises any ``SourceError`` to simulate failures. ``calls`` counts polls per id.
    """

    def __init__(self, handler: Handler, *, name: str = "fake") -> None:
        self.name = name
        self._handler = handler
        self.calls: Counter[str] = Counter()
        self.closed = False

    async def fetch(self, task_id: str) -> TaskSnapshot:
        if self.closed:
            raise ClosedError("FakeSource is closed")
        self.calls[task_id] += 1
        result = self._handler(task_id, self.calls[task_id])
        if inspect.isawaitable(result):
            result = await result
        return result

    async def aclose(self) -> None:
        self.closed = True


class ZeroBackoff:
    """A backoff policy with no delays at all: every poll is due again at once."""

    def observe(self, history: PollHistory, snapshot: TaskSnapshot, *, now: float) -> Bounds | None:
        return None

    def next_delay(
        self,
        history: PollHistory,
        result: TaskSnapshot | SourceError,
        *,
        now: float,
        rng: random.Random,
    ) -> float:
        return 0.0


class MemorySink:
    """A ``Sink`` that keeps every event it is given, in order, in ``events``.

    ``fail`` (a callable given each event) may raise to make that delivery fail, e.g. to
    test retries: ``MemorySink(fail=lambda e: (_ for _ in ()).throw(OSError()))``.
    """

    def __init__(
        self, name: str = "memory", *, fail: Callable[[Mapping[str, Any]], None] | None = None
    ) -> None:
        self.name = name
        self.events: list[dict[str, Any]] = []
        self.attempts = 0
        self._fail = fail
        self.closed = False

    async def deliver(self, event: Mapping[str, Any]) -> None:
        self.attempts += 1
        if self._fail is not None:
            self._fail(event)
        self.events.append(dict(event))

    async def aclose(self) -> None:
        self.closed = True

    @property
    def task_ids(self) -> list[str]:
        return [str(e.get("task_id")) for e in self.events if e.get("event") == "task.finished"]
