"""The ``file`` sink: append each event as one JSON line, with an fsync policy and rotation.

The sink is the file's only writer. Every line goes out in one ``write`` on an ``O_APPEND``
descriptor; if the write fails part-way (ENOSPC after a short write), the torn tail is cut off
again, so a reader never sees half a line and the retried event lands whole, once.
Blocking calls (write, fsync, rename) run in a worker thread so a slow disk never stalls the
event loop.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import anyio.to_thread

from .._exceptions import ClosedError
from .._log import get_logger
from ..config._schema import FileSinkConfig
from .base import DeliveryError

__all__ = ["FileSink", "FsyncPolicy", "append_line", "dumps_event"]

_log = get_logger("watcher.sinks")

FsyncPolicy = Literal["always", "batch", "never"]

# fsync policy "batch": at most one fsync per this many events or this many seconds, plus one
# whenever the runner finds the queue empty (``flush``) and one on close.
BATCH_EVENTS = 100
BATCH_SECONDS = 1.0

_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
_sync_data = getattr(os, "fdatasync", os.fsync)


def dumps_event(event: Mapping[str, Any]) -> str:
    """The event as compact JSON text (UTF-8 kept as is, no NaN), as every sink sends it."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def append_line(fd: int, data: bytes, *, write: Any = os.write) -> None:
    """Write all of ``data`` at the end of ``fd`` (opened ``O_APPEND``, one writer), or raise
    ``OSError`` having cut any torn tail off again; short writes are continued.

    If even the cut fails, the ``OSError`` raised carries ``torn_at`` (the size to cut back
    to) so the caller can repair the file before its next write.
    """
    start = os.fstat(fd).st_size
    view = memoryview(data)
    done = 0
    try:
        while done < len(view):
            written = write(fd, view[done:])
            if written <= 0:  # would loop forever; a regular file never does this
                raise OSError(errno.EIO, "write made no progress")
            done += written
    except OSError as exc:
        if done:
            try:
                os.ftruncate(fd, start)
            except OSError:
                exc.torn_at = start  # type: ignore[attr-defined]
        raise


class FileSink:
    """Append events as JSON lines to ``path``.

    ``fsync``: ``always`` (each event is on disk before it counts as delivered), ``batch``
    (see ``BATCH_EVENTS``/``BATCH_SECONDS``; always on close) or ``never``. With
    ``rotate_bytes``, a write that would take the file past that size first renames
    ``path`` to ``path.1`` (``path.1`` to ``path.2``, ...; ``keep`` old files). ``reopen()``
    (SIGHUP after an external logrotate) makes the next write open ``path`` afresh.
    """

    def __init__(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        fsync: FsyncPolicy = "batch",
        rotate_bytes: int | None = None,
        keep: int = 5,
    ) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.name = name
        self.path = Path(path).absolute()  # a later chdir must not move the file
        self.fsync = fsync
        self.rotate_bytes = rotate_bytes
        self.keep = keep
        self._lock = threading.Lock()  # the worker thread and aclose never overlap on the fd
        self._fd: int | None = None
        self._closed = False
        self._reopen = False
        self._torn: int | None = None  # size to cut back to, when undoing a torn write failed
        self._unsynced = 0
        self._last_sync = time.monotonic()
        self.syncs = 0  # fsyncs done, for metrics

    @classmethod
    def from_config(cls, name: str, config: FileSinkConfig) -> FileSink:
        return cls(
            name,
            config.path,
            fsync=config.fsync,
            rotate_bytes=config.rotate_bytes,
            keep=config.keep,
        )

    def __repr__(self) -> str:
        return f"FileSink(name={self.name!r}, path={str(self.path)!r}, fsync={self.fsync!r})"

    # --- the Sink protocol ------------------------------------------------------------------

    async def deliver(self, event: Mapping[str, Any]) -> None:
        try:
            line = (dumps_event(event) + "\n").encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise DeliveryError(
                f"event is not JSON-serialisable ({type(exc).__name__})", retryable=False
            ) from exc
        try:
            await anyio.to_thread.run_sync(self._append, line)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise DeliveryError(f"cannot write {self.path}: {reason}") from exc

    async def flush(self) -> None:
        """fsync what was written since the last fsync (unless the policy is ``never``)."""
        await anyio.to_thread.run_sync(self._flush)

    def reopen(self) -> None:
        """Open ``path`` afresh at the next write (call on SIGHUP after log rotation)."""
        self._reopen = True

    async def aclose(self) -> None:
        """Sync (per policy) and close; idempotent. A failing final fsync is logged, not raised."""
        try:
            await anyio.to_thread.run_sync(self._close)
        except OSError as exc:
            _log.error(
                "file sink close failed",
                sink=self.name,
                path=str(self.path),
                error=exc.strerror or type(exc).__name__,
            )

    # --- in the worker thread ---------------------------------------------------------------

    def _write(self, fd: int, data: memoryview) -> int:
        """One ``os.write``; a seam for tests that simulate a full disk."""
        return os.write(fd, data)

    def _append(self, line: bytes) -> None:
        with self._lock:
            if self._closed:
                raise ClosedError(f"file sink {self.name!r} is closed")
            if self._reopen:
                self._reopen = False
                self._release()
            fd = self._open()
            if self._torn is not None:
                self._repair(fd)
            if self.rotate_bytes is not None:
                size = os.fstat(fd).st_size
                if size > 0 and size + len(line) > self.rotate_bytes:
                    fd = self._rotate()
            try:
                append_line(fd, line, write=self._write)
            except OSError as exc:
                self._torn = getattr(exc, "torn_at", None)
                raise
            self._unsynced += 1
            if self.fsync == "always" or (
                self.fsync == "batch"
                and (
                    self._unsynced >= BATCH_EVENTS
                    or time.monotonic() - self._last_sync >= BATCH_SECONDS
                )
            ):
                self._sync(fd)

    def _repair(self, fd: int) -> None:
        torn = self._torn
        if torn is not None and os.fstat(fd).st_size > torn:
            try:
                os.ftruncate(fd, torn)
            except OSError:
                # Cannot cut it (append-only file?): end the torn line so later lines parse.
                append_line(fd, b"\n", write=self._write)
        self._torn = None  # also when the file was truncated or replaced from outside

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, _OPEN_FLAGS, 0o644)
            self._last_sync = time.monotonic()
        return self._fd

    def _sync(self, fd: int) -> None:
        _sync_data(fd)
        self.syncs += 1
        self._unsynced = 0
        self._last_sync = time.monotonic()

    def _release(self) -> None:
        """Sync (per policy) and close the current descriptor."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._torn is not None:
                with contextlib.suppress(OSError):  # best effort: this file is done with
                    self._repair(fd)
            if self.fsync != "never" and self._unsynced:
                self._sync(fd)
        finally:
            self._torn = None
            self._unsynced = 0
            os.close(fd)

    def _rotate(self) -> int:
        self._release()
        base = str(self.path)
        for index in range(self.keep - 1, 0, -1):
            older = f"{base}.{index}"
            if os.path.lexists(older):
                os.replace(older, f"{base}.{index + 1}")
        if os.path.lexists(base):  # gone if someone else rotated it away
            os.replace(base, f"{base}.1")
        if self.fsync != "never":
            _sync_dir(self.path.parent)
        return self._open()

    def _flush(self) -> None:
        with self._lock:
            if self._fd is not None and self._unsynced and self.fsync != "never":
                self._sync(self._fd)

    def _close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._release()


def _sync_dir(directory: Path) -> None:
    """Make renames in ``directory`` durable (where the OS supports fsync on a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
