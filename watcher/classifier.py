"""Decide from a snapshot whether a task is still running or has ended, and how.

MetaStudio documents no meaning for ``task_status``, so the rule is configuration:
a status map (which wins when it names the value) and the progress rule — a task whose
``end_time`` is set and whose ``success_count + failure_count >= total_count`` is finished.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ._log import get_logger
from ._models import Outcome, TaskSnapshot

__all__ = ["RUNNING", "Classifier", "Verdict"]

RUNNING = "running"
_MAX_REMEMBERED_UNKNOWN = 1024  # a hostile server must not grow this set without bound

_log = get_logger("watcher.classifier")


@dataclass(frozen=True, slots=True)
class Verdict:
    """``outcome`` is None while the task is still running."""

    outcome: Outcome | None
    reason: str

    @property
    def terminal(self) -> bool:
        return self.outcome is not None


def outcome_from_counts(snapshot: TaskSnapshot) -> Outcome:
    """No failures: succeeded; failures and successes: partial; only failures: failed."""
    failures = snapshot.failure_count or 0
    successes = snapshot.success_count or 0
    if failures == 0:
        return Outcome.SUCCEEDED
    return Outcome.PARTIAL if successes > 0 else Outcome.FAILED


class Classifier:
    """Classifies snapshots of one source.

    >>> c = Classifier()
    >>> snap = TaskSnapshot.from_fields("t", end_time=1744276967708, total_count=3,
    ...                                 success_count=2, failure_count=1, status=0)
    >>> c.classify(snap).outcome
    <Outcome.PARTIAL: 'partial'>
    """

    def __init__(
        self,
        status_map: Mapping[str, Outcome | str] | None = None,
        *,
        progress_rule: bool = True,
        source: str = "",
    ) -> None:
        self._map: dict[str, Outcome | None] = {}
        for key, value in (status_map or {}).items():
            self._map[str(key)] = None if value == RUNNING else Outcome(value)
        self._progress_rule = progress_rule
        self._source = source
        self._unknown_seen: set[str] = set()

    def classify(self, snapshot: TaskSnapshot) -> Verdict:
        status = snapshot.status
        if status is not None and status in self._map:
            mapped = self._map[status]
            if mapped is not None:
                return Verdict(mapped, f"task_status {status!r} maps to {mapped.value}")
        elif status is not None:
            self._note_unknown(status, snapshot.task_id)
        if self._progress_rule and self._finished_by_progress(snapshot):
            return Verdict(outcome_from_counts(snapshot), "end_time set and all items counted")
        return Verdict(None, "running")

    @staticmethod
    def _finished_by_progress(snapshot: TaskSnapshot) -> bool:
        if snapshot.end_time is None or snapshot.total_count is None:
            return False
        done = snapshot.done_count
        return done is not None and done >= snapshot.total_count

    def _note_unknown(self, status: str, task_id: str) -> None:
        # Logged once per value: unknown statuses are expected (none are documented), but an
        # operator should see each new one to decide whether to map it.
        if status in self._unknown_seen or len(self._unknown_seen) >= _MAX_REMEMBERED_UNKNOWN:
            return
        self._unknown_seen.add(status)
        _log.info(
            "unmapped task_status; relying on the progress rule",
            task_status=status[:64],
            source=self._source,
            task_id=task_id,  # the first task seen with it
        )
