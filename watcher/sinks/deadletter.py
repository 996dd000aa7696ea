"""The dead-letter file: events a sink gave up on, one JSON line each, fsynced.

Several runners may share one file (the default path), so appends within this process are
serialised per path; each record is written with one ``O_APPEND`` write and synced before
the store forgets the event, so an event is never in neither place.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread

from .file import append_line

__all__ = ["DEFAULT_DEAD_LETTER_PATH", "DeadLetterFile"]

DEFAULT_DEAD_LETTER_PATH = "watcher-dead-letters.jsonl"

# Read-write: a torn last line is detected by reading the last byte.
_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(path: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())


def _iso(epoch: float) -> str:
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


class DeadLetterFile:
    """Appends ``{"sink", "event_id", "reason", "attempts", "event", "at"}`` lines to ``path``."""

    def __init__(self, path: str | os.PathLike[str] = DEFAULT_DEAD_LETTER_PATH) -> None:
        self.path = Path(path).absolute()  # resolved now: a later chdir must not move it

    def __repr__(self) -> str:
        return f"DeadLetterFile({str(self.path)!r})"

    async def append(
        self,
        *,
        sink: str,
        event_id: str,
        reason: str,
        attempts: int,
        event: Mapping[str, Any],
        at: float,
    ) -> None:
        """Write one record and fsync it; raises ``OSError`` if it could not be made durable."""
        record = {
            "sink": sink,
            "event_id": event_id,
            "reason": reason,
            "attempts": attempts,
            "event": dict(event),
            "at": _iso(at),
        }
        # default=str: an event that could not be serialised may be why it is here at all.
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
        await anyio.to_thread.run_sync(self._write, (line + "\n").encode("utf-8"))

    def _write(self, data: bytes) -> None:
        with _lock_for(self.path):
            fd = os.open(self.path, _OPEN_FLAGS, 0o644)
            try:
                _end_torn_line(fd)
                append_line(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)


def _end_torn_line(fd: int) -> None:
    """If a crash left a partial last line, end it so the next record parses on its own."""
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        append_line(fd, b"\n")
