"""The ``Source`` seam: turn a task id into a ``TaskSnapshot`` or a classified error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .._models import TaskSnapshot

__all__ = ["BatchSource", "Source"]


@runtime_checkable
class Source(Protocol):
    """Polls one remote API.

    The caller guarantees: ``task_id`` has passed ``validate_task_id``; calls may run
    concurrently (up to the worker count); the rate limit is enforced by the scheduler, not
    here; ``aclose()`` is called once, after every ``fetch`` has returned.

    ``fetch`` returns a snapshot or raises a ``SourceError`` subclass: ``TransientError``
    (retry later), ``AuthError`` (credentials refused after one refresh), ``PermanentError``
    (this task can never be polled). Sources own their HTTP session and auth.
    """

    name: str

    async def fetch(self, task_id: str) -> TaskSnapshot: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class BatchSource(Source, Protocol):
    """Optional: a source that can report many tasks in one request.

    ``fetch_many`` returns the snapshots it found; ids missing from the result are polled
    one by one by the scheduler.
    """

    async def fetch_many(self, task_ids: Sequence[str]) -> dict[str, TaskSnapshot]: ...
