"""Progress while waiting: a live display on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any

import anyio
import structlog

from .._models import Outcome
from .._watcher import Watcher

__all__ = ["ProgressReporter"]

_log = structlog.get_logger("watcher.progress")
_OUTCOME_STYLE = {
    Outcome.SUCCEEDED: "green",
    Outcome.PARTIAL: "yellow",
    Outcome.FAILED: "red",
    Outcome.CANCELLED: "magenta",
    Outcome.ERROR: "bold red",
    Outcome.TIMED_OUT: "bold red",
}


class ProgressReporter:
    """Follows a ``Watcher`` and shows done/total, outcomes, request rate, 429s and ETA."""

    def __init__(
        self, watcher: Watcher, total: int, *, interval: float = 5.0, live: bool | None = None
    ) -> None:
        self._watcher = watcher
        self._total = total
        self._interval = interval
        self.live = sys.stderr.isatty() if live is None else live
        self.outcomes: Counter[Outcome] = Counter()
        self._errors_reported = 0
        self._started = time.monotonic()
        self._rate_window: list[tuple[float, int]] = []

    def record(self, outcome: Outcome) -> None:
        self.outcomes[outcome] += 1

    @property
    def done(self) -> int:
        return sum(self.outcomes.values())

    def _polls_and_throttled(self) -> tuple[int, int]:
        polls = throttled = 0
        for name in self._watcher.sources:
            stats = self._watcher.scheduler(name).stats
            polls += stats.polls
            throttled += stats.throttled
        return polls, throttled

    def _request_rate(self, polls: int) -> float:
        now = time.monotonic()
        self._rate_window.append((now, polls))
        while len(self._rate_window) > 2 and now - self._rate_window[0][0] > 10:
            self._rate_window.pop(0)
        first_t, first_polls = self._rate_window[0]
        return (polls - first_polls) / (now - first_t) if now > first_t else 0.0

    def _summary(self) -> str:
        parts = [f"{o.value} {n}" for o, n in sorted(self.outcomes.items()) if n]
        return ", ".join(parts) or "none yet"

    async def run(self) -> None:
        """Update until cancelled."""
        if not self.live:
            while True:
                await anyio.sleep(self._interval)
                self.log_line()
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(
            TextColumn("[bold]watching"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[outcomes]}"),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        ) as progress:
            task = progress.add_task("watch", total=self._total, outcomes="", rate="")
            try:
                while True:
                    self._refresh(progress, task)
                    await anyio.sleep(0.25)
            finally:
                self._refresh(progress, task)  # the last frame shows the final counts

    def _refresh(self, progress: Any, task: Any) -> None:
        polls, throttled = self._polls_and_throttled()
        rate = self._request_rate(polls)
        styled = " ".join(
            f"[{_OUTCOME_STYLE[o]}]{o.value} {n}[/]" for o, n in sorted(self.outcomes.items())
        )
        progress.update(
            task,
            completed=self.done,
            outcomes=styled or "-",
            rate=f"{rate:5.1f} req/s · 429s {throttled} · failed polls {self._failed_polls()}",
        )

    def log_line(self) -> None:
        polls, throttled = self._polls_and_throttled()
        _log.info(
            "progress",
            done=self.done,
            total=self._total,
            pending=self._total - self.done,
            outcomes=self._summary(),
            requests_per_second=round(self._request_rate(polls), 1),
            polls=polls,
            throttled=throttled,
            failed_polls=self._failed_polls(),
        )
        if self._failed_polls() > self._errors_reported:
            self._warn_errors()

    def _failed_polls(self) -> int:
        return sum(
            sum(self._watcher.scheduler(name).stats.errors_by_kind.values())
            for name in self._watcher.sources
        )

    def _warn_errors(self) -> None:
        # Retried errors are debug-level detail, but a user must see that the API is failing
        # (unreachable, 5xx, garbage): one warning per progress interval with the breakdown.
        kinds: dict[str, int] = {}
        for name in self._watcher.sources:
            for kind, count in self._watcher.scheduler(name).stats.errors_by_kind.items():
                kinds[kind] = kinds.get(kind, 0) + count
        total = sum(kinds.values())
        _log.warning(
            "polls are failing and being retried",
            new_failures=total - self._errors_reported,
            by_kind=", ".join(f"{k} {n}" for k, n in sorted(kinds.items())),
        )
        self._errors_reported = total
