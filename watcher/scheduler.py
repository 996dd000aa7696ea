"""Polls the watches of one source: a due-time heap feeding a bounded pool of workers.

Per source, a bounded pool of workers takes turns at dispatching: the worker holding the
dispatch role pops the watch due soonest (oldest-due first, so nothing starves), takes a
token from the source's rate limiter, passes the role on and polls that watch. It sleeps
until the next due time — never a fixed interval, never a busy loop — and is woken early when
an earlier watch arrives. Work time never shifts the schedule: due times are absolute, and a
slow poll only occupies its own worker.

The unit dispatched is a ``Request``: today one watch, but shaped so that a source with
``fetch_many`` can be served coalesced groups without a redesign.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import anyio
from anyio.abc import TaskStatus
from anyio.lowlevel import checkpoint

from ._clock import Clock
from ._exceptions import (
    AuthError,
    PermanentError,
    RateLimitedError,
    SourceError,
    TransientError,
)
from ._log import get_logger
from ._models import Outcome, TaskSnapshot
from ._watch import Watch
from .backoff import BackoffPolicy
from .classifier import Classifier
from .instrumentation import Instrumentation
from .ratelimit import RateLimiter
from .sources.base import Source

__all__ = ["FinishHandler", "Request", "RescheduleHandler", "SchedulerStats", "SourceScheduler"]

_log = get_logger("watcher.scheduler")

# Returns False when the result could not be recorded: the watch is then polled again later.
FinishHandler = Callable[
    [Watch, Outcome, "TaskSnapshot | None", "SourceError | None"], Awaitable[bool]
]
RescheduleHandler = Callable[[Watch], Awaitable[None]]

# A result that could not be recorded is retried (by polling again) after this long.
_FINISH_RETRY = 5.0

# After an auth failure the source pauses for this long, growing while probes keep failing.
# API.md: more than 5 consecutive signature failures lock an AK for 5 minutes -- for every
# client of the tenant that uses it, including ones whose clocks are right. Probes 1, 5 and 21
# minutes after the first refusal; once refusals in a row reach _AUTH_MAX_REFUSALS (requests
# in flight when it began count too) the source stays paused until resume_auth(), so watcher
# alone can never take the AK to the lock.
_AUTH_PAUSE_FIRST = 60.0
_AUTH_PAUSE_GROWTH = 4.0
_AUTH_PAUSE_MAX = 3600.0
_AUTH_MAX_REFUSALS = 4
# A probe that got no verdict (timeout, dropped connection, 5xx, 429) is repeated this long
# after, alone: the credentials are still unknown, and refusals counted so far stand.
_PROBE_RETRY = 10.0


@dataclass(slots=True)
class Request:
    """One request to send: the watches it covers (one, or a coalesced group)."""

    watches: list[Watch]
    sent_at: float  # clock time the token was granted: tells the limiter which 429s are news


@dataclass(slots=True)
class SchedulerStats:
    polls: int = 0
    snapshots: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    throttled: int = 0
    finished: int = 0


class SourceScheduler:
    """Schedules and polls every watch of one source. Run it with ``await run()``."""

    def __init__(
        self,
        name: str,
        source: Source,
        *,
        classifier: Classifier,
        limiter: RateLimiter,
        policy: BackoffPolicy,
        clock: Clock,
        on_finish: FinishHandler,
        on_reschedule: RescheduleHandler | None = None,
        instrumentation: Instrumentation | None = None,
        workers: int = 32,
        max_polls: int | None = None,
        epoch_offset: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.source = source
        self.classifier = classifier
        self.limiter = limiter
        self.policy = policy
        self.clock = clock
        self.stats = SchedulerStats()
        self._on_finish = on_finish
        self._on_reschedule = on_reschedule
        self._instrumentation = instrumentation
        self._workers = workers
        self._max_polls = max_polls
        self._epoch_offset = epoch_offset  # wall clock = scheduler clock + offset
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._heap: list[tuple[float, int, Watch]] = []
        self._seq = itertools.count()
        # The dispatching worker's waits: for a non-empty heap, for the head's due time
        # (``_sleeping_until``: -inf while nobody waits), for a token (``stop`` cancels it).
        self._idle: anyio.Event | None = None
        self._sleep_scope: anyio.CancelScope | None = None
        self._sleeping_until = -math.inf
        self._acquire_scope: anyio.CancelScope | None = None
        self._leading = False  # a worker holds the dispatch role
        self._followers: deque[anyio.Event] = deque()  # idle workers waiting for the role
        self._claims = 0
        self._stopping = False
        self._in_flight = 0
        self._auth_pause = _AUTH_PAUSE_FIRST
        # "unverified" until the first answer: the credentials are tried with one request,
        # not with a whole burst that would fail at once (and lock an AK).
        self._auth_state: Literal["unverified", "ok", "paused", "probing"] = "unverified"
        self._refusals = 0  # refusals in a row, as the gateway counts them
        self._halted = False  # paused until resume_auth(): more refusals could lock the AK
        self._auth_reason = "auth"
        self._probe: anyio.Event | None = None  # set while one probe runs after an auth pause
        self.stopped = anyio.Event()

    # --- scheduling -------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Watches waiting in the heap (stale entries excluded only approximately)."""
        return len(self._heap)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def schedule(self, watch: Watch, due: float) -> None:
        """(Re)schedule ``watch`` at clock time ``due``, waking the dispatcher if it is earlier."""
        watch.due = due
        heapq.heappush(self._heap, (due, next(self._seq), watch))
        if due < self._sleeping_until:
            self._interrupt_sleep()

    def schedule_many(self, watches: Iterable[Watch], first_due: float, spread: float) -> None:
        """Schedule new watches with first polls spread evenly over ``spread`` seconds."""
        batch = list(watches)
        step = spread / len(batch) if batch and spread > 0 else 0.0
        heap, seq = self._heap, self._seq
        for index, watch in enumerate(batch):
            due = first_due + index * step if step else first_due
            watch.due = due
            heap.append((due, next(seq), watch))
        heapq.heapify(heap)
        self._interrupt_sleep()

    def _interrupt_sleep(self) -> None:
        # Only the dispatching worker ever waits for the heap; while none waits, this is a
        # no-op (``_sleeping_until`` is -inf then, so ``schedule`` does not even call it).
        if self._idle is not None:
            self._idle.set()
        if self._sleep_scope is not None:
            self._sleep_scope.cancel()

    async def _sleep_until(self, deadline: float) -> None:
        with anyio.CancelScope() as scope:
            self._sleep_scope, self._sleeping_until = scope, deadline
            try:
                await self.clock.sleep_until(deadline)
            finally:
                self._sleep_scope, self._sleeping_until = None, -math.inf

    async def _wait_for_work(self) -> None:
        self._idle = anyio.Event()
        self._sleeping_until = math.inf
        try:
            await self._idle.wait()
        finally:
            self._idle, self._sleeping_until = None, -math.inf

    def _head(self) -> tuple[float, Watch] | None:
        """The live head of the heap; stale entries (rescheduled or finished) are dropped."""
        heap = self._heap
        while heap:
            due, _, watch = heap[0]
            if watch.done or watch.due != due:
                heapq.heappop(heap)
                continue
            return due, watch
        return None

    def _pop_due(self) -> Watch | None:
        """Pop the head if it is live and due."""
        head = self._head()
        if head is None or head[0] > self.clock.now():
            return None
        heapq.heappop(self._heap)
        return head[1]

    # --- running ----------------------------------------------------------------------------
    # Leader/followers: no dispatcher task and no hand-off. The one worker holding the
    # dispatch role waits for the next due watch and its token, passes the role on and polls
    # that watch itself. A worker whose poll ended takes the role at once if nobody holds it,
    # so under load a poll costs no extra task switch; idle workers queue for the role.

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Dispatch and poll until cancelled, or until ``stop()`` and in-flight polls end."""
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(self._workers):
                    tg.start_soon(self._worker)
                task_status.started()
        finally:
            self.stopped.set()

    def stop(self) -> None:
        """Claim no new polls; polls already sent finish (``stopped`` is set after them)."""
        self._stopping = True
        self._interrupt_sleep()
        if self._acquire_scope is not None:
            self._acquire_scope.cancel()
        while self._followers:
            self._followers.popleft().set()

    async def _worker(self) -> None:
        seen = -1
        while True:
            if self._claims == seen:
                # Nobody else claimed since this worker's last claim, so its poll never
                # yielded (an instant source): let the rest of the program run.
                await checkpoint()
            if not self._leading and not self._stopping and self._auth_state == "ok":
                # The role is free: take the head without taking the role, if it is due and
                # a token is free (nothing to wait for, so nobody else needs to be kept out).
                watch = self._take_now()
                if watch is not None:
                    self._claims += 1
                    self._in_flight += 1
                    seen = self._claims
                    try:
                        await self._poll(watch, self.clock.now())
                    finally:
                        self._in_flight -= 1
                    continue
            request = await self._claim()
            if request is None:
                return
            seen = self._claims
            try:
                for watch in request.watches:
                    await self._poll(watch, request.sent_at)
            finally:
                self._in_flight -= 1

    async def _claim(self) -> Request | None:
        """Take the dispatch role, wait for the next due watch and its token; None once stopped."""
        while self._leading and not self._stopping:
            turn = anyio.Event()
            self._followers.append(turn)
            try:
                await turn.wait()
            except BaseException:
                if not turn.is_set():
                    self._followers.remove(turn)
                elif not self._leading and self._followers:
                    self._followers.popleft().set()  # handed the turn while cancelled: pass it
                raise
        if self._stopping:
            return None
        self._leading = True
        keep_role = False
        try:
            watch = self._take_now()
            if watch is None:
                watch = await self._next_due()
                if watch is None:
                    return None
            self._claims += 1
            self._in_flight += 1
            if self._auth_state in ("unverified", "paused"):
                # The first request, or the pause is over: exactly one request goes out, and
                # nothing else is dispatched until its verdict (``_release_probe`` passes
                # the role on).
                self._auth_state = "probing"
                self._probe = anyio.Event()
                keep_role = True
            return Request([watch], self.clock.now())
        finally:
            if not keep_role:
                self._pass_role()

    def _take_now(self) -> Watch | None:
        """Pop the head if it is due and a token is free right now: the path under load."""
        heap = self._heap
        while heap:
            due, _, watch = heap[0]
            if watch.done or watch.due != due:
                heapq.heappop(heap)
                continue
            if due > self.clock.now() or not self.limiter.try_acquire():
                return None
            heapq.heappop(heap)
            return watch
        return None

    def _pass_role(self) -> None:
        self._leading = False
        if self._followers:
            self._followers.popleft().set()

    async def _next_due(self) -> Watch | None:
        limiter = self.limiter
        while not self._stopping:
            head = self._head()
            if head is None:
                await self._wait_for_work()
                continue
            if head[0] > self.clock.now():
                await self._sleep_until(head[0])
                continue
            if not limiter.try_acquire():
                with anyio.CancelScope() as scope:
                    self._acquire_scope = scope
                    try:
                        if self._auth_state == "paused":
                            await self._acquire_expiring_overdue()
                        else:
                            await limiter.acquire()
                    finally:
                        self._acquire_scope = None
                if scope.cancelled_caught:
                    return None  # stopped while waiting: no token was taken
            watch = self._pop_due()
            if watch is not None:
                return watch
            # Raced with a reschedule while waiting for the token; the token is not
            # returned, which only errs on the side of the budget.
        return None

    async def _acquire_expiring_overdue(self) -> None:
        """Wait for a token while the source is paused for its credentials -- maybe for
        hours -- and meanwhile end the watches whose deadline passes: they cannot be polled,
        and a deadline is a promise to the caller that the wait ends."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._expire_overdue)
            await self.limiter.acquire()
            tg.cancel_scope.cancel()

    async def _expire_overdue(self) -> None:
        while True:
            now = self.clock.now()
            # Watches added later (and a result that could not be stored just now) are seen
            # within a minute; otherwise wake at the next deadline to come.
            wake = now + 60.0
            overdue = []
            for due, _, watch in self._heap:
                deadline = watch.deadline
                if watch.done or watch.due != due or deadline is None:
                    continue  # stale entry, or nothing to expire
                if deadline <= now:
                    overdue.append(watch)
                else:
                    wake = min(wake, deadline)
            for watch in overdue:
                # Shielded: a token arriving must not cut a result off half-stored.
                with anyio.CancelScope(shield=True):
                    await self._finish(watch, Outcome.TIMED_OUT, watch.last, watch.last_error)
            await self.clock.sleep_until(wake)

    # --- one poll ---------------------------------------------------------------------------

    async def _poll(self, watch: Watch, sent_at: float) -> None:
        watch.polls += 1
        self.stats.polls += 1
        try:
            snapshot = await self.source.fetch(watch.task_id)
        except SourceError as exc:
            if self._instrumentation is not None:
                self._instrumentation.on_poll(self.name, exc.kind, self.clock.now() - sent_at)
            await self._after_error(watch, exc, sent_at)
        except Exception as exc:  # a plugin source's bug must not stop the scheduler
            _log.exception(
                "source raised an unexpected error",
                source=self.name,
                task_id=watch.task_id,
                batch=watch.batch,
            )
            wrapped = TransientError(f"unexpected {type(exc).__name__} from the source")
            if self._instrumentation is not None:
                self._instrumentation.on_poll(self.name, wrapped.kind, self.clock.now() - sent_at)
            await self._after_error(watch, wrapped, sent_at)
        else:
            if self._instrumentation is not None:
                self._instrumentation.on_poll(self.name, "ok", self.clock.now() - sent_at)
            await self._after_snapshot(watch, snapshot, sent_at)

    async def _after_snapshot(self, watch: Watch, snapshot: TaskSnapshot, sent_at: float) -> None:
        self.limiter.on_success(sent_at=sent_at)
        self._end_probe()
        self.stats.snapshots += 1
        watch.errors = 0
        watch.last_error = None
        watch.last = snapshot
        verdict = self.classifier.classify(snapshot)
        if verdict.outcome is not None:
            await self._finish(watch, verdict.outcome, snapshot, None)
            return
        now = self.clock.now()
        wall = now + self._epoch_offset
        watch.bounds = self.policy.observe(watch, snapshot, now=wall)
        delay = self.policy.next_delay(watch, snapshot, now=wall, rng=self._rng)
        await self._reschedule(watch, now, delay)

    async def _after_error(self, watch: Watch, exc: SourceError, sent_at: float) -> None:
        watch.errors += 1
        # The error stays on the watch until its next answer: keep the error, not the failed
        # request. Its traceback and cause hold that request's frames, response and
        # connection (some 10 KB after a dropped connection), for every failing watch.
        exc.__traceback__ = exc.__cause__ = exc.__context__ = None
        watch.last_error = exc
        kinds = self.stats.errors_by_kind
        kinds[exc.kind] = kinds.get(exc.kind, 0) + 1
        if isinstance(exc, PermanentError):
            self._end_probe()
            _log.info(
                "the API refused the task; it ends with outcome error",
                source=self.name,
                task_id=watch.task_id,
                batch=watch.batch,
                status=exc.status,
                error_code=exc.error_code,
                request_id=exc.request_id,
            )
            await self._finish(watch, Outcome.ERROR, watch.last, exc)
            return
        if isinstance(exc, AuthError):
            self._on_auth_error(exc, watch)
        else:
            if isinstance(exc, RateLimitedError):
                self.stats.throttled += 1
                self.limiter.on_throttled(exc.retry_after, sent_at=sent_at)
            self._probe_unanswered()
        now = self.clock.now()
        delay = self.policy.next_delay(watch, exc, now=now + self._epoch_offset, rng=self._rng)
        _log.debug(
            "poll failed; will retry",
            source=self.name,
            task_id=watch.task_id,
            batch=watch.batch,
            kind=exc.kind,
            status=exc.status,
            error_code=exc.error_code,
            request_id=exc.request_id,
            # Which field was wrong, which limit was hit: holds no secret (sources/_http.py).
            error=exc.message,
            errors_in_a_row=watch.errors,
            retry_in=round(delay, 3),
        )
        await self._reschedule(watch, now, delay)

    async def _reschedule(self, watch: Watch, now: float, delay: float) -> None:
        deadline = watch.deadline
        if (deadline is not None and now >= deadline) or (
            self._max_polls is not None and watch.polls >= self._max_polls
        ):
            await self._finish(watch, Outcome.TIMED_OUT, watch.last, watch.last_error)
            return
        watch.last_delay = delay
        due = now + max(delay, 0.0)
        if deadline is not None:
            due = min(due, deadline)  # one last poll exactly at the deadline
        self.schedule(watch, due)
        if self._on_reschedule is not None:
            await self._on_reschedule(watch)

    async def _finish(
        self,
        watch: Watch,
        outcome: Outcome,
        snapshot: TaskSnapshot | None,
        error: SourceError | None,
    ) -> None:
        if watch.done:
            return
        watch.done = True
        if await self._on_finish(watch, outcome, snapshot, error):
            self.stats.finished += 1
            return
        watch.done = False
        self.schedule(watch, self.clock.now() + _FINISH_RETRY)

    # --- auth pauses ------------------------------------------------------------------------
    # "unverified" -> (one request sent) -> "probing"; "ok" -> (auth error) -> "paused" ->
    # (pause over, one request sent) -> "probing" -> answer: "ok" | auth error: "paused" again,
    # for longer. The first refusal is logged as an error; failed probes only as warnings.

    def _on_auth_error(self, exc: AuthError, watch: Watch) -> None:
        self._refusals += 1
        if self._auth_state == "paused":
            # A request already in flight when the pause began: nothing new learned, but the
            # gateway counted it.
            self._halt_if_at_limit()
            return
        fields = {
            "source": self.name,
            "task_id": watch.task_id,
            "batch": watch.batch,
            "status": exc.status,
            "error_code": exc.error_code,
            "error_msg": exc.error_msg,
            "request_id": exc.request_id,
        }
        if self._refusals > 1:  # not the first of this run of refusals
            self._auth_pause = min(self._auth_pause * _AUTH_PAUSE_GROWTH, _AUTH_PAUSE_MAX)
            _log.warning(
                "credentials still refused; the source stays paused",
                pause_seconds=self._auth_pause,
                **fields,
            )
        else:
            _log.error(
                "credentials refused; pausing the source",
                pause_seconds=self._auth_pause,
                # What happens next, so the one error says it all.
                probes=f"one request after 1, 5 and 21 minutes, then paused until resumed "
                f"(at most {_AUTH_MAX_REFUSALS} refusals in a row)",
                **fields,
            )
        self._auth_state = "paused"
        self._auth_reason = f"auth: {exc.error_code or exc.status}"
        self.limiter.pause(self.clock.now() + self._auth_pause, self._auth_reason)
        self._halt_if_at_limit()
        self._release_probe()

    def _probe_unanswered(self) -> None:
        """The one request that was to test the credentials got no verdict on them."""
        if self._auth_state != "probing":
            return
        if self._refusals:
            self._auth_state = "paused"
            self.limiter.pause(self.clock.now() + _PROBE_RETRY, self._auth_reason)
        else:
            self._auth_state = "unverified"  # the next request goes alone again
        self._release_probe()

    def _halt_if_at_limit(self) -> None:
        if self._refusals < _AUTH_MAX_REFUSALS or self._halted:
            return
        self._halted = True
        self.limiter.pause(None, self._auth_reason)
        # A warning: the error was logged at the first refusal; this says what to do now.
        _log.warning(
            "credentials refused too many times in a row; the source stays paused until it "
            "is resumed (SIGHUP the daemon, or restart, once the credentials or the clock are "
            "fixed): another refusal could lock the access key for every client",
            source=self.name,
            refusals=self._refusals,
        )

    @property
    def auth_halted(self) -> bool:
        """True while the source waits for :meth:`resume_auth` after repeated refusals."""
        return self._halted

    def resume_auth(self) -> bool:
        """Let a source halted by refusals send one probe now; True if it was halted.

        The refusal count is kept: if that probe is refused too, the source halts again at
        once rather than spending the last refusals before the gateway's lock."""
        if not self._halted:
            return False
        self._halted = False
        self._refusals = _AUTH_MAX_REFUSALS - 1
        _log.info("resuming a source paused by refused credentials", source=self.name)
        self.limiter.resume()
        return True

    def _end_probe(self) -> None:
        """A poll got past the gateway: a task body, or the API's verdict on the task."""
        refused, self._refusals = self._refusals, 0
        if self._auth_state == "probing":
            self._auth_state = "ok"
            self._auth_pause = _AUTH_PAUSE_FIRST
            if refused:
                _log.info("credentials accepted again; source resumed", source=self.name)
            self._release_probe()

    def _release_probe(self) -> None:
        if self._probe is not None:
            self._probe.set()
            self._probe = None
            self._pass_role()  # the prober kept the dispatch role until this verdict
