"""Backoff policies are pure functions of their inputs: bounded, jittered, progress-aware."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
    """A task 10% done after 60 s is next polled near its earliest possible finish."""
    policy = ProgressPolicy(fallback=SimplePolicy(cap=60), tolerance=0.0, growth=100)
    history = History()
    now = T0 + 60
    history.bounds = policy.observe(history, snap(10, 100), now=now)
    delay = policy.next_delay(history, snap(10, 100), now=now, rng=random.Random(1))
    assert delay == pytest.approx(60 * 100 / 11 - 60)


def test_progress_policy_never_sleeps_longer_than_growth_allows() -> None:
    """A sleep is capped at growth x elapsed (or the fallback cap) so a speed-up is not missed."""
    policy = ProgressPolicy(fallback=SimplePolicy(cap=60), tolerance=0.0, growth=1.0)
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
