"""The file sink: exact JSON lines, fsync policies, rotation, reopen, and a full disk."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest
from _sink_receiver import event

from watcher._exceptions import ClosedError
from watcher.config import FileSinkConfig
from watcher.sinks import DeliveryError, FileSink, build_sink

pytestmark = pytest.mark.anyio


def read(path: Path | str) -> bytes:
    return Path(path).read_bytes()


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def line(n: int) -> bytes:
    return (json.dumps(event(n), ensure_ascii=False, separators=(",", ":")) + "\n").encode()


class FullDisk(FileSink):
    """A file sink on a disk that can fill up: ``space`` bytes are left (None: plenty)."""

    space: int | None = None
    attempts = 0

    def _write(self, fd: int, data: memoryview) -> int:
        self.attempts += 1
        if self.space is None:
            return super()._write(fd, data)
        if self.space == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = super()._write(fd, data[: self.space])  # a short write, as the kernel does
        self.space -= written
        return written


async def test_events_are_appended_as_exact_json_lines(tmp_path: Path) -> None:
    """Each event is one compact UTF-8 JSON line, appended after what was there."""
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"old":true}\n')
    sink = FileSink("file", path)
    for n in (1, 2, 3):
        await sink.deliver(event(n))
    await sink.aclose()
    assert path.read_bytes() == b'{"old":true}\n' + line(1) + line(2) + line(3)
    assert "résumé ✓" in path.read_text(encoding="utf-8")


@pytest.mark.parametrize(("policy", "low", "high"), [("always", 150, 150), ("never", 0, 0)])
async def test_fsync_always_and_never(tmp_path: Path, policy: Any, low: int, high: int) -> None:
    """always syncs every event, never not even on close; the lines are the same."""
    path = tmp_path / "r.jsonl"
    sink = FileSink("file", path, fsync=policy)
    for n in range(150):
        await sink.deliver(event(n))
    await sink.flush()
    await sink.aclose()
    assert low <= sink.syncs <= high
    assert path.read_bytes() == b"".join(line(n) for n in range(150))


async def test_fsync_batch_groups_events(tmp_path: Path) -> None:
    """batch syncs per ~100 events (or ~1 s), on flush and on close: far fewer than events."""
    path = tmp_path / "r.jsonl"
    sink = FileSink("file", path, fsync="batch")
    for n in range(150):
        await sink.deliver(event(n))
    assert 1 <= sink.syncs <= 5
    before_flush = sink.syncs
    await sink.flush()
    assert sink.syncs == before_flush + 1
    await sink.deliver(event(150))
    await sink.aclose()
    assert sink.syncs == before_flush + 2  # the last one on close
    assert path.read_bytes() == b"".join(line(n) for n in range(151))


async def test_rotation_keeps_n_files_in_order(tmp_path: Path) -> None:
    """Past rotate_bytes, path -> path.1 -> path.2; older than keep are dropped; none is cut."""
    path = tmp_path / "r.jsonl"
    size = len(line(0))
    sink = FileSink("file", path, rotate_bytes=2 * size, keep=2)
    for n in range(9):
        await sink.deliver(event(n))
    await sink.aclose()
    assert names(tmp_path) == ["r.jsonl", "r.jsonl.1", "r.jsonl.2"]
    assert path.read_bytes() == line(8)
    assert read(f"{path}.1") == line(6) + line(7)
    assert read(f"{path}.2") == line(4) + line(5)


async def test_a_line_larger_than_rotate_bytes_still_goes_out_whole(tmp_path: Path) -> None:
    """A single event bigger than the limit is written whole into a fresh file."""
    path = tmp_path / "r.jsonl"
    sink = FileSink("file", path, rotate_bytes=10, keep=1)
    await sink.deliver(event(1))
    await sink.deliver(event(2))
    await sink.aclose()
    assert path.read_bytes() == line(2)
    assert read(f"{path}.1") == line(1)


async def test_reopen_follows_an_external_rotation(tmp_path: Path) -> None:
    """After logrotate renames the file, reopen() makes the next write create it afresh."""
    path = tmp_path / "r.jsonl"
    sink = FileSink("file", path)
    await sink.deliver(event(1))
    path.rename(tmp_path / "r.jsonl.rotated")
    await sink.deliver(event(2))  # still the open descriptor: the rotated file
    sink.reopen()
    await sink.deliver(event(3))
    await sink.aclose()
    assert (tmp_path / "r.jsonl.rotated").read_bytes() == line(1) + line(2)
    assert path.read_bytes() == line(3)


async def test_full_disk_raises_and_writes_once_space_returns(tmp_path: Path) -> None:
    """ENOSPC is a retryable DeliveryError with nothing written; the retry lands once."""
    path = tmp_path / "r.jsonl"
    sink = FullDisk("file", path)
    await sink.deliver(event(1))
    sink.space = 0
    with pytest.raises(DeliveryError) as caught:
        await sink.deliver(event(2))
    assert caught.value.retryable
    assert "No space left on device" in str(caught.value)
    assert path.read_bytes() == line(1)
    sink.space = None
    await sink.deliver(event(2))
    await sink.aclose()
    assert path.read_bytes() == line(1) + line(2)


async def test_a_torn_write_is_cut_off_again(tmp_path: Path) -> None:
    """A short write followed by ENOSPC leaves no partial line behind."""
    path = tmp_path / "r.jsonl"
    sink = FullDisk("file", path)
    await sink.deliver(event(1))
    sink.space = 10  # the kernel takes 10 bytes, then the disk is full
    with pytest.raises(DeliveryError):
        await sink.deliver(event(2))
    assert sink.attempts == 3  # the first event, then 10 bytes, then ENOSPC
    assert path.read_bytes() == line(1)
    sink.space = None
    await sink.deliver(event(2))
    await sink.aclose()
    assert path.read_bytes() == line(1) + line(2)
    assert all(json.loads(text) for text in path.read_text(encoding="utf-8").splitlines())


async def test_short_writes_are_continued(tmp_path: Path) -> None:
    """A write that the OS takes in pieces still ends up as the whole line."""

    class Dribble(FileSink):
        def _write(self, fd: int, data: memoryview) -> int:
            return super()._write(fd, data[:7])

    path = tmp_path / "r.jsonl"
    sink = Dribble("file", path)
    await sink.deliver(event(1))
    await sink.aclose()
    assert path.read_bytes() == line(1)


async def test_a_missing_directory_is_a_retryable_error(tmp_path: Path) -> None:
    """An unwritable path fails the delivery (to be retried), naming the path."""
    sink = FileSink("file", tmp_path / "nope" / "r.jsonl")
    with pytest.raises(DeliveryError) as caught:
        await sink.deliver(event(1))
    await sink.aclose()
    assert caught.value.retryable
    assert "nope" in str(caught.value)


async def test_unserialisable_event_is_not_retryable(tmp_path: Path) -> None:
    """An event that is not JSON (NaN, a set) can never be written: not retryable."""
    sink = FileSink("file", tmp_path / "r.jsonl")
    for bad in ({"event_id": "x", "v": float("nan")}, {"event_id": "x", "v": {1, 2}}):
        with pytest.raises(DeliveryError) as caught:
            await sink.deliver(bad)
        assert not caught.value.retryable
    await sink.aclose()
    assert not (tmp_path / "r.jsonl").exists() or (tmp_path / "r.jsonl").read_bytes() == b""


async def test_closed_sink_refuses_writes(tmp_path: Path) -> None:
    """deliver after aclose raises ClosedError; aclose twice is fine."""
    sink = FileSink("file", tmp_path / "r.jsonl")
    await sink.deliver(event(1))
    await sink.aclose()
    await sink.aclose()
    with pytest.raises(ClosedError):
        await sink.deliver(event(2))


async def test_built_from_config(tmp_path: Path) -> None:
    """build_sink passes path, fsync, rotation and keep through."""
    config = FileSinkConfig(
        type="file", path=str(tmp_path / "r.jsonl"), fsync="always", rotate_bytes=1000, keep=3
    )
    sink = build_sink(config, name="results")
    assert isinstance(sink, FileSink)
    assert (sink.name, sink.fsync, sink.rotate_bytes, sink.keep) == ("results", "always", 1000, 3)
    await sink.deliver(event(1))
    await sink.aclose()
    assert (tmp_path / "r.jsonl").read_bytes() == line(1)
