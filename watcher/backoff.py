"""How long to wait before the next poll: pure functions, no sleeping (the scheduler sleeps).

Policies:
- ``exponential`` (full jitter): ``uniform(0, min(cap, initial * multiplier**n))``;
- ``decorrelated`` jitter: ``min(cap, uniform(initial, previous * 3))``;
- ``fixed``: the initial interval, always;
- ``progress`` (default): while counts advance, reason about *when the task can finish* and
  poll just after the earliest consistent finish time; without usable progress it falls back
  to ``exponential``.

The progress rule works with intervals rather than a point estimate. A whole count ``c`` of
``total`` after ``elapsed`` seconds of linear progress bounds the finish from below by
``elapsed * total / (c + 1)`` and (when ``c > 0``) from above by ``elapsed * total / c``; a
``tolerance`` widens both for noisy counts. Each poll intersects the interval with its own,
so it narrows as observations accumulate, and a task still running at ``now`` cannot finish
before ``now``. The next poll goes one step past the lower end; from there equal steps of at
most ``step_cap`` walk what is left, the last one landing on the upper end.

Counts are only evidence if progress is linear, so the policy hedges: no sleep is longer
than ``growth`` times the time the task has run (or ``growth_min``), and a task that speeds
up is never missed by much. Observations that disagree, or a task that outlives its
interval, start the interval over from the newest count.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from ._exceptions import RateLimitedError, SourceError
from ._models import TaskSnapshot

__all__ = [
    "BackoffPolicy",
    "Bounds",
    "PollHistory",
    "ProgressPolicy",
    "decorrelated_jitter",
    "exponential_delay",
    "make_policy",
    "update_bounds",
]

_MAX_EXPONENT = 1000  # beyond this multiplier**n overflows a float; the cap applies anyway


def exponential_delay(
    attempt: int,
    *,
    initial: float,
    multiplier: float,
    cap: float,
    jitter: bool = True,
    rng: random.Random | None = None,
) -> float:
    """Delay after ``attempt`` (0-based) polls: capped exponential, full jitter by default."""
    exponent = min(max(attempt, 0), _MAX_EXPONENT)
    try:
        ceiling = min(cap, initial * multiplier**exponent)
    except OverflowError:
        ceiling = cap
    if not jitter:
        return ceiling
    return (rng or random).uniform(0.0, ceiling)


def decorrelated_jitter(
    previous: float, *, initial: float, cap: float, rng: random.Random | None = None
) -> float:
    """AWS's decorrelated jitter: ``min(cap, uniform(initial, previous * 3))``."""
    upper = max(initial, previous * 3.0)
    return min(cap, (rng or random).uniform(initial, upper))


class PollHistory(Protocol):
    """What a policy may read about a watch (the scheduler's ``Watch`` provides it)."""

    polls: int  # polls answered so far, including the one being judged
    errors: int  # consecutive failed polls
    last_delay: float
    watched_at: float  # wall-clock epoch seconds when the watch started
    bounds: Bounds | None


@dataclass(frozen=True, slots=True)
class Bounds:
    """What the observations so far say about the finish time (wall-clock epoch seconds)."""

    lo: float
    hi: float  # math.inf when unknown
    total: int
    misses: int = 0  # times the task outlived its interval (counts that stall, say)


def update_bounds(
    previous: Bounds | None,
    *,
    now: float,
    origin: float,
    origin_known: bool,
    count: int,
    total: int,
    tolerance: float,
) -> Bounds | None:
    """Intersect the finish-time interval with what one observation implies.

    ``origin`` is when the task began (its ``begin_time``) if ``origin_known``, else when the
    watch started. A task that really began before the watch finishes no earlier than the
    bound measured from the watch start, so the lower bound still holds; the upper bound
    does not, and is left unknown. Returns None when the observation carries no usable
    progress (no items counted yet: a queued task would break the linear assumption).
    """
    if total <= 0 or count <= 0 or count >= total:
        return previous if previous is not None and previous.total == total else None
    elapsed = max(now - origin, 0.0)
    lo = origin + elapsed * total * (1.0 - tolerance) / (count + 1)
    hi = origin + elapsed * total * (1.0 + tolerance) / count if origin_known else math.inf
    if previous is not None and previous.total == total:
        merged_lo, merged_hi = max(lo, previous.lo), min(hi, previous.hi)
        if merged_lo <= merged_hi:
            return Bounds(merged_lo, merged_hi, total, previous.misses)
        # The observations disagree: progress is not linear. Trust only the newest one.
    return Bounds(lo, hi, total, previous.misses if previous is not None else 0)


class BackoffPolicy(Protocol):
    """Gives the next delay for a watch. Must be pure apart from the ``rng`` it is handed.

    The scheduler calls ``observe`` with each snapshot (storing what it returns as the
    watch's ``bounds``), then ``next_delay``.
    """

    def observe(
        self, history: PollHistory, snapshot: TaskSnapshot, *, now: float
    ) -> Bounds | None: ...

    def next_delay(
        self,
        history: PollHistory,
        result: TaskSnapshot | SourceError,
        *,
        now: float,
        rng: random.Random,
    ) -> float: ...


@dataclass(frozen=True, slots=True)
class ErrorCurve:
    initial: float = 1.0
    multiplier: float = 2.0
    cap: float = 300.0

    def delay(self, history: PollHistory, error: SourceError, rng: random.Random) -> float:
        delay = exponential_delay(
            max(history.errors - 1, 0),
            initial=self.initial,
            multiplier=self.multiplier,
            cap=self.cap,
            rng=rng,
        )
        # Full jitter can give ~0; keep errors from hammering a failing API.
        delay = max(delay, self.initial / 2)
        if isinstance(error, RateLimitedError) and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return delay


@dataclass(frozen=True, slots=True)
class SimplePolicy:
    """``exponential``, ``decorrelated`` or ``fixed``, with its own curve for errors."""

    kind: Literal["exponential", "decorrelated", "fixed"] = "exponential"
    initial: float = 2.0
    multiplier: float = 1.5
    cap: float = 60.0
    floor: float = 0.0
    jitter: bool = True
    errors: ErrorCurve = ErrorCurve()

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
        if isinstance(result, SourceError):
            return self.errors.delay(history, result, rng)
        return max(self.floor, self.running_delay(history, rng))

    def running_delay(self, history: PollHistory, rng: random.Random) -> float:
        if self.kind == "fixed":
            return self.initial
        if self.kind == "decorrelated":
            return decorrelated_jitter(
                history.last_delay or self.initial, initial=self.initial, cap=self.cap, rng=rng
            )
        return exponential_delay(
            max(history.polls - 1, 0),
            initial=self.initial,
            multiplier=self.multiplier,
            cap=self.cap,
            jitter=self.jitter,
            rng=rng,
        )


@dataclass(frozen=True, slots=True)
class ProgressPolicy:
    """Poll just after the earliest finish time that the progress so far allows.

    ``fallback`` handles polls without usable progress and errors. ``floor`` and ``ceiling``
    bound every progress-based delay. Inside the finish window polls are at most one step
    apart: ``step`` times the time the task has run, at most ``step_cap`` seconds.

    Hedging against progress that is not linear: a sleep is at most ``growth`` times the
    time the task has run, or ``growth_min`` (or ``fallback.cap``), whichever is longest.
    ``growth_min`` should exceed the time the budget needs to poll every watch once: a
    young task checked again sooner competes with first polls still waiting for a token.
    A task still running past the end of its interval had counts that misled (it stalled):
    the interval restarts from the newest count, and its steps are twice as long as before.
    """

    fallback: SimplePolicy = SimplePolicy()
    floor: float = 1.0
    ceiling: float = 1800.0
    tolerance: float = 0.05
    growth: float = 1.0
    step: float = 0.02
    step_cap: float = 15.0
    growth_min: float = 120.0

    def observe(self, history: PollHistory, snapshot: TaskSnapshot, *, now: float) -> Bounds | None:
        if snapshot.total_count is None or snapshot.done_count is None:
            return history.bounds
        previous = history.bounds
        if previous is not None and previous.hi < now:
            # Still running after the latest finish the earlier observations allowed: they
            # were wrong about this task (it stalled, or is noisier than the tolerance).
            bounds = self._update(None, history, snapshot, now)
            return replace(bounds, misses=previous.misses + 1) if bounds is not None else None
        return self._update(previous, history, snapshot, now)

    def _update(
        self, previous: Bounds | None, history: PollHistory, snapshot: TaskSnapshot, now: float
    ) -> Bounds | None:
        begin = snapshot.begin_time
        return update_bounds(
            previous,
            now=now,
            origin=begin.timestamp() if begin else history.watched_at,
            origin_known=begin is not None,
            count=snapshot.done_count or 0,
            total=snapshot.total_count or 0,
            tolerance=self.tolerance,
        )

    def next_delay(
        self,
        history: PollHistory,
        result: TaskSnapshot | SourceError,
        *,
        now: float,
        rng: random.Random,
    ) -> float:
        if isinstance(result, SourceError):
            return self.fallback.next_delay(history, result, now=now, rng=rng)
        origin = result.begin_time.timestamp() if result.begin_time else history.watched_at
        elapsed = max(now - origin, 0.0)
        total, done = result.total_count, result.done_count
        if total and done is not None and done >= total:
            # Every item counted but not yet marked ended: it is closing up right now.
            return self._clamp(self.floor * 2)
        bounds = history.bounds
        if bounds is None:
            fallback = self.fallback.next_delay(history, result, now=now, rng=rng)
            if not total or done != 0:
                return fallback
            # Nothing counted yet. Were items to come evenly, the whole task would take at
            # least elapsed * total; but a task may start slowly, so this only stretches
            # the fallback, by at most `growth` times the time it has run.
            earliest = origin + elapsed * total * (1.0 - self.tolerance)
            return self._clamp(max(fallback, min(earliest - now, self.growth * elapsed)))
        step = min(self.step_cap, max(self.floor, self.step * elapsed))
        # Each time the task outlived its window, walk the next one in twice longer steps:
        # a count stuck one item short must not be polled every few seconds for hours.
        step *= 2.0 ** min(bounds.misses, 64)
        start = max(bounds.lo, now)  # still running: it finishes after now
        span = bounds.hi - start
        if math.isfinite(span) and span > 0 and step > 0:
            # Equal steps of at most `step` from the earliest to the latest finish. The first
            # poll goes one step in: at the earliest finish itself it could not find it done.
            target = start + span / math.ceil(span / step)
        else:
            target = start + step
        limit = max(self.fallback.cap, self.growth_min, self.growth * elapsed)
        return self._clamp(min(target - now, limit))

    def _clamp(self, delay: float) -> float:
        return min(self.ceiling, max(self.floor, delay))


def make_policy(
    policy: Literal["progress", "exponential", "decorrelated", "fixed"] = "progress",
    *,
    initial: float = 2.0,
    multiplier: float = 1.5,
    max_delay: float = 60.0,
    min_delay: float = 1.0,
    jitter: bool = True,
    error_initial: float = 1.0,
    error_multiplier: float = 2.0,
    error_max: float = 300.0,
    progress_max: float = 1800.0,
    growth: float = 1.0,
    tolerance: float = 0.05,
    growth_min: float = 120.0,
) -> SimplePolicy | ProgressPolicy:
    """Build a policy from the ``polling.backoff`` and ``polling.error_backoff`` knobs."""
    errors = ErrorCurve(error_initial, error_multiplier, error_max)
    simple = SimplePolicy(
        kind="exponential" if policy == "progress" else policy,
        initial=initial,
        multiplier=multiplier,
        cap=max_delay,
        floor=min_delay,
        jitter=jitter,
        errors=errors,
    )
    if policy != "progress":
        return simple
    return ProgressPolicy(
        fallback=simple,
        floor=min_delay,
        ceiling=progress_max,
        tolerance=tolerance,
        growth=growth,
        growth_min=growth_min,
    )
