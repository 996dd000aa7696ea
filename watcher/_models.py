"""Data that flows between components: snapshots, outcomes and result events.

Everything here is frozen. Values from the network are normalised once, at the edge
(``TaskSnapshot.from_fields``), so the classifier and the scheduler never see a raw form.
"""

from __future__ import annotations

import enum
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from ._exceptions import MalformedResponseError

__all__ = [
    "BatchEvent",
    "ErrorInfo",
    "Outcome",
    "ResultEvent",
    "TaskSnapshot",
    "batch_event_id",
    "event_id_for",
]

# Counts are documented as 0..1,000,000; allow generous headroom but refuse absurd values
# that would only come from a broken or hostile server.
MAX_COUNT = 10**12
# Epoch values below this are taken as seconds, above as milliseconds: 10**11 seconds is
# the year 5138, 10**11 milliseconds is March 1973, so the two ranges never overlap in practice.
_EPOCH_SECONDS_BELOW = 10**11


class Outcome(enum.StrEnum):
    """How a watched task ended."""

    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ERROR = "error"
    TIMED_OUT = "timed_out"


def _is_unset(value: object) -> bool:
    """The API says "not set" as a missing field, null, "", 0 or "0": all mean the same."""
    if value is None or value is False:
        return True
    if isinstance(value, str):
        return value.strip() in ("", "0")
    return isinstance(value, int | float) and value == 0


def to_utc(value: object, *, name: str = "time") -> datetime | None:
    """Normalise an API time to an aware UTC datetime, or None when it is "not set".

    Accepts epoch milliseconds (int, float or numeric string; small values are read as
    seconds), ISO 8601 strings (a naive one is taken as UTC) and datetimes.
    """
    if _is_unset(value):
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    number: float | None = None
    if isinstance(value, bool):
        raise MalformedResponseError(f"{name}: expected a time, got a boolean")
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an int with hundreds of digits
            raise MalformedResponseError(f"{name}: epoch value out of range") from None
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise MalformedResponseError(f"{name}: not a time: {text[:40]!r}") from None
            return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    else:
        raise MalformedResponseError(f"{name}: expected a time, got {type(value).__name__}")
    if not math.isfinite(number) or number < 0:
        raise MalformedResponseError(f"{name}: not a valid epoch value: {value!r}")
    seconds = number if number < _EPOCH_SECONDS_BELOW else number / 1000.0
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise MalformedResponseError(f"{name}: epoch value out of range: {value!r}") from None


def to_count(value: object, *, name: str = "count") -> int | None:
    """Normalise a count (int, integral float or numeric string) to an int; None if absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise MalformedResponseError(f"{name}: expected an integer, got a boolean")
    number: int
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().lstrip("+").isdigit():
        number = int(value.strip())
    else:
        raise MalformedResponseError(f"{name}: expected an integer, got {_describe(value)}")
    if not 0 <= number <= MAX_COUNT:
        raise MalformedResponseError(f"{name}: out of range: {number}")
    return number


def to_status(value: object, *, name: str = "task_status") -> str | None:
    """Normalise a status to a string ("0", "SUCCESS", ...); None when absent."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise MalformedResponseError(f"{name}: expected a string or integer, got a boolean")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return value.strip()
    raise MalformedResponseError(f"{name}: expected a string or integer, got {_describe(value)}")


def _describe(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}"


@dataclass(frozen=True, slots=True)
class TaskSnapshot:
    """What one poll learned about a task, normalised.

    ``raw`` is the task's JSON body as received, kept for the result event.
    """

    task_id: str
    status: str | None = None
    total_count: int | None = None
    success_count: int | None = None
    failure_count: int | None = None
    begin_time: datetime | None = None
    end_time: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def from_fields(
        cls,
        task_id: str,
        *,
        status: object = None,
        total_count: object = None,
        success_count: object = None,
        failure_count: object = None,
        begin_time: object = None,
        end_time: object = None,
        raw: Mapping[str, Any] | None = None,
    ) -> TaskSnapshot:
        """Build a snapshot from API values in any documented form.

        Raises ``MalformedResponseError`` naming the field when a value has the wrong type.
        """
        return cls(
            task_id=task_id,
            status=to_status(status),
            total_count=to_count(total_count, name="total_count"),
            success_count=to_count(success_count, name="success_count"),
            failure_count=to_count(failure_count, name="failure_count"),
            begin_time=to_utc(begin_time, name="begin_time"),
            end_time=to_utc(end_time, name="end_time"),
            raw=dict(raw) if raw is not None else {},
        )

    @property
    def done_count(self) -> int | None:
        """Items processed so far (successes plus failures), when the API reports them."""
        if self.success_count is None and self.failure_count is None:
            return None
        return (self.success_count or 0) + (self.failure_count or 0)


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why a task ended with outcome ``error`` (or what the last failed poll said)."""

    kind: str
    code: str | None = None
    message: str | None = None
    request_id: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {
            "kind": self.kind,
            "code": self.code,
            "message": self.message,
            "request_id": self.request_id,
        }


_EVENT_NAMESPACE = uuid.UUID("6f6b1c1e-3a51-4f0e-9a59-7a0c3c2f5b11")


def event_id_for(source: str, task_id: str, watch_key: str = "") -> str:
    """A stable event id: the same watch always yields the same id, across retries and restarts.

    ``watch_key`` distinguishes two separate watches of the same task (e.g. a re-watch after
    the first one finished); the store supplies it.
    """
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"{source}\x00{task_id}\x00{watch_key}"))


def batch_event_id(batch: str) -> str:
    """The one event id of a batch's ``batch.finished`` event."""
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"batch\x00{batch}"))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


@dataclass(frozen=True, slots=True)
class ResultEvent:
    """The payload every sink receives when a watch ends (``event: task.finished``)."""

    event_id: str
    task_id: str
    source: str
    outcome: Outcome
    watched_at: datetime
    detected_at: datetime
    polls: int
    batch: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    snapshot: TaskSnapshot | None = None
    error: ErrorInfo | None = None

    event: ClassVar[str] = "task.finished"

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of DESIGN.md's result event."""
        snap = self.snapshot
        return {
            "event_id": self.event_id,
            "event": self.event,
            "task_id": self.task_id,
            "source": self.source,
            "batch": self.batch,
            "labels": dict(self.labels),
            "outcome": self.outcome.value,
            "task_status": snap.status if snap else None,
            "total_count": snap.total_count if snap else None,
            "success_count": snap.success_count if snap else None,
            "failure_count": snap.failure_count if snap else None,
            "begin_time": _iso(snap.begin_time) if snap else None,
            "end_time": _iso(snap.end_time) if snap else None,
            "polls": self.polls,
            "watched_at": _iso(self.watched_at),
            # The task's own end time when the API reported one, else when watcher concluded.
            "finished_at": _iso(snap.end_time if snap and snap.end_time else self.detected_at),
            "detected_at": _iso(self.detected_at),
            "error": self.error.to_dict() if self.error else None,
            "snapshot": dict(snap.raw) if snap else None,
        }


@dataclass(frozen=True, slots=True)
class BatchEvent:
    """Sent once when the last watch of a batch ends (``event: batch.finished``)."""

    event_id: str
    batch: str
    tasks: int
    outcomes: Mapping[str, int]
    finished_at: datetime

    event: ClassVar[str] = "batch.finished"

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "event": self.event,
            "batch": self.batch,
            "tasks": self.tasks,
            "outcomes": dict(self.outcomes),
            "finished_at": _iso(self.finished_at),
        }
