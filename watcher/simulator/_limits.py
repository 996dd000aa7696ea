"""Flow control and bookkeeping: the gateway's sliding-window limit and the simulator's stats.

Everything here is O(1) amortised per request: the hot path must stay lean enough to serve
thousands of requests per second on one core.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ArrivalWindow", "SimulatorStats", "SlidingWindowLimiter", "StatsRecorder"]


class SlidingWindowLimiter:
    """At most ``capacity`` accepted requests in any sliding window of ``window`` seconds.

    A rate of ``r`` >= 1 per second is a 1 s window holding ``floor(r)`` requests; a rate
    below 1 is one request per ``1 / r`` seconds.

    >>> limiter = SlidingWindowLimiter(2.0)
    >>> [limiter.try_acquire(t) for t in (0.0, 0.1, 0.2, 1.05)]
    [None, None, 1, None]
    """

    __slots__ = ("_accepted", "capacity", "window")

    def __init__(self, rate: float) -> None:
        if rate >= 1:
            self.capacity, self.window = int(rate), 1.0
        else:
            self.capacity, self.window = 1, 1.0 / rate
        self._accepted: deque[float] = deque()

    def try_acquire(self, now: float) -> int | None:
        """None when accepted (and counted); else whole seconds to wait (>= 1)."""
        accepted = self._accepted
        horizon = now - self.window
        while accepted and accepted[0] <= horizon:
            accepted.popleft()
        if len(accepted) < self.capacity:
            accepted.append(now)
            return None
        # Retry-After is whole seconds, so round up: a client that honours it is then admitted.
        return max(1, math.ceil(accepted[0] + self.window - now))

    def clear(self) -> None:
        self._accepted.clear()


class ArrivalWindow:
    """Tracks the most requests that arrived within any sliding 1-second window ``(t-1, t]``."""

    __slots__ = ("_arrivals", "maximum")

    def __init__(self) -> None:
        self._arrivals: deque[float] = deque()
        self.maximum = 0

    def hit(self, now: float) -> None:
        arrivals = self._arrivals
        horizon = now - 1.0
        while arrivals and arrivals[0] <= horizon:
            arrivals.popleft()
        arrivals.append(now)
        # The busiest window always ends at some arrival, so checking here finds it.
        self.maximum = max(self.maximum, len(arrivals))

    def clear(self) -> None:
        self._arrivals.clear()
        self.maximum = 0


@dataclass(frozen=True, slots=True)
class SimulatorStats:
    """A snapshot of what the simulator saw (control-plane ``/_sim`` requests excluded).

    ``requests`` counts API and IAM requests; ``max_requests_in_1s`` counts MetaStudio API
    requests (``/v2/...`` and unknown paths, not IAM) as they arrived, throttled or not;
    ``polls_per_task`` counts every GET of a task id as it arrived, whatever the answer;
    ``dropped`` counts connections closed without an answer (they have no status);
    ``oversize_bytes_sent`` counts the bytes of oversize bodies actually handed to the
    connection (a client that stops reading stops it growing, give or take socket buffers).
    """

    requests: int
    responses_by_status: dict[int, int]
    throttled: int
    max_requests_in_1s: int
    polls_per_task: dict[str, int]
    auth_failures: int
    paths: tuple[str, ...]
    tokens_issued: int
    dropped: int = 0
    faults_injected: int = 0
    searches: int = 0
    deletes: int = 0
    tasks: int = 0
    oversize_bytes_sent: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (``GET /_sim/stats``): status keys become strings."""
        out = asdict(self)
        out["responses_by_status"] = {str(k): v for k, v in self.responses_by_status.items()}
        out["paths"] = list(self.paths)
        return out


class StatsRecorder:
    """Mutable counters behind ``SimulatorStats``; plain attributes, so updates are cheap."""

    __slots__ = (
        "arrivals",
        "auth_failures",
        "deletes",
        "dropped",
        "faults_injected",
        "oversize_bytes_sent",
        "paths",
        "polls_per_task",
        "requests",
        "responses_by_status",
        "searches",
        "throttled",
        "tokens_issued",
    )

    def __init__(self, paths_limit: int) -> None:
        self.paths: deque[str] = deque(maxlen=paths_limit)
        self.arrivals = ArrivalWindow()
        self.polls_per_task: dict[str, int] = {}
        self.responses_by_status: dict[int, int] = {}
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.throttled = 0
        self.auth_failures = 0
        self.tokens_issued = 0
        self.dropped = 0
        self.faults_injected = 0
        self.searches = 0
        self.deletes = 0
        self.oversize_bytes_sent = 0
        self.paths.clear()
        self.arrivals.clear()
        self.polls_per_task.clear()
        self.responses_by_status.clear()

    def status(self, code: int, delta: int = 1) -> None:
        counts = self.responses_by_status
        counts[code] = counts.get(code, 0) + delta
        if not counts[code]:
            del counts[code]

    def poll(self, task_id: str) -> None:
        polls = self.polls_per_task
        polls[task_id] = polls.get(task_id, 0) + 1

    def snapshot(self, tasks: int) -> SimulatorStats:
        return SimulatorStats(
            requests=self.requests,
            responses_by_status=dict(self.responses_by_status),
            throttled=self.throttled,
            max_requests_in_1s=self.arrivals.maximum,
            polls_per_task=dict(self.polls_per_task),
            auth_failures=self.auth_failures,
            paths=tuple(self.paths),
            tokens_issued=self.tokens_issued,
            dropped=self.dropped,
            faults_injected=self.faults_injected,
            searches=self.searches,
            deletes=self.deletes,
            tasks=tasks,
            oversize_bytes_sent=self.oversize_bytes_sent,
        )
