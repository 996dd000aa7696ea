"""Issue 7, item 3: sink outages lose nothing.

A webhook receiver down for an hour (on a FakeClock in autojump mode, so the hour of retry
backoff passes in seconds), then back: every event arrives, in outbox order, with one
stable, verifiable webhook-id. A full disk under the file sink: the events wait in the
SQLite outbox, no partial line is ever left in the file, and once there is room again each
event is written exactly once. The full disk is a real one (a small tmpfs) where mounting
is allowed, and always also ``/dev/full`` (a real ENOSPC from the kernel), so that CI without
the right to mount still proves it.

Everything runs through the library ``Watcher`` against the simulator over loopback HTTP,
with the sinks built from config, exactly as ``watcher wait`` and the daemon build them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import mmap
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from _sink_receiver import SECRET, Call, Receiver, status
from _waiting import wait_until
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from watcher._clock import Clock, FakeClock
from watcher._watcher import Watcher
from watcher.config import config_from_dict
from watcher.simulator import Simulator, SimulatorConfig
from watcher.sinks import SinkRunner
from watcher.stores.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

SIM_TOKEN = "sim-token-for-sink-outages-0123"
OUTAGE = 3600.0  # virtual seconds the receiver answers 503
OLD_MAX_ATTEMPTS = 12  # the limit watcher once had by default, which an hour of 503s exhausts


def source_block(sim: Simulator) -> dict[str, Any]:
    return {
        "type": "metastudio",
        "endpoint": sim.url,
        "project_id": "sim-project",
        "auth": {"type": "token", "token": SIM_TOKEN},
        "rate_limit": 50,
    }


def runner_for(w: Watcher, sink: str) -> SinkRunner:
    return next(r for r in w.runners if r.name == sink)


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The file sink's lines; each must be a whole JSON object ending in a newline."""
    data = path.read_bytes() if path.exists() else b""
    assert not data or data.endswith(b"\n"), "a partial line was left in the file"
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


# --- webhook receiver down for an hour ---------------------------------------------------------


class Outage:
    """The receiver's answers: 503 until ``OUTAGE`` on the clock, then 200.

    Once, halfway through the outage, the answer waits until the test has looked at the
    store: while it waits nothing can be delivered, so what the test sees is the outage.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.halfway = anyio.Event()
        self.looked = anyio.Event()

    async def __call__(self, call: Call) -> web.Response:
        if self.clock.now() >= OUTAGE:
            return status(200)
        if self.clock.now() >= OUTAGE / 2 and not self.halfway.is_set():
            self.halfway.set()
            await self.looked.wait()
        return status(503, text="down for maintenance")

    async def __aenter__(self) -> Outage:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.looked.set()  # a failed test must not leave an answer waiting (and the server)


async def test_webhook_down_for_an_hour_then_everything_arrives_in_order(tmp_path: Path) -> None:
    """An hour of 503s: nothing dead-lettered; then every event once, in order, same ids."""
    # The Watcher, its sink runners and its store run on the FakeClock; the simulator runs on
    # real time with tasks that are done at their first poll, so no poll spans a clock jump.
    clock = FakeClock()
    wall0 = time.time()
    outage = Outage(clock)
    north, south = [f"n{i}" for i in range(8)], [f"s{i}" for i in range(8)]
    loose = [f"x{i}" for i in range(4)]
    results = tmp_path / "results.jsonl"
    dead = tmp_path / "dead.jsonl"
    async with (
        clock.autojump(),
        Simulator(SimulatorConfig(seed=73, auth="token", tokens={SIM_TOKEN})) as sim,
        Receiver(outage, now=clock.now) as receiver,
        outage,
    ):
        for n, task_id in enumerate(north + south + loose):
            sim.add_task(task_id, life=0.0, total=5, outcome=("succeeded", "partial")[n % 2])
        config = config_from_dict(
            {
                "sources": {"ms": source_block(sim)},
                "sinks": [
                    {"type": "file", "path": str(results), "dead_letter": str(dead)},
                    # Retry keys at their defaults: no attempt limit, max_age 24 h, backoff
                    # 1 s doubling to 5 min. (A limit of 12 would give up after ~18.5 min.)
                    {"type": "webhook", "url": receiver.url, "secret": SECRET,
                     "dead_letter": str(dead)},
                ],
            }
        )  # fmt: skip
        store = SqliteStore(tmp_path / "w.db", clock=lambda: wall0 + clock.now())
        async with Watcher(config, store=store, clock=clock, seed=73) as w:
            await w.add(north, batch="north")
            await w.add(loose)
            await w.wait_all(timeout=20)
            with anyio.fail_after(20):
                await outage.halfway.wait()
            # Halfway through the outage: the file sink has everything, the webhook's events
            # all wait in the outbox with the oldest at the head, none given up. Results
            # detected now queue up behind them.
            assert clock.now() < OUTAGE
            assert await store.outbox_size("file") == 0
            assert await store.outbox_size("webhook") == len(north) + len(loose) + 1
            head = (await store.outbox("webhook", limit=1))[0]
            assert head.event_id == read_lines(results)[0]["event_id"]
            assert head.attempts >= 5 and "HTTP 503" in (head.last_error or "")
            await w.add(south, batch="south")
            await w.wait_all(timeout=20)
            everything = len(north) + len(south) + len(loose) + 2
            assert await store.outbox_size("webhook") == everything
            assert await store.dead_letters() == []
            assert clock.now() < OUTAGE
            outage.looked.set()

            def delivered() -> int:
                return len({c.headers["webhook-id"] for c in receiver.calls if c.at >= OUTAGE})

            await wait_until(lambda: delivered() == everything, within=20)
            # Not drain(): its deadline is on the FakeClock, which jumps while SQLite works.
            hook = runner_for(w, "webhook")
            await wait_until(lambda: hook.stats.delivered == everything, within=10)
            assert await store.outbox_size() == 0
            assert await store.dead_letters() == []
            calls = list(receiver.calls)
    in_file = read_lines(results)
    assert len(in_file) == everything
    assert not dead.exists()
    during = [c for c in calls if c.at < OUTAGE]
    after = [c for c in calls if c.at >= OUTAGE]
    # During the outage only the head event was tried (nothing overtook it), ever more
    # rarely, and more often than the old limit of 12 attempts would have allowed.
    assert {c.headers["webhook-id"] for c in during} == {in_file[0]["event_id"]}
    assert len(during) > OLD_MAX_ATTEMPTS
    assert during[-1].at - during[0].at >= OUTAGE - 301  # retried across the whole hour
    # Back: each event once, in the order it was detected (the file sink's order).
    assert [c.headers["webhook-id"] for c in after] == [e["event_id"] for e in in_file]
    assert [c.event for c in after] == in_file  # the same payload in both sinks
    for call in calls:
        assert Webhook(SECRET).verify(call.body, call.headers) == call.event
        assert call.headers["webhook-id"] == call.event["event_id"]
    head_bodies = {c.body for c in calls if c.headers["webhook-id"] == in_file[0]["event_id"]}
    assert len(head_bodies) == 1  # every retry sent the same event
    # Per task: its own event, then its batch's batch.finished, never the other way round.
    position = {c.event["event_id"]: n for n, c in enumerate(after)}
    by_task = {e["task_id"]: e for e in in_file if e["event"] == "task.finished"}
    assert sorted(by_task) == sorted(north + south + loose)
    for batch, members in (("north", north), ("south", south)):
        (announced,) = [
            e for e in in_file if e["event"] == "batch.finished" and e["batch"] == batch
        ]
        assert announced["tasks"] == len(members)
        last = max(position[by_task[t]["event_id"]] for t in members)
        assert position[announced["event_id"]] > last


# --- a full disk under the file sink -----------------------------------------------------------

# A label that makes every line longer than a memory page, tmpfs's unit of allocation, so
# that a full tmpfs can never take a whole line into the slack of the file's last page.
PAD = "p" * (mmap.PAGESIZE + 500)


def file_only_config(sim: Simulator, results: Path, tmp_path: Path) -> Any:
    return config_from_dict(
        {
            "sources": {"ms": source_block(sim)},
            "polling": {"backoff": {"min": "50ms", "initial": "50ms", "max": "200ms"}},
            "sinks": [
                # A disk can stay full for long: retry often here (the test is short), and
                # far more times than the default 12, so nothing is dead-lettered meanwhile.
                {"type": "file", "path": str(results), "fsync": "always",
                 "max_attempts": 100_000, "initial_backoff": "20ms", "max_backoff": "100ms",
                 "dead_letter": str(tmp_path / "dead.jsonl")},
            ],
        }
    )  # fmt: skip


async def run_through_a_full_disk(
    tmp_path: Path,
    results: Path,
    *,
    fill: Callable[[Watcher], None],
    free: Callable[[Watcher], None],
    written: Callable[[], bytes],
) -> None:
    """Four events written; the disk fills; five more (four tasks and their batch) are
    detected; the disk frees up. Asserts the outbox and the file at each step; ``written()``
    reads what the file holds (wherever it is kept while the disk is full)."""
    first = [f"before-{i}" for i in range(4)]
    later = [f"during-{i}" for i in range(4)]
    sim_config = SimulatorConfig(seed=11, auth="token", tokens={SIM_TOKEN})
    async with Simulator(sim_config) as sim:
        for task_id in first + later:
            sim.add_task(task_id, life=0.2, total=3, outcome="succeeded")
        store = SqliteStore(tmp_path / "w.db")  # the store's disk is not the full one
        config = file_only_config(sim, results, tmp_path)
        async with Watcher(config, store=store, seed=11) as w:
            runner = runner_for(w, "file")
            await w.add(first, labels={"pad": PAD})
            await w.wait_all(timeout=20)
            await wait_until(lambda: runner.stats.delivered == len(first), within=10)
            before = written()
            fill(w)
            for task_id in later:  # their life starts now, while the disk is full
                sim.add_task(task_id, life=0.2, total=3, outcome="succeeded")
            await w.add(later, batch="during", labels={"pad": PAD})
            await w.wait_all(timeout=20)
            failures = runner.stats.failed_attempts
            await wait_until(lambda: runner.stats.failed_attempts >= failures + 3, within=10)
            # Full: every later event waits in the outbox and the file is as it was, byte for
            # byte (a torn line would have changed it), after several failed attempts.
            assert await store.outbox_size("file") == len(later) + 1
            assert written() == before
            head = (await store.outbox("file", limit=1))[0]
            assert head.attempts >= 3 and "No space left on device" in (head.last_error or "")
            assert "No space left on device" in (runner.stats.last_error or "")
            free(w)
            await wait_until(lambda: runner.stats.delivered == len(first) + len(later) + 1)
            assert await store.outbox_size() == 0
            assert await store.dead_letters() == []
            detected = [e.event_id for e in w.finished_events()]
    lines = read_lines(results)
    assert (await anyio.Path(results).read_bytes()).startswith(before)
    # Each event exactly once, whole: the four written before the disk filled, then the
    # four that waited, then their batch.
    assert len(lines) == len(first) + len(later) + 1
    assert set(Counter(e["event_id"] for e in lines).values()) == {1}
    assert {e["event_id"] for e in lines[:-1]} == set(detected)
    assert {e["task_id"] for e in lines[: len(first)]} == set(first)
    assert {e["task_id"] for e in lines[len(first) : -1]} == set(later)
    assert lines[-1]["event"] == "batch.finished" and lines[-1]["tasks"] == len(later)
    assert all(e["labels"] == {"pad": PAD} for e in lines[:-1])
    assert not (tmp_path / "dead.jsonl").exists()


@contextlib.asynccontextmanager
async def tmpfs(where: Path, size: str) -> AsyncIterator[Path]:
    """A fresh tmpfs of ``size`` at ``where``; skips the test when mounting is not allowed."""
    await anyio.Path(where).mkdir()
    if sys.platform != "linux" or shutil.which("mount") is None:
        pytest.skip("needs Linux with mount(8) to make a small tmpfs")
    options = f"size={size},mode=0700"
    done = await anyio.run_process(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=False
    )
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"
        pytest.skip(
            f"cannot mount a tmpfs here ({reason}); "
            "test_dev_full_keeps_events_queued_until_the_file_is_writable proves it instead"
        )
    try:
        yield where
    finally:
        await anyio.run_process(["umount", str(where)], check=False)
        assert not await anyio.Path(where).is_mount(), f"could not unmount {where}"


def fill_up(directory: Path) -> None:
    """Write a filler file until the filesystem has not one free block left."""
    chunk = b"\0" * 65536
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        while True:
            try:
                if os.write(fd, chunk) < len(chunk):
                    chunk = chunk[: max(1, len(chunk) // 2)]
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    break
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)
    assert os.statvfs(directory).f_bavail == 0


async def test_full_tmpfs_keeps_events_queued_and_writes_them_once_space_returns(
    tmp_path: Path,
) -> None:
    """A real full filesystem: events stay in the outbox, no torn line, then each lands once."""
    async with tmpfs(tmp_path / "disk", "1m") as disk:
        results = disk / "results.jsonl"

        def fill(w: Watcher) -> None:
            fill_up(disk)
            # The file's last page has room left: the kernel will take part of the next
            # (longer than a page) line, then say ENOSPC. The sink must cut that part off.
            assert results.stat().st_size % mmap.PAGESIZE != 0

        def free(w: Watcher) -> None:
            (disk / "filler").unlink()

        await run_through_a_full_disk(
            tmp_path, results, fill=fill, free=free, written=results.read_bytes
        )


async def test_dev_full_keeps_events_queued_until_the_file_is_writable(tmp_path: Path) -> None:
    """/dev/full (a real ENOSPC on every write): events wait in the outbox, then land once."""
    if not await anyio.Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    results = tmp_path / "results.jsonl"
    kept = tmp_path / "results.kept"

    def fill(w: Watcher) -> None:
        # The file sink's path now leads to a device that is always full (as a full volume
        # mounted there would); SIGHUP in the daemon, reopen_sinks() here, makes it follow.
        os.replace(results, kept)
        results.symlink_to("/dev/full")
        w.reopen_sinks()

    def free(w: Watcher) -> None:
        os.replace(kept, results)  # back on a disk with room
        w.reopen_sinks()

    def written() -> bytes:
        # Never read the path while it is /dev/full: that read would never end.
        return (kept if results.is_symlink() else results).read_bytes()

    await run_through_a_full_disk(tmp_path, results, fill=fill, free=free, written=written)
