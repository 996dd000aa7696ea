"""SQLite store only: persistence across reopen and ``kill -9``, group commit, refusals."""

from __future__ import annotations

import asyncio
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from watcher._exceptions import ConfigError
from watcher.stores import SqliteStore, WatchRecord
from watcher.stores._sqlschema import SCHEMA_VERSION

SRC = "main"


def rec(task_id: str, **fields: Any) -> WatchRecord:
    values: dict[str, Any] = {"watched_at": 10.0, "due_at": 20.0, **fields}
    return WatchRecord(SRC, task_id, **values)


def finished(task_id: str, outcome: str = "succeeded") -> WatchRecord:
    return rec(task_id, state="done", outcome=outcome, polls=2, finished_at=30.0)


# --- persistence --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_reopen_keeps_everything(tmp_path: Path) -> None:
    """Watches, buffered reschedules, outbox state and dead letters survive close + reopen."""
    path = tmp_path / "w.db"
    async with SqliteStore(path) as store:
        await store.add([rec(f"t{i}", batch="b", labels={"i": str(i)}) for i in range(6)])
        await store.complete(finished("t0"), "e0", {"n": 0}, ["a", "b"])
        await store.complete(finished("t1", "failed"), "e1", {"n": 1}, ["a"])
        await store.enqueue("batch-b", {"event": "batch.finished"}, ["a"])
        a0, a1, a2 = await store.outbox("a")
        await store.ack("a", [a0.seq])
        await store.retry_later("a", a1.seq, attempts=2, next_attempt_at=55.0, error="503")
        await store.dead_letter("a", a2.seq, reason="410 Gone")
        await store.remove(SRC, "t5")
        await store.reschedule(SRC, "t2", due_at=1.5, polls=7, errors=1)  # buffered, not awaited
        before = (
            await store.pending(),
            await store.list(limit=1000),
            await store.outbox("a"),
            await store.outbox("b"),
            await store.dead_letters(),
            await store.counts(),
        )
        last_seq = max(i.seq for i in [*before[2], *before[3], a2])
    async with SqliteStore(path) as store:
        after = (
            await store.pending(),
            await store.list(limit=1000),
            await store.outbox("a"),
            await store.outbox("b"),
            await store.dead_letters(),
            await store.counts(),
        )
        assert after == before
        assert after[0][0].task_id == "t2" and after[0][0].polls == 7
        # Seqs keep growing across restarts, even past acked and dead items.
        await store.enqueue("later", {}, ["a"])
        newest = (await store.outbox("a"))[-1]
        assert newest.event_id == "later" and newest.seq > last_seq
        # Idempotency survives restarts: the watch is done, the batch event was settled.
        await store.complete(finished("t0"), "e0", {"n": 0}, ["a", "b"])
        await store.enqueue("batch-b", {"event": "batch.finished"}, ["a"])
        assert await store.outbox_size() == 3


CHILD = r"""
import asyncio, random, sys
from watcher.stores import SqliteStore, WatchRecord

async def main(path, seed, prefix):
    rng = random.Random(seed)
    store = SqliteStore(path)
    await store.open()
    print("ready", flush=True)

    async def finish(task_id):
        record = WatchRecord("main", task_id, 1.0, 2.0, polls=3, state="done",
                             outcome="succeeded", finished_at=3.0)
        payload = {"task_id": task_id, "pad": "x" * rng.randint(10, 3000)}
        await store.complete(record, "ev-" + task_id, payload, ["a", "b"])
        print("done", task_id, flush=True)

    n = 0
    while True:
        ids = [f"{prefix}{n + i}" for i in range(25)]
        n += 25
        await store.add([WatchRecord("main", t, 1.0, 2.0, batch=prefix) for t in ids])
        for t in ids:
            await store.reschedule("main", t, due_at=rng.random() * 100, polls=1, errors=0)
        await asyncio.gather(*(finish(t) for t in ids if rng.random() < 0.7))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
"""


def _reader(stream: object, lines: queue.Queue[str | None]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.put(line)
    lines.put(None)


def run_and_kill(path: Path, seed: int, prefix: str, kill_after: int) -> set[str]:
    """Run the writer child until it reported ``kill_after`` completions, SIGKILL it, and
    return every task id it reported as completed."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(seed), prefix],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_reader, args=(child.stdout, lines), daemon=True)
    reader.start()
    reported: set[str] = set()
    deadline = time.monotonic() + 30
    try:
        while len(reported) < kill_after:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            assert line is not None, "the child exited early"
            if line.startswith("done "):
                reported.add(line.split()[1])
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    reader.join(timeout=10)
    while (line := lines.get_nowait()) is not None:  # what it printed before it died
        if line.startswith("done "):
            reported.add(line.split()[1])
    assert child.stdout is not None
    child.stdout.close()
    return reported


def test_kill_9_loses_no_completed_result(tmp_path: Path) -> None:
    """After SIGKILL mid-write: the file is intact, every reported completion is done with
    its outbox items, and no outbox item belongs to a watch that is not done."""
    path = tmp_path / "w.db"
    rng = random.Random(20240611)
    reported: set[str] = set()
    for round_ in range(2):  # the second child starts from the first one's crashed file
        reported |= run_and_kill(path, rng.randrange(10**6), f"r{round_}-", rng.randint(40, 400))

        db = sqlite3.connect(path)
        try:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            done = {t for (t,) in db.execute("SELECT task_id FROM watches WHERE state = 'done'")}
            items = set(db.execute("SELECT sink, event_id FROM outbox").fetchall())
            watches = db.execute("SELECT count(*) FROM watches").fetchone()[0]
        finally:
            db.close()
        assert reported <= done
        assert items == {(sink, f"ev-{t}") for t in done for sink in ("a", "b")}

        async def reopen(watches: int = watches, done: set[str] = done) -> None:
            async with SqliteStore(path) as store:
                assert await store.counts() == {"pending": watches - len(done), "done": len(done)}
                assert await store.outbox_size("a") == len(done)

        asyncio.run(reopen())


# --- group commit -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_concurrent_completions_share_commits(tmp_path: Path) -> None:
    """300 concurrent complete() calls need far fewer than 300 transactions."""
    n = 300
    async with SqliteStore(tmp_path / "w.db") as store:
        await store.add([rec(f"t{i}") for i in range(n)])
        before = store.stats.commits
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(store.complete, finished(f"t{i}"), f"e{i}", {"i": i}, ["a", "b"])
        commits = store.stats.commits - before
        assert 1 <= commits <= n // 30
        assert await store.counts() == {"pending": 0, "done": n}
        assert await store.outbox_size() == 2 * n


@pytest.mark.anyio
async def test_calls_wait_for_their_commit(tmp_path: Path) -> None:
    """complete() returns only once its transaction committed: another connection sees it."""
    path = tmp_path / "w.db"
    async with SqliteStore(path, batch_window=0.05) as store:
        await store.add([rec("t1")])
        await store.complete(finished("t1"), "e1", {}, ["a"])
        other = sqlite3.connect(path)
        try:
            row = other.execute("SELECT state FROM watches WHERE task_id = 't1'").fetchone()
            assert row == ("done",)
            assert other.execute("SELECT count(*) FROM outbox").fetchone() == (1,)
        finally:
            other.close()


@pytest.mark.anyio
async def test_a_bad_call_fails_alone(tmp_path: Path) -> None:
    """A call that fails inside a shared batch fails by itself; its neighbours commit."""
    async with SqliteStore(tmp_path / "w.db") as store:
        bad = WatchRecord(SRC, "bad", watched_at=object(), due_at=1.0)  # type: ignore[arg-type]
        results: dict[str, list[bool] | sqlite3.Error] = {}

        async def add(name: str, record: WatchRecord) -> None:
            try:
                results[name] = await store.add([record])
            except sqlite3.Error as exc:
                results[name] = exc

        async with anyio.create_task_group() as tg:
            tg.start_soon(add, "one", rec("one"))
            tg.start_soon(add, "bad", bad)
            tg.start_soon(add, "two", rec("two"))
        assert results["one"] == [True] and results["two"] == [True]
        assert isinstance(results["bad"], sqlite3.Error)
        assert store.stats.rollbacks == 1
        assert await store.counts() == {"pending": 2, "done": 0}


@pytest.mark.anyio
async def test_full_queue_makes_reschedule_wait(tmp_path: Path) -> None:
    """With max_queue reached, reschedule() waits for its commit (back-pressure)."""
    async with SqliteStore(tmp_path / "w.db", max_queue=0) as store:
        await store.add([rec("t1")])
        await store.reschedule(SRC, "t1", due_at=5.0, polls=1, errors=0)
        before = store.stats.commits
        await store.reschedule(SRC, "t1", due_at=6.0, polls=2, errors=0)
        assert store.stats.commits == before + 1  # it returned after its own commit


@pytest.mark.anyio
async def test_bulk_add_and_scans_cross_chunk_boundaries(tmp_path: Path) -> None:
    """A 12,000-watch add, pending() and list() past the 5,000-row chunks lose nothing."""
    rng = random.Random(5)
    dues = [float(rng.randint(0, 1000)) for _ in range(12_000)]
    records = [rec(f"t{i:05}", due_at=d, labels={"n": str(i % 3)}) for i, d in enumerate(dues)]
    async with SqliteStore(tmp_path / "w.db") as store:
        assert await store.add(records) == [True] * len(records)
        pending = await store.pending()
        assert pending == sorted(records, key=lambda r: r.due_at)
        assert await store.list(offset=4_990, limit=20) == records[4_990:5_010]
        assert len(await store.list(limit=100_000)) == len(records)


@pytest.mark.anyio
async def test_a_cancelled_caller_still_gets_its_write(tmp_path: Path) -> None:
    """complete() cancelled while waiting for its commit is applied all the same."""
    async with SqliteStore(tmp_path / "w.db") as store:
        await store.add([rec("t1")])
        with anyio.move_on_after(0) as scope:
            await store.complete(finished("t1"), "e1", {}, ["a"])
        assert scope.cancelled_caught
        await store.flush()
        got = await store.get(SRC, "t1")
        assert got is not None and got.state == "done"
        assert await store.outbox_size("a") == 1


# --- opening ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_new_file_is_wal_with_the_current_schema(tmp_path: Path) -> None:
    """A new file gets WAL mode and user_version = SCHEMA_VERSION."""
    path = tmp_path / "w.db"
    async with SqliteStore(path):
        pass
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    finally:
        db.close()


@pytest.mark.anyio
async def test_missing_directory_is_refused(tmp_path: Path) -> None:
    """A path in a directory that does not exist is a ConfigError naming it; nothing is made."""
    path = tmp_path / "nope" / "w.db"
    store = SqliteStore(path)
    with pytest.raises(ConfigError, match="does not exist") as caught:
        await store.open()
    assert str(tmp_path / "nope") in str(caught.value)
    assert caught.value.issues[0].path == "store.path"
    assert not (tmp_path / "nope").exists()


@pytest.mark.anyio
async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A file from a newer watcher (higher user_version) is refused, not touched."""
    path = tmp_path / "w.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(ConfigError, match="newer watcher"):
        await SqliteStore(path).open()


@pytest.mark.anyio
async def test_not_a_database_is_refused(tmp_path: Path) -> None:
    """A file that is not SQLite is a ConfigError naming the path."""
    path = tmp_path / "w.db"
    path.write_bytes(b"this is not a database, just text that is long enough " * 40)
    with pytest.raises(ConfigError, match=r"w\.db"):
        await SqliteStore(path).open()


@pytest.mark.anyio
async def test_damaged_file_is_refused(tmp_path: Path) -> None:
    """A file with overwritten pages fails the check on open with a ConfigError."""
    path = tmp_path / "w.db"
    async with SqliteStore(path) as store:
        await store.add([rec(f"t{i:05}", labels={"pad": "x" * 200}) for i in range(2000)])
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(size // 2)
        f.write(b"\xa5" * 8192)
    with pytest.raises(ConfigError, match=r"w\.db"):
        await SqliteStore(path).open()


# --- one process per database -------------------------------------------------------------

HOLDER = r"""
import asyncio, sys
from watcher.stores import SqliteStore

async def main(path):
    async with SqliteStore(path):
        print("open", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.anyio
async def test_a_second_process_on_the_same_database_is_refused(tmp_path: Path) -> None:
    """While one process has the store open, another's open fails naming the holder's pid;
    once the holder is killed with SIGKILL the lock is gone and the database opens."""
    path = tmp_path / "w.db"
    child = await anyio.open_process([sys.executable, "-c", HOLDER, str(path)])
    try:
        assert child.stdout is not None
        seen = b""
        with anyio.fail_after(20):
            while b"\n" not in seen:
                seen += await child.stdout.receive()
        assert seen.strip() == b"open"
        with pytest.raises(ConfigError, match="in use by another watcher process") as caught:
            await SqliteStore(path).open()
        assert f"pid {child.pid}" in str(caught.value)
        assert caught.value.issues[0].path == "store.path"
    finally:
        child.send_signal(signal.SIGKILL)
        with anyio.fail_after(10):
            await child.wait()
        await child.aclose()
    async with SqliteStore(path) as store:  # no stale lock after a crash
        await store.add([rec("after-crash")])
        assert (await store.get(SRC, "after-crash")) is not None


@pytest.mark.anyio
async def test_the_lock_is_released_on_close(tmp_path: Path) -> None:
    """Closing the store lets the next one open the same file, in the same process too."""
    path = tmp_path / "w.db"
    async with SqliteStore(path) as store:
        await store.add([rec("a")])
        with pytest.raises(ConfigError, match="in use"):
            await SqliteStore(path).open()
    async with SqliteStore(path) as store:
        assert (await store.get(SRC, "a")) is not None


@pytest.mark.anyio
async def test_a_symlink_to_the_database_meets_the_same_lock(tmp_path: Path) -> None:
    """Another name for the same file through a symlink is refused while the store is open."""
    path = tmp_path / "w.db"
    alias = tmp_path / "alias.db"
    async with SqliteStore(path) as store:
        await store.add([rec("a")])
        alias.symlink_to(path)
        with pytest.raises(ConfigError, match="in use"):
            await SqliteStore(alias).open()
