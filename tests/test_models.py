"""Normalisation of API values into TaskSnapshot, task id rules and the result event."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from watcher._exceptions import InvalidTaskIdError, MalformedResponseError
from watcher._models import Outcome, ResultEvent, TaskSnapshot, event_id_for, to_count, to_utc
from watcher._taskid import quote_segment, validate_task_id


@pytest.mark.parametrize(
    "value",
    [
        1744276967708,
        "1744276967708",
        1744276967.708,
        "2025-04-10T09:22:47.708Z",
        "2025-04-10T17:22:47.708+08:00",
        "2025-04-10T09:22:47.708",
    ],
)
def test_times_in_every_form_are_the_same_utc_instant(value: object) -> None:
    """Epoch ms (int or string), epoch seconds and ISO strings normalise to one instant."""
    assert to_utc(value) == datetime(2025, 4, 10, 9, 22, 47, 708000, tzinfo=UTC)


@pytest.mark.parametrize("value", [True, [1], {"a": 1}, "yesterday", float("nan"), -5])
def test_bad_times_are_malformed(value: object) -> None:
    """Wrong types or values for a time raise MalformedResponseError naming the field."""
    with pytest.raises(MalformedResponseError, match="end_time"):
        to_utc(value, name="end_time")


@pytest.mark.parametrize(("value", "expected"), [(3, 3), ("3", 3), (3.0, 3), (None, None)])
def test_counts_normalise_to_int(value: object, expected: int | None) -> None:
    """Counts arrive as ints, integral floats or numeric strings."""
    assert to_count(value) == expected


@pytest.mark.parametrize("value", [True, "3.5", 2.5, -1, "x", [3], 10**13])
def test_bad_counts_are_malformed(value: object) -> None:
    """Booleans, fractions, negatives, huge values and other types are refused."""
    with pytest.raises(MalformedResponseError):
        to_count(value, name="total_count")


def test_snapshot_is_frozen() -> None:
    """Snapshots cannot be changed after creation."""
    s = TaskSnapshot.from_fields("t", status=1)
    with pytest.raises(AttributeError):
        s.status = "2"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("task_id", "reason"),
    [
        ("", "empty"),
        ("a" * 129, "129 characters"),
        ("a\nb", r"U\+000A"),
        ("a\x00", r"U\+0000"),
        ("\x7f", r"U\+007F"),
        (".", "dot-segment"),
        ("..", "dot-segment"),
        (5, "must be a string"),
    ],
)
def test_invalid_task_ids_are_refused_with_reason(task_id: object, reason: str) -> None:
    """Ids that are empty, too long, have control characters or are dot-segments are refused."""
    with pytest.raises(InvalidTaskIdError, match=reason):
        validate_task_id(task_id)


@pytest.mark.parametrize("task_id", ["a/b", "%2F", "a?b", "a#b", "a b", "任务-7", "...", "a" * 128])
def test_hostile_but_valid_ids_are_one_segment(task_id: str) -> None:
    """Accepted ids encode to a single segment with no '/', '?' or '#' left."""
    assert validate_task_id(task_id) == task_id
    encoded = quote_segment(task_id)
    assert " " not in encoded
    assert "/" not in encoded and "?" not in encoded and "#" not in encoded


def test_event_ids_are_stable_and_distinct() -> None:
    """The same watch always gets the same event id; another watch gets another."""
    assert event_id_for("m", "t1") == event_id_for("m", "t1")
    assert event_id_for("m", "t1") != event_id_for("m", "t2")
    assert event_id_for("m", "t1", "1") != event_id_for("m", "t1", "2")


def test_result_event_has_every_design_field() -> None:
    """The event's JSON object carries every field DESIGN.md names."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    s = TaskSnapshot.from_fields(
        "t1",
        status=0,
        total_count=3,
        success_count=2,
        failure_count=1,
        end_time=1744276967708,
        raw={"x": 1},
    )
    event = ResultEvent(
        event_id="e",
        task_id="t1",
        source="m",
        outcome=Outcome.PARTIAL,
        watched_at=now,
        detected_at=now,
        polls=4,
        batch="b",
        snapshot=s,
    )
    data = event.to_dict()
    assert set(data) == {
        "event_id",
        "event",
        "task_id",
        "source",
        "batch",
        "labels",
        "outcome",
        "task_status",
        "total_count",
        "success_count",
        "failure_count",
        "begin_time",
        "end_time",
        "polls",
        "watched_at",
        "finished_at",
        "detected_at",
        "error",
        "snapshot",
    }
    assert data["event"] == "task.finished"
    assert data["outcome"] == "partial"
    assert data["end_time"] == "2025-04-10T09:22:47.708000Z"
    assert data["snapshot"] == {"x": 1}
