"""Issue 7, item 2: a daemon killed with SIGKILL three times mid-run loses no event.

`watcher run` (SQLite store, a file sink and a webhook sink) is a real subprocess; the
simulator and the webhook receiver live in the test process, so they outlive every restart.
2,000 tasks go in through the control API; the daemon is killed at three seeded moments and
restarted on the same database each time, then runs to the end. Every event must reach both
sinks at least once with one stable id, and the database must be intact and drained.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import sqlite3
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from _sink_receiver import SECRET, Receiver
from _waiting import wait_until
from standardwebhooks.webhooks import Webhook
from test_daemon import AK, AUTH, SK, TOKEN, Daemon, start_daemon, stop_daemon

from watcher._models import batch_event_id, event_id_for
from watcher._watcher import Watcher
from watcher.simulator import Simulator, SimulatorConfig
from watcher.stores.base import WatchRecord
from watcher.stores.sqlite import SqliteStore
from watcher.testing import FakeSource, MemorySink, finished

pytestmark = pytest.mark.anyio

TASKS = 2000
BATCHES = 4  # the tasks go in as four batches, one POST each
KILLS = 3
SEED = 20240607


def crash_config(sim: Simulator, hook: str) -> str:
    """Fast polling, a generous rate limit and both sinks; the daemon's store is SQLite."""
    return f"""
sources:
  ms:
    type: metastudio
    endpoint: {sim.url}
    project_id: sim-project
    auth: {{type: aksk, ak: {AK}, sk: ${{TEST_SK}}}}
    rate_limit: 2000
    status_map: {{"1": running, "2": cancelled}}
polling:
  workers: 64
  spread: 200ms
  backoff: {{min: 100ms, initial: 200ms, max: 500ms, progress_max: 500ms}}
  error_backoff: {{initial: 100ms, max: 300ms}}
sinks:
  - {{type: file, path: results.jsonl}}
  - {{type: webhook, url: "{hook}", secret: "${{TEST_WEBHOOK_SECRET}}", initial_backoff: 100ms}}
store: {{type: sqlite, path: watcher.db}}
api: {{listen: "127.0.0.1:0"}}
daemon: {{grace: 10s}}
log: {{level: info}}
"""


def file_events(directory: Path) -> list[dict[str, Any]]:
    """Every line of the file sink, each of which must be a whole JSON object."""
    path = directory / "results.jsonl"
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    # A line is complete only once its newline is there; a torn tail would fail json.loads.
    lines = text.split("\n")
    assert lines[-1] == "", "the file sink left a partial line"
    return [json.loads(line) for line in lines[:-1]]


def count(directory: Path, query: str) -> int:
    """One number from the daemon's database, read while it runs (WAL: readers never block)."""
    with contextlib.closing(sqlite3.connect(directory / "watcher.db", timeout=5)) as db:
        (value,) = db.execute(query).fetchone()
    return int(value)


def detected(directory: Path) -> int:
    """Watches the daemon has finished: each one's result is in the outbox or delivered."""
    return count(directory, "SELECT count(*) FROM watches WHERE state = 'done'")


def queued(directory: Path) -> int:
    return count(directory, "SELECT count(*) FROM outbox")


def finished_tasks(events: list[dict[str, Any]]) -> set[str]:
    return {e["task_id"] for e in events if e["event"] == "task.finished"}


async def kill(daemon: Daemon) -> None:
    daemon.proc.send_signal(signal.SIGKILL)
    with anyio.fail_after(10):
        await daemon.proc.wait()
    await daemon.proc.aclose()
    assert daemon.proc.returncode == -signal.SIGKILL


async def test_three_sigkills_lose_no_event(tmp_path: Path) -> None:
    """2,000 tasks, SIGKILL x3 at seeded moments: every event in both sinks, one id each."""
    rng = random.Random(SEED)
    ids = [f"crash-{i:04d}" for i in range(TASKS)]
    batches = {f"crash-batch-{b}": ids[b::BATCHES] for b in range(BATCHES)}
    sim_config = SimulatorConfig(
        seed=SEED, auth="aksk", credentials={AK: SK},
        duration_median=2.5, duration_sigma=0.6, duration_min=0.2, duration_max=7.0,
    )  # fmt: skip
    env = {"TEST_SK": SK, "TEST_WEBHOOK_SECRET": SECRET, "WATCHER_API_TOKEN": TOKEN}
    async with Simulator(sim_config) as sim, Receiver() as receiver:
        config = crash_config(sim, receiver.url)
        daemon = await start_daemon(tmp_path, config, env=env)
        async with aiohttp.ClientSession() as http:
            for batch, members in batches.items():
                body = {"task_ids": members, "batch": batch}
                async with http.post(daemon.url + "/v1/watches", json=body, headers=AUTH) as resp:
                    assert resp.status == 202
                    assert len((await resp.json())["accepted"]) == len(members)
        killed_at: list[int] = []
        for _ in range(KILLS):
            left = TASKS - detected(tmp_path)
            target = TASKS - left + rng.randint(left // 10, left * 8 // 10)
            await wait_until(lambda t=target: detected(tmp_path) >= t, within=30, interval=0.02)
            await kill(daemon)
            killed_at.append(detected(tmp_path))
            daemon = await start_daemon(tmp_path, config, env=env)

        def finished_run() -> bool:
            # Every watch done, every batch announced and settled in both sinks, nothing
            # queued: the daemon has nothing left to do (what reached the sinks is judged
            # below, from the sinks themselves).
            return (
                detected(tmp_path) == TASKS
                and count(tmp_path, "SELECT count(*) FROM settled") == 2 * BATCHES
                and queued(tmp_path) == 0
            )

        await wait_until(finished_run, within=40, interval=0.05)
        await stop_daemon(daemon)
        assert daemon.proc.returncode == 0, daemon.stderr()[-3000:]
        calls = list(receiver.calls)
    assert all(0 < k < TASKS for k in killed_at) and killed_at == sorted(killed_at)
    log = (tmp_path / "daemon.err").read_text(encoding="utf-8", errors="replace")
    assert log.count("resumed pending watches") == KILLS  # each restart took over the rest
    in_file = file_events(tmp_path)
    hooked = [c.event for c in calls]
    for call in calls:
        assert Webhook(SECRET).verify(call.body, call.headers) == call.event
        assert call.headers["webhook-id"] == call.event["event_id"]
    # One id per task (or batch), whichever sink and however often it was delivered.
    ids_seen: dict[str, set[str]] = defaultdict(set)
    for event in in_file + hooked:
        ids_seen[event.get("task_id") or event["batch"]].add(event["event_id"])
    for where, events in (("file", in_file), ("receiver", hooked)):
        missing = set(ids) - finished_tasks(events)
        assert not missing, f"{len(missing)} task events never reached the {where}"
        announced = {e["batch"] for e in events if e["event"] == "batch.finished"}
        assert announced == set(batches), where
    assert len(ids_seen) == TASKS + BATCHES
    assert [k for k, seen in ids_seen.items() if len(seen) > 1] == []
    for event in in_file:
        if event["event"] == "batch.finished":
            assert event["tasks"] == TASKS // BATCHES
    assert not (tmp_path / "watcher-dead-letters.jsonl").exists()
    with contextlib.closing(sqlite3.connect(tmp_path / "watcher.db")) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert detected(tmp_path) == TASKS
    assert count(tmp_path, "SELECT count(*) FROM watches WHERE state != 'done'") == 0
    assert queued(tmp_path) == 0
    assert count(tmp_path, "SELECT count(*) FROM dead_letters") == 0


async def test_a_batch_whose_last_result_was_stored_just_before_a_crash_is_announced(
    tmp_path: Path,
) -> None:
    """Killed between a batch's last result and its batch.finished: the restart announces it."""
    db = tmp_path / "w.db"
    outcomes = {"k1": "succeeded", "k2": "failed", "k3": "succeeded"}
    now = time.time()
    # What the SQLite file holds when SIGKILL lands right after the last watch's complete():
    # every watch of the batch done with its event queued, the batch.finished not yet queued.
    # Built through the store's own API, as the engine writes it.
    async with SqliteStore(db) as store:
        base = {"watched_at": now, "due_at": now, "batch": "kb"}
        await store.add([WatchRecord("fake", task_id, **base) for task_id in outcomes])
        for task_id, outcome in outcomes.items():
            done = WatchRecord(
                "fake", task_id, **base, state="done", outcome=outcome, finished_at=now, polls=2
            )
            event_id = event_id_for("fake", task_id)
            payload = {"event_id": event_id, "event": "task.finished", "task_id": task_id,
                       "batch": "kb", "outcome": outcome}  # fmt: skip
            await store.complete(done, event_id, payload, ["s"])
    source = FakeSource(lambda task_id, n: finished(task_id))
    first = MemorySink("s")
    async with Watcher(sources={"fake": source}, store=SqliteStore(db), sinks=[first]) as w:
        assert w.pending == 0
        await wait_until(lambda: len(first.events) == len(outcomes) + 1, within=10)
        assert await w.drain(5)
    (announced,) = [e for e in first.events if e["event"] == "batch.finished"]
    assert announced["batch"] == "kb" and announced["tasks"] == 3
    assert announced["outcomes"] == {"succeeded": 2, "failed": 1}
    assert announced["event_id"] == batch_event_id("kb")
    assert first.events[-1] == announced  # after the batch's task events
    # Announced once: not again at the next start, nor to a sink added to the config since.
    again, added = MemorySink("s"), MemorySink("added-later")
    sinks = [again, added]
    async with Watcher(sources={"fake": source}, store=SqliteStore(db), sinks=sinks) as w:
        assert await w.drain(5)
    assert again.events == added.events == [] and source.calls == {}
