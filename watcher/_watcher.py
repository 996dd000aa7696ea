"""``Watcher``: the library entry point that ties intake, schedulers and results together."""

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
import structlog
from anyio.abc import TaskGroup

from ._clock import Clock, MonotonicClock
from ._exceptions import ClosedError, InvalidTaskIdError, SourceError, WatcherError
from ._models import ErrorInfo, Outcome, ResultEvent, TaskSnapshot, event_id_for
from ._taskid import validate_task_id
from ._watch import Watch
from .backoff import BackoffPolicy, make_policy
from .classifier import Classifier
from .config import Config, PollingConfig
from .ratelimit import RateLimiter
from .scheduler import SourceScheduler
from .sources.base import Source

__all__ = ["AddResult", "Watcher", "wait_sync"]

_log = structlog.get_logger("watcher")


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
    watches: dict[str, Watch]


def _policy_from(polling: PollingConfig) -> BackoffPolicy:
    b, e = polling.backoff, polling.error_backoff
    return make_policy(
        b.policy,
        initial=b.initial,
        multiplier=b.multiplier,
        max_delay=b.max,
        min_delay=b.min,
        jitter=b.jitter,
        error_initial=e.initial,
        error_multiplier=e.multiplier,
        error_max=e.max,
        progress_max=b.progress_max,
        growth=b.growth,
        tolerance=b.tolerance,
    )


def _deadline_seconds(value: float | timedelta | datetime | None, now_wall: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.timestamp() - now_wall
    return float(value)


class Watcher:
    """Watch tasks until they finish.

    >>> async def main(config):                                       # doctest: +SKIP
    ...     async with Watcher(config) as w:
    ...         await w.add(["fd1c56acbb2c4b1aa24ba37df99f3129"], batch="upload-7")
    ...         async for event in w.results():
    ...             print(event.task_id, event.outcome)

    Sources come from ``config.sources`` unless given ready-made in ``sources``. The library
    never installs signal handlers or configures logging.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        sources: Mapping[str, Source] | None = None,
        polling: PollingConfig | None = None,
        policy: BackoffPolicy | None = None,
        clock: Clock | None = None,
        seed: int | None = None,
        rates: Mapping[str, tuple[float, int | None]] | None = None,
    ) -> None:
        if config is None and not sources:
            raise WatcherError("Watcher needs a config or at least one source")
        self._config = config
        self._given_sources = dict(sources or {})
        self._polling = polling or (config.polling if config else PollingConfig())
        self._policy = policy or _policy_from(self._polling)
        self._clock = clock or MonotonicClock()
        self._rng = random.Random(seed)  # noqa: S311 - jitter, not security
        self._rates = dict(rates or {})
        self._state = _State.NEW
        self._stack = AsyncExitStack()
        self._tg: TaskGroup | None = None
        self._runtimes: dict[str, _SourceRuntime] = {}
        self._events: list[ResultEvent] = []
        self._finished: dict[tuple[str, str], ResultEvent] = {}
        self._changed = anyio.Event()
        self._pending = 0
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
            await self._stack.aclose()
            self._state = _State.CLOSED
            raise
        return self

    async def _open(self) -> None:
        sources = dict(self._given_sources)
        if self._config is not None:
            from .sources import build_source

            for name, source_config in self._config.sources.items():
                if name not in sources:
                    sources[name] = build_source(name, source_config)
        self._tg = await self._stack.enter_async_context(anyio.create_task_group())
        for name, source in sources.items():
            self._stack.push_async_callback(source.aclose)
            enter = getattr(source, "__aenter__", None)
            if enter is not None:
                await enter()
            runtime = self._make_runtime(name, source)
            self._runtimes[name] = runtime
            await self._tg.start(runtime.scheduler.run)

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

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop polling and close the sources. Pending watches are abandoned (not reported)."""
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

    def scheduler(self, source: str | None = None) -> SourceScheduler:
        return self._runtime(source).scheduler

    def _runtime(self, source: str | None) -> _SourceRuntime:
        name = source or next(iter(self._runtimes))
        try:
            return self._runtimes[name]
        except KeyError:
            raise WatcherError(
                f"unknown source {name!r}; known: {', '.join(self._runtimes)}"
            ) from None

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

        Duplicates of a watch this Watcher already has (pending or finished) are reported,
        not added again; invalid ids are reported with the reason. ``deadline`` is seconds
        from now, a ``timedelta`` or an absolute ``datetime`` (default: ``polling.deadline``).
        """
        self._check_open()
        runtime = self._runtime(source)
        ids = [task_ids] if isinstance(task_ids, str) else list(task_ids)
        now = self._clock.now()
        wall = now + self._epoch_offset
        relative = _deadline_seconds(deadline, wall)
        if relative is None:
            relative = self._polling.deadline
        absolute = now + relative if relative is not None else None
        frozen_labels = dict(labels) if labels else None
        result = AddResult()
        new: list[Watch] = []
        for task_id in ids:
            try:
                validate_task_id(task_id)
            except InvalidTaskIdError as exc:
                result.invalid.append((str(task_id), exc.reason))
                continue
            if task_id in runtime.watches:
                result.duplicates.append(task_id)
                continue
            watch = Watch(
                task_id,
                runtime.name,
                watched_at=wall,
                deadline=absolute,
                batch=batch,
                labels=frozen_labels,
            )
            runtime.watches[task_id] = watch
            new.append(watch)
            result.accepted.append(task_id)
        if new:
            self._pending += len(new)
            limiter = runtime.scheduler.limiter
            # Spread first polls over the time the budget needs for them anyway, so a bulk
            # add interleaves with watches already due instead of starving them. An add the
            # burst can absorb goes out at once.
            spread = 0.0
            if len(new) > limiter.burst:
                spread = max(self._polling.spread, len(new) / limiter.rate)
            runtime.scheduler.schedule_many(new, now, spread)
        return result

    # --- results ----------------------------------------------------------------------------

    async def _on_finish(
        self,
        watch: Watch,
        outcome: Outcome,
        snapshot: TaskSnapshot | None,
        error: SourceError | None,
    ) -> None:
        detected = self._clock.now() + self._epoch_offset
        info = None
        if error is not None and outcome in (Outcome.ERROR, Outcome.TIMED_OUT):
            info = ErrorInfo(
                error.kind, error.error_code, error.error_msg or error.message, error.request_id
            )
        event = ResultEvent(
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
        self._pending -= 1
        self._events.append(event)
        self._finished[(watch.source, watch.task_id)] = event
        watch.last = None  # the event holds the snapshot now; free the watch's copy
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def finished_events(self) -> list[ResultEvent]:
        """Events of every watch that has ended so far, in the order they ended."""
        return list(self._events)

    async def results(self, *, follow: bool = False) -> AsyncIterator[ResultEvent]:
        """Every result event, in the order watches ended, from the first one on.

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
        """Wait for one watch to end and return its event."""
        name = self._runtime(source).name
        key = (name, task_id)
        if task_id not in self._runtimes[name].watches:
            raise WatcherError(f"{task_id!r} is not watched in source {name!r}")
        while key not in self._finished:
            if self._state is not _State.OPEN:
                raise ClosedError("the Watcher closed before the task ended")
            await self._changed.wait()
        return self._finished[key]

    async def wait_all(
        self,
        task_ids: Sequence[str] | None = None,
        *,
        source: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the documented API, like wait_for's
    ) -> list[ResultEvent]:
        """Wait for ``task_ids`` (default: every watch) and return their events in that order.

        Raises ``TimeoutError`` if ``timeout`` seconds pass first.
        """
        with anyio.fail_after(timeout if timeout is not None else math.inf):
            if task_ids is None:
                while self._pending:
                    await self._changed.wait()
                return list(self._events)
            return [await self.wait(task_id, source=source) for task_id in task_ids]


def wait_sync(
    task_ids: Iterable[str],
    *,
    config: Config,
    source: str | None = None,
    batch: str | None = None,
    timeout: float | None = None,
) -> list[ResultEvent]:
    """Watch ``task_ids`` to the end from plain synchronous code.

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
            return await w.wait_all(unique, source=source, timeout=timeout)

    return anyio.run(main)
