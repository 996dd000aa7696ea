"""The SQLite store's single writer: a queue of calls, run in batches, one COMMIT each.

The writer waits for a call; if it is a write, it lets more calls join — for up to
``window`` seconds, while they keep coming (it stops after a fifth of the window without a
new call) and until ``batch_max`` are queued — so that concurrent callers share the
transaction. It runs the batch between ``BEGIN IMMEDIATE`` and ``COMMIT`` and only then
answers the callers.
Reads ride the same queue, so each sees exactly the calls made before it, all committed. A
batch that fails is rolled back and its calls are run again one per transaction, so one
bad call fails alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._exceptions import ClosedError
from .._log import get_logger
from ._sqlops import Conn, Handler

__all__ = ["GroupCommitWriter", "WriterStats"]

_log = get_logger("watcher.stores")


@dataclass(slots=True)
class WriterStats:
    """Counters of the writer, for tests and metrics."""

    commits: int = 0  # transactions committed
    rollbacks: int = 0  # batches that failed and were run again one call at a time
    operations: int = 0  # calls run
    largest_batch: int = 0


@dataclass(slots=True, eq=False)
class _Op:
    kind: str
    args: Any
    write: bool
    future: asyncio.Future[Any] | None  # None: nobody waits (a buffered write)


class GroupCommitWriter:
    """Runs every call of one connection, in order, batching writes into transactions."""

    def __init__(
        self,
        conn: Conn,
        handlers: Mapping[str, Handler],
        mergeable: frozenset[str],
        *,
        window: float,
        batch_max: int,
    ) -> None:
        self.stats = WriterStats()
        self.failure: BaseException | None = None
        self._conn = conn
        self._handlers = handlers
        self._mergeable = mergeable
        self._window = window
        self._batch_max = max(1, batch_max)
        self._queue: deque[_Op] = deque()
        self._wake = asyncio.Event()  # set by every submit() and by stop()
        self._inflight: list[_Op] = []
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @property
    def backlog(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Run everything queued, then end the task (a failure is kept in ``failure``)."""
        self._stopping = True
        self._wake.set()
        task = self._task
        if task is not None:
            await asyncio.wait([task])  # not `await task`: its failure must not raise here
            if not task.cancelled():
                task.exception()  # retrieved, so asyncio does not log it as lost

    def submit(
        self, kind: str, args: Any, *, write: bool, wait: bool = True
    ) -> asyncio.Future[Any] | None:
        if self.failure is not None:
            raise ClosedError("the store's writer failed") from self.failure
        future = asyncio.get_running_loop().create_future() if wait else None
        self._queue.append(_Op(kind, args, write, future))
        self._wake.set()
        return future

    async def call(self, kind: str, args: Any, *, write: bool) -> Any:
        future = self.submit(kind, args, write=write)
        assert future is not None
        return await future

    async def _loop(self) -> None:
        queue = self._queue
        try:
            while True:
                while not queue:
                    if self._stopping:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                if queue[0].write:
                    await self._gather()
                ops = [queue.popleft() for _ in range(min(len(queue), self._batch_max))]
                self._inflight = ops
                self.stats.operations += len(ops)
                self.stats.largest_batch = max(self.stats.largest_batch, len(ops))
                await self._run(ops)
                self._inflight = []
        except BaseException as exc:
            self.failure = exc
            error = ClosedError("the store's writer stopped")
            for op in [*self._inflight, *queue]:
                if op.future is not None and not op.future.done():
                    op.future.set_exception(error)
            queue.clear()
            raise

    async def _gather(self) -> None:
        """Let more calls join the batch: until ``window`` has passed, the batch is full, or
        no call arrived for a fifth of the window (callers who wait for this commit cannot
        send more, so waiting longer would only add latency)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._window
        gap = self._window / 5
        while len(self._queue) < self._batch_max and not self._stopping:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._wake.clear()
            try:
                async with asyncio.timeout(min(gap, remaining)):
                    await self._wake.wait()
            except TimeoutError:
                return

    def _groups(self, ops: list[_Op]) -> list[list[_Op]]:
        groups: list[list[_Op]] = []
        for op in ops:
            if groups and op.kind in self._mergeable and groups[-1][0].kind == op.kind:
                groups[-1].append(op)
            else:
                groups.append([op])
        return groups

    async def _run(self, ops: list[_Op]) -> None:
        conn = self._conn
        if not any(op.write for op in ops):
            for op in ops:  # reads need no transaction: each sees everything committed
                try:
                    (result,) = await self._handlers[op.kind](conn, [op.args])
                except Exception as exc:
                    self._settle(op, exc)
                else:
                    self._settle(op, result)
            return
        done: list[tuple[_Op, Any]] = []
        try:
            await conn.execute("BEGIN IMMEDIATE")
            for group in self._groups(ops):
                results = await self._handlers[group[0].kind](conn, [op.args for op in group])
                done.extend(zip(group, results, strict=True))
            await conn.execute("COMMIT")
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    await conn.execute("ROLLBACK")
            if len(ops) == 1:
                self._settle(ops[0], exc)
                return
            self.stats.rollbacks += 1
            for op in ops:
                await self._run([op])
            return
        self.stats.commits += 1
        for op, result in done:
            self._settle(op, result)

    def _settle(self, op: _Op, result: Any) -> None:
        future = op.future
        if future is None:
            if isinstance(result, Exception):
                _log.error("buffered store write failed", kind=op.kind, error=str(result))
        elif not future.done():  # done: the caller was cancelled; the write stands anyway
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
