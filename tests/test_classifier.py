"""The classifier: status map plus progress rule, exactly as API.md describes."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from watcher._models import Outcome, TaskSnapshot
from watcher.classifier import Classifier

DOC_EXAMPLE = {
    "resource": "knowledge-intent-question-create",
    "task_name": "Imported Q&A pairs.",
    "begin_time": 1744276967708,
    "end_time": 1744276967708,
    "task_type": 0,
    "operator": "adminUserAccount",
    "total_count": 3,
    "success_count": 2,
    "failure_count": 1,
    "task_status": 0,
    "task_id": "fd1c56acbb2c4b1aa24ba37df99f3129",
    "user_id": "246748d3d76b4779aea38c201a284810",
}


def snap(**fields: object) -> TaskSnapshot:
    return TaskSnapshot.from_fields("t1", **fields)  # type: ignore[arg-type]


def doc_snapshot(**overrides: object) -> TaskSnapshot:
    body = {**DOC_EXAMPLE, **overrides}
    return TaskSnapshot.from_fields(
        body["task_id"],  # type: ignore[arg-type]
        status=body.get("task_status"),
        total_count=body.get("total_count"),
        success_count=body.get("success_count"),
        failure_count=body.get("failure_count"),
        begin_time=body.get("begin_time"),
        end_time=body.get("end_time"),
        raw=body,
    )


def test_documented_example_is_partial() -> None:
    """The documented finished task (2 of 3 imported, 1 failed) is classified partial."""
    verdict = Classifier().classify(doc_snapshot())
    assert verdict.outcome is Outcome.PARTIAL
    assert verdict.terminal


def test_documented_example_times_are_utc() -> None:
    """Epoch milliseconds become aware UTC datetimes."""
    s = doc_snapshot()
    assert s.end_time == datetime(2025, 4, 10, 9, 22, 47, 708000, tzinfo=UTC)
    assert s.status == "0"


@pytest.mark.parametrize("unset", [None, "", 0, "0", "missing"])
def test_every_unset_end_time_means_running(unset: object) -> None:
    """Missing, null, "", 0 and "0" end_time all mean the task has not ended."""
    overrides: dict[str, object] = {"end_time": unset}
    s = doc_snapshot(**overrides) if unset != "missing" else snap(total_count=3, success_count=3)
    assert s.end_time is None
    assert Classifier().classify(s).outcome is None


def test_total_zero_with_end_time_is_succeeded() -> None:
    """A finished task with nothing to import succeeded (0 + 0 >= 0, no failures)."""
    s = snap(end_time=1744276967708, total_count=0, success_count=0, failure_count=0)
    assert Classifier().classify(s).outcome is Outcome.SUCCEEDED


def test_counts_above_total_are_finished() -> None:
    """Counts that overshoot the total still satisfy the progress rule."""
    s = snap(end_time="1744276967708", total_count=3, success_count=5, failure_count=0)
    assert Classifier().classify(s).outcome is Outcome.SUCCEEDED


def test_counts_short_of_total_are_running() -> None:
    """end_time set but items still uncounted: not finished by the progress rule."""
    s = snap(end_time=1744276967708, total_count=10, success_count=3, failure_count=1)
    assert Classifier().classify(s).outcome is None


def test_only_failures_is_failed() -> None:
    """All items failed: outcome failed."""
    s = snap(end_time=1744276967708, total_count=2, success_count=0, failure_count=2)
    assert Classifier().classify(s).outcome is Outcome.FAILED


def test_status_map_wins_over_progress() -> None:
    """A mapped status decides even when counts would say otherwise."""
    c = Classifier({"7": Outcome.CANCELLED})
    s = snap(status=7, end_time=1744276967708, total_count=3, success_count=3)
    assert c.classify(s).outcome is Outcome.CANCELLED
    running = snap(status="7", total_count=3, success_count=0)
    assert c.classify(running).outcome is Outcome.CANCELLED


def test_status_mapped_to_running_falls_back_to_progress() -> None:
    """A status mapped to "running" is known, not terminal; the progress rule still applies."""
    c = Classifier({"1": "running"})
    assert c.classify(snap(status=1, total_count=3, success_count=1)).outcome is None
    done = snap(status=1, end_time=1744276967708, total_count=1, success_count=1)
    assert c.classify(done).outcome is Outcome.SUCCEEDED


def test_unknown_status_is_not_terminal_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """An unknown status value is treated as running and logged once per value."""
    caplog.set_level(logging.INFO, logger="watcher.classifier")
    c = Classifier({"0": Outcome.SUCCEEDED})
    for _ in range(3):
        assert c.classify(snap(status="WEIRD", total_count=5, success_count=1)).outcome is None
    assert caplog.text.count("WEIRD") == 1


def test_progress_rule_can_be_disabled() -> None:
    """With the progress rule off only the status map ends a task."""
    c = Classifier({}, progress_rule=False)
    s = snap(end_time=1744276967708, total_count=1, success_count=1)
    assert c.classify(s).outcome is None


def test_status_map_with_int_keys() -> None:
    """Status values compare as strings whatever type the map's keys were."""
    c = Classifier({0: Outcome.SUCCEEDED})  # type: ignore[dict-item]
    assert c.classify(snap(status=0)).outcome is Outcome.SUCCEEDED
