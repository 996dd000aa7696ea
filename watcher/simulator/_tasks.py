"""The simulated tasks: everything about a task derives from (seed, task id), never from order.

A task is created at some wall time, lives ``life`` seconds of task time (``time_scale`` times
faster than the wall clock), and processes its items along a slightly noisy, monotone curve.
Counts are a pure function of the clock, so two pollers asking at the same instant see the
same numbers whatever else happened in between.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import math
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ._config import OUTCOMES, SimulatorConfig

__all__ = ["SimTask", "TaskBook", "TaskState", "derive_task", "task_draws"]

# Interior points of the progress curve; each gets a little noise.
_CURVE_POINTS = 8
_CURVE_NOISE = 0.4 / _CURVE_POINTS  # < half a step, so the curve stays monotone by construction
TIME_FORMS = ("ms", "ms_str", "iso")
UNSET_FORMS = ("missing", "null", "empty", "zero", "zero_str")
_UNSET_VALUES: dict[str, object] = {"null": None, "empty": "", "zero": 0, "zero_str": "0"}
_FORMS = ("int", "str")
_OPERATORS = ("adminUserAccount", "ops-bot", "importer", "alice", "bob")


_TO_UNIT = 2.0**-32


def task_draws(seed: int, task_id: str) -> list[float]:
    """32 uniforms in [0, 1) for one task, from hashlib (not ``hash``): stable everywhere.

    Two BLAKE2b calls are several times cheaper than seeding a ``random.Random``, which
    matters when 100k tasks are created at start.
    """
    key = f"{seed}\x00{task_id}".encode()
    raw = hashlib.blake2b(key, person=b"sim-task-1").digest()
    raw += hashlib.blake2b(key, person=b"sim-task-2").digest()
    return [n * _TO_UNIT for n in struct.unpack("<32I", raw)]


def _iso_ms(ms: int) -> str:
    moment = datetime.fromtimestamp(ms // 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class TaskState:
    """The simulator's current truth about one task (``Simulator.task_state``)."""

    task_id: str
    outcome: str  # the outcome it ends (or ended) with: succeeded, partial, failed, cancelled
    finished: bool
    task_status: int
    total_count: int
    success_count: int
    failure_count: int
    created_at: float  # wall seconds (the clock's)
    finish_at: float  # wall seconds when it ends (or ended)
    begin_time_ms: int
    end_time_ms: int
    resource: str
    body: dict[str, Any]  # what a GET would answer right now


@dataclass(slots=True)
class SimTask:
    """One task; immutable in practice except for being deleted."""

    task_id: str
    created: float
    life: float  # task-time seconds until it finishes or is cancelled
    wall_life: float  # life / time_scale
    total: int
    final_done: int  # items processed when it ends (< total when cancelled)
    final_failures: int
    outcome: str
    resource: str
    task_name: str
    task_type: int
    operator: str
    user_id: str
    curve: tuple[float, ...]
    time_form: str
    status_form: str
    unset_form: str
    type_form: str

    @property
    def begin_ms(self) -> int:
        return int(self.created * 1000)

    @property
    def end_ms(self) -> int:
        return int((self.created + self.wall_life) * 1000)

    def progress(self, now: float) -> tuple[int, int, bool]:
        """``(done, failures, finished)`` at wall time ``now``."""
        elapsed = now - self.created
        if elapsed >= self.wall_life:
            return self.final_done, self.final_failures, True
        if elapsed <= 0 or self.final_done == 0:
            return 0, 0, False
        fraction = elapsed / self.wall_life
        position = fraction * _CURVE_POINTS
        index = int(position)
        low, high = self.curve[index], self.curve[index + 1]
        level = low + (high - low) * (position - index)
        # Strictly short of the final count while running: the end is the finish line.
        done = min(self.final_done - 1, int(self.final_done * level))
        # Failures spread evenly: both counts stay monotone as ``done`` grows.
        failures = done * self.final_failures // self.final_done
        return done, failures, False

    def status_code(self, finished: bool, config: SimulatorConfig) -> int:
        if not finished:
            return config.status_running
        if self.outcome == "cancelled":
            return config.status_cancelled
        if self.outcome == "failed" and config.status_failed is not None:
            return config.status_failed
        return config.status_finished

    def _time(self, ms: int) -> object:
        if self.time_form == "ms_str":
            return str(ms)
        if self.time_form == "iso":
            return _iso_ms(ms)
        return ms

    def body(self, now: float, config: SimulatorConfig) -> dict[str, Any]:
        """The JSON object a GET answers at wall time ``now``, in this task's field forms."""
        done, failures, finished = self.progress(now)
        status = self.status_code(finished, config)
        out: dict[str, Any] = {
            "resource": self.resource,
            "task_name": self.task_name,
            "begin_time": self._time(self.begin_ms),
        }
        if finished:
            out["end_time"] = self._time(self.end_ms)
        elif self.unset_form != "missing":
            out["end_time"] = _UNSET_VALUES[self.unset_form]
        out["task_type"] = self.task_type if self.type_form == "int" else str(self.task_type)
        out["operator"] = self.operator
        out["total_count"] = self.total
        out["success_count"] = done - failures
        out["failure_count"] = failures
        out["task_status"] = status if self.status_form == "int" else str(status)
        out["task_id"] = self.task_id
        out["user_id"] = self.user_id
        return out

    def state(self, now: float, config: SimulatorConfig) -> TaskState:
        done, failures, finished = self.progress(now)
        return TaskState(
            task_id=self.task_id,
            outcome=self.outcome,
            finished=finished,
            task_status=self.status_code(finished, config),
            total_count=self.total,
            success_count=done - failures,
            failure_count=failures,
            created_at=self.created,
            finish_at=self.created + self.wall_life,
            begin_time_ms=self.begin_ms,
            end_time_ms=self.end_ms,
            resource=self.resource,
            body=self.body(now, config),
        )


def _pick(u: float, options: Sequence[str]) -> str:
    return options[min(len(options) - 1, int(u * len(options)))]


def _counts(draw: Iterator[float], outcome: str, total: int) -> tuple[str, int, int]:
    """``(outcome, final_done, final_failures)``; the outcome follows what the counts say."""
    if outcome == "cancelled":
        done = int(total * (0.1 + 0.8 * next(draw)))
        failures = int(done * 0.3 * next(draw))
        return "cancelled", done, failures
    if total == 0:
        return "succeeded", 0, 0
    if outcome == "partial" and total >= 2:
        return "partial", total, 1 + min(total - 2, int(next(draw) * (total - 1)))
    if outcome == "failed":
        return "failed", total, total
    return "succeeded", total, 0


def _outcome(u: float, weights: Mapping[str, float]) -> str:
    names = [o for o in OUTCOMES if weights.get(o, 0) > 0]
    point = u * sum(weights[o] for o in names)
    for name in names:
        point -= weights[name]
        if point < 0:
            return name
    return names[-1]


def derive_task(
    config: SimulatorConfig,
    task_id: str,
    created: float,
    *,
    life: float | None = None,
    total: int | None = None,
    outcome: str | None = None,
    resource: str | None = None,
) -> SimTask:
    """Build a task from (seed, id); keyword overrides pin what a test needs to control."""
    # Each field has its own draw, so an override never shifts the others.
    u = task_draws(config.seed, task_id)
    # Box-Muller: a standard normal from two uniforms, for the log-normal life.
    normal = math.sqrt(-2.0 * math.log(1.0 - u[0])) * math.cos(2.0 * math.pi * u[1])
    sampled_life = max(
        config.duration_min, config.duration_median * math.exp(config.duration_sigma * normal)
    )
    if config.duration_max is not None:
        sampled_life = min(sampled_life, config.duration_max)
    low, high = config.total_range
    sampled_total = low + min(high - low, int(u[2] * (high - low + 1)))
    sampled_outcome = _outcome(u[3], config.outcome_weights)
    sampled_resource = _pick(u[4], config.resources)
    operator = _pick(u[5], _OPERATORS)
    user_id = f"{int(u[6] * 2**32):08x}{int(u[7] * 2**32):08x}{int(u[20] * 2**32):08x}" + (
        f"{int(u[21] * 2**32):08x}"
    )
    # Noise below half a step keeps the curve inside [0, 1] and monotone: no clamping needed.
    curve = [k / _CURVE_POINTS + (2 * u[7 + k] - 1) * _CURVE_NOISE for k in range(1, _CURVE_POINTS)]
    forms = (_pick(u[15], TIME_FORMS), _pick(u[16], _FORMS), _pick(u[17], UNSET_FORMS))
    type_form = _pick(u[18], _FORMS)

    life = sampled_life if life is None else life
    total = sampled_total if total is None else total
    final_outcome, done, failures = _counts(iter(u[22:]), outcome or sampled_outcome, total)
    resource = resource or sampled_resource
    if config.field_forms == "documented":
        forms, type_form = ("ms", "int", "zero"), "int"
    return SimTask(
        task_id=task_id,
        created=created,
        life=life,
        wall_life=life / config.time_scale,
        total=total,
        final_done=done,
        final_failures=failures,
        outcome=final_outcome,
        resource=resource,
        task_name="Imported Q&A pairs." if resource.startswith("knowledge") else "Imported assets.",
        task_type=config.resources.index(resource) if resource in config.resources else 0,
        operator=operator,
        user_id=user_id,
        curve=(0.0, *curve, 1.0, 1.0),  # a trailing point so index + 1 is valid at fraction ~1
        time_form=forms[0],
        status_form=forms[1],
        unset_form=forms[2],
        type_form=type_form,
    )


class TaskBook:
    """All tasks, plus a per-resource index sorted by begin time for the search endpoint."""

    __slots__ = ("_by_resource", "_config", "_deleted", "_tasks")

    def __init__(self, config: SimulatorConfig) -> None:
        self._config = config
        self._tasks: dict[str, SimTask] = {}
        self._deleted: set[str] = set()
        self._by_resource: dict[str, list[tuple[int, str]]] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[SimTask]:
        return iter(self._tasks.values())

    def get(self, task_id: str) -> SimTask | None:
        return self._tasks.get(task_id)

    def is_deleted(self, task_id: str) -> bool:
        return task_id in self._deleted

    def add(self, task: SimTask) -> SimTask:
        """Insert (or replace) a task; a deleted id comes back to life."""
        self.remove(task.task_id)
        self._deleted.discard(task.task_id)
        self._tasks[task.task_id] = task
        bisect.insort(
            self._by_resource.setdefault(task.resource, []), (task.begin_ms, task.task_id)
        )
        return task

    def remove(self, task_id: str) -> bool:
        task = self._tasks.pop(task_id, None)
        if task is None:
            return False
        index = self._by_resource[task.resource]
        pos = bisect.bisect_left(index, (task.begin_ms, task_id))
        if pos < len(index) and index[pos] == (task.begin_ms, task_id):
            del index[pos]
        return True

    def delete(self, task_id: str) -> bool:
        """Remove a task for good: it answers 404 from now on, even with auto-creation."""
        self._deleted.add(task_id)
        return self.remove(task_id)

    def clear(self) -> None:
        self._tasks.clear()
        self._deleted.clear()
        self._by_resource.clear()

    def search(
        self,
        resources: Iterable[str],
        begin_ms: int | None,
        end_ms: int | None,
        offset: int,
        limit: int,
    ) -> tuple[int, list[SimTask]]:
        """``(count of all matches, one page of them)``, ordered by begin time then id."""
        low = (begin_ms if begin_ms is not None else -(2**63), "")
        high_ms = end_ms if end_ms is not None else 2**63
        wanted = sorted(set(resources)) or sorted(self._by_resource)
        slices: list[list[tuple[int, str]]] = []
        count = 0
        for resource in wanted:
            index = self._by_resource.get(resource)
            if not index:
                continue
            start = bisect.bisect_left(index, low)
            # (high_ms + 1, "") sorts after every entry with begin_ms == high_ms.
            stop = bisect.bisect_left(index, (high_ms + 1, ""))
            count += max(0, stop - start)
            slices.append(index[start : min(stop, start + offset + limit)])
        merged = heapq.merge(*slices)
        page = [self._tasks[tid] for _, tid in list(merged)[offset : offset + limit]]
        return count, page
