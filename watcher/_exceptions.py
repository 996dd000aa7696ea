"""Every error watcher raises on purpose derives from one root.

    WatcherError
    ├── ConfigError            bad config file or values; ``issues`` lists every problem
    ├── InvalidTaskIdError     a task id refused before any request (also a ``ValueError``)
    ├── ClosedError            a resource used after ``aclose()``
    ├── WaitTimeoutError       ``wait_all``/``wait_sync`` ran out of time (also a ``TimeoutError``);
    │                          carries the events that did arrive and the ids still pending
    └── SourceError            a poll failed; carries HTTP status, error_code, error_msg, request_id
        ├── TransientError     retry with backoff; never a task result on its own
        │   ├── RateLimitedError      429; ``retry_after`` seconds when the server said
        │   ├── ConnectError          connect failure, reset, dropped connection
        │   ├── PollTimeoutError      connect or read timeout
        │   ├── ServerError           5xx, or an API error code that means "try again"
        │   └── MalformedResponseError  body not JSON, wrong shape or type, or too large
        ├── AuthError          401/403: refresh credentials, then pause the source
        └── PermanentError     this task can never be polled (400 MSS.000000003, 404):
                               the task ends with outcome ``error``

``aiohttp`` errors are translated where they enter (``sources/_http.py``) with
``raise ... from`` so the cause stays visible in tracebacks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._models import ResultEvent


class WatcherError(Exception):
    """Root of every error watcher raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a config: where it is and what is wrong."""

    path: str  # dotted key path, e.g. "sources.main.auth.sk"
    message: str
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}:{self.line}" if self.line is not None else self.file
        if not self.path:  # a problem with the file as a whole
            return f"{where}: {self.message}" if where else self.message
        return f"{where} {self.path}: {self.message}" if where else f"{self.path}: {self.message}"


class ConfigError(WatcherError):
    """The configuration is invalid. ``issues`` holds every problem found, not just the first."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues) or "invalid configuration")


class InvalidTaskIdError(WatcherError, ValueError):
    """A task id that watcher refuses to send; ``reason`` says why."""

    def __init__(self, task_id: str, reason: str) -> None:
        self.task_id = task_id
        self.reason = reason
        shown = task_id if len(task_id) <= 40 else task_id[:37] + "..."
        super().__init__(f"invalid task id {shown!r}: {reason}")


class ClosedError(WatcherError, RuntimeError):
    """A resource was used after it was closed, or entered twice."""


class WaitTimeoutError(WatcherError, TimeoutError):
    """The time given to wait ran out. Nothing is dropped: ``events`` holds the results that
    did arrive (in the order asked for) and ``pending`` the task ids still without one."""

    def __init__(
        self, timeout: float, events: Sequence[ResultEvent], pending: Sequence[str]
    ) -> None:
        self.timeout = timeout
        self.events = list(events)
        self.pending = list(pending)
        super().__init__(
            f"{len(self.pending)} of {len(self.events) + len(self.pending)} tasks still "
            f"pending after {timeout:g} s"
        )


class SourceError(WatcherError):
    """A poll failed. Subclasses say whether to retry, re-authenticate or give up."""

    kind = "source"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_code: str | None = None,
        error_msg: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.message = message
        self.status = status
        self.error_code = error_code
        self.error_msg = error_msg
        self.request_id = request_id
        super().__init__(message)

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"status={self.status}")
        if self.error_code:
            parts.append(f"code={self.error_code}")
        if self.error_msg and self.error_msg != self.message:
            parts.append(f"msg={self.error_msg!r}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return " ".join(parts)


class TransientError(SourceError):
    """Worth retrying after a backoff; never becomes a task result on its own."""

    kind = "transient"


class RateLimitedError(TransientError):
    """The API throttled us (429). ``retry_after`` is in seconds when the server gave one."""

    kind = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        error_code: str | None = None,
        error_msg: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(
            message,
            status=status,
            error_code=error_code,
            error_msg=error_msg,
            request_id=request_id,
        )
        self.retry_after = retry_after


class ConnectError(TransientError):
    """Could not connect, or the connection was reset or dropped mid-request."""

    kind = "connect"


class PollTimeoutError(TransientError):
    """The connect or read timeout expired."""

    kind = "timeout"


class ServerError(TransientError):
    """The server failed (5xx), or answered with an error code that means "try again"."""

    kind = "server"


class MalformedResponseError(TransientError):
    """The body was not JSON, had the wrong shape or types, or was larger than allowed."""

    kind = "malformed"


class AuthError(SourceError):
    """Credentials were refused (401/403) even after a refresh; the source should pause."""

    kind = "auth"


class PermanentError(SourceError):
    """This task can never be polled successfully; it ends with outcome ``error``."""

    kind = "permanent"
