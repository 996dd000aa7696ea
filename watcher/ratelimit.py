"""The per-source request budget: a rate limiter with a hard sliding-window cap and AIMD.

Three rules decide when the next token may go out; the latest of them wins:

1. Window cap (the hard guarantee). Any sliding half-open window ``[t, t + window)`` holds at
   most ``floor(rate * window)`` grants, where ``window`` is 1 s by default (a rate below one
   per window becomes one grant per ``1 / rate`` seconds). A ring of the last grant times
   enforces it in O(1): a grant is allowed only when the grant that many places back is at
   least ``window + margin`` old. A plain token bucket cannot promise this: with
   ``burst = rate`` it hands out ``burst`` at once and ``rate`` more during the next second,
   twice the budget in one window. While the rate is decreased the cap shrinks with it:
   ``floor(current_rate * window)``.
2. Spacing (GCRA, "virtual scheduling"): tokens accrue at ``current_rate``, at most ``burst``
   of them back to back, so an idle source may burst and a busy one is evenly paced.
3. Holds: after a 429 nothing goes out before ``now + Retry-After``; `pause` (auth trouble)
   stops everything until a time or until `resume`.

``margin`` (default 50 ms) is slack for the delay variation between us and the server's
counter: a request that left on time may be counted late, and the one ``rate`` places after it
early, so two grants exactly one window apart could look like ``rate + 1`` in a window to the
server, and one 429 halves our rate. It costs ``margin / (window + margin)`` of the throughput
at saturation (under 5 % by default); ``margin=0`` makes the cap exact.

A fractional rate above 1/s is bounded by its window cap: ``2.5`` gives at most 2 grants in
any second. Pass ``window`` to express budgets like "100 per minute"
(``RateLimiter(100 / 60, window=60)``).

Congestion control is AIMD. `on_throttled` multiplies the current rate by ``decrease`` (not
below ``min_rate``); 429s answering requests that were already in flight count as the same
congestion event. Pass ``sent_at`` (the clock time the request was sent, i.e. read right
after `acquire`) and that is exact: only a request sent after the last decrease can cause
another. Without it, further 429s are folded into the last event until its hold has ended plus
one token interval, an estimate of one round trip. Successes (`on_success`) then raise the rate
additively: at saturation by ``recovery * rate`` per second, never above ``rate``.

One limiter serves one event loop; it is not thread-safe.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import anyio
from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled

from ._clock import Clock

__all__ = ["RateLimiter", "RateLimiterStats"]

_NEVER = -math.inf
# The theoretical arrival time is a running sum of intervals and drifts by a few ulps; this
# much slack (in intervals) on the spacing rule, never on the window cap or the holds, keeps a
# full burst at one instant from coming out one short.
_SLACK = 1e-6


@dataclass(slots=True)
class RateLimiterStats:
    """Running totals of one limiter (read them; the limiter updates them)."""

    acquired: int = 0
    waited_seconds: float = 0.0  # summed over acquire() calls, on the limiter's clock
    throttled_events: int = 0  # congestion events: rate decreases
    throttled_responses: int = 0  # every on_throttled() call, coalesced or not


class _Waiter:
    __slots__ = ("dead", "turn")

    def __init__(self) -> None:
        self.turn = anyio.Event()  # set when this waiter reaches the head of the queue
        self.dead = False  # left the queue (cancelled) before its turn


class RateLimiter:
    """Request budget of one source, shared by every task that polls it.

    Example::

        limiter = RateLimiter(20, clock=MonotonicClock())
        await limiter.acquire()           # FIFO among waiters, cancellation-safe
        sent_at = clock.now()
        ...                               # send the request
        limiter.on_success(sent_at=sent_at)   # or on_throttled(retry_after, sent_at=sent_at)
    """

    def __init__(
        self,
        rate: float,
        burst: int | None = None,
        *,
        clock: Clock,
        min_rate: float | None = None,
        recovery: float = 0.05,
        decrease: float = 0.5,
        default_hold: float = 1.0,
        max_hold: float = 3600.0,
        window: float = 1.0,
        margin: float = 0.05,
    ) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a positive number of requests/second, got {rate!r}")
        if not (math.isfinite(window) and window > 0):
            raise ValueError(f"window must be a positive number of seconds, got {window!r}")
        if not (math.isfinite(margin) and margin >= 0):
            raise ValueError(f"margin must be a number of seconds >= 0, got {margin!r}")
        if burst is not None and burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        if min_rate is None:
            min_rate = rate / 20
        if not (0 < min_rate <= rate):
            raise ValueError(f"min_rate must be in (0, rate], got {min_rate!r}")
        if not (0 < decrease <= 1):
            raise ValueError(f"decrease must be in (0, 1], got {decrease!r}")
        if not (math.isfinite(recovery) and recovery >= 0):
            raise ValueError(f"recovery must be >= 0, got {recovery!r}")
        if not (0 <= default_hold <= max_hold and math.isfinite(max_hold)):
            raise ValueError("need 0 <= default_hold <= max_hold < inf")
        self._clock = clock
        self._rate = float(rate)
        if rate * window < 1:
            window = 1.0 / rate  # one grant per window, as gateways count slow rates
        self._window = float(window)
        self._span = self._window + float(margin)
        self._cap = max(1, math.floor(rate * window))
        # A burst larger than the window cap could never be honoured, so it is clipped.
        self._burst = min(max(1, math.floor(rate)) if burst is None else burst, self._cap)
        self._min_rate = float(min_rate)
        self._recovery = float(recovery)
        self._decrease = float(decrease)
        self._default_hold = float(default_hold)
        self._max_hold = float(max_hold)

        self._current = self._rate
        self._rated()
        self._tat = _NEVER  # GCRA theoretical arrival time of the next token
        self._ring = [_NEVER] * self._cap  # times of the last `cap` grants
        self._pos = 0  # ring slot of the oldest of them, overwritten by the next grant
        self._hold_until = _NEVER
        self._pause_until = _NEVER
        self._pause_reason: str | None = None
        self._last_decrease = _NEVER
        self._coalesce_until = _NEVER

        self._queue: deque[_Waiter] = deque()  # queue[0], when present, is the live head
        self._waiting = 0
        self._dead = 0
        self._head_scope: anyio.CancelScope | None = None
        self._head_deadline = math.inf
        self.stats = RateLimiterStats()

    # -- the budget ---------------------------------------------------------------------

    def _limit(self) -> int:
        return max(1, min(self._cap, math.floor(self._current * self._window)))

    def _rated(self) -> None:
        """Precompute what ``_grant`` needs of the current rate; call whenever it changes."""
        self._interval = 1.0 / self._current
        self._grant_limit = self._limit()
        self._grant_tolerance = (min(self._burst, self._grant_limit) - 1 + _SLACK) * self._interval

    def _earliest(self, slack: float = 0.0) -> float:
        """Earliest clock time the next grant is allowed, ignoring the queue."""
        limit = self._limit()
        interval = 1.0 / self._current
        tolerance = (min(self._burst, limit) - 1 + slack) * interval
        return max(
            self._tat - tolerance,
            self._ring[(self._pos - limit) % self._cap] + self._span,
            self._hold_until,
            self._pause_until,
        )

    def _grant(self, now: float) -> bool:
        # ``now < self._earliest(slack=_SLACK)``, spelt out: this runs once per request.
        if (
            now < self._tat - self._grant_tolerance
            or now < self._ring[(self._pos - self._grant_limit) % self._cap] + self._span
            or now < self._hold_until
            or now < self._pause_until
        ):
            return False
        self._tat = max(self._tat, now) + self._interval
        self._ring[self._pos] = now
        self._pos = (self._pos + 1) % self._cap
        self.stats.acquired += 1
        return True

    # -- taking tokens ------------------------------------------------------------------

    def try_acquire(self) -> bool:
        """Take a token if one is available now and nobody is queued for one."""
        return not self._waiting and self._grant(self._clock.now())

    async def acquire(self) -> None:
        """Wait for a token. Waiters are served first come, first served.

        A caller cancelled while waiting takes no token and does not hold up the others.
        """
        start = self._clock.now()
        if not self._waiting:
            await checkpoint_if_cancelled()
            if self._grant(start):
                # Let others run, but a token once granted is never lost to a cancellation.
                await cancel_shielded_checkpoint()
                return
        waiter = _Waiter()
        self._queue.append(waiter)
        self._waiting += 1
        if len(self._queue) == 1:
            waiter.turn.set()
        try:
            await waiter.turn.wait()
            while True:
                now = self._clock.now()
                if self._grant(now):
                    break
                await self._sleep_as_head(self._earliest())
        finally:
            self._waiting -= 1
            if self._queue[0] is waiter:
                self._queue.popleft()
                self._next_turn()
            else:
                waiter.dead = True
                self._dead += 1
                if self._dead > 64 and self._dead > self._waiting:
                    self._queue = deque(w for w in self._queue if not w.dead)
                    self._dead = 0
        self.stats.waited_seconds += now - start

    async def _sleep_as_head(self, deadline: float) -> None:
        # Sleep in a scope that _wake_head() cancels when the deadline moves earlier.
        with anyio.CancelScope() as scope:
            self._head_scope, self._head_deadline = scope, deadline
            try:
                if math.isinf(deadline):
                    await anyio.sleep_forever()
                else:
                    await self._clock.sleep_until(deadline)
            finally:
                self._head_scope, self._head_deadline = None, math.inf

    def _next_turn(self) -> None:
        queue = self._queue
        while queue and queue[0].dead:
            queue.popleft()
            self._dead -= 1
        if queue:
            queue[0].turn.set()

    def _wake_head(self) -> None:
        # Small gains (the rate creeping up) are not worth a wake-up; a resume or a shorter
        # pause is.
        if self._head_scope is not None:
            slack = 0.25 / self._current
            if self._earliest() < self._head_deadline - slack:
                self._head_scope.cancel()

    def next_available(self) -> float:
        """Clock time the next token is available (now, if it already is; inf while paused
        indefinitely). Waiters already queued get tokens first."""
        return max(self._earliest(), self._clock.now())

    # -- feedback -----------------------------------------------------------------------

    def on_throttled(
        self, retry_after: float | None = None, *, sent_at: float | None = None
    ) -> None:
        """A 429 (or equivalent): hold all tokens for `retry_after` seconds and slow down.

        `retry_after` None (or NaN) means `default_hold`; it is clipped to [0, max_hold].
        """
        now = self._clock.now()
        self.stats.throttled_responses += 1
        if retry_after is None or math.isnan(retry_after):
            hold = self._default_hold
        else:
            hold = min(max(retry_after, 0.0), self._max_hold)
        self._hold_until = max(self._hold_until, now + hold)
        if sent_at is not None:
            new_event = sent_at > self._last_decrease
        else:
            new_event = now >= self._coalesce_until
        if new_event:
            self._current = max(self._min_rate, self._current * self._decrease)
            self._rated()
            self._last_decrease = now
            self.stats.throttled_events += 1
        self._coalesce_until = max(self._coalesce_until, self._hold_until + 1.0 / self._current)
        # Drop the burst credit saved up so far: after the hold, requests go out paced at the
        # new rate instead of in one burst that would likely be throttled again.
        tolerance = (min(self._burst, self._limit()) - 1) / self._current
        self._tat = max(self._tat, self._hold_until + tolerance)

    def on_success(self, *, sent_at: float | None = None) -> None:
        """A request went through: raise the rate a little, back toward the configured one.

        Each success adds ``recovery * rate / current_rate``, so at saturation (successes
        arriving at `current_rate`) the rate climbs by ``recovery * rate`` per second. Answers
        to requests sent before the last decrease do not count.
        """
        if self._current >= self._rate:
            return
        if sent_at is not None:
            if sent_at <= self._last_decrease:
                return
        elif self._clock.now() < self._coalesce_until:
            return
        self._current = min(self._rate, self._current + self._recovery * self._rate / self._current)
        self._rated()
        self._wake_head()

    def pause(self, until: float | None, reason: str) -> None:
        """Hand out no tokens until clock time `until` (None: until `resume`).

        A new pause replaces the previous one.
        """
        self._pause_until = math.inf if until is None else until
        self._pause_reason = reason
        self._wake_head()

    def resume(self) -> None:
        """End a pause now (a 429 hold still applies)."""
        self._pause_until = _NEVER
        self._pause_reason = None
        self._wake_head()

    # -- state --------------------------------------------------------------------------

    @property
    def rate(self) -> float:
        """The configured rate (requests/second)."""
        return self._rate

    @property
    def burst(self) -> int:
        """The effective burst: at most the window cap."""
        return self._burst

    @property
    def window_limit(self) -> int:
        """Most grants any sliding `window` may hold at the configured rate."""
        return self._cap

    @property
    def window(self) -> float:
        """The window (seconds) the cap counts over, without the margin."""
        return self._window

    @property
    def current_rate(self) -> float:
        return self._current

    @property
    def waiting(self) -> int:
        """How many acquire() calls are queued."""
        return self._waiting

    @property
    def paused(self) -> bool:
        return self._clock.now() < self._pause_until

    @property
    def paused_reason(self) -> str | None:
        return self._pause_reason if self.paused else None

    @property
    def throttled_until(self) -> float | None:
        """End of the current 429 hold, or None when there is none."""
        return self._hold_until if self._clock.now() < self._hold_until else None

    def __repr__(self) -> str:
        return (
            f"RateLimiter(rate={self._rate:g}, current_rate={self._current:g}, "
            f"burst={self._burst}, waiting={self._waiting}, paused={self.paused})"
        )
