"""Backoff policies are pure functions of their inputs: bounded, jittered, progress-aware."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watcher._assembly import policy_from
from watcher._exceptions import RateLimitedError, ServerError
from watcher._models import TaskSnapshot
from watcher.backoff import (
    Bounds,
    ProgressPolicy,
    SimplePolicy,
    decorrelated_jitter,
    exponential_delay,
    make_policy,
    update_bounds,
)
from watcher.config import PollingConfig

T0 = 1_700_000_000.0  # a wall-clock epoch origin for the tests


@dataclass
class History:
    polls: int = 1
    errors: int = 0
    last_delay: float = 0.0
    watched_at: float = T0
    bounds: Bounds | None = None


def snap(done: int, total: int, *, begin: float | None = T0) -> TaskSnapshot:
    return TaskSnapshot.from_fields(
        "t",
        total_count=total,
        success_count=done,
        failure_count=0,
        begin_time=int(begin * 1000) if begin is not None else None,
    )


@given(attempt=st.integers(min_value=-5, max_value=10**6), seed=st.integers(0, 2**32))
def test_exponential_delay_is_bounded_for_any_attempt(attempt: int, seed: int) -> None:
    """Full jitter stays within [0, cap] even for huge attempt numbers (no overflow)."""
    delay = exponential_delay(attempt, initial=2, multiplier=1.5, cap=60, rng=random.Random(seed))
    assert 0.0 <= delay <= 60.0


def test_exponential_without_jitter_grows_then_caps() -> None:
    """Without jitter the curve is initial * multiplier**n, capped."""
    delays = [exponential_delay(n, initial=2, multiplier=2, cap=20, jitter=False) for n in range(6)]
    assert delays == [2, 4, 8, 16, 20, 20]


@given(prev=st.floats(min_value=0, max_value=1e6), seed=st.integers(0, 2**32))
def test_decorrelated_jitter_within_bounds(prev: float, seed: int) -> None:
    """Decorrelated jitter stays between initial and cap."""
    delay = decorrelated_jitter(prev, initial=1, cap=30, rng=random.Random(seed))
    assert 1.0 <= delay <= 30.0


def test_fixed_policy_is_constant() -> None:
    """The fixed policy always waits its interval."""
    policy = SimplePolicy(kind="fixed", initial=15)
    rng = random.Random(1)
    assert {
        policy.next_delay(History(polls=n), snap(1, 10), now=T0, rng=rng) for n in range(1, 20)
    } == {15}


def test_errors_use_their_own_curve_and_honour_retry_after() -> None:
    """Errors back off on the error curve; a 429's Retry-After is a floor."""
    policy = make_policy("exponential", error_initial=1, error_multiplier=2, error_max=8)
    rng = random.Random(3)
    for errors in range(1, 10):
        delay = policy.next_delay(History(errors=errors), ServerError("x"), now=T0, rng=rng)
        assert 0.5 <= delay <= 8
    throttled = RateLimitedError("slow down", retry_after=42)
    assert policy.next_delay(History(errors=1), throttled, now=T0, rng=rng) >= 42


def test_lower_bound_from_whole_counts() -> None:
    """c of T after t seconds bounds the finish below by t*T/(c+1) and above by t*T/c."""
    b = update_bounds(
        None, now=T0 + 100, origin=T0, origin_known=True, count=10, total=100, tolerance=0.0
    )
    assert b is not None
    assert b.lo == pytest.approx(T0 + 100 * 100 / 11)
    assert b.hi == pytest.approx(T0 + 1000)


def test_bounds_narrow_as_observations_accumulate() -> None:
    """Intersecting a second observation never widens the interval."""
    first = update_bounds(
        None, now=T0 + 100, origin=T0, origin_known=True, count=10, total=100, tolerance=0.05
    )
    second = update_bounds(
        first, now=T0 + 500, origin=T0, origin_known=True, count=52, total=100, tolerance=0.05
    )
    assert first is not None and second is not None
    assert second.lo >= first.lo
    assert second.hi <= first.hi
    assert second.hi - second.lo < first.hi - first.lo


def test_unknown_origin_gives_no_upper_bound() -> None:
    """Without begin_time only the lower bound holds."""
    b = update_bounds(
        None, now=T0 + 100, origin=T0, origin_known=False, count=10, total=100, tolerance=0.05
    )
    assert b is not None and math.isinf(b.hi)


def test_no_items_counted_gives_no_bounds() -> None:
    """A count of 0 says nothing reliable (the task may be queued)."""
    assert (
        update_bounds(
            None, now=T0 + 5, origin=T0, origin_known=True, count=0, total=10, tolerance=0.05
        )
        is None
    )


def test_progress_policy_sleeps_until_the_earliest_finish() -> None:
    """A task 10% done after 60 s is next polled one step after its earliest possible finish."""
    policy = ProgressPolicy(fallback=SimplePolicy(cap=60), tolerance=0.0, growth=100)
    history = History()
    now = T0 + 60
    history.bounds = policy.observe(history, snap(10, 100), now=now)
    delay = policy.next_delay(history, snap(10, 100), now=now, rng=random.Random(1))
    earliest = 60 * 100 / 11 - 60
    assert earliest < delay <= earliest + 0.02 * 60


def test_progress_policy_never_sleeps_longer_than_growth_allows() -> None:
    """A sleep is capped at growth x elapsed (or growth_min) so a speed-up is not missed."""
    policy = ProgressPolicy(fallback=SimplePolicy(cap=60), tolerance=0.0, growth=1.0, growth_min=0)
    history = History()
    now = T0 + 100
    history.bounds = policy.observe(history, snap(1, 1000), now=now)
    delay = policy.next_delay(history, snap(1, 1000), now=now, rng=random.Random(1))
    assert delay == pytest.approx(100)


def test_progress_policy_steps_through_the_window() -> None:
    """Past the earliest finish, polls come in short steps bounded by step_cap."""
    policy = ProgressPolicy(fallback=SimplePolicy(cap=60), tolerance=0.05, step_cap=15)
    history = History()
    now = T0 + 990
    history.bounds = policy.observe(history, snap(99, 100), now=now)
    delay = policy.next_delay(history, snap(99, 100), now=now, rng=random.Random(1))
    assert policy.floor <= delay <= 15


def test_progress_policy_falls_back_without_progress() -> None:
    """No counts yet: the exponential fallback decides."""
    policy = make_policy("progress", initial=2, max_delay=60, min_delay=1)
    history = History(polls=1)
    delay = policy.next_delay(history, snap(0, 100), now=T0 + 1, rng=random.Random(1))
    assert 1 <= delay <= 2


def test_all_counted_but_not_ended_polls_soon() -> None:
    """Every item counted but end_time unset: the task is closing, poll again soon."""
    policy = make_policy("progress", min_delay=1)
    delay = policy.next_delay(History(), snap(100, 100), now=T0 + 50, rng=random.Random(1))
    assert delay == pytest.approx(2)


@given(
    counts=st.lists(st.integers(1, 999), min_size=1, max_size=8),
    seed=st.integers(0, 1000),
)
def test_progress_delays_always_within_floor_and_ceiling(counts: list[int], seed: int) -> None:
    """Whatever the observations, delays stay within [floor, ceiling]."""
    policy = make_policy("progress", min_delay=1, max_delay=60)
    assert isinstance(policy, ProgressPolicy)
    history = History()
    now = T0
    for count in sorted(counts):
        now += 30
        history.bounds = policy.observe(history, snap(count, 1000), now=now)
        delay = policy.next_delay(history, snap(count, 1000), now=now, rng=random.Random(seed))
        assert policy.floor <= delay <= policy.ceiling
        history.polls += 1


# --- the progress policy: the window walk, hedges, counts that mislead ----------------------


def observe_and_plan(
    policy: ProgressPolicy, history: History, snapshot: TaskSnapshot, at: float
) -> float:
    """One poll answered ``at`` seconds after T0: update the bounds, return the next delay."""
    now = T0 + at
    history.bounds = policy.observe(history, snapshot, now=now)
    return policy.next_delay(history, snapshot, now=now, rng=random.Random(1))


def test_agreeing_observations_narrow_the_window_but_not_the_hedge() -> None:
    """A second agreeing observation narrows the interval; sleeps stay within growth x elapsed."""
    policy = ProgressPolicy(tolerance=0.05, growth=1.0, growth_min=120)
    history = History()
    # 0.1 items/s of 1,000: finishes at 10,000 s.
    assert observe_and_plan(policy, history, snap(10, 1000), 100) == pytest.approx(120)
    first = history.bounds
    assert observe_and_plan(policy, history, snap(22, 1000), 220) == pytest.approx(220)
    second = history.bounds
    assert first is not None and second is not None
    assert first.lo < second.lo <= 10_000 + T0 <= second.hi <= first.hi


def test_disagreeing_observation_starts_over() -> None:
    """A count that jumps ahead of the interval resets it to the newest observation."""
    policy = ProgressPolicy(tolerance=0.05, growth=1.0, growth_min=120)
    history = History()
    observe_and_plan(policy, history, snap(10, 1000), 100)
    observe_and_plan(policy, history, snap(22, 1000), 220)
    delay = observe_and_plan(policy, history, snap(100, 1000), 300)
    fresh = update_bounds(
        None, now=T0 + 300, origin=T0, origin_known=True, count=100, total=1000, tolerance=0.05
    )
    assert history.bounds is not None and fresh is not None
    assert (history.bounds.lo, history.bounds.hi) == (fresh.lo, fresh.hi)
    assert delay == pytest.approx(300)  # growth x elapsed, well before the new lower bound


def test_without_begin_time_the_window_has_no_end() -> None:
    """No begin_time: only the lower bound holds, and the window is walked one step at a time."""
    policy = ProgressPolicy(tolerance=0.05, growth=1.0, growth_min=120, step_cap=15)
    history = History()
    delay = observe_and_plan(policy, history, snap(90, 100, begin=None), 1000)
    assert history.bounds is not None and math.isinf(history.bounds.hi)
    assert delay == pytest.approx(history.bounds.lo + 15 - (T0 + 1000))


def test_window_is_walked_in_equal_steps_ending_at_the_latest_finish() -> None:
    """Inside the window the rest is cut into equal steps of at most step_cap; the last is hi."""
    policy = ProgressPolicy(step=0.02, step_cap=15)
    now = T0 + 1000
    history = History(bounds=Bounds(now - 5, now + 40, 100))
    assert policy.next_delay(history, snap(97, 100), now=now, rng=random.Random(1)) == (
        pytest.approx(40 / 3)
    )
    history.bounds = Bounds(now - 5, now + 7, 100)
    assert policy.next_delay(history, snap(99, 100), now=now, rng=random.Random(1)) == (
        pytest.approx(7)
    )


def test_first_poll_of_the_window_is_one_step_past_its_start() -> None:
    """Polling at the earliest finish itself could not find the task done: go one step in."""
    policy = ProgressPolicy(step=0.02, step_cap=15)
    now = T0 + 1000
    history = History(bounds=Bounds(now + 100, now + 130, 100))
    delay = policy.next_delay(history, snap(90, 100), now=now, rng=random.Random(1))
    assert delay == pytest.approx(100 + 15)


def test_outliving_the_window_rebuilds_the_bounds_and_doubles_the_step() -> None:
    """Still running after hi: bounds come from the newest count alone and steps grow."""
    policy = ProgressPolicy(tolerance=0.05, step=0.02, step_cap=15)
    history = History(bounds=Bounds(T0 + 900, T0 + 1000, 100))
    delay = observe_and_plan(policy, history, snap(99, 100), 1100)
    bounds = history.bounds
    assert bounds is not None
    assert bounds.misses == 1
    assert bounds.lo == pytest.approx(T0 + 1100 * 100 * 0.95 / 100)
    assert bounds.hi == pytest.approx(T0 + 1100 * 100 * 1.05 / 99)
    assert 15 < delay <= 30


def test_nothing_counted_yet_waits_at_most_growth_times_elapsed() -> None:
    """0 of 100 after 50 s: at least the fallback's wait, at most growth x elapsed."""
    policy = ProgressPolicy(fallback=SimplePolicy(initial=2, cap=60, floor=1), growth=1.0)
    delay = policy.next_delay(History(), snap(0, 100), now=T0 + 50, rng=random.Random(1))
    assert delay == pytest.approx(50)
    # One item of total 1 could arrive any moment: the fallback decides.
    delay = policy.next_delay(History(), snap(0, 1), now=T0 + 50, rng=random.Random(1))
    assert 1 <= delay <= 2


def test_growth_min_comes_from_the_config() -> None:
    """polling.backoff.growth_min reaches the policy, as a duration."""
    polling = PollingConfig.model_validate({"backoff": {"growth_min": "5m"}})
    policy = policy_from(polling)
    assert isinstance(policy, ProgressPolicy)
    assert policy.growth_min == 300
    default = policy_from(PollingConfig())
    assert isinstance(default, ProgressPolicy)
    assert default.growth_min == 120


@given(
    steps=st.lists(
        st.tuples(st.floats(0.0, 5000), st.integers(0, 1200), st.booleans()),
        min_size=1,
        max_size=12,
    ),
    total=st.integers(1, 1000),
    min_delay=st.sampled_from([0.0, 1.0]),
)
def test_any_observations_give_bounded_delays(
    steps: list[tuple[float, int, bool]], total: int, min_delay: float
) -> None:
    """Counts that stall, jump, go back or exceed the total never give a delay out of range."""
    policy = make_policy("progress", min_delay=min_delay)
    assert isinstance(policy, ProgressPolicy)
    history = History()
    at = 0.0
    for gap, count, known in steps:
        at += gap
        snapshot = snap(min(count, total), total, begin=T0 if known else None)
        delay = observe_and_plan(policy, history, snapshot, at)
        assert policy.floor <= delay <= policy.ceiling
        history.polls += 1


# --- whole watches against simulated tasks ----------------------------------------------------


def watch(
    policy: ProgressPolicy,
    count_at: Callable[[float], int],
    total: int,
    finish: float,
    *,
    begin: float | None = T0,
    first: float = 5.0,
    until: float = 24 * 3600.0,
) -> tuple[float, int]:
    """Poll a task that finishes ``finish`` s after T0 with ``policy``: (latency, polls)."""
    history = History(polls=0)
    at = first
    while at < until:
        history.polls += 1
        if at >= finish:
            return at - finish, history.polls
        delay = observe_and_plan(policy, history, snap(count_at(at), total, begin=begin), at)
        assert policy.floor <= delay <= policy.ceiling
        at += delay
    return math.inf, history.polls


def linear(
    total: int, finish: float, *, noise: float = 0.05, seed: int = 1
) -> Callable[[float], int]:
    rng = random.Random(seed)

    def count_at(at: float) -> int:
        fraction = at / finish * (1 + rng.uniform(-noise, noise))
        return min(total - 1, math.floor(total * min(max(fraction, 0.0), 1.0)))

    return count_at


@pytest.mark.parametrize(("total", "finish"), [(10, 300), (500, 600), (1000, 3000), (37, 5000)])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_linear_noisy_task_is_found_within_one_step(total: int, finish: float, seed: int) -> None:
    """Linear progress with +-5% noise: found within step_cap of its end, in few polls."""
    policy = make_policy("progress")
    assert isinstance(policy, ProgressPolicy)
    latency, polls = watch(policy, linear(total, finish, seed=seed), total, finish)
    assert latency <= policy.step_cap
    assert polls <= 40  # polling every 15 s would take up to 333


def test_slow_start_is_found_within_its_running_time() -> None:
    """Nothing for 300 s, then fast: the growth hedge finds it by about twice its duration."""
    policy = make_policy("progress")
    assert isinstance(policy, ProgressPolicy)

    def count_at(at: float) -> int:
        return max(0, math.floor((at - 300) / 3))  # 100 items in 300 s after a 300 s start

    latency, _ = watch(policy, count_at, 100, 600.0)
    assert latency <= max(policy.growth_min, policy.growth * 600)


def test_linear_task_that_ends_early_is_found_within_growth() -> None:
    """Linear for 1,000 s of a planned 10,000, then done at once: found within growth x 1,000 s."""
    policy = make_policy("progress")
    assert isinstance(policy, ProgressPolicy)
    finish = 1000.0
    latency, _ = watch(policy, lambda at: math.floor(at / 10), 1000, finish)
    assert latency <= max(policy.growth_min, policy.growth * finish)


def test_count_stuck_one_short_is_not_polled_every_step() -> None:
    """99 of 100 for hours: the walk's steps double, so polls stay few."""
    policy = make_policy("progress")
    assert isinstance(policy, ProgressPolicy)
    latency, polls = watch(
        policy, lambda at: min(99, math.floor(at / 10)), 100, math.inf, until=6 * 3600.0
    )
    assert latency == math.inf
    assert polls <= 60
