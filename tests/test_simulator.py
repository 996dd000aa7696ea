"""The MetaStudio simulator: task life, field forms, search, delete, stats, and the CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anyio
import pytest
from yarl import URL

from watcher._models import TaskSnapshot
from watcher.simulator import Simulator, SimulatorConfig, SimulatorStats

START = 1_744_276_967.708  # the documented example's begin_time, in seconds
TASK = "/v2/sim-project/ies/task/"


class Clock:
    """A wall clock that moves only when told to."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any, str | None]:
    async with session.get(URL(url, encoded=True)) as response:
        text = await response.text()
        body = json.loads(text) if text else None
        return response.status, body, response.headers.get("X-Request-Id")


@pytest.mark.anyio
async def test_task_progresses_monotonically_and_finishes(session: aiohttp.ClientSession) -> None:
    """Counts only grow while running; at the end end_time is set and the counts add up."""
    clock = Clock()
    config = SimulatorConfig(seed=3, clock=clock, duration_median=20.0, total_range=(50, 80))
    async with Simulator(config) as sim:
        seen: list[dict[str, Any]] = []
        for _ in range(40):
            status, body, _ = await get(session, sim.url + TASK + "abc")
            assert status == 200
            seen.append(body)
            clock.now += 1.0
        state = sim.task_state("abc")
    assert list(seen[0]) == [
        "resource", "task_name", "begin_time", "end_time", "task_type", "operator",
        "total_count", "success_count", "failure_count", "task_status", "task_id", "user_id",
    ]  # fmt: skip
    done = [b["success_count"] + b["failure_count"] for b in seen]
    assert done == sorted(done)
    assert all(b["success_count"] <= seen[-1]["success_count"] for b in seen)
    assert all(b["failure_count"] <= seen[-1]["failure_count"] for b in seen)
    running = [b for b in seen if b["task_status"] == config.status_running]
    finished = [b for b in seen if b["task_status"] != config.status_running]
    assert running, "the task should be seen running"
    assert finished, "the task should be seen finished"
    assert len(set(done[: len(running)])) > 3, "progress should be visible"
    assert all(b["end_time"] == 0 for b in running)
    last = finished[-1]
    assert last["end_time"] == state.end_time_ms > last["begin_time"] == int(START * 1000)
    if state.outcome != "cancelled":
        assert last["success_count"] + last["failure_count"] == last["total_count"]
        assert last["task_status"] == config.status_finished
    assert state.finished
    assert state.body == last


@pytest.mark.anyio
async def test_time_scale_compresses_task_life(session: aiohttp.ClientSession) -> None:
    """With time_scale=10 a task of 10 s life is finished 1 s of wall time after creation."""
    clock = Clock()
    config = SimulatorConfig(seed=1, clock=clock, time_scale=10.0, outcome_weights={"failed": 1})
    async with Simulator(config) as sim:
        sim.add_task("t1", life=10.0, total=5)
        clock.now += 0.99
        _, running, _ = await get(session, sim.url + TASK + "t1")
        clock.now += 0.02
        _, done, _ = await get(session, sim.url + TASK + "t1")
    assert running["task_status"] == 1
    assert done["task_status"] == 0
    assert (done["success_count"], done["failure_count"]) == (0, 5)
    assert done["end_time"] - done["begin_time"] == 1000


@pytest.mark.anyio
async def test_same_seed_same_tasks_whatever_the_order(session: aiohttp.ClientSession) -> None:
    """Bodies derive from (seed, id): request order does not matter, another seed differs."""
    ids = [f"task{i}" for i in range(12)]

    async def bodies(seed: int, order: list[str]) -> dict[str, Any]:
        clock = Clock()
        async with Simulator(SimulatorConfig(seed=seed, clock=clock)) as sim:
            for task_id in order:
                sim.create_task(task_id, created=START)
            clock.now += 4.0
            out = {}
            for task_id in order:
                out[task_id] = (await get(session, sim.url + TASK + task_id))[1]
            return out

    first = await bodies(5, ids)
    again = await bodies(5, list(reversed(ids)))
    other = await bodies(6, ids)
    assert first == again
    assert first != other


def test_outcomes_follow_weights_and_counts_agree() -> None:
    """Every outcome occurs; the final counts say the same as the outcome."""
    clock = Clock()
    weights = {"succeeded": 1.0, "partial": 1.0, "failed": 1.0, "cancelled": 1.0}
    config = SimulatorConfig(seed=2, clock=clock, outcome_weights=weights, total_range=(2, 50))
    sim = Simulator(config)
    for i in range(80):
        sim.create_task(f"t{i}")
    clock.now += 1e6
    states = [sim.task_state(f"t{i}") for i in range(80)]
    assert {s.outcome for s in states} == {"succeeded", "partial", "failed", "cancelled"}
    for s in states:
        assert s.finished
        done = s.success_count + s.failure_count
        if s.outcome == "cancelled":
            assert s.task_status == 2
            assert done < s.total_count
        else:
            assert s.task_status == 0
            assert done == s.total_count
        if s.outcome == "succeeded":
            assert s.failure_count == 0
        if s.outcome == "failed":
            assert s.success_count == 0
        if s.outcome == "partial":
            assert s.success_count > 0
            assert s.failure_count > 0


@pytest.mark.anyio
async def test_mixed_forms_cover_every_documented_form(session: aiohttp.ClientSession) -> None:
    """Mixed mode yields every time, status and "not set" form, and all of them parse."""
    clock = Clock()
    config = SimulatorConfig(seed=4, clock=clock, field_forms="mixed", duration_min=100.0)
    unset: set[str] = set()
    times: set[str] = set()
    statuses: set[type] = set()
    async with Simulator(config) as sim:
        for i in range(120):
            _, body, _ = await get(session, sim.url + TASK + f"m{i}")
            end = body.get("end_time", "<missing>")
            unset.add(repr(end))
            begin = body["begin_time"]
            times.add("int" if isinstance(begin, int) else "iso" if "T" in begin else "numeric")
            statuses.add(type(body["task_status"]))
            snapshot = TaskSnapshot.from_fields(f"m{i}", **_fields(body), raw=body)
            assert snapshot.end_time is None
            assert snapshot.begin_time is not None
            assert abs(snapshot.begin_time.timestamp() - START) < 0.001
            assert snapshot.status == "1"
    assert unset == {"'<missing>'", "None", "''", "0", "'0'"}
    assert times == {"int", "iso", "numeric"}
    assert statuses == {int, str}


def _fields(body: dict[str, Any]) -> dict[str, Any]:
    keys = ("total_count", "success_count", "failure_count", "begin_time", "end_time")
    return {"status": body["task_status"], **{k: body.get(k) for k in keys}}


@pytest.mark.anyio
async def test_invalid_and_unknown_ids(session: aiohttp.ClientSession) -> None:
    """invalid- ids answer 400 MSS.000000003; with a fixed id set, unknown ids answer 404."""
    config = SimulatorConfig(task_ids=["known"])
    async with Simulator(config) as sim:
        status, body, rid = await get(session, sim.url + TASK + "invalid-123")
        assert status == 400
        assert body["error_code"] == "MSS.000000003"
        assert body["request_id"] == rid
        assert rid
        status, body, _ = await get(session, sim.url + TASK + "known")
        assert status == 200
        assert body["task_id"] == "known"
        status, body, _ = await get(session, sim.url + TASK + "unknown")
        assert status == 404
        assert body["error_code"] == "MSS.000000003"
        status, body, _ = await get(session, sim.url + "/v2/other-project/ies/task/known")
        assert status == 403
        assert body["error_code"] == "APIGW.0302"
        status, body, _ = await get(session, sim.url + "/v2/sim-project/ies/tasks/known")
        assert status == 404
        assert body["error_code"] == "APIGW.0101"
        assert sim.task_ids() == ("known",)


@pytest.mark.anyio
async def test_encoded_slash_stays_in_one_segment(session: aiohttp.ClientSession) -> None:
    """%2F is part of the id; a real slash makes a different (unknown) path."""
    async with Simulator(SimulatorConfig()) as sim:
        status, body, _ = await get(session, sim.url + TASK + "a%2Fb%3Fc")
        assert status == 200
        assert body["task_id"] == "a/b?c"
        status, body, _ = await get(session, sim.url + TASK + "a/b")
        assert status == 404
        assert body["error_code"] == "APIGW.0101"
        stats = sim.stats()
    assert stats.polls_per_task == {"a/b?c": 1}
    assert stats.paths == (TASK + "a%2Fb%3Fc", TASK + "a/b")


@pytest.mark.anyio
async def test_search_filters_and_caps_pages(session: aiohttp.ClientSession) -> None:
    """Search matches resource and begin-time window; data is capped, count is not."""
    clock = Clock()
    async with Simulator(SimulatorConfig(clock=clock, page_cap=10)) as sim:
        for i in range(30):
            sim.add_task(f"s{i:02d}", resource="asset-import", created=START + i)
        for i in range(5):
            sim.add_task(f"k{i}", resource="knowledge-intent-question-create", created=START + i)
        base = sim.url + "/v2/sim-project/ies/task?business_id=b1&resource=asset-import"
        _, page, _ = await get(session, base)
        assert (page["count"], len(page["data"]), page["limit"]) == (30, 10, 10)
        assert [t["task_id"] for t in page["data"]] == [f"s{i:02d}" for i in range(10)]
        t0, t1 = int((START + 5) * 1000), int((START + 7) * 1000)
        _, window, _ = await get(session, f"{base}&begin_time={t0}&end_time={t1}")
        assert [t["task_id"] for t in window["data"]] == ["s05", "s06", "s07"]
        both = base + "&resource=knowledge-intent-question-create&end_time=" + str(t0)
        _, merged, _ = await get(session, both)
        assert merged["count"] == 11
        assert {t["resource"] for t in merged["data"]} == {
            "asset-import",
            "knowledge-intent-question-create",
        }
        _, offset, _ = await get(session, base + "&offset=25")
        assert [t["task_id"] for t in offset["data"]] == [f"s{i}" for i in range(25, 30)]
        status, bad, _ = await get(session, base + "&begin_time=yesterday")
        assert status == 400
        assert bad["error_code"] == "MSS.000000003"
        assert sim.stats().searches == 5


@pytest.mark.anyio
async def test_delete_removes_task_for_good(session: aiohttp.ClientSession) -> None:
    """DELETE answers 204; afterwards the id is 404 even though auto-creation is on."""
    async with Simulator(SimulatorConfig()) as sim:
        await get(session, sim.url + TASK + "gone")
        async with session.delete(sim.url + TASK + "gone") as response:
            assert response.status == 204
            assert response.headers["X-Request-Id"]
        status, body, _ = await get(session, sim.url + TASK + "gone")
        assert status == 404
        assert body["error_code"] == "MSS.000000003"
        _, page, _ = await get(session, sim.url + "/v2/sim-project/ies/task")
        assert page["count"] == 0
        with pytest.raises(KeyError):
            sim.task_state("gone")


@pytest.mark.anyio
async def test_stats_endpoint_and_reset(session: aiohttp.ClientSession) -> None:
    """/_sim/stats mirrors stats(); control requests are not counted; reset zeroes."""
    async with Simulator(SimulatorConfig()) as sim:
        for task_id in ("a", "a", "b", "invalid-x"):
            await get(session, sim.url + TASK + task_id)
        status, data, _ = await get(session, sim.url + "/_sim/stats")
        assert status == 200
        assert data == sim.stats().to_dict()
        assert data["requests"] == 4
        assert data["responses_by_status"] == {"200": 3, "400": 1}
        assert data["polls_per_task"] == {"a": 2, "b": 1, "invalid-x": 1}
        assert data["tasks"] == 2
        async with session.post(sim.url + "/_sim/reset") as response:
            assert response.status == 200
        stats = sim.stats()
        assert isinstance(stats, SimulatorStats)
        assert (stats.requests, stats.paths, stats.polls_per_task) == (0, (), {})
        assert stats.tasks == 2
        async with session.post(sim.url + "/_sim/reset?tasks=1") as response:
            assert response.status == 200
        assert sim.stats().tasks == 0
        status, _state, _ = await get(session, sim.url + "/_sim/tasks/a")
        assert status == 404


@pytest.mark.anyio
async def test_paths_log_keeps_raw_paths_bounded(session: aiohttp.ClientSession) -> None:
    """Raw paths (with query) are kept in arrival order, only the newest paths_limit."""
    async with Simulator(SimulatorConfig(paths_limit=3)) as sim:
        for path in (TASK + "p1", TASK + "p2?x=1", "/nothing", TASK + "p%203"):
            await get(session, sim.url + path)
        assert sim.stats().paths == (TASK + "p2?x=1", "/nothing", TASK + "p%203")
        assert sim.stats().requests == 4


def test_hundred_thousand_tasks_fit() -> None:
    """100k tasks are created quickly and searched by index, not by scanning."""
    clock = Clock()
    sim = Simulator(SimulatorConfig(clock=clock, resources=("asset-import",)))
    for i in range(100_000):
        sim.create_task(f"{i:032x}", created=START + i / 1000)
    count, page = sim.book.search(["asset-import"], int((START + 50) * 1000), None, 0, 100)
    assert count == 50_000
    assert page[0].task_id == f"{50_000:032x}"
    assert sim.stats().tasks == 100_000


@pytest.mark.anyio
async def test_serves_thousands_of_requests_quickly(session: aiohttp.ClientSession) -> None:
    """A smoke check of the hot path: 2,000 polls with the rate limit on finish quickly."""
    async with Simulator(SimulatorConfig(rate_limit=1e6)) as sim:
        base = sim.url + TASK

        async def worker(k: int) -> None:
            for i in range(100):
                async with session.get(f"{base}w{k}-{i % 10}") as response:
                    await response.read()
                    assert response.status == 200

        started = anyio.current_time()
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for k in range(20):
                    tg.start_soon(worker, k)
        elapsed = anyio.current_time() - started
        assert sim.stats().requests == 2000
    # Generous: the simulator alone does several thousand per second on one core.
    assert elapsed < 10


async def _read_url(stream: Any) -> str:
    buffer = b""
    while b"\n" not in buffer:
        buffer += await stream.receive()
    match = re.search(r"http://[\d.]+:\d+", buffer.decode())
    assert match, buffer
    return match.group(0)


@pytest.mark.anyio
async def test_cli_simulate_serves_until_interrupted(session: aiohttp.ClientSession) -> None:
    """`watcher simulate` prints its URL, serves a task to completion, exits 0 on SIGINT."""
    command = [sys.executable, "-m", "watcher", "simulate", "--port", "0", "--seed", "9",
               "--duration-median", "2s", "--duration-max", "3s", "--time-scale", "10",
               "--rate-limit", "1000"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    async with await anyio.open_process(command, stdout=subprocess.PIPE, env=env) as process:
        try:
            assert process.stdout is not None
            with anyio.fail_after(15):
                url = await _read_url(process.stdout)
            seen = []
            with anyio.fail_after(10):
                while True:
                    status, body, _ = await get(session, url + TASK + "abc")
                    assert status == 200
                    seen.append(body["success_count"] + body["failure_count"])
                    if body["end_time"]:
                        break
                    await anyio.sleep(0.02)
            assert seen == sorted(seen)
            assert len(seen) > 1
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(10):
                code = await process.wait()
            assert code == 0
        finally:
            if process.returncode is None:
                process.kill()
