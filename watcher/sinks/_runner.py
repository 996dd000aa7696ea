"""``SinkRunner``: drains one sink's outbox in order, with retries and a dead-letter file.

One runner per sink, each its own task, so a slow or broken sink never holds up another sink,
the scheduler or whoever queued the event (``notify`` only sets an event).

Ordering: items go out one at a time in ``seq`` order. While the oldest item waits for its
retry, the items behind it wait too (head-of-line blocking): a receiver sees events of one
sink in the order they were detected, and a receiver that is down is not hammered with the
whole backlog at every retry. Because nothing may overtake the head, ``notify`` does not cut
such a wait short: it would not change what goes next.

Giving up: after ``max_attempts`` failed attempts (no limit by default: an outage of hours
must not cost events), when a failed event is older than
``max_age`` (measured from when it entered the outbox; an old event still gets its attempt),
or at once on a non-retryable ``DeliveryError``, the event is appended to the dead-letter
file (fsynced) and then removed from the outbox with ``store.dead_letter``. If the file
cannot be written, the event stays queued and is retried: it is never in neither place.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._clock import Clock, MonotonicClock
from .._exceptions import ConfigError, ConfigIssue
from .._log import get_logger
from ..backoff import exponential_delay
from ..config._units import Duration
from ..stores.base import OutboxItem, Store
from .base import DeliveryError, Sink
from .deadletter import DEFAULT_DEAD_LETTER_PATH, DeadLetterFile

__all__ = ["Flushable", "SinkRunner", "SinkStats"]


class _RetryKeys(BaseModel):
    """The runner's keys in a sink's config block (other keys belong to the sink)."""

    model_config = ConfigDict(extra="ignore")
    max_attempts: int | None = Field(default=None, ge=1)
    max_age: Duration | None = None
    initial_backoff: Duration | None = None
    max_backoff: Duration | None = None
    dead_letter: str | None = None


_log = get_logger("watcher.sinks")

# An idle runner lets a Flushable sink (the file sink's fsync "batch") sync this long after
# the last delivery, so a burst costs one fsync and a lone event is on disk within a second.
FLUSH_AFTER = 1.0
_STORE_RETRY_MAX = 30.0
_MAX_ERROR_TEXT = 500


@runtime_checkable
class Flushable(Protocol):
    """Optional on a ``Sink``: make delivered events durable; the runner calls it when idle."""

    async def flush(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SinkStats:
    """Counters of one runner since it was made, for metrics and ``watcher status``."""

    sink: str
    delivered: int = 0
    failed_attempts: int = 0
    dead_lettered: int = 0
    last_error: str | None = None
    last_error_at: float | None = None  # epoch seconds
    retry_at: float | None = None  # epoch seconds the head item waits for, if it is waiting


class SinkRunner:
    """Deliver ``store.outbox(sink.name)`` to ``sink``, forever (``run``) or until empty
    (``drain``). The runner does not own the sink or the store: their owner closes them.

    >>> runner = SinkRunner(sink, store, max_attempts=5)               # doctest: +SKIP
    >>> tg.start_soon(runner.run)                                      # doctest: +SKIP
    >>> runner.notify()          # after queueing events for sink.name  # doctest: +SKIP
    >>> await runner.drain(10)   # at shutdown: True if nothing is left # doctest: +SKIP
    """

    def __init__(
        self,
        sink: Sink,
        store: Store,
        *,
        clock: Clock | None = None,
        max_attempts: int | None = None,
        max_age: float | None = 24 * 3600.0,
        initial_backoff: float = 1.0,
        max_backoff: float = 300.0,
        dead_letter_path: str | None = None,
        rng: random.Random | None = None,
        batch: int = 100,
    ) -> None:
        if max_attempts is not None and max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not initial_backoff >= 0 or not max_backoff >= 0:
            raise ValueError("backoff durations must be >= 0")
        self.sink = sink
        self.store = store
        self.max_attempts = max_attempts
        self.max_age = max_age
        self.initial_backoff = initial_backoff
        self.max_backoff = max(max_backoff, initial_backoff)
        self.dead_letters = DeadLetterFile(dead_letter_path or DEFAULT_DEAD_LETTER_PATH)
        self._clock: Clock = clock or MonotonicClock()
        # The store keeps epoch seconds; the clock is monotonic (maybe virtual). Map once.
        self._epoch = time.time() - self._clock.now()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._batch = batch
        self._wake = anyio.Event()
        self._changed = anyio.Event()
        self._lock = anyio.Lock()
        self._running = False
        self._idle = False
        self._dirty = False  # delivered since the last flush
        self._delivered = 0
        self._failures = 0
        self._dead = 0
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._retry_at: float | None = None

    @classmethod
    def from_config(
        cls,
        sink: Sink,
        store: Store,
        config: object,
        *,
        name: str | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> SinkRunner:
        """A runner with the retry keys of a sink's config block: ``max_attempts``,
        ``max_age``, ``initial_backoff``, ``max_backoff``, ``dead_letter`` (defaults where it
        has none). A plugin's block may carry them too; they are validated here, and a bad
        one is a ``ConfigError`` at ``sinks.<name>``."""
        data = {key: getattr(config, key, None) for key in _RetryKeys.model_fields}
        try:
            keys = _RetryKeys.model_validate(data)
        except ValidationError as exc:
            where = f"sinks.{name or sink.name}"
            issues = [
                ConfigIssue(".".join([where, *map(str, e["loc"])]), e["msg"])
                for e in exc.errors(include_input=False, include_url=False)
            ]
            raise ConfigError(issues) from None
        options = {
            key: value
            for key, value in keys.model_dump(exclude={"dead_letter"}).items()
            if value is not None
        }
        return cls(sink, store, clock=clock, rng=rng, dead_letter_path=keys.dead_letter, **options)

    @property
    def name(self) -> str:
        return self.sink.name

    @property
    def stats(self) -> SinkStats:
        return SinkStats(
            sink=self.name,
            delivered=self._delivered,
            failed_attempts=self._failures,
            dead_lettered=self._dead,
            last_error=self._last_error,
            last_error_at=self._last_error_at,
            retry_at=self._retry_at,
        )

    def __repr__(self) -> str:
        return f"SinkRunner(sink={self.name!r})"

    def _wall(self) -> float:
        return self._clock.now() + self._epoch

    def _signal(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    # --- public API -------------------------------------------------------------------------

    def notify(self) -> None:
        """Something was queued for this sink: look at the outbox again (never blocks)."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver forever; cancel the task to stop (an item being delivered stays queued)."""
        if self._running:
            raise RuntimeError(f"sink runner {self.name!r} is already running")
        self._running = True
        store_errors = 0
        try:
            async with self._lock:
                while True:
                    self._wake = anyio.Event()  # before reading: a later notify is not lost
                    try:
                        empty = await self._pass()
                    except Exception as exc:  # the store failed; the sink's errors never get here
                        store_errors += 1
                        delay = min(_STORE_RETRY_MAX, 0.5 * 2.0 ** min(store_errors, 16))
                        _log.error(
                            "sink runner cannot use the store",
                            sink=self.name,
                            error=_describe(exc),
                            retry_in=delay,
                        )
                        await self._clock.sleep_until(self._clock.now() + delay)
                        continue
                    store_errors = 0
                    if empty:
                        self._idle = True
                        self._signal()
                        try:
                            await self._idle_wait()
                        finally:
                            self._idle = False
        finally:
            self._running = False
            self._signal()

    # The deadline is on the runner's Clock (maybe virtual), which anyio.fail_after cannot use.
    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Deliver what is queued until the outbox is empty (True) or ``timeout`` seconds on
        the clock have passed (False; what is left stays queued). Works whether or not
        ``run`` is active; with it, ``run`` keeps delivering and this waits."""
        deadline = self._clock.now() + timeout
        self.notify()  # have a running runner look again, in case nobody notified it
        while self._running:
            changed = self._changed
            if self._idle and not self._wake.is_set():
                return True
            if not await self._wait(changed, deadline):
                return False
        return await self._drain_alone(deadline)

    # --- internals --------------------------------------------------------------------------

    async def _drain_alone(self, deadline: float) -> bool:
        done = False
        async with anyio.create_task_group() as tg:

            async def timer() -> None:
                await self._clock.sleep_until(deadline)
                tg.cancel_scope.cancel()

            tg.start_soon(timer)
            async with self._lock:
                try:
                    while not done:
                        done = await self._pass()
                except Exception as exc:  # the store failed: what is left stays queued
                    _log.error(
                        "sink drain cannot use the store", sink=self.name, error=_describe(exc)
                    )
            tg.cancel_scope.cancel()
        return done

    async def _wait(self, event: anyio.Event, deadline: float) -> bool:
        """Wait for ``event`` until ``deadline`` on the clock; True if it was set."""
        if not event.is_set():
            async with anyio.create_task_group() as tg:

                async def timer() -> None:
                    await self._clock.sleep_until(deadline)
                    tg.cancel_scope.cancel()

                tg.start_soon(timer)
                await event.wait()
                tg.cancel_scope.cancel()
        return event.is_set()

    async def _idle_wait(self) -> None:
        if self._dirty and isinstance(self.sink, Flushable):
            if await self._wait(self._wake, self._clock.now() + FLUSH_AFTER):
                return
            self._dirty = False
            try:
                await self.sink.flush()
            except Exception as exc:
                _log.error("sink flush failed", sink=self.name, error=_describe(exc))
        await self._wake.wait()

    async def _pass(self) -> bool:
        """Deliver one batch of the outbox in order; True if the outbox was empty. Returns
        early (False) when an item was rescheduled, so its new retry time is read back."""
        items = await self.store.outbox(self.name, limit=self._batch)
        if not items:
            return True
        for item in items:
            if item.next_attempt_at > self._wall():
                self._retry_at = item.next_attempt_at
                try:
                    await self._clock.sleep_until(item.next_attempt_at - self._epoch)
                finally:
                    self._retry_at = None
            if not await self._attempt(item):
                return False
        return False

    async def _attempt(self, item: OutboxItem) -> bool:
        """One delivery; True when the item left the outbox (delivered or dead-lettered)."""
        try:
            await self.sink.deliver(item.payload)
        except Exception as exc:  # anything a sink raises means "retry" unless it says not
            with anyio.CancelScope(shield=True):  # keep the bookkeeping of a finished attempt
                return await self._failed(item, exc)
        with anyio.CancelScope(shield=True):  # delivered: an un-acked item would go twice
            await self.store.ack(self.name, [item.seq])
        self._delivered += 1
        self._dirty = True
        return True

    async def _failed(self, item: OutboxItem, exc: Exception) -> bool:
        attempts = item.attempts + 1
        error = _describe(exc)
        now = self._wall()
        self._failures += 1
        self._last_error, self._last_error_at = error, now
        reason: str | None = None
        if isinstance(exc, DeliveryError) and not exc.retryable:
            reason = error
        elif self.max_attempts is not None and attempts >= self.max_attempts:
            reason = f"gave up after {attempts} attempts: {error}"
        elif self.max_age is not None and item.created_at and now - item.created_at >= self.max_age:
            reason = f"undelivered for over {self.max_age:g}s after {attempts} attempts: {error}"
        if reason is not None and await self._dead_letter(item, attempts, reason, now):
            return True
        delay = self._backoff(attempts, exc)
        await self.store.retry_later(
            self.name, item.seq, attempts=attempts, next_attempt_at=now + delay, error=error
        )
        _log.warning(
            "sink delivery failed",
            sink=self.name,
            event_id=item.event_id,
            attempts=attempts,
            retry_in=round(delay, 3),
            error=error,
        )
        return False

    def _backoff(self, attempts: int, exc: Exception) -> float:
        """Full-jitter exponential between ``initial_backoff`` and ``max_backoff``; never
        sooner than the receiver's ``Retry-After`` (which may exceed ``max_backoff``)."""
        delay = max(
            self.initial_backoff,
            exponential_delay(
                attempts - 1,
                initial=self.initial_backoff,
                multiplier=2.0,
                cap=self.max_backoff,
                rng=self._rng,
            ),
        )
        retry_after = exc.retry_after if isinstance(exc, DeliveryError) else None
        return max(delay, retry_after) if retry_after is not None else delay

    async def _dead_letter(self, item: OutboxItem, attempts: int, reason: str, now: float) -> bool:
        try:
            await self.dead_letters.append(
                sink=self.name,
                event_id=item.event_id,
                reason=reason,
                attempts=attempts,
                event=item.payload,
                at=now,
            )
        except OSError as exc:
            problem = exc.strerror or type(exc).__name__
            self._last_error = f"cannot write the dead-letter file: {problem}"
            _log.error(
                "dead-letter file not writable; the event stays queued",
                sink=self.name,
                event_id=item.event_id,
                path=str(self.dead_letters.path),
                error=problem,
            )
            return False
        # Record the final attempt first, so the store's dead-letter record counts it too.
        await self.store.retry_later(
            self.name,
            item.seq,
            attempts=attempts,
            next_attempt_at=now,
            error=self._last_error or "",
        )
        await self.store.dead_letter(self.name, item.seq, reason=reason)
        self._dead += 1
        _log.error(
            "event dead-lettered",
            sink=self.name,
            event_id=item.event_id,
            attempts=attempts,
            reason=reason,
            path=str(self.dead_letters.path),
        )
        return True


def _describe(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _MAX_ERROR_TEXT else text[: _MAX_ERROR_TEXT - 3] + "..."
