"""Clocks: the real monotonic one, and a fake one that tests and benchmarks drive.

Everything in watcher that waits for a point in time (rate limiter, scheduler, backoff) asks a
`Clock`, never `time` or `anyio.sleep` directly, so a `FakeClock` can replace hours of waiting
with instant jumps of virtual time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol, runtime_checkable

import anyio
from anyio.lowlevel import checkpoint

__all__ = ["Clock", "FakeClock", "MonotonicClock"]


@runtime_checkable
class Clock(Protocol):
    """Monotonic seconds, and a way to sleep until a point on that scale.

    Callers guarantee they only compare and subtract `now()` values of the same clock (the
    origin is arbitrary). `sleep_until` returns at or after `deadline` (returning at once,
    after a checkpoint, when it has passed) and is cancellable like any anyio sleep.
    """

    def now(self) -> float: ...

    async def sleep_until(self, deadline: float) -> None: ...


class MonotonicClock:
    """The real clock: `time.monotonic()`."""

    __slots__ = ()

    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, deadline: float) -> None:
        # anyio.sleep_until exists, but measures the deadline on the event loop's own clock,
        # which need not be time.monotonic (uvloop keeps its own); sleep the difference instead.
        await anyio.sleep(max(0.0, deadline - time.monotonic()))

    def __repr__(self) -> str:
        return "MonotonicClock()"


class _Sleeper:
    __slots__ = ("done", "event")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.done = False  # woken by the clock, or gone (cancelled)


class FakeClock:
    """Virtual time that only moves when told to, for tests and simulated-time benchmarks.

    Manual mode: tasks block in `sleep_until`; the test moves time with `advance()` or
    `advance_to()`, which wakes every sleeper whose deadline has been reached (earliest
    first, ties in the order they went to sleep). Those are plain methods: the woken tasks
    run at the test's next checkpoint.

    Autojump mode runs a whole program on virtual time, as fast as the CPU allows::

        clock = FakeClock()
        async with clock.autojump():
            limiter = RateLimiter(20, clock=clock)
            ...                                  # hours of virtual time in milliseconds
            await clock.sleep_until(3600)        # the test body may sleep on it too

    Whenever every other task of the event loop is blocked (nothing is runnable) the driver
    jumps to the earliest pending deadline. Socket I/O the loop has not picked up yet (a
    loopback answer already sent) counts as runnable. A task blocked on anything else (a
    socket with nothing to read, a thread, a real `anyio.sleep`) counts as blocked, so virtual
    time can jump while such work is outstanding: drive everything time-dependent through the
    clock. A task that polls in a loop of zero-length checkpoints keeps time from ever moving.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._heap: list[tuple[float, int, _Sleeper]] = []
        self._order = itertools.count()
        self._sleeping = 0
        self._autojumping = False
        self._sleeper_added: anyio.Event | None = None

    def now(self) -> float:
        return self._now

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await checkpoint()
            return
        sleeper = _Sleeper()
        heapq.heappush(self._heap, (deadline, next(self._order), sleeper))
        self._sleeping += 1
        if self._sleeper_added is not None:
            self._sleeper_added.set()
        try:
            await sleeper.event.wait()
        finally:
            if not sleeper.done:  # cancelled: leave the heap entry for lazy removal
                sleeper.done = True
                self._sleeping -= 1

    @property
    def sleepers(self) -> int:
        """How many tasks are blocked in `sleep_until` right now."""
        return self._sleeping

    @property
    def next_deadline(self) -> float | None:
        """The earliest deadline anyone is sleeping until, or None."""
        heap = self._heap
        while heap and heap[0][2].done:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds` and wake whoever is due."""
        if not seconds >= 0:
            raise ValueError(f"cannot advance by {seconds!r} seconds")
        self.advance_to(self._now + seconds)

    def advance_to(self, when: float) -> None:
        """Move time forward to `when` (never back) and wake whoever is due."""
        if not math.isfinite(when) or when < self._now:
            raise ValueError(f"cannot move the clock from {self._now!r} to {when!r}")
        self._now = when
        heap = self._heap
        while heap and heap[0][0] <= when:
            sleeper = heapq.heappop(heap)[2]
            if not sleeper.done:
                sleeper.done = True
                self._sleeping -= 1
                sleeper.event.set()

    @asynccontextmanager
    async def autojump(self) -> AsyncIterator[FakeClock]:
        """Jump to the next deadline whenever every other task is blocked (see the class doc)."""
        if self._autojumping:
            raise RuntimeError("this FakeClock is already autojumping")
        self._autojumping = True
        error: Exception | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._drive, name="FakeClock.autojump")
                try:
                    yield self
                except Exception as exc:  # re-raised below, not wrapped in an ExceptionGroup
                    error = exc
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self._autojumping = False
        if error is not None:
            raise error

    async def _drive(self) -> None:
        while True:
            await _wait_all_tasks_blocked()
            deadline = self.next_deadline
            if deadline is None or math.isinf(deadline):
                self._sleeper_added = anyio.Event()
                try:
                    await self._sleeper_added.wait()
                finally:
                    self._sleeper_added = None
                continue
            self.advance_to(deadline)

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r}, sleepers={self._sleeping})"


async def _wait_all_tasks_blocked() -> None:
    """Return once no other task can run until some outside event (timer, I/O, clock jump).

    anyio.wait_all_tasks_blocked() is exact on trio, but on asyncio it polls with real 0.1 s
    sleeps whenever some task is runnable, which would make autojump crawl. asyncio's default
    loops keep their runnable callbacks in `loop._ready` (private, but unchanged since 3.4):
    when it is empty while we run, everything else is waiting.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        await anyio.wait_all_tasks_blocked()
        return
    ready = getattr(loop, "_ready", None)
    if isinstance(ready, deque):
        # Nothing runnable is not enough: loopback I/O can sit in the kernel until the loop's
        # next select (a response written, not read yet), and jumping then would let virtual
        # time pass during a request. A zero-timeout peek at the selector tells; it consumes
        # nothing (readiness is level-triggered). Proactor loops have no selector to ask.
        peek = getattr(getattr(loop, "_selector", None), "select", None)
        while True:
            await checkpoint()
            if not ready and (peek is None or not peek(0)):
                return
    this = asyncio.current_task()
    if this is None or not hasattr(this, "_fut_waiter"):
        await anyio.wait_all_tasks_blocked()
        return
    # Other loops (uvloop): a task is blocked when it waits on a future that is not done yet.
    # Callbacks are invisible here, which is why the `_ready` check above is preferred.
    while True:
        await checkpoint()
        if all(_blocked(task) for task in asyncio.all_tasks() if task is not this):
            return


def _blocked(task: asyncio.Task[object]) -> bool:
    waiter = getattr(task, "_fut_waiter", None)
    return waiter is not None and not waiter.done()
