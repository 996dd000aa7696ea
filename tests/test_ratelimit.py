"""The per-source rate limiter (watcher.ratelimit) and the clocks it runs on (watcher._clock)."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher._clock import Clock, FakeClock, MonotonicClock
from watcher.ratelimit import RateLimiter


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """Most grants in any sliding half-open window [t, t + window)."""
    times = sorted(times)
    best = j = 0
    for i, start in enumerate(times):  # the busiest window can always start at a grant
        while j < len(times) and times[j] < start + window:
            j += 1
        best = max(best, j - i)
    return best


async def wait_until(condition: Callable[[], bool]) -> None:
    """Let other tasks run until `condition` holds (bounded in real time)."""
    with anyio.fail_after(5):
        while not condition():
            await anyio.lowlevel.checkpoint()


async def hammer(limiter: RateLimiter, clock: Clock, workers: int, until: float) -> list[float]:
    """`workers` tasks acquiring back to back until `until`; the grant times."""
    grants: list[float] = []

    async def worker() -> None:
        while clock.now() < until:
            await limiter.acquire()
            grants.append(clock.now())

    async with anyio.create_task_group() as tg:
        for _ in range(workers):
            tg.start_soon(worker)
    return grants


# -- the hard guarantee -------------------------------------------------------------------


@pytest.mark.anyio
async def test_window_bound_under_heavy_concurrency() -> None:
    """200 tasks at 20/s: no 1 s window ever holds more than 20 grants, yet the budget is used."""
    clock = FakeClock()
    async with clock.autojump():
        limiter = RateLimiter(20, clock=clock, margin=0)
        grants = await hammer(limiter, clock, workers=200, until=30)
    assert max_in_window(grants) == 20
    assert grants.count(0.0) == 20  # the burst is honoured...
    assert len(grants) >= 20 * 30  # ...and the long-run rate is the configured one
    assert limiter.stats.acquired == len(grants)


@pytest.mark.anyio
async def test_burst_plus_refill_does_not_double_the_budget() -> None:
    """Unlike a token bucket, a full burst at t=0 leaves nothing more for the rest of [0, 1)."""
    clock = FakeClock()
    async with clock.autojump():
        limiter = RateLimiter(10, burst=10, clock=clock, margin=0)
        grants = await hammer(limiter, clock, workers=15, until=1.0)
    assert sorted(grants)[:11] == [0.0] * 10 + [1.0]


@pytest.mark.anyio
async def test_margin_keeps_window_edges_apart() -> None:
    """By default the grant `rate` places back must be a window plus 50 ms old, slow rates too."""
    clock = FakeClock()
    async with clock.autojump():
        fast = await hammer(RateLimiter(10, clock=clock), clock, workers=15, until=2.0)
    assert sorted(fast)[:21] == pytest.approx([0.0] * 10 + [1.05] * 10 + [2.1])
    clock = FakeClock()
    async with clock.autojump():
        slow = await hammer(RateLimiter(0.5, clock=clock), clock, workers=3, until=4.0)
    assert sorted(slow)[:3] == pytest.approx([0.0, 2.05, 4.1])


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    rate=st.one_of(st.sampled_from([0.5, 1.0, 2.5, 3.0, 7.0, 20.0]), st.floats(0.2, 40.0)),
    burst=st.one_of(st.none(), st.integers(1, 45)),
    arrivals=st.lists(st.tuples(st.floats(0, 5), st.integers(1, 15)), min_size=1, max_size=6),
    throttles=st.lists(
        st.tuples(st.floats(0, 6), st.one_of(st.none(), st.floats(0, 3))), max_size=3
    ),
    succeed=st.booleans(),
    margin=st.sampled_from([0.0, 0.05]),
)
def test_window_bound_property(
    *,
    rate: float,
    burst: int | None,
    arrivals: list[tuple[float, int]],
    throttles: list[tuple[float, float | None]],
    succeed: bool,
    margin: float,
) -> None:
    """Any rate, burst, arrival pattern and 429s: the window cap and every hold are respected."""

    async def scenario() -> tuple[list[float], list[tuple[float, float]]]:
        clock = FakeClock()
        grants: list[float] = []
        holds: list[tuple[float, float]] = []
        async with clock.autojump():
            limiter = RateLimiter(rate, burst, clock=clock, margin=margin)

            async def acquirer() -> None:
                await limiter.acquire()
                grants.append(clock.now())
                if succeed:
                    limiter.on_success()

            async def arrive(at: float, count: int) -> None:
                await clock.sleep_until(at)
                for _ in range(count):
                    tg.start_soon(acquirer)

            async def throttle(at: float, retry_after: float | None) -> None:
                await clock.sleep_until(at)
                limiter.on_throttled(retry_after)
                holds.append((clock.now(), 1.0 if retry_after is None else retry_after))

            async with anyio.create_task_group() as tg:
                for at, count in arrivals:
                    tg.start_soon(arrive, at, count)
                for at, retry_after in throttles:
                    tg.start_soon(throttle, at, retry_after)
        return grants, holds

    grants, holds = anyio.run(scenario, backend="asyncio")
    assert len(grants) == sum(count for _, count in arrivals)
    if rate >= 1:
        assert max_in_window(grants, window=1.0 + margin) <= math.floor(rate)
    else:
        ordered = sorted(grants)
        assert all(b >= a + (1.0 / rate + margin) for a, b in itertools.pairwise(ordered))
    for start, hold in holds:
        assert not [g for g in grants if start < g < start + hold]


# -- fairness and cancellation --------------------------------------------------------------


@pytest.mark.anyio
async def test_waiters_are_served_first_come_first_served() -> None:
    """Ten queued acquirers get their tokens in the order they asked, one per interval."""
    clock = FakeClock()
    order: list[tuple[int, float]] = []
    async with clock.autojump():
        limiter = RateLimiter(1, clock=clock, margin=0)
        assert limiter.try_acquire()

        async def acquirer(index: int) -> None:
            await limiter.acquire()
            order.append((index, clock.now()))

        async with anyio.create_task_group() as tg:
            for index in range(10):
                tg.start_soon(acquirer, index)
                await wait_until(lambda n=index + 1: limiter.waiting == n)
    assert order == [(index, float(index + 1)) for index in range(10)]
    assert limiter.stats.waited_seconds == sum(range(1, 11))


@pytest.mark.anyio
async def test_newcomer_does_not_barge_past_a_woken_waiter() -> None:
    """A caller arriving just as the queued waiter's token comes due queues behind it."""
    clock = FakeClock()
    limiter = RateLimiter(1, clock=clock, margin=0)
    assert limiter.try_acquire()
    order: list[tuple[str, float]] = []

    async def waiter() -> None:
        await limiter.acquire()
        order.append(("waiter", clock.now()))

    async def advance_once_the_first_token_is_taken() -> None:
        await wait_until(lambda: order != [] and clock.sleepers == 1)
        clock.advance_to(2.0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await wait_until(lambda: clock.sleepers == 1)
        tg.start_soon(advance_once_the_first_token_is_taken)
        clock.advance_to(1.0)  # the waiter is woken but has not run yet...
        await limiter.acquire()  # ...when a newcomer asks
        order.append(("newcomer", clock.now()))
    assert order == [("waiter", 1.0), ("newcomer", 2.0)]


@pytest.mark.anyio
async def test_cancelled_waiters_take_no_token() -> None:
    """Cancelling the sleeping head and a queued waiter leaves the next token to the third."""
    clock = FakeClock()
    limiter = RateLimiter(1, clock=clock, margin=0)
    assert limiter.try_acquire()
    got: dict[str, float] = {}
    scopes: dict[str, anyio.CancelScope] = {}

    async def acquirer(name: str) -> None:
        with anyio.CancelScope() as scope:
            scopes[name] = scope
            await limiter.acquire()
            got[name] = clock.now()

    async with anyio.create_task_group() as tg:
        for count, name in enumerate("abc", start=1):
            tg.start_soon(acquirer, name)
            await wait_until(lambda n=count: limiter.waiting == n)
        await wait_until(lambda: clock.sleepers == 1)  # "a" sleeps as head
        scopes["b"].cancel()
        scopes["a"].cancel()
        await wait_until(lambda: limiter.waiting == 1 and clock.sleepers == 1)
        clock.advance_to(1.0)
    assert got == {"c": 1.0}
    assert limiter.stats.acquired == 2
    assert limiter.next_available() == 2.0


@pytest.mark.anyio
async def test_cancel_right_after_promotion_passes_the_turn_on() -> None:
    """A waiter cancelled just as its turn comes hands the turn on and takes no token."""
    clock = FakeClock()
    limiter = RateLimiter(4, burst=2, clock=clock)  # binary-exact times: 0.25 s apart
    assert limiter.try_acquire()
    assert limiter.try_acquire()
    got: dict[str, float] = {}
    b_scope = anyio.CancelScope()

    async def first() -> None:
        await limiter.acquire()
        got["a"] = clock.now()
        b_scope.cancel()  # "b" was handed the turn a moment ago and has not run yet

    async def second() -> None:
        with b_scope:
            await limiter.acquire()
            got["b"] = clock.now()

    async def third() -> None:
        await limiter.acquire()
        got["c"] = clock.now()

    async with anyio.create_task_group() as tg:
        for count, task in enumerate((first, second, third), start=1):
            tg.start_soon(task)
            await wait_until(lambda n=count: limiter.waiting == n)
        clock.advance_to(0.25)
        await wait_until(lambda: "a" in got and limiter.waiting == 1 and clock.sleepers == 1)
        clock.advance_to(0.5)
    assert got == {"a": 0.25, "c": 0.5}  # "c" at 0.5, not 0.75: "b" leaked nothing
    assert limiter.stats.acquired == 4


# -- throttling and recovery ----------------------------------------------------------------


@pytest.mark.anyio
async def test_429_halves_the_rate_and_holds_for_retry_after() -> None:
    """After a 429 with Retry-After 5 nothing goes out before t=5, then paced at half rate."""
    clock = FakeClock()
    async with clock.autojump():
        limiter = RateLimiter(8, clock=clock)
        limiter.on_throttled(5.0)
        assert limiter.current_rate == 4.0
        assert limiter.throttled_until == 5.0
        grants = await hammer(limiter, clock, workers=20, until=5.5)
    # No burst at the end of the hold: the saved-up credit was dropped.
    assert sorted(grants)[:3] == [5.0, 5.25, 5.5]
    assert limiter.throttled_until is None


@pytest.mark.anyio
async def test_429_without_retry_after_holds_briefly() -> None:
    """A 429 with no Retry-After holds tokens for the default hold (1 s)."""
    clock = FakeClock(start=100.0)
    async with clock.autojump():
        limiter = RateLimiter(4, clock=clock)
        limiter.on_throttled(None)
        await limiter.acquire()
    assert clock.now() == 101.0
    assert limiter.stats.waited_seconds == 1.0


def test_simultaneous_429s_are_one_congestion_event() -> None:
    """Ten 429s for requests in flight together cut the rate once; a later one cuts it again."""
    clock = FakeClock()
    limiter = RateLimiter(20, clock=clock)
    for _ in range(10):
        limiter.on_throttled(2.0)
        clock.advance(0.01)
    assert limiter.current_rate == 10.0
    assert limiter.stats.throttled_events == 1
    assert limiter.stats.throttled_responses == 10
    clock.advance_to(2.05)  # still within hold + one interval: a straggler from the same burst
    limiter.on_throttled(2.0)
    assert limiter.current_rate == 10.0
    clock.advance_to(4.2)  # past hold (4.05) + one interval at 10/s
    limiter.on_throttled(None)
    assert limiter.current_rate == 5.0
    assert limiter.stats.throttled_events == 2


def test_sent_at_tells_stale_429s_from_new_ones() -> None:
    """With sent_at, a 429 for a request sent before the last decrease never cuts again."""
    clock = FakeClock()
    limiter = RateLimiter(20, clock=clock)
    clock.advance_to(0.5)
    limiter.on_throttled(1.0, sent_at=0.0)
    clock.advance_to(30.0)  # however late it arrives, it answers an old request
    limiter.on_throttled(0.0, sent_at=0.4)
    assert limiter.current_rate == 10.0
    limiter.on_throttled(0.0, sent_at=1.6)  # sent after the decrease: new congestion
    assert limiter.current_rate == 5.0
    limiter.on_success(sent_at=1.0)  # answers from before the last decrease do not count
    assert limiter.current_rate == 5.0
    clock.advance_to(31.0)
    limiter.on_success(sent_at=30.5)
    assert limiter.current_rate > 5.0


def test_decrease_stops_at_min_rate() -> None:
    """Repeated congestion never pushes the rate below min_rate (default rate/20)."""
    clock = FakeClock()
    limiter = RateLimiter(20, clock=clock)
    for _ in range(12):
        limiter.on_throttled(0.0)
        clock.advance(10.0)
    assert limiter.current_rate == 1.0
    assert RateLimiter(8, clock=clock, min_rate=3).current_rate == 8


@pytest.mark.anyio
async def test_recovery_is_gradual_and_capped() -> None:
    """Successes bring the rate back linearly (~recovery*rate per second) and never above it."""
    clock = FakeClock()
    seen: list[float] = []
    grants: list[float] = []
    async with clock.autojump():
        limiter = RateLimiter(20, clock=clock, recovery=0.05, margin=0)
        limiter.on_throttled(0.0)
        assert limiter.current_rate == 10.0

        async def worker(succeed: bool) -> None:
            while True:
                await limiter.acquire()
                grants.append(clock.now())
                if succeed:
                    limiter.on_success()
                    seen.append(limiter.current_rate)

        async def run_until(until: float, succeed: bool) -> None:
            async with anyio.create_task_group() as tg:
                for _ in range(30):
                    tg.start_soon(worker, succeed)
                await clock.sleep_until(until)
                tg.cancel_scope.cancel()

        await run_until(1.0, succeed=True)
        assert 10.5 < limiter.current_rate < 11.5  # about +1/s, not a jump back to 20
        recovered = limiter.current_rate
        grants.clear()
        await run_until(10.0, succeed=False)
        assert limiter.current_rate == recovered
        assert max_in_window(grants) == math.floor(recovered)  # the reduced rate bounds windows
        await run_until(40.0, succeed=True)
    assert limiter.current_rate == 20.0
    assert max(seen) == 20.0
    assert len(seen) > 500


# -- pause, slow rates, try_acquire ---------------------------------------------------------


@pytest.mark.anyio
async def test_pause_until_resume() -> None:
    """pause(None) stops all tokens however long it lasts; resume() releases the waiter at once."""
    clock = FakeClock()
    limiter = RateLimiter(5, clock=clock)
    limiter.pause(None, "signature rejected")
    assert limiter.paused
    assert limiter.paused_reason == "signature rejected"
    assert limiter.next_available() == math.inf
    assert not limiter.try_acquire()
    got: list[float] = []

    async def acquirer() -> None:
        await limiter.acquire()
        got.append(clock.now())

    async with anyio.create_task_group() as tg:
        tg.start_soon(acquirer)
        await wait_until(lambda: limiter.waiting == 1)
        clock.advance(3600.0)
        for _ in range(10):
            await anyio.lowlevel.checkpoint()
        assert got == []
        limiter.resume()
    assert got == [3600.0]
    assert not limiter.paused
    assert limiter.paused_reason is None


@pytest.mark.anyio
async def test_pause_until_a_time() -> None:
    """pause(until) hands out the next token exactly at `until`, then clears itself."""
    clock = FakeClock()
    async with clock.autojump():
        limiter = RateLimiter(5, clock=clock)
        limiter.pause(42.0, "AK locked")
        await limiter.acquire()
        assert clock.now() == 42.0
        assert not limiter.paused
        assert limiter.paused_reason is None


@pytest.mark.anyio
async def test_rate_below_one_per_second() -> None:
    """0.5/s means one grant every 2 s."""
    clock = FakeClock()
    async with clock.autojump():
        limiter = RateLimiter(0.5, clock=clock, margin=0)
        grants = await hammer(limiter, clock, workers=3, until=7.0)
    assert sorted(grants)[:4] == [0.0, 2.0, 4.0, 6.0]


@pytest.mark.anyio
async def test_try_acquire_and_next_available() -> None:
    """try_acquire takes up to the burst, then refuses, and never jumps the queue."""
    clock = FakeClock()
    limiter = RateLimiter(5, burst=3, clock=clock)
    assert [limiter.try_acquire() for _ in range(4)] == [True, True, True, False]
    assert limiter.next_available() == pytest.approx(0.2)
    got: list[float] = []

    async def acquirer() -> None:
        await limiter.acquire()
        got.append(clock.now())

    async with anyio.create_task_group() as tg:
        tg.start_soon(acquirer)
        await wait_until(lambda: clock.sleepers == 1)
        clock.advance_to(limiter.next_available())
        assert not limiter.try_acquire()  # the token is the queued waiter's
    assert len(got) == 1
    assert limiter.stats.acquired == 4


def test_window_parameter_expresses_per_minute_budgets() -> None:
    """rate=100/60 with window=60 allows 100 grants per minute, not 1 per second."""
    clock = FakeClock()

    async def main() -> list[float]:
        async with clock.autojump():
            limiter = RateLimiter(100 / 60, window=60, clock=clock, margin=0)
            return await hammer(limiter, clock, workers=5, until=600.0)

    grants = anyio.run(main, backend="asyncio")
    assert max_in_window(grants, window=60.0) <= 100
    assert len(grants) >= 1000


def test_invalid_settings_are_rejected_and_burst_is_clipped() -> None:
    """Nonsense settings raise ValueError; a burst above the window cap is clipped to it."""
    clock = FakeClock()
    bad: list[dict[str, float]] = [
        {"rate": 0},
        {"rate": math.inf},
        {"rate": 5, "burst": 0},
        {"rate": 5, "min_rate": 6},
        {"rate": 5, "decrease": 0},
        {"rate": 5, "window": 0},
        {"rate": 5, "recovery": -1},
        {"rate": 5, "margin": -0.1},
    ]
    for kwargs in bad:
        with pytest.raises(ValueError, match="must"):
            RateLimiter(clock=clock, **kwargs)  # type: ignore[arg-type]
    assert RateLimiter(20, burst=50, clock=clock).burst == 20
    assert RateLimiter(0.3, clock=clock).burst == 1
    assert RateLimiter(7.9, clock=clock).window_limit == 7


# -- clocks ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_fake_clock_wakes_sleepers_in_deadline_order() -> None:
    """advance() wakes exactly the sleepers that are due, earliest first; cancelled ones vanish."""
    clock = FakeClock()
    assert isinstance(clock, Clock)
    woke: list[float] = []

    async def sleeper(deadline: float) -> None:
        await clock.sleep_until(deadline)
        woke.append(clock.now())

    async with anyio.create_task_group() as tg:
        for deadline in (3.0, 1.0, 2.0, 9.0):
            tg.start_soon(sleeper, deadline)
        await wait_until(lambda: clock.sleepers == 4)
        assert clock.next_deadline == 1.0
        clock.advance(2.5)
        await wait_until(lambda: len(woke) == 2)
        assert clock.sleepers == 2
        tg.cancel_scope.cancel()
    assert woke == [2.5, 2.5]
    assert clock.sleepers == 0
    assert clock.next_deadline is None
    with pytest.raises(ValueError, match="cannot move"):
        clock.advance_to(1.0)
    await clock.sleep_until(0.0)  # a past deadline returns at once


@pytest.mark.anyio
async def test_autojump_lets_errors_through_unwrapped() -> None:
    """An error in the autojump body surfaces as itself, and the clock can autojump again."""
    clock = FakeClock()

    async def fail_at_five() -> None:
        async with clock.autojump():
            await clock.sleep_until(5.0)
            raise LookupError("boom")

    with pytest.raises(LookupError, match="boom"):
        await fail_at_five()
    assert clock.now() == 5.0
    async with clock.autojump():
        await clock.sleep_until(7.0)
    assert clock.now() == 7.0


@pytest.mark.anyio
async def test_autojump_runs_an_hour_in_well_under_a_second() -> None:
    """One hour of virtual time at 2/s with five workers takes a fraction of a real second."""
    clock = FakeClock()
    started = time.perf_counter()
    async with clock.autojump():
        limiter = RateLimiter(2, clock=clock)
        grants = await hammer(limiter, clock, workers=5, until=3600.0)
        await clock.sleep_until(4000.0)  # the test body may sleep on the clock as well
    elapsed = time.perf_counter() - started
    assert clock.now() == 4000.0
    assert len(grants) >= 6858  # two per 1.05 s (window plus margin)
    assert max_in_window(grants, window=1.05) <= 2
    assert elapsed < 1.0


@pytest.mark.anyio
async def test_real_clock_holds_the_window() -> None:
    """On the real clock at 50/s a full burst leaves nothing more within the same second."""
    clock = MonotonicClock()
    assert isinstance(clock, Clock)
    bursty = RateLimiter(50, clock=clock)
    smooth = RateLimiter(50, burst=1, clock=clock)
    with anyio.move_on_after(0.5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(hammer, bursty, clock, 20, math.inf)
            tg.start_soon(hammer, smooth, clock, 20, math.inf)
    # A token bucket would be at ~75 here (50 at once, then refills at 50/s).
    assert bursty.stats.acquired == 50
    assert 15 <= smooth.stats.acquired <= 26  # one every 20 ms
