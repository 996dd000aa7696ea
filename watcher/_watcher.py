"""``Watcher``: the library entry point that ties intake, store, schedulers and sinks together."""

from __future__ import annotations

import enum
import math
import random
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self

import anyio
from anyio.abc import TaskGroup

from ._assembly import deadline_seconds, policy_from, sink_names
from ._clock import Clock, MonotonicClock
from ._exceptions import (
    ClosedError,
    InvalidTaskIdError,
    SourceError,
    WaitTimeoutError,
    WatcherError,
)
from ._log import get_logger
from ._models import (
    BatchEvent,
    ErrorInfo,
    Outcome,
    ResultEvent,
    TaskSnapshot,
    batch_event_id,
    event_id_for,
)
from ._taskid import validate_task_id
from ._watch import Watch
from .backoff import BackoffPolicy
from .classifier import Classifier
from .config import Config, PollingConfig
from .instrumentation import Instrumentation
from .ratelimit import RateLimiter
from .scheduler import SourceScheduler
from .sinks._runner import SinkRunner
from .sinks.base import Sink
from .sources.base import Source
from .stores.base import Store, WatchRecord

__all__ = ["AddResult", "Watcher", "wait_sync"]

_log = get_logger("watcher")

# A watch whose result could not be stored (e.g. disk full) is polled again after this long,
# and its result stored then: detected results are never dropped.
_STORE_RETRY = 5.0


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class AddResult:
    """What ``Watcher.add`` did with each id it was given."""

    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    invalid: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)


@dataclass(slots=True)
class _SourceRuntime:
    name: str
    source: Source
    scheduler: SourceScheduler
    watches: dict[str, Watch]  # pending watches by task id


class Watcher:
    """Watch tasks until they finish.

    >>> async def main(config):                                       # doctest: +SKIP
    ...     async with Watcher(config) as w:
    ...         await w.add(["fd1c56acbb2c4b1aa24ba37df99f3129"], batch="upload-7")
    ...         async for event in w.results():
    ...             print(event.task_id, event.outcome)

    Sources, store and sinks come from ``config`` unless given ready-made. Every result is
    written to the store's outbox in the transaction that ends its watch, then delivered to
    each sink by that sink's own runner. The library never installs signal handlers or
    configures logging.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        sources: Mapping[str, Source] | None = None,
        store: Store | None = None,
        sinks: Sequence[Sink] | None = None,
        polling: PollingConfig | None = None,
        policy: BackoffPolicy | None = None,
        clock: Clock | None = None,
        seed: int | None = None,
        rates: Mapping[str, tuple[float, int | None]] | None = None,
        instrumentation: Instrumentation | None = None,
    ) -> None:
        if config is None and not sources:
            raise WatcherError("Watcher needs a config or at least one source")
        self._config = config
        self._given_sources = dict(sources or {})
        self._given_store = store
        self._given_sinks = list(sinks) if sinks is not None else None
        self._polling = polling or (config.polling if config else PollingConfig())
        self._policy = policy or policy_from(self._polling)
        self._clock = clock or MonotonicClock()
        self._rng = random.Random(seed)  # noqa: S311 - jitter, not security
        self._rates = dict(rates or {})
        self._instrumentation = instrumentation
        self._state = _State.NEW
        self._stack = AsyncExitStack()
        self._tg: TaskGroup | None = None
        self._store: Store | None = None
        self._runners: list[SinkRunner] = []
        self._sink_names: list[str] = []
        self._runtimes: dict[str, _SourceRuntime] = {}
        self._events: list[ResultEvent] = []
        self._finished: dict[tuple[str, str], ResultEvent] = {}
        self._changed = anyio.Event()
        self._pending = 0
        self._batch_pending: dict[str, int] = {}  # so batch ends are noticed without a query
        self._epoch_offset = 0.0

    # --- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state is not _State.NEW:
            raise ClosedError("a Watcher can be entered only once")
        self._state = _State.OPEN
        self._epoch_offset = time.time() - self._clock.now()
        try:
            await self._open()
        except BaseException:
            self._state = _State.CLOSED
            await self._stack.aclose()
            raise
        return self

    async def _open(self) -> None:
        # Resources first, the task group last: the exit stack unwinds in reverse, so tasks
        # are cancelled and finished before the sinks, sources and store they use close.
        self._store = await self._open_store()
        sinks = await self._open_sinks()
        sources = await self._open_sources()
        self._tg = await self._stack.enter_async_context(anyio.create_task_group())
        self._stack.callback(self._tg.cancel_scope.cancel)
        for sink, name in zip(sinks, self._sink_names, strict=True):
            runner = self._make_runner(sink, name)
            self._runners.append(runner)
            self._tg.start_soon(runner.run)
        for name, source in sources.items():
            runtime = self._make_runtime(name, source)
            self._runtimes[name] = runtime
            await self._tg.start(runtime.scheduler.run)
        await self._resume()

    async def _open_store(self) -> Store:
        store = self._given_store
        if store is None:
            from .stores import build_store
            from .stores.memory import MemoryStore

            store = build_store(self._config.store) if self._config else MemoryStore()
        await store.open()
        self._stack.push_async_callback(store.aclose)
        return store

    async def _open_sinks(self) -> list[Sink]:
        if self._given_sinks is not None:
            sinks = self._given_sinks
            self._sink_names = [s.name for s in sinks]
        elif self._config is not None:
            from .sinks import build_sink

            self._sink_names = sink_names(self._config.sinks)
            sinks = [
                build_sink(cfg, name=name)
                for cfg, name in zip(self._config.sinks, self._sink_names, strict=True)
            ]
        else:
            sinks = []
        if len(set(self._sink_names)) != len(self._sink_names):
            raise WatcherError(f"sink names must be unique: {self._sink_names}")
        for sink in sinks:
            self._stack.push_async_callback(sink.aclose)
        return sinks

    def _make_runner(self, sink: Sink, name: str) -> SinkRunner:
        assert self._store is not None
        rng = random.Random(self._rng.random())  # noqa: S311 - jitter, not security
        if self._config is not None and self._given_sinks is None:
            cfg = self._config.sinks[self._sink_names.index(name)]
            return SinkRunner.from_config(
                sink, self._store, cfg, name=name, clock=self._clock, rng=rng
            )
        return SinkRunner(sink, self._store, clock=self._clock, rng=rng)

    async def _open_sources(self) -> dict[str, Source]:
        sources = dict(self._given_sources)
        if self._config is not None:
            from .sources import build_source

            for name, source_config in self._config.sources.items():
                if name not in sources:
                    sources[name] = build_source(name, source_config)
        for source in sources.values():
            self._stack.push_async_callback(source.aclose)
            enter = getattr(source, "__aenter__", None)
            if enter is not None:
                await enter()
        return sources

    def _make_runtime(self, name: str, source: Source) -> _SourceRuntime:
        rate, burst = self._rates.get(name) or self._source_rate(name)
        source_config = self._config.sources.get(name) if self._config else None
        status_map = getattr(source_config, "status_map", None) or {}
        progress_rule = getattr(source_config, "progress_rule", True)
        scheduler = SourceScheduler(
            name,
            source,
            classifier=Classifier(status_map, progress_rule=progress_rule, source=name),
            limiter=RateLimiter(rate, burst, clock=self._clock),
            policy=self._policy,
            clock=self._clock,
            on_finish=self._on_finish,
            on_reschedule=self._on_reschedule,
            instrumentation=self._instrumentation,
            workers=self._polling.workers,
            max_polls=self._polling.max_polls,
            epoch_offset=self._epoch_offset,
            rng=random.Random(self._rng.random()),  # noqa: S311 - jitter, not security
        )
        return _SourceRuntime(name, source, scheduler, {})

    def _source_rate(self, name: str) -> tuple[float, int | None]:
        source_config = self._config.sources.get(name) if self._config else None
        if source_config is None:
            return 20.0, None
        return source_config.rate_limit, source_config.burst

    async def _resume(self) -> None:
        """Pick up every watch a previous run left pending, and redeliver its outbox."""
        assert self._store is not None
        # Before scheduling anything: an await after that would let polls start before
        # __aenter__ returns.
        await self._announce_ended_batches()
        resumed: dict[str, list[Watch]] = {}
        for record in await self._store.pending():
            runtime = self._runtimes.get(record.source)
            if runtime is None:
                _log.warning(
                    "pending watch of a source no longer configured; left alone",
                    source=record.source,
                    task_id=record.task_id,
                    batch=record.batch,
                )
                continue
            watch = self._watch_from(record)
            runtime.watches[record.task_id] = watch
            resumed.setdefault(record.source, []).append(watch)
            self._count_batch(watch.batch, +1)
        for name, watches in resumed.items():
            scheduler = self._runtimes[name].scheduler
            for watch in watches:
                scheduler.schedule(watch, watch.due)
            self._pending += len(watches)
            _log.info("resumed pending watches", source=name, watches=len(watches))
        for runner in self._runners:
            runner.notify()

    async def _announce_ended_batches(self) -> None:
        """Queue ``batch.finished`` for batches that ended unannounced: a crash between
        storing a batch's last result and queueing its announcement would lose it otherwise.
        A batch any of the sinks has seen already is left alone (so a sink added to the
        config later is not sent old batches)."""
        unannounced = getattr(self.store, "unannounced_batches", None)
        if unannounced is None or not self._sink_names:
            return
        try:
            batches = await unannounced(self._sink_names, batch_event_id)
        except Exception:
            _log.exception("could not look for batches to announce")
            return
        if batches:
            _log.warning("announcing batches a previous run left unannounced", batches=len(batches))
        async with anyio.create_task_group() as tg:  # concurrent: one write for them all
            for batch, outcomes in batches.items():
                tg.start_soon(self._queue_batch_event, batch, outcomes)

    def _watch_from(self, record: WatchRecord) -> Watch:
        offset = self._epoch_offset
        watch = Watch(
            record.task_id,
            record.source,
            watched_at=record.watched_at,
            deadline=record.deadline_at - offset if record.deadline_at is not None else None,
            batch=record.batch,
            labels=dict(record.labels) or None,
            key=record.key,
        )
        watch.polls, watch.errors = record.polls, record.errors
        watch.due = record.due_at - offset
        return watch

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def shutdown(self, grace: float) -> bool:
        """Stop claiming polls, let in-flight ones finish, flush sinks, then close; all
        within ``grace`` seconds. True if everything finished in time (what did not stays
        in the store for the next start)."""
        if self._state is not _State.OPEN:
            return True
        deadline = anyio.current_time() + grace
        for runtime in self._runtimes.values():
            runtime.scheduler.stop()
        with anyio.move_on_at(deadline) as scope:
            for runtime in self._runtimes.values():
                await runtime.scheduler.stopped.wait()
        clean = not scope.cancelled_caught
        flushed = await self.drain(max(deadline - anyio.current_time(), 0.0))
        await self.aclose()
        return clean and flushed

    def resume_sources(self) -> list[str]:
        """Let sources that stopped probing after repeated credential refusals try again,
        one request each (after the credentials or the clock were fixed); their names."""
        return [name for name, r in self._runtimes.items() if r.scheduler.resume_auth()]

    def reopen_sinks(self) -> None:
        """Reopen sinks that write files (after log rotation moved them away)."""
        for runner in self._runners:
            reopen = getattr(runner.sink, "reopen", None)
            if reopen is not None:
                reopen()

    async def aclose(self) -> None:
        """Stop polling and delivering; close sinks, sources and store. Pending watches stay
        pending in the store (a durable store resumes them on the next start)."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        await self._stack.aclose()
        self._notify()

    def _check_open(self) -> None:
        if self._state is not _State.OPEN:
            raise ClosedError("the Watcher is not open (use `async with Watcher(...)`)")

    # --- intake -----------------------------------------------------------------------------

    @property
    def sources(self) -> list[str]:
        return list(self._runtimes)

    @property
    def pending(self) -> int:
        """Watches that have not ended yet."""
        return self._pending

    @property
    def store(self) -> Store:
        if self._store is None:
            raise ClosedError("the Watcher is not open")
        return self._store

    @property
    def runners(self) -> list[SinkRunner]:
        """One delivery runner per sink (their ``stats`` feed metrics)."""
        return list(self._runners)

    def scheduler(self, source: str | None = None) -> SourceScheduler:
        return self._runtime(source).scheduler

    def _runtime(self, source: str | None) -> _SourceRuntime:
        name = source or next(iter(self._runtimes))
        try:
            return self._runtimes[name]
        except KeyError:
            known = ", ".join(self._runtimes)
            raise WatcherError(f"unknown source {name!r}; known: {known}") from None

    async def add(
        self,
        task_ids: Iterable[str] | str,
        *,
        source: str | None = None,
        batch: str | None = None,
        labels: Mapping[str, str] | None = None,
        deadline: float | timedelta | datetime | None = None,
    ) -> AddResult:
        """Start watching ``task_ids`` (a single id is accepted too).

        A task already known to the store in that source (pending or finished) is reported
        as a duplicate, not watched again; invalid ids are reported with the reason.
        ``deadline`` is seconds from now, a ``timedelta`` or an absolute ``datetime``
        (default: ``polling.deadline``).
        """
        self._check_open()
        runtime = self._runtime(source)
        ids = [task_ids] if isinstance(task_ids, str) else list(task_ids)
        now = self._clock.now()
        wall = now + self._epoch_offset
        relative = deadline_seconds(deadline, wall)
        if relative is None:
            relative = self._polling.deadline
        frozen_labels = dict(labels) if labels else None
        result = AddResult()
        candidates: dict[str, None] = {}
        for task_id in ids:
            try:
                validate_task_id(task_id)
            except InvalidTaskIdError as exc:
                result.invalid.append((str(task_id), exc.reason))
                continue
            if task_id in candidates or task_id in runtime.watches:
                result.duplicates.append(task_id)
                continue
            candidates[task_id] = None
        if not candidates:
            return result
        new = await self._register(
            runtime,
            list(candidates),
            wall=wall,
            relative_deadline=relative,
            batch=batch,
            labels=frozen_labels,
        )
        for task_id in candidates:
            (result.accepted if task_id in new else result.duplicates).append(task_id)
        if new:
            self._pending += len(new)
            limiter = runtime.scheduler.limiter
            # Spread first polls over the time the budget needs for them anyway, so a bulk
            # add interleaves with watches already due instead of starving them. An add the
            # burst can absorb goes out at once.
            spread = 0.0
            if len(new) > limiter.burst:
                spread = max(self._polling.spread, len(new) / limiter.rate)
            runtime.scheduler.schedule_many(list(new.values()), now, spread)
        return result

    async def _register(
        self,
        runtime: _SourceRuntime,
        task_ids: list[str],
        *,
        wall: float,
        relative_deadline: float | None,
        batch: str | None,
        labels: dict[str, str] | None,
    ) -> dict[str, Watch]:
        deadline_at = wall + relative_deadline if relative_deadline is not None else None
        records = [
            WatchRecord(
                source=runtime.name,
                task_id=task_id,
                watched_at=wall,
                due_at=wall,
                deadline_at=deadline_at,
                batch=batch,
                labels=labels or {},
            )
            for task_id in task_ids
        ]
        fresh = await self.store.add(records)
        new: dict[str, Watch] = {}
        for record, is_new in zip(records, fresh, strict=True):
            if is_new:
                watch = self._watch_from(record)
                runtime.watches[record.task_id] = watch
                new[record.task_id] = watch
                self._count_batch(batch, +1)
        return new

    async def forget(self, task_id: str, *, source: str | None = None) -> bool:
        """Stop watching ``task_id`` without an event and remove it from the store (pending
        or done). True if it was known. A poll in flight for it ends without a result."""
        self._check_open()
        runtime = self._runtime(source)
        watch = runtime.watches.get(task_id)
        # A watch already marked done is being finished right now: let that complete.
        batch_ended = False
        if watch is not None and not watch.done:
            watch.done = True  # its heap entry is skipped from now on, as a stale one
            del runtime.watches[task_id]
            self._pending -= 1
            batch_ended = self._count_batch(watch.batch, -1) == 0
        removed = await self.store.remove(runtime.name, task_id)
        if batch_ended and watch is not None and watch.batch is not None:
            # It was the last pending watch of its batch.
            await self._finish_batch(watch.batch)
            for runner in self._runners:
                runner.notify()
        self._notify()
        return removed or watch is not None

    # --- results ----------------------------------------------------------------------------

    async def _on_reschedule(self, watch: Watch) -> None:
        await self.store.reschedule(
            watch.source,
            watch.task_id,
            due_at=watch.due + self._epoch_offset,
            polls=watch.polls,
            errors=watch.errors,
        )

    async def _on_finish(
        self,
        watch: Watch,
        outcome: Outcome,
        snapshot: TaskSnapshot | None,
        error: SourceError | None,
    ) -> bool:
        detected = self._clock.now() + self._epoch_offset
        event = self._event_for(watch, outcome, snapshot, error, detected)
        offset = self._epoch_offset
        record = WatchRecord(
            source=watch.source,
            task_id=watch.task_id,
            watched_at=watch.watched_at,
            due_at=detected,
            deadline_at=watch.deadline + offset if watch.deadline is not None else None,
            batch=watch.batch,
            labels=watch.labels or {},
            key=watch.key,
            polls=watch.polls,
            errors=watch.errors,
            state="done",
            outcome=outcome.value,
            finished_at=detected,
        )
        try:
            await self.store.complete(record, event.event_id, event.to_dict(), self._sink_names)
        except Exception:
            _log.exception(
                "could not store a result; the task will be polled again",
                source=watch.source,
                task_id=watch.task_id,
                batch=watch.batch,
            )
            return False
        if self._instrumentation is not None:
            latency = None
            if snapshot is not None and snapshot.end_time is not None:
                latency = max(detected - snapshot.end_time.timestamp(), 0.0)
            self._instrumentation.on_finish(watch.source, outcome.value, latency)
        if watch.batch is not None and self._count_batch(watch.batch, -1) == 0:
            await self._finish_batch(watch.batch)
        runtime = self._runtimes.get(watch.source)
        if runtime is not None:
            runtime.watches.pop(watch.task_id, None)
        self._pending -= 1
        self._events.append(event)
        self._finished[(watch.source, watch.task_id)] = event
        watch.last = None  # the event holds the snapshot now; free the watch's copy
        for runner in self._runners:
            runner.notify()
        self._notify()
        return True

    def _count_batch(self, batch: str | None, delta: int) -> int:
        """Adjust the pending count of ``batch``; returns what is left (-1 for no batch)."""
        if batch is None:
            return -1
        left = self._batch_pending.get(batch, 0) + delta
        if left > 0:
            self._batch_pending[batch] = left
        else:
            self._batch_pending.pop(batch, None)
        return left

    async def _finish_batch(self, batch: str) -> None:
        """This process saw the last pending watch of ``batch`` end: announce the batch once.

        The store is asked only then (one query per batch, not per watch), and has the last
        word: another process may still be watching part of the batch."""
        counts = getattr(self.store, "batch_counts", None)
        if counts is None:
            return
        try:
            by_state = dict(await counts(batch))
        except Exception:
            _log.exception("could not queue batch.finished", batch=batch)
            return
        if by_state.pop("pending", 0) or not by_state:
            return  # still running, or every watch of it was forgotten
        await self._queue_batch_event(batch, by_state)

    async def _queue_batch_event(self, batch: str, outcomes: Mapping[str, int]) -> None:
        event = BatchEvent(
            event_id=batch_event_id(batch),
            batch=batch,
            tasks=sum(outcomes.values()),
            outcomes=dict(outcomes),
            finished_at=datetime.fromtimestamp(self._clock.now() + self._epoch_offset, UTC),
        )
        try:
            # Idempotent per (sink, event id): a batch is announced once, however many of
            # its last watches end at the same moment, and however often it is restarted.
            await self.store.enqueue(event.event_id, event.to_dict(), self._sink_names)
        except Exception:
            _log.exception("could not queue batch.finished", batch=batch)

    def _event_for(
        self,
        watch: Watch,
        outcome: Outcome,
        snapshot: TaskSnapshot | None,
        error: SourceError | None,
        detected: float,
    ) -> ResultEvent:
        info = None
        if error is not None and outcome in (Outcome.ERROR, Outcome.TIMED_OUT):
            info = ErrorInfo(
                error.kind, error.error_code, error.error_msg or error.message, error.request_id
            )
        return ResultEvent(
            event_id=event_id_for(watch.source, watch.task_id, watch.key),
            task_id=watch.task_id,
            source=watch.source,
            outcome=outcome,
            watched_at=datetime.fromtimestamp(watch.watched_at, UTC),
            detected_at=datetime.fromtimestamp(detected, UTC),
            polls=watch.polls,
            batch=watch.batch,
            labels=watch.labels or {},
            snapshot=snapshot,
            error=info,
        )

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def finished_events(self) -> list[ResultEvent]:
        """Events of every watch that has ended in this run, in the order they ended."""
        return list(self._events)

    async def results(self, *, follow: bool = False) -> AsyncIterator[ResultEvent]:
        """Every result event of this run, in the order watches ended, from the first on.

        Without ``follow`` the iterator ends once no watch is pending; with it, it waits
        for more until the Watcher closes.
        """
        position = 0
        while True:
            while position < len(self._events):
                yield self._events[position]
                position += 1
            if self._state is not _State.OPEN or (not follow and self._pending == 0):
                return
            await self._changed.wait()

    async def wait(self, task_id: str, *, source: str | None = None) -> ResultEvent:
        """Wait for one watch of this run to end and return its event."""
        name = self._runtime(source).name
        key = (name, task_id)
        if key not in self._finished and task_id not in self._runtimes[name].watches:
            raise WatcherError(f"{task_id!r} is not being watched in source {name!r}")
        while key not in self._finished:
            if self._state is not _State.OPEN:
                raise ClosedError("the Watcher closed before the task ended")
            if task_id not in self._runtimes[name].watches:
                raise WatcherError(f"{task_id!r} was forgotten before it ended")
            await self._changed.wait()
        return self._finished[key]

    def is_pending(self, task_id: str, *, source: str | None = None) -> bool:
        """True while ``task_id`` is being watched in this run and has not ended."""
        runtime = self._runtime(source)
        watch = runtime.watches.get(task_id)
        return watch is not None and not watch.done

    async def expire(self, *, source: str | None = None) -> int:
        """End every pending watch (of ``source``, or of all sources) now as ``timed_out``,
        without waiting for a last poll; returns how many ended. For a caller's overall
        timeout: a watch's own deadline still needs a request slot for its last poll."""
        self._check_open()
        runtimes = [self._runtime(source)] if source is not None else list(self._runtimes.values())
        ended = 0
        for runtime in runtimes:
            for watch in list(runtime.watches.values()):
                if watch.done:
                    continue
                watch.done = True  # a poll in flight for it now ends without a second result
                if await self._on_finish(watch, Outcome.TIMED_OUT, watch.last, watch.last_error):
                    ended += 1
                else:
                    watch.done = False
        return ended

    def auth_refused(self, source: str | None = None) -> SourceError | None:
        """The credentials error of a source that has never had a poll answered, if any:
        a sign that the configured credentials are wrong rather than briefly refused."""
        runtime = self._runtime(source)
        stats = runtime.scheduler.stats
        if stats.snapshots or not stats.errors_by_kind.get("auth"):
            return None
        for watch in runtime.watches.values():
            if watch.last_error is not None and watch.last_error.kind == "auth":
                return watch.last_error
        return None

    async def outcome(self, task_id: str, *, source: str | None = None) -> Outcome:
        """How ``task_id`` ended: waits while it is pending in this run; a watch that an
        earlier run finished is answered from the store."""
        name = self._runtime(source).name
        if (name, task_id) in self._finished or task_id in self._runtimes[name].watches:
            return (await self.wait(task_id, source=name)).outcome
        record = await self.store.get(name, task_id)
        if record is None or record.state != "done" or record.outcome is None:
            raise WatcherError(f"{task_id!r} is not being watched in source {name!r}")
        return Outcome(record.outcome)

    async def wait_all(
        self,
        task_ids: Sequence[str] | None = None,
        *,
        source: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the documented API, like wait_for's
    ) -> list[ResultEvent]:
        """Wait for ``task_ids`` (default: every watch) and return their events in that order.

        Raises ``WaitTimeoutError`` (a ``TimeoutError``) if ``timeout`` seconds pass first;
        it carries the events that arrived and the ids still pending.
        """
        try:
            with anyio.fail_after(timeout if timeout is not None else math.inf):
                if task_ids is None:
                    while self._pending:
                        await self._changed.wait()
                    return list(self._events)
                return [await self.wait(task_id, source=source) for task_id in task_ids]
        except TimeoutError:
            if timeout is None:
                raise  # not our deadline: a sink's or a source's error passing through
            if task_ids is None:
                pending = [
                    t for r in self._runtimes.values() for t, w in r.watches.items() if not w.done
                ]
                raise WaitTimeoutError(timeout, self._events, pending) from None
            name = self._runtime(source).name
            arrived = [self._finished[(name, t)] for t in task_ids if (name, t) in self._finished]
            missing = [t for t in task_ids if (name, t) not in self._finished]
            raise WaitTimeoutError(timeout, arrived, missing) from None

    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109 - a grace period
        """Deliver what the outbox holds, for at most ``timeout`` seconds. True if empty."""
        results: list[bool] = []

        async def one(runner: SinkRunner) -> None:
            results.append(bool(await runner.drain(timeout)))

        async with anyio.create_task_group() as tg:
            for runner in self._runners:
                tg.start_soon(one, runner)
        return all(results)


def wait_sync(
    task_ids: Iterable[str],
    *,
    config: Config,
    source: str | None = None,
    batch: str | None = None,
    timeout: float | None = None,
) -> list[ResultEvent]:
    """Watch ``task_ids`` to the end from plain synchronous code.

    With ``timeout``, running out raises ``WaitTimeoutError`` holding the events that did
    arrive (already handed to the sinks) and the ids still pending.

    >>> events = wait_sync(["fd1c56acbb2c4b1aa24ba37df99f3129"], config=cfg)  # doctest: +SKIP
    """
    ids = list(task_ids)

    async def main() -> list[ResultEvent]:
        async with Watcher(config) as w:
            result = await w.add(ids, source=source, batch=batch)
            if result.invalid:
                reasons = "; ".join(f"{i!r}: {why}" for i, why in result.invalid)
                raise InvalidTaskIdError(result.invalid[0][0], reasons)
            unique = list(dict.fromkeys(result.accepted))
            try:
                events = await w.wait_all(unique, source=source, timeout=timeout)
            except WaitTimeoutError:
                await w.drain(30.0)  # what did arrive still reaches the sinks
                raise
            await w.drain(timeout if timeout is not None else 30.0)
            return events

    return anyio.run(main)
