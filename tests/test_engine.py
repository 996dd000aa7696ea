"""The engine with the in-package test double: results, deadlines, errors, intake rules."""

from __future__ import annotations

from collections import Counter

import anyio
import pytest

from watcher._clock import FakeClock
from watcher._exceptions import (
    AuthError,
    ClosedError,
    ConnectError,
    PermanentError,
    RateLimitedError,
    ServerError,
    WaitTimeoutError,
    WatcherError,
)
from watcher._models import Outcome, TaskSnapshot
from watcher._watcher import Watcher
from watcher.config import PollingConfig
from watcher.testing import FakeSource, ZeroBackoff, finished, running

pytestmark = pytest.mark.anyio


def after(polls: int) -> FakeSource:
    """A source whose tasks finish on their `polls`-th poll."""
    return FakeSource(lambda tid, n: finished(tid) if n >= polls else running(tid, done=n))


async def test_every_id_reported_exactly_once() -> None:
    """500 ids that finish on their third poll each give exactly one event."""
    source = after(3)
    ids = [f"t{i}" for i in range(500)]
    async with Watcher(
        sources={"fake": source}, policy=ZeroBackoff(), rates={"fake": (1e6, None)}
    ) as w:
        await w.add(ids)
        events = [e async for e in w.results()]
    assert Counter(e.task_id for e in events) == Counter(ids)
    assert {e.outcome for e in events} == {Outcome.SUCCEEDED}
    assert all(e.polls == 3 for e in events)
    assert set(source.calls.values()) == {3}


async def test_outcomes_follow_the_counts() -> None:
    """Partial and failed counts give partial and failed outcomes."""

    def handler(tid: str, n: int) -> TaskSnapshot:
        return {
            "ok": finished(tid),
            "part": finished(tid, succeeded=2, failed=1),
            "bad": finished(tid, succeeded=0, failed=3),
        }[tid]

    async with Watcher(sources={"fake": FakeSource(handler)}, policy=ZeroBackoff()) as w:
        await w.add(["ok", "part", "bad"])
        events = await w.wait_all(["ok", "part", "bad"], timeout=10)
    assert [e.outcome for e in events] == [Outcome.SUCCEEDED, Outcome.PARTIAL, Outcome.FAILED]


async def test_deadline_gives_timed_out() -> None:
    """A task that never finishes ends as timed_out at its deadline (virtual time)."""
    clock = FakeClock()
    source = FakeSource(lambda tid, n: running(tid, done=1))
    async with clock.autojump(), Watcher(sources={"fake": source}, clock=clock) as w:
        await w.add(["slow"], deadline=600)
        event = await w.wait("slow")
    assert event.outcome is Outcome.TIMED_OUT
    assert clock.now() == pytest.approx(600, abs=1)
    assert 2 <= source.calls["slow"] <= 200  # first poll, ..., a last one at the deadline


async def test_max_polls_gives_timed_out() -> None:
    """With max_polls, a task still running after that many polls ends as timed_out."""
    source = FakeSource(lambda tid, n: running(tid))
    async with Watcher(
        sources={"fake": source}, policy=ZeroBackoff(), polling=PollingConfig(max_polls=4)
    ) as w:
        await w.add(["t"])
        event = await w.wait("t")
    assert event.outcome is Outcome.TIMED_OUT
    assert source.calls["t"] == 4


async def test_permanent_error_ends_with_error_details() -> None:
    """A permanent error ends the task with outcome error, code and request id."""

    def handler(tid: str, n: int) -> TaskSnapshot:
        raise PermanentError(
            "invalid parameter",
            status=400,
            error_code="MSS.000000003",
            error_msg="invalid task id",
            request_id="req-1",
        )

    async with Watcher(sources={"fake": FakeSource(handler)}, policy=ZeroBackoff()) as w:
        await w.add(["t"])
        event = await w.wait("t")
    assert event.outcome is Outcome.ERROR
    assert event.error is not None
    assert (event.error.kind, event.error.code, event.error.request_id) == (
        "permanent",
        "MSS.000000003",
        "req-1",
    )
    assert event.to_dict()["error"]["message"] == "invalid task id"


async def test_transient_errors_never_produce_a_result() -> None:
    """Timeouts, resets, 5xx and 429s are retried until the real outcome arrives."""
    errors = [
        ServerError("boom", status=503),
        ConnectError("reset"),
        RateLimitedError("slow", status=429, retry_after=0.0),
        ServerError("again"),
    ]

    def handler(tid: str, n: int) -> TaskSnapshot:
        if n <= len(errors):
            raise errors[n - 1]
        return finished(tid, succeeded=1, failed=1)

    clock = FakeClock()
    async with clock.autojump(), Watcher(sources={"fake": FakeSource(handler)}, clock=clock) as w:
        await w.add(["t"])
        events = [e async for e in w.results()]
    assert [e.outcome for e in events] == [Outcome.PARTIAL]
    assert events[0].polls == 5
    assert events[0].error is None


async def test_auth_errors_pause_instead_of_burning_budget() -> None:
    """Refused credentials pause the source: a handful of polls per virtual hour, not thousands."""
    source = FakeSource(
        lambda tid, n: (_ for _ in ()).throw(
            AuthError("bad signature", status=401, error_code="APIGW.0303")
        )
    )
    clock = FakeClock()
    async with (
        clock.autojump(),
        Watcher(sources={"fake": source}, clock=clock, rates={"fake": (20.0, None)}) as w,
    ):
        await w.add([f"t{i}" for i in range(50)], deadline=3600)
        await clock.sleep_until(3000)
        calls = sum(source.calls.values())
    assert 1 <= calls <= 12


async def test_deadlines_end_watches_of_a_paused_source() -> None:
    """Credentials refused for hours: each watch still ends timed_out at its own deadline,
    without polls the pause does not allow, and the run's wait comes to an end."""
    source = FakeSource(
        lambda tid, n: (_ for _ in ()).throw(
            AuthError("token revoked", status=401, error_code="APIGW.0307")
        )
    )
    clock = FakeClock()
    async with (
        clock.autojump(),
        Watcher(sources={"fake": source}, clock=clock, rates={"fake": (20.0, None)}) as w,
    ):
        await w.add(["a", "b", "c"], deadline=600)
        await w.add(["late"], deadline=5400)  # ends after the source stops probing
        await clock.sleep_until(700)
        first = {e.task_id for e in w.finished_events()}
        late_pending = w.is_pending("late")
        await clock.sleep_until(5500)
        events = {e.task_id: e for e in w.finished_events()}
        calls = sum(source.calls.values())
    assert first == {"a", "b", "c"} and late_pending
    assert set(events) == {"a", "b", "c", "late"}
    assert {e.outcome for e in events.values()} == {Outcome.TIMED_OUT}
    assert 1 <= calls <= 4  # the probes only


async def test_auth_recovers_after_probe() -> None:
    """When credentials work again, one probe succeeds and every task finishes."""
    state = {"broken": True}

    def handler(tid: str, n: int) -> TaskSnapshot:
        if state["broken"]:
            raise AuthError("expired token", status=401, error_code="APIGW.0307")
        return finished(tid)

    clock = FakeClock()
    source = FakeSource(handler)
    async with clock.autojump(), Watcher(sources={"fake": source}, clock=clock) as w:
        await w.add([f"t{i}" for i in range(20)])
        await clock.sleep_until(10)
        state["broken"] = False
        events = await w.wait_all(timeout=None)
    assert len(events) == 20
    assert {e.outcome for e in events} == {Outcome.SUCCEEDED}


async def test_duplicates_and_invalid_ids_are_reported() -> None:
    """add() reports duplicates and invalid ids with reasons; each task is watched once."""
    source = after(1)
    async with Watcher(sources={"fake": source}, policy=ZeroBackoff()) as w:
        first = await w.add(["a", "b", "a", "", "x/y", "bad\x00id"])
        second = await w.add(["b", "c"])
        await w.wait_all(timeout=10)
    assert first.accepted == ["a", "b", "x/y"]
    assert first.duplicates == ["a"]
    assert [i for i, _ in first.invalid] == ["", "bad\x00id"]
    assert "control character" in first.invalid[1][1]
    assert second.accepted == ["c"] and second.duplicates == ["b"]
    assert source.calls["a"] == 1


async def test_wait_all_timeout_raises_with_what_arrived() -> None:
    """wait_all gives up with a TimeoutError when its timeout passes first, and the error
    keeps the events that did arrive and names the ids still pending."""
    source = FakeSource(lambda tid, n: finished(tid) if tid == "quick" else running(tid))
    async with Watcher(
        sources={"fake": source}, policy=ZeroBackoff(), rates={"fake": (50.0, None)}
    ) as w:
        await w.add(["never", "quick"])
        await w.wait("quick")
        with pytest.raises(TimeoutError) as caught:
            await w.wait_all(["never", "quick"], timeout=0.2)
        with pytest.raises(WaitTimeoutError) as everything:
            await w.wait_all(timeout=0.05)
    assert isinstance(caught.value, WaitTimeoutError)
    assert [e.task_id for e in caught.value.events] == ["quick"]
    assert caught.value.pending == ["never"]
    assert "1 of 2 tasks still pending" in str(caught.value)
    assert [e.task_id for e in everything.value.events] == ["quick"]
    assert everything.value.pending == ["never"]


async def test_labels_batch_and_event_fields() -> None:
    """Events carry batch, labels, watched_at and a stable event id."""
    async with Watcher(sources={"fake": after(1)}, policy=ZeroBackoff()) as w:
        await w.add(["t"], batch="upload-7", labels={"team": "kb"})
        event = await w.wait("t")
    again_id = event.event_id
    async with Watcher(sources={"fake": after(1)}, policy=ZeroBackoff()) as w:
        await w.add(["t"], batch="upload-7")
        assert (await w.wait("t")).event_id == again_id
    data = event.to_dict()
    assert data["batch"] == "upload-7"
    assert data["labels"] == {"team": "kb"}
    assert data["watched_at"] <= data["detected_at"]


async def test_oldest_due_first() -> None:
    """Watches are polled in due order: an earlier-added batch is never starved."""
    order: list[str] = []

    def handler(tid: str, n: int) -> TaskSnapshot:
        order.append(tid)
        return finished(tid)

    clock = FakeClock()
    async with (
        clock.autojump(),
        Watcher(
            sources={"fake": FakeSource(handler)},
            clock=clock,
            rates={"fake": (10.0, 1)},
            polling=PollingConfig(workers=1),
        ) as w,
    ):
        await w.add([f"a{i}" for i in range(20)])
        await w.add([f"b{i}" for i in range(20)])
        await w.wait_all(timeout=None)
    first_b = order.index("b0")
    assert order[:first_b] == [f"a{i}" for i in range(first_b)]
    assert order.index("a19") < order.index("b19")
    assert len(order) == 40


async def test_rate_never_exceeded_on_virtual_clock() -> None:
    """At 20 req/s no 1-second window holds more than 20 polls."""
    clock = FakeClock()
    times: list[float] = []

    def handler(tid: str, n: int) -> TaskSnapshot:
        times.append(clock.now())
        return finished(tid) if n >= 3 else running(tid, done=n)

    async with (
        clock.autojump(),
        Watcher(
            sources={"fake": FakeSource(handler)},
            clock=clock,
            policy=ZeroBackoff(),
            rates={"fake": (20.0, None)},
        ) as w,
    ):
        await w.add([f"t{i}" for i in range(200)])
        await w.wait_all(timeout=None)
    assert len(times) == 600
    j = 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0 + 1e-9:  # float noise in virtual time
            j += 1
        assert i - j + 1 <= 20
    assert times[-1] == pytest.approx(600 / 20, rel=0.1)


async def test_closed_watcher_refuses_use() -> None:
    """A closed Watcher refuses add() and a second enter."""
    w = Watcher(sources={"fake": after(1)})
    async with w:
        pass
    with pytest.raises(ClosedError):
        await w.add(["t"])
    with pytest.raises(ClosedError):
        async with w:
            pass


async def test_unknown_source_is_an_error() -> None:
    """Adding to a source that does not exist names the known ones."""
    async with Watcher(sources={"fake": after(1)}) as w:
        with pytest.raises(WatcherError, match="fake"):
            await w.add(["t"], source="nope")


async def test_source_bug_does_not_stop_the_engine() -> None:
    """An unexpected exception from a source is retried, not fatal."""

    def handler(tid: str, n: int) -> TaskSnapshot:
        if n == 1:
            raise KeyError("bug")
        return finished(tid)

    async with Watcher(sources={"fake": FakeSource(handler)}, policy=ZeroBackoff()) as w:
        await w.add(["t"])
        with anyio.fail_after(10):
            event = await w.wait("t")
    assert event.outcome is Outcome.SUCCEEDED and event.polls == 2


def test_embedded_library_prints_nothing_on_stdout() -> None:
    """Inside a program that configures no logging, watcher writes nothing to stdout."""
    import subprocess
    import sys

    script = """
import anyio
from watcher._watcher import Watcher
from watcher._exceptions import ServerError
from watcher.testing import FakeSource, ZeroBackoff, finished

def handler(tid, n):
    if n == 1:
        raise ServerError("boom", status=503, request_id="r1")
    return finished(tid, status="NEVER-SEEN-BEFORE")

async def main():
    async with Watcher(sources={"fake": FakeSource(handler)}, policy=ZeroBackoff(), sinks=[]) as w:
        await w.add(["a", "b"])
        await w.wait_all(timeout=10)

anyio.run(main)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "poll failed" not in result.stderr  # debug and info stay quiet by default
