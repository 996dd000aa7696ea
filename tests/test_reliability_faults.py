"""Issue 7, item 1: the fault campaign, a real Watcher against the simulator with each fault on.

The real engine (MetaStudioSource over loopback HTTP with AK/SK, scheduler, rate limiter,
backoff, classifier, memory store, a sink) runs on one ``FakeClock`` in autojump mode, and the
simulator uses the same clock for task life, signature dates, its rate limit and its stats
windows. So virtual minutes (a ten-minute outage) pass in milliseconds, and the budget is
counted by the simulator on the clock the limiter uses. Injected latency is real time, as the
read timeout is; while every worker waits for a slow answer nothing waits on the clock, so
virtual time runs on: the slow campaigns assert what latency could break (results, budget,
timeouts), not how long things take.

Every campaign asserts the same promises: each task ends exactly once (one event, one
delivery), with its true outcome and the simulator's final body; the scheduler granted every
request the simulator saw (``requests == polls``); and no sliding second held more requests
than the configured rate.
"""

from __future__ import annotations

import dataclasses
import gc
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import pytest
from anyio.lowlevel import checkpoint

from watcher._clock import FakeClock
from watcher._models import Outcome, ResultEvent
from watcher._watcher import Watcher
from watcher.config import Config, MetaStudioSourceConfig
from watcher.scheduler import SourceScheduler
from watcher.simulator import FaultConfig, Simulator, SimulatorConfig
from watcher.sources import MetaStudioSource
from watcher.testing import MemorySink

pytestmark = pytest.mark.anyio

AK, SK = "AKRELIABILITYFAULTS1", "reliability-faults-secret"
RATE = 20  # the watcher's budget, requests per second
READ_TIMEOUT = 0.25  # seconds, real time, in the latency campaign (5 s elsewhere)
ERROR_MAX = 20.0  # the error backoff's cap, virtual seconds

EXPECTED = {
    "succeeded": Outcome.SUCCEEDED,
    "partial": Outcome.PARTIAL,
    "failed": Outcome.FAILED,
    "cancelled": Outcome.CANCELLED,
}


def watcher_config(url: str, *, rate: float = RATE, read_timeout: float = 5.0) -> Config:
    return Config.model_validate(
        {
            "sources": {
                "ms": {
                    "type": "metastudio",
                    "endpoint": url,
                    "project_id": "sim-project",
                    "auth": {"type": "aksk", "ak": AK, "sk": SK},
                    "rate_limit": rate,
                    "connect_timeout": read_timeout,
                    "read_timeout": read_timeout,
                    "status_map": {"2": "cancelled"},
                }
            },
            "polling": {"error_backoff": {"initial": "1s", "max": f"{ERROR_MAX}s"}},
        }
    )


@dataclass
class Campaign:
    clock: FakeClock
    sim: Simulator
    watcher: Watcher
    sink: MemorySink
    ids: list[str]

    @property
    def scheduler(self) -> SourceScheduler:
        return self.watcher.scheduler("ms")

    async def results(self) -> list[ResultEvent]:
        """Every event of the run, once the last watch ended and the sink has them all."""
        events = [e async for e in self.watcher.results()]
        assert await self.watcher.drain(60.0)
        return events


@asynccontextmanager
async def campaign(
    faults: FaultConfig,
    *,
    tasks: int,
    seed: int,
    sim_rate: float | None = None,
    rate: float = RATE,
    median: float = 30.0,
    read_timeout: float = 5.0,
) -> AsyncIterator[Campaign]:
    """A simulator with ``faults`` and a Watcher already watching ``tasks`` new ids."""
    # Whole seconds, so sums of virtual time stay exact.
    clock = FakeClock(float(int(time.time())))
    sim_config = SimulatorConfig(
        seed=seed,
        auth="aksk",
        credentials={AK: SK},
        clock=clock.now,
        monotonic=clock.now,
        duration_median=median,
        duration_sigma=0.6,
        rate_limit=sim_rate,
        faults=faults,
        paths_limit=1000,
    )
    ids = [f"fault{seed:02d}-{i:04d}" for i in range(tasks)]
    async with clock.autojump(), Simulator(sim_config) as sim:
        config = watcher_config(sim.url, rate=rate, read_timeout=read_timeout)
        source_config = config.sources["ms"]
        assert isinstance(source_config, MetaStudioSourceConfig)
        source = MetaStudioSource("ms", source_config, clock=clock.now)
        sink = MemorySink()
        async with Watcher(
            config, sources={"ms": source}, sinks=[sink], clock=clock, seed=seed
        ) as w:
            added = await w.add(ids)
            assert added.accepted == ids
            yield Campaign(clock, sim, w, sink, ids)
            # No crash: the scheduler is still serving when the campaign ends.
            assert not w.scheduler("ms").stopped.is_set()


def assert_true_outcomes(c: Campaign, events: list[ResultEvent]) -> None:
    """Exactly one result and one delivery per task, each the simulator's own final truth."""
    assert Counter(e.task_id for e in events) == Counter(c.ids)
    assert Counter(c.sink.task_ids) == Counter(c.ids)
    for event in events:
        truth = c.sim.task_state(event.task_id)
        assert truth.finished, event.task_id
        assert event.outcome is EXPECTED[truth.outcome], event.task_id
        assert event.error is None
        assert event.snapshot is not None
        assert dict(event.snapshot.raw) == truth.body  # the final answer, never a faulty one


def assert_within_budget(c: Campaign, rate: float = RATE) -> None:
    """The simulator saw only requests the limiter granted, never more than ``rate`` a second."""
    stats = c.sim.stats()
    assert stats.requests == c.scheduler.stats.polls  # no request was sent behind its back
    assert stats.max_requests_in_1s <= rate


# --- one fault class at a time ---------------------------------------------------------------


async def test_thirty_percent_5xx() -> None:
    """30% of answers are 500/502/503 (JSON, HTML or plain): all retried, none a result."""
    async with campaign(FaultConfig(error_rate=0.3, seed=1), tasks=200, seed=1) as c:
        events = await c.results()
        assert_true_outcomes(c, events)
        assert_within_budget(c)
        statuses = c.sim.stats().responses_by_status
        errors = c.scheduler.stats.errors_by_kind
    assert {500, 502, 503} <= set(statuses)
    assert errors == {"server": statuses[500] + statuses[502] + statuses[503]}
    assert errors["server"] > 0.2 * c.scheduler.stats.polls


async def test_latency_up_to_and_past_the_read_timeout() -> None:
    """Answers take up to 1.2x the read timeout: slow ones count, late ones are retried."""
    faults = FaultConfig(latency=(0.0, 1.2 * READ_TIMEOUT), seed=2)
    async with campaign(faults, tasks=60, seed=2, read_timeout=READ_TIMEOUT) as c:
        events = await c.results()
        assert_true_outcomes(c, events)
        assert_within_budget(c)
        errors = c.scheduler.stats.errors_by_kind
        snapshots = c.scheduler.stats.snapshots
    assert set(errors) == {"timeout"}
    # About 1/6 of the answers come after the timeout; the rest, however slow, are used.
    assert 0 < errors["timeout"] < snapshots


@pytest.mark.parametrize(
    "kinds", [("truncated",), ("garbage", "truncated", "wrong_types", "array", "html")]
)
async def test_malformed_and_truncated_bodies(kinds: tuple[str, ...]) -> None:
    """30% of 200 answers carry a body no careful client may take as a task: none is one."""
    faults = FaultConfig(malformed_rate=0.3, malformed_kinds=kinds, seed=3)
    async with campaign(faults, tasks=200, seed=3) as c:
        events = await c.results()
        assert_true_outcomes(c, events)
        assert_within_budget(c)
        stats = c.sim.stats()
        errors = c.scheduler.stats.errors_by_kind
    assert errors == {"malformed": stats.faults_injected}
    assert errors["malformed"] > 0.2 * stats.requests


async def test_dropped_connections() -> None:
    """30% of connections close unanswered: each is one failed poll, never a silent resend."""
    async with campaign(FaultConfig(drop_rate=0.3, seed=4), tasks=200, seed=4) as c:
        events = await c.results()
        assert_true_outcomes(c, events)
        # aiohttp would resend a dropped GET once by itself, a request no token paid for:
        # at this load that took ~30 a second past a budget of 20 before the session
        # stopped it (watcher/sources/_http.py).
        assert_within_budget(c)
        stats = c.sim.stats()
        errors = c.scheduler.stats.errors_by_kind
    assert errors == {"connect": stats.dropped}
    assert stats.dropped > 0.2 * stats.requests


async def test_429_storm_from_a_limit_far_below_the_watchers_rate() -> None:
    """The tenant allows 2/s, watcher is set to 40/s: 429s stay rare and are all honoured.

    The budget is then the simulator's: it answers 429 (with Retry-After) to whatever exceeds
    2 per second. Asserted: the watcher's own cap holds (no second over 40), a 429 is never
    a result, and after each Retry-After hold the watcher sends at its lowered rate, so there
    is at most about one 429 per second of the run, not a storm of retries.
    """
    async with campaign(FaultConfig(), tasks=60, seed=5, sim_rate=2.0, rate=40) as c:
        start = c.clock.now()
        events = await c.results()
        seconds = c.clock.now() - start
        assert_true_outcomes(c, events)
        assert_within_budget(c, rate=40)
        stats = c.sim.stats()
        errors = c.scheduler.stats.errors_by_kind
        limiter = c.scheduler.limiter
    assert errors == {"rate_limited": stats.throttled}
    assert 0 < stats.throttled <= seconds
    assert stats.throttled < 0.5 * stats.requests  # most requests got through
    assert limiter.current_rate < 40  # it learnt the tenant's limit


# --- a ten-minute outage, with memory watched -------------------------------------------------

# The simulator's own (bounded) caches and the server side of aiohttp are not the engine's.
_NOT_THE_ENGINE = (
    tracemalloc.Filter(False, "*/watcher/simulator/*"),
    tracemalloc.Filter(False, "*/aiohttp/web_*"),
    tracemalloc.Filter(False, tracemalloc.__file__),
)


def traced_bytes() -> int:
    """Live bytes allocated since tracing began, outside the simulator."""
    gc.collect()  # failed polls leave cycles (exception <-> frame); count only live data
    snapshot = tracemalloc.take_snapshot().filter_traces(_NOT_THE_ENGINE)
    return sum(trace.size for trace in snapshot.traces)


async def live_blocks(clock: FakeClock, at: float) -> int:
    """Memory blocks the interpreter holds from ``at`` on: every live object is one or more.

    The least of five samples 3 s apart, so objects of requests that happen to be in flight
    (a connection being torn down, say) do not count.
    """
    samples = []
    for k in range(5):
        await clock.sleep_until(at + 3 * k)
        gc.collect()
        samples.append(sys.getallocatedblocks())
    return min(samples)


@pytest.mark.parametrize(
    "outage",
    [FaultConfig(outage=True), FaultConfig(drop_rate=1.0)],
    ids=["every-answer-503", "every-connection-dropped"],
)
async def test_ten_minute_outage_loses_nothing_and_memory_stays_flat(outage: FaultConfig) -> None:
    """Ten virtual minutes without the API: no result, flat memory, then every task ends true.

    Memory, two bounds. Per waiting watch, under 4 KiB: traced over 30 s of minute 5 (every
    watch fails again in that time, so all it holds is new), it is the last error, not the
    failed request's frames, response and connection that a traceback would keep (12 KiB a
    watch after a dropped connection). Over time, flat: from minute 5.5 to minute 10 at least
    1,500 polls fail, and the interpreter's live blocks may grow by fewer than 300 (we see
    -10 to +100, bounded caches filling): anything kept per failure, however small, is a
    block or more each, so it would add at least 1,500.
    """
    async with campaign(FaultConfig(), tasks=100, seed=6, median=120.0) as c:
        begin = c.clock.now()
        await c.clock.sleep_until(begin + 90)
        done_before = len(c.watcher.finished_events())
        assert 0 < done_before < len(c.ids)
        c.sim.set_faults(outage)
        start = c.clock.now()
        failed = c.scheduler.stats.errors_by_kind
        await c.clock.sleep_until(start + 300)
        tracemalloc.start()
        try:
            await c.clock.sleep_until(start + 330)
            per_watch = traced_bytes() / c.watcher.pending
        finally:
            tracemalloc.stop()
        blocks_first, failed_first = await live_blocks(c.clock, start + 330), sum(failed.values())
        queued_first = c.scheduler.queued
        blocks_last, failed_last = await live_blocks(c.clock, start + 588), sum(failed.values())
        queued_last = c.scheduler.queued
        assert len(c.watcher.finished_events()) == done_before  # an outage is never a result
        pending = c.watcher.pending
        c.sim.set_faults(FaultConfig())
        back = c.clock.now()
        events = await c.results()
        assert_true_outcomes(c, events)
        assert_within_budget(c)
        truths = {e.task_id: c.sim.task_state(e.task_id) for e in events}
    assert set(failed) == {"connect" if outage.drop_rate else "server"}
    assert per_watch < 4096
    assert failed_last - failed_first >= 1500
    assert blocks_last - blocks_first < 300
    # The schedule holds one entry per waiting watch, not one per failed poll.
    assert queued_first <= pending and queued_last <= pending
    # Recovery: a task that ended during the outage is seen within one error backoff (plus
    # the time the budget needs to poll every waiting watch once) after the API is back.
    recovery = ERROR_MAX + pending / RATE + 2.0
    for event in events:
        if start <= truths[event.task_id].finish_at <= back:
            assert event.detected_at.timestamp() - back < recovery


# --- everything at once ----------------------------------------------------------------------


async def test_everything_at_once() -> None:
    """5xx, slow answers, bad bodies, drops and a tenant limit below the rate, with an outage.

    All of them at once, then a ten-minute outage, then all of them again until every task
    has ended. The outage answers at once and begins when no slow answer is out: virtual
    time stands still while the test waits for those (it never yields to the clock), and
    otherwise the answers, arriving during the outage, could end tasks in it.
    """
    slow = FaultConfig(
        error_rate=0.1,
        latency=(0.0, 0.15),
        malformed_rate=0.1,
        drop_rate=0.1,
        seed=7,
    )
    async with campaign(slow, tasks=60, seed=7, sim_rate=10.0, median=300.0) as c:
        await c.clock.sleep_until(c.clock.now() + 20)
        c.sim.set_faults(dataclasses.replace(slow, latency=0.0))
        with anyio.fail_after(10):
            while c.scheduler.in_flight:
                await checkpoint()
        c.sim.set_faults(FaultConfig(outage=True))
        ended, polls, pending = (
            len(c.watcher.finished_events()),
            c.scheduler.stats.polls,
            c.watcher.pending,
        )
        await c.clock.sleep_until(c.clock.now() + 600)
        assert len(c.watcher.finished_events()) == ended  # an outage is never a result
        outage_polls = c.scheduler.stats.polls - polls
        c.sim.set_faults(slow)
        events = await c.results()
        assert_true_outcomes(c, events)
        assert_within_budget(c)
        errors = dict(c.scheduler.stats.errors_by_kind)
        stats = c.sim.stats()
    # Each waiting watch is polled at least once per error backoff cap all through the outage.
    assert pending >= 30 and outage_polls >= 25 * pending
    assert {"server", "malformed", "connect", "rate_limited"} <= set(errors)
    assert errors["rate_limited"] == stats.throttled
    assert errors["connect"] == stats.dropped
