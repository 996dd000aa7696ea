"""The in-memory record of one watched task: small, slotted, mutable only by its scheduler."""

from __future__ import annotations

from collections.abc import Mapping

from ._exceptions import SourceError
from ._models import TaskSnapshot
from .backoff import Bounds

__all__ = ["Watch"]


class _Shared:
    """The fields that watches registered together have in common, stored once for all."""

    __slots__ = ("batch", "deadline", "key", "labels", "source", "watched_at")

    def __init__(
        self,
        source: str,
        watched_at: float,
        *,
        deadline: float | None,
        batch: str | None,
        labels: Mapping[str, str] | None,
        key: str,
    ) -> None:
        self.source = source
        self.watched_at = watched_at
        self.deadline = deadline
        self.batch = batch
        self.labels = labels
        self.key = key

    def same(
        self,
        source: str,
        watched_at: float,
        *,
        deadline: float | None,
        batch: str | None,
        labels: Mapping[str, str] | None,
        key: str,
    ) -> bool:
        return (
            self.source == source
            and self.watched_at == watched_at
            and self.deadline == deadline
            and self.batch == batch
            and self.key == key
            and (self.labels is labels or self.labels == labels)
        )

    def but(self, **changes: object) -> _Shared:
        fields = {name: getattr(self, name) for name in self.__slots__} | changes
        return _Shared(**fields)


# Watches are created in runs that share everything but the id (one add(), one resume
# batch), so remembering the last shared part is enough to store it once per run.
_last: _Shared | None = None


class Watch:
    """One task being watched. Slotted: a daemon may hold a million of these.

    Times are the scheduler clock's (monotonic) seconds except ``watched_at`` (epoch seconds).
    What consecutive watches have in common (source, batch, labels, deadline, ...) is held
    once for all of them; assigning to such a field gives this watch its own copy.
    """

    __slots__ = (
        "_shared",
        "bounds",
        "done",
        "due",
        "errors",
        "last",
        "last_delay",
        "last_error",
        "polls",
        "task_id",
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
        global _last  # noqa: PLW0603 - a one-entry cache of immutable values
        shared = _last
        if shared is None or not shared.same(
            source, watched_at, deadline=deadline, batch=batch, labels=labels, key=key
        ):
            shared = _last = _Shared(
                source, watched_at, deadline=deadline, batch=batch, labels=labels, key=key
            )
        self._shared = shared
        self.task_id = task_id
        self.due = 0.0
        self.polls = 0
        self.errors = 0
        self.last_delay = 0.0
        self.bounds: Bounds | None = None
        self.last: TaskSnapshot | None = None
        self.last_error: SourceError | None = None
        self.done = False

    @property
    def source(self) -> str:
        return self._shared.source

    @source.setter
    def source(self, value: str) -> None:
        self._shared = self._shared.but(source=value)

    @property
    def watched_at(self) -> float:
        return self._shared.watched_at

    @watched_at.setter
    def watched_at(self, value: float) -> None:
        self._shared = self._shared.but(watched_at=value)

    @property
    def deadline(self) -> float | None:
        return self._shared.deadline

    @deadline.setter
    def deadline(self, value: float | None) -> None:
        self._shared = self._shared.but(deadline=value)

    @property
    def batch(self) -> str | None:
        return self._shared.batch

    @batch.setter
    def batch(self, value: str | None) -> None:
        self._shared = self._shared.but(batch=value)

    @property
    def labels(self) -> Mapping[str, str] | None:
        return self._shared.labels

    @labels.setter
    def labels(self, value: Mapping[str, str] | None) -> None:
        self._shared = self._shared.but(labels=value)

    @property
    def key(self) -> str:
        """Distinguishes re-watches of one task in stable event ids."""
        return self._shared.key

    @key.setter
    def key(self, value: str) -> None:
        self._shared = self._shared.but(key=value)

    def __repr__(self) -> str:
        return f"Watch({self.source}/{self.task_id}, polls={self.polls}, done={self.done})"
