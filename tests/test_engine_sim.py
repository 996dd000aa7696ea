"""The engine end to end: the real MetaStudio source over loopback against the simulator."""

from __future__ import annotations

import gc
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from watcher._models import Outcome
from watcher._watcher import Watcher
from watcher.config import Config, FileSinkConfig
from watcher.simulator import Simulator, SimulatorConfig

pytestmark = pytest.mark.anyio

AK, SK = "AKENGINETEST00000001", "engine-test-secret"

EXPECTED = {
    "succeeded": Outcome.SUCCEEDED,
    "partial": Outcome.PARTIAL,
    "failed": Outcome.FAILED,
    "cancelled": Outcome.CANCELLED,
}


def config_for(sim: Simulator, *, rate: float, **polling: object) -> Config:
    return Config.model_validate(
        {
            "sources": {
                "ms": {
                    "type": "metastudio",
                    "endpoint": sim.url,
                    "project_id": "sim-project",
                    "auth": {"type": "aksk", "ak": AK, "sk": SK},
                    "rate_limit": rate,
                    "status_map": {"2": "cancelled"},
                }
            },
            "polling": {"backoff": {"min": "200ms", "initial": "500ms", "max": "2s"}, **polling},
        }
    )


@pytest.fixture
def quiet_gc() -> Iterator[None]:
    """Park what earlier tests left on the heap out of the collector's way for one test.

    At the exact limit the only slack is the limiter's 50 ms margin; a full collection of
    the whole suite's heap can stall the loop (client and simulator alike) for longer, and
    the requests granted before it then reach the simulator bunched together.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.mark.usefixtures("quiet_gc")
async def test_thousand_ids_at_the_limit_without_a_single_429() -> None:
    """1,000 ids at watcher 100/s against an API limit of 100/s: all right, zero 429s."""
    ids = [f"task{i:05d}" for i in range(1000)]
    # A fixed task set created when the simulator starts: most tasks have ended by the time
    # their first poll comes round, which keeps the test near its 10 s floor (1,000 / 100/s).
    sim_cfg = SimulatorConfig(
        seed=11,
        rate_limit=100.0,
        auth="aksk",
        credentials={AK: SK},
        task_ids=ids,
        duration_median=1.0,
        duration_sigma=0.5,
        duration_max=4.0,
    )
    async with Simulator(sim_cfg) as sim:
        async with Watcher(config_for(sim, rate=100), seed=1) as w:
            await w.add(ids)
            events = [e async for e in w.results()]
        stats = sim.stats()
        truth = {i: sim.task_state(i).outcome for i in ids}
    assert Counter(e.task_id for e in events) == Counter(ids)
    for event in events:
        assert event.outcome is EXPECTED[truth[event.task_id]]
    assert stats.throttled == 0
    assert stats.max_requests_in_1s <= 100
    assert stats.requests == sum(e.polls for e in events)


async def test_converges_when_the_api_limit_is_below_watchers_rate() -> None:
    """Watcher at 100/s against an API limit of 40/s backs off to it; every task finishes."""
    sim_cfg = SimulatorConfig(
        seed=12,
        rate_limit=40.0,
        auth="aksk",
        credentials={AK: SK},
        duration_median=1.0,
        duration_sigma=0.3,
        duration_max=3.0,
    )
    ids = [f"conv{i:04d}" for i in range(200)]
    async with Simulator(sim_cfg) as sim:
        async with Watcher(config_for(sim, rate=100), seed=2) as w:
            await w.add(ids)
            events = [e async for e in w.results()]
            limiter = w.scheduler().limiter
        stats = sim.stats()
    assert Counter(e.task_id for e in events) == Counter(ids)
    assert all(e.outcome is not Outcome.ERROR for e in events)
    assert stats.throttled > 0  # it had to learn the limit
    # Once converged, 429s are rare: far fewer than the accepted requests.
    assert stats.throttled < 0.25 * stats.requests
    assert limiter.current_rate < 100


async def test_invalid_ids_end_in_error_with_code_and_request_id() -> None:
    """Ids the API refuses (400 MSS.000000003) end with outcome error, code and request id."""
    sim_cfg = SimulatorConfig(seed=13, auth="aksk", credentials={AK: SK}, duration_median=0.5)
    async with Simulator(sim_cfg) as sim, Watcher(config_for(sim, rate=50)) as w:
        await w.add(["invalid-abc", "good-1"])
        bad = await w.wait("invalid-abc")
        good = await w.wait("good-1")
    assert bad.outcome is Outcome.ERROR
    assert bad.error is not None and bad.error.code == "MSS.000000003"
    assert bad.error.request_id
    assert good.outcome is not Outcome.ERROR


@pytest.mark.timeout(300)
async def test_ten_thousand_ids_against_a_fast_simulator() -> None:
    """10,000 ids, every one reported exactly once with its true outcome."""
    sim_cfg = SimulatorConfig(
        seed=14,
        auth="aksk",
        credentials={AK: SK},
        duration_median=0.5,
        duration_sigma=0.3,
        duration_max=2.0,
    )
    ids = [f"bulk{i:06d}" for i in range(10_000)]
    async with Simulator(sim_cfg) as sim:
        async with Watcher(config_for(sim, rate=5000, workers=64), seed=3) as w:
            await w.add(ids)
            events = [e async for e in w.results()]
        truth = {i: sim.task_state(i).outcome for i in ids}
    assert len(events) == 10_000
    assert {e.task_id for e in events} == set(ids)
    assert all(e.outcome is EXPECTED[truth[e.task_id]] for e in events)


async def test_wait_sync_from_plain_code() -> None:
    """wait_sync watches ids to the end from synchronous code and returns events in order."""
    import anyio

    from watcher import wait_sync

    sim_cfg = SimulatorConfig(seed=15, auth="aksk", credentials={AK: SK})
    async with Simulator(sim_cfg) as sim:
        for i in ("s2", "s1"):
            sim.add_task(i, life=0.3, total=4, outcome="failed")
        config = config_for(sim, rate=20)
        events = await anyio.to_thread.run_sync(
            lambda: wait_sync(["s2", "s1", "s2"], config=config, timeout=30)
        )
    assert [e.task_id for e in events] == ["s2", "s1"]
    assert {e.outcome for e in events} == {Outcome.FAILED}


async def test_wait_sync_timeout_keeps_what_arrived(tmp_path: Path) -> None:
    """wait_sync running out of time raises WaitTimeoutError with the events that arrived,
    and those events are in the file sink before it returns: a timeout loses nothing."""
    import anyio

    from watcher import WaitTimeoutError, wait_sync

    sim_cfg = SimulatorConfig(seed=16, auth="aksk", credentials={AK: SK})
    out = tmp_path / "events.jsonl"
    async with Simulator(sim_cfg) as sim:
        sim.add_task("quick", life=0.2, total=2, outcome="succeeded")
        sim.add_task("slow", life=3600.0, total=2, outcome="succeeded")
        config = config_for(sim, rate=20).model_copy(
            update={"sinks": [FileSinkConfig(type="file", path=str(out))]}
        )
        with pytest.raises(WaitTimeoutError) as caught:
            await anyio.to_thread.run_sync(
                lambda: wait_sync(["quick", "slow"], config=config, timeout=3)
            )
    assert [e.task_id for e in caught.value.events] == ["quick"]
    assert caught.value.pending == ["slow"]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(e["task_id"], e["event_id"]) for e in lines] == [
        ("quick", caught.value.events[0].event_id)
    ]
