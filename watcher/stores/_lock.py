"""One process per database: an advisory lock beside the SQLite file.

Two watchers on one database would both poll every pending watch (twice the request budget)
and both deliver every event. ``flock`` is released by the kernel when the holder dies, even
by SIGKILL, so a crash never leaves a stale lock behind, unlike a pid file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

__all__ = ["DatabaseLock", "LockHeldError"]


class LockHeldError(Exception):
    """Another process holds the lock; ``holder`` is its pid as it wrote it, if readable."""

    def __init__(self, holder: str | None) -> None:
        super().__init__(holder)
        self.holder = holder


class DatabaseLock:
    """An exclusive, non-blocking ``flock`` on ``<database>.lock`` holding the owner's pid.

    A hard link to the database is another name with no lock of its own; symlinks resolve."""

    def __init__(self, database: str) -> None:
        # The real path: a symlink to the database must meet the same lock.
        self.path = f"{os.path.realpath(database)}.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or None
            os.close(fd)
            raise LockHeldError(holder) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the descriptor drops the lock
