"""Delivery through the engine: outbox to sinks, isolation of broken sinks, crash and resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from _sink_receiver import SECRET, Receiver, fail_first
from _waiting import wait_until
from standardwebhooks.webhooks import Webhook

from watcher._clock import FakeClock
from watcher._watcher import Watcher
from watcher.simulator import Simulator, SimulatorConfig
from watcher.stores.sqlite import SqliteStore
from watcher.testing import FakeSource, MemorySink, ZeroBackoff, finished, running

pytestmark = pytest.mark.anyio

AK, SK = "AKDELIVERY0000000001", "delivery-secret"


def broken(event: Any) -> None:
    raise OSError("receiver is down")


async def _run(sinks: list[MemorySink]) -> tuple[float, int, dict[str, float]]:
    """Watch 200 tasks on virtual time; return finish time, polls and when each event landed."""
    clock = FakeClock()
    source = FakeSource(lambda tid, n: finished(tid) if n >= 3 else running(tid, done=n))
    landed: dict[str, float] = {}
    healthy = sinks[0]
    original = healthy.deliver

    async def deliver(event: Any) -> None:
        await original(event)
        landed[event["task_id"]] = clock.now()

    healthy.deliver = deliver  # type: ignore[method-assign]
    async with (
        clock.autojump(),
        Watcher(
            sources={"fake": source},
            sinks=sinks,
            policy=ZeroBackoff(),
            clock=clock,
            rates={"fake": (50.0, None)},
        ) as w,
    ):
        await w.add([f"t{i}" for i in range(200)])
        await w.wait_all()
        done_at = clock.now()
        await wait_until(lambda: len(landed) == 200, within=10)
    return done_at, sum(source.calls.values()), landed


async def test_a_broken_sink_delays_neither_polling_nor_other_sinks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a sink that always fails beside it, polling and the healthy sink keep their pace."""
    monkeypatch.chdir(tmp_path)  # the broken sink's dead letters land here
    alone_done, alone_polls, alone_landed = await _run([MemorySink("ok")])
    bad = MemorySink("bad", fail=broken)
    with_done, with_polls, with_landed = await _run([MemorySink("ok"), bad])
    assert with_polls == alone_polls == 600
    assert with_done == pytest.approx(alone_done, abs=0.05)  # polling rate unchanged
    lag_alone = max(alone_landed[t] - 0 for t in alone_landed) - alone_done
    lag_with = max(with_landed[t] for t in with_landed) - with_done
    assert lag_with <= lag_alone + 0.05  # the healthy sink is not held up
    assert bad.attempts >= 1 and not bad.events


async def test_every_sink_gets_every_event_once_when_healthy() -> None:
    """Two healthy sinks each receive every event exactly once, with the same event ids."""
    one, two = MemorySink("one"), MemorySink("two")
    source = FakeSource(lambda tid, n: finished(tid))
    async with Watcher(sources={"fake": source}, sinks=[one, two], policy=ZeroBackoff()) as w:
        await w.add([f"e{i}" for i in range(50)])
        await w.wait_all(timeout=10)
        assert await w.drain(5)
    assert sorted(one.task_ids) == sorted(two.task_ids) == sorted(f"e{i}" for i in range(50))
    assert [e["event_id"] for e in one.events] == [e["event_id"] for e in two.events]


async def test_results_resume_from_sqlite_with_stable_event_ids(tmp_path: Path) -> None:
    """A watch left pending in SQLite resumes in the next run; its event id does not change."""
    db = str(tmp_path / "w.db")
    state = {"done": False}
    source = FakeSource(lambda tid, n: finished(tid) if state["done"] else running(tid))
    first = MemorySink("s")
    async with Watcher(
        sources={"fake": source},
        store=SqliteStore(db),
        sinks=[first],
        policy=ZeroBackoff(),
        rates={"fake": (100.0, None)},
    ) as w:
        await w.add(["keep-1", "keep-2"])
        await wait_until(lambda: source.calls["keep-2"] >= 2)
    assert first.events == []
    state["done"] = True
    second = MemorySink("s")
    source2 = FakeSource(lambda tid, n: finished(tid))
    async with Watcher(
        sources={"fake": source2}, store=SqliteStore(db), sinks=[second], policy=ZeroBackoff()
    ) as w:
        assert w.pending == 2
        await w.wait_all(timeout=10)
        await w.drain(5)
        again = await w.add(["keep-1"])
    assert sorted(second.task_ids) == ["keep-1", "keep-2"]
    assert again.duplicates == ["keep-1"]
    polls = {e["task_id"]: e["polls"] for e in second.events}
    assert all(p >= 3 for p in polls.values())  # polls of the first run are counted


def write_config(path: Path, sim: Simulator) -> Path:
    path.write_text(
        f"""
sources:
  ms:
    type: metastudio
    endpoint: {sim.url}
    project_id: sim-project
    auth: {{type: aksk, ak: {AK}, sk: {SK}}}
    rate_limit: 100
    status_map: {{"2": cancelled}}
polling:
  backoff: {{min: 100ms, initial: 200ms, max: 1s, progress_max: 1s}}
"""
    )
    return path


async def test_sigkill_mid_run_then_rerun_delivers_every_event(tmp_path: Path) -> None:
    """`wait --store sqlite` killed with SIGKILL and rerun: every task reaches both sinks."""
    ids = [f"crash{i:04d}" for i in range(300)]
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    results = tmp_path / "results.jsonl"
    db = tmp_path / "watch.db"
    sim_cfg = SimulatorConfig(
        seed=31,
        auth="aksk",
        credentials={AK: SK},
        task_ids=ids,
        duration_median=1.5,
        duration_sigma=0.6,
        duration_max=5.0,
    )
    async with Simulator(sim_cfg) as sim, Receiver(fail_first(5)) as receiver:
        config = write_config(tmp_path / "w.yaml", sim)
        cmd = [
            sys.executable,
            "-m",
            "watcher",
            "wait",
            "-c",
            str(config),
            "--ids-file",
            str(tmp_path / "ids.txt"),
            "--store",
            f"sqlite:{db}",
            "--sink",
            f"file:{results}",
            "--sink",
            f"webhook:{receiver.url}",
        ]
        env = {**os.environ, "WATCHER_WEBHOOK_SECRET": SECRET}
        async with await anyio.open_process(cmd, env=env, cwd=tmp_path) as proc:
            await wait_until(
                lambda: results.exists() and results.read_text().count("\n") >= 60, within=60
            )
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        lines_at_kill = results.read_text().count("\n")
        assert lines_at_kill < len(ids)  # it really died mid-run
        with anyio.fail_after(120):
            rerun = await anyio.run_process(cmd, env=env, cwd=tmp_path, check=False)
        assert rerun.returncode in (0, 1, 2), rerun.stderr.decode()[-2000:]
        calls = list(receiver.calls)
    file_events = [json.loads(line) for line in results.read_text().splitlines()]
    assert {e["task_id"] for e in file_events} == set(ids)
    delivered = [c for c in calls if c.number > 5]  # the first 5 answers were 503
    hook_events = [c.event for c in delivered]
    assert {e["task_id"] for e in hook_events} == set(ids)
    ids_by_task = {e["task_id"]: e["event_id"] for e in file_events}
    assert all(ids_by_task[e["task_id"]] == e["event_id"] for e in hook_events)
    for call in calls[:50]:
        Webhook(SECRET).verify(call.body, call.headers)
    retried = Counter(c.headers["webhook-id"] for c in calls[:6])
    assert retried.most_common(1)[0][1] == 6  # the head event was retried with one id
    assert not (tmp_path / "watcher-dead-letters.jsonl").exists()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        pending = conn.execute("SELECT count(*) FROM watches WHERE state != 'done'").fetchone()
        outbox = conn.execute("SELECT count(*) FROM outbox").fetchone()
    assert pending == (0,)
    assert outbox == (0,)
