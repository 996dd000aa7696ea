"""The in-memory record of one watched task: small, slotted, mutable only by its scheduler."""

from __future__ import annotations

from collections.abc import Mapping

from ._exceptions import SourceError
from ._models import TaskSnapshot
from .backoff import Bounds

__all__ = ["Watch"]


class Watch:
    """One task being watched. Slotted: a daemon may hold a million of these.

    Times are the scheduler clock's (monotonic) seconds except ``watched_at`` (epoch seconds).
    """

    __slots__ = (
        "batch",
        "bounds",
        "deadline",
        "done",
        "due",
        "errors",
        "key",
        "labels",
        "last",
        "last_delay",
        "last_error",
        "polls",
        "source",
        "task_id",
        "watched_at",
    )

    def __init__(
        self,
        task_id: str,
        source: str,
        *,
        watched_at: float,
        deadline: float | None = None,
        batch: str | None = None,
        labels: Mapping[str, str] | None = None,
        key: str = "",
    ) -> None:
        self.task_id = task_id
        self.source = source
        self.watched_at = watched_at
        self.deadline = deadline
        self.batch = batch
        self.labels = labels
        self.key = key  # distinguishes re-watches of one task in stable event ids
        self.due = 0.0
        self.polls = 0
        self.errors = 0
        self.last_delay = 0.0
        self.bounds: Bounds | None = None
        self.last: TaskSnapshot | None = None
        self.last_error: SourceError | None = None
        self.done = False

    def __repr__(self) -> str:
        return f"Watch({self.source}/{self.task_id}, polls={self.polls}, done={self.done})"
