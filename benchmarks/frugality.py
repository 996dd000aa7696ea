"""Frugality at a budget: detection latency and calls per task under one shared 20 req/s budget.

Runs the real ``Watcher`` (scheduler, rate limiter, backoff, classifier, memory store) on a
``FakeClock`` in autojump mode, against a simulated source whose tasks all start at t = 0:

- durations log-normal (median 600 s, sigma 1); item totals uniform 10..1,000;
- noise model (the issue's "±5 %"): a poll at time t < F sees
  ``count = min(T - 1, floor(T * clamp(t / F * (1 + e), 0, 1)))`` with ``e ~ U(-0.05, 0.05)``
  drawn fresh for every poll, so counts advance linearly, jitter, may even step back, and
  never reach T before F; at t >= F it sees ``count = T`` and ``end_time`` set, which the
  classifier's progress rule ends;
- one budget of 20 requests/s for everything (the source's ``RateLimiter``), served
  oldest-due first by the scheduler's heap.

Policies: the default (exactly what ``PollingConfig()`` builds), the default with
``growth_min: 5m``, and the baselines fixed 15 s, fixed 30 s and exponential full jitter
(2 s, x1.5, cap 60 s, ignoring progress; like every policy it keeps ``min: 1s``).

Per policy it reports calls per task, detection latency (first poll that sees the task
finished, minus its true finish) p50/p95/p99/max, requests over budget (requests that are
the 21st or later inside some 1 s window), how late polls went out against the time their
policy asked for (queueing for the budget), the simulated duration and the wall time. Each
run also reports what the engine's first round of polls alone forces on any policy
(``sweep_bound``). The default is compared with the baselines of the same run (same
tasks, same seed); the table shows medians over runs with different seeds.

    python benchmarks/frugality.py [--tasks 2000 5000] [--runs 5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import anyio

from watcher._assembly import policy_from
from watcher._clock import FakeClock
from watcher._exceptions import SourceError
from watcher._models import TaskSnapshot
from watcher._watch import Watch
from watcher._watcher import Watcher
from watcher.backoff import BackoffPolicy, Bounds, PollHistory, make_policy
from watcher.config import BackoffConfig, PollingConfig

RATE = 20.0  # requests/second, all tasks together
MEDIAN_DURATION = 600.0
SIGMA = 1.0
NOISE = 0.05
TOTAL_RANGE = (10, 1000)
DEADLINE = 24 * 3600.0
TARGET_P95_RATIO = 0.25
TARGET_CALLS_RATIO = 0.5
DEFAULT = "default (progress)"


@dataclass(frozen=True, slots=True)
class Workload:
    finish: list[float]  # true finish time of each task, seconds after the common start
    total: list[int]


def make_workload(tasks: int, seed: int) -> Workload:
    rng = random.Random(seed)
    mu = math.log(MEDIAN_DURATION)
    finish = [rng.lognormvariate(mu, SIGMA) for _ in range(tasks)]
    total = [rng.randint(*TOTAL_RANGE) for _ in range(tasks)]
    return Workload(finish, total)


class SimulatedSource:
    """A ``Source`` answering from the workload's truths at the fake clock's time."""

    def __init__(self, workload: Workload, clock: FakeClock, *, seed: int) -> None:
        self.name = "sim"
        self._workload = workload
        self._clock = clock
        # One noise stream per task, so what a task sees depends only on its own polls, not
        # on how ties between tasks happened to be ordered.
        self._rngs = [random.Random(seed * 1_000_003 + i) for i in range(len(workload.finish))]
        self.begin = datetime.fromtimestamp(0, UTC)
        self.wall0: float | None = None
        self.requests: list[float] = []  # clock time of every request
        self.detected: dict[int, float] = {}  # task index -> clock time of first finished poll
        self.planned: dict[str, float] = {}  # task id -> clock time its next poll is due
        self.late: list[float] = []  # per poll after the first: sent minus planned

    def start(self, wall0: float) -> None:
        """Tasks began at clock time 0, which is wall time ``wall0`` for the engine."""
        self.wall0 = wall0
        self.begin = datetime.fromtimestamp(wall0, UTC)

    async def fetch(self, task_id: str) -> TaskSnapshot:
        if self.wall0 is None:
            raise RuntimeError("polled before the tasks' start was known")
        now = self._clock.now()
        self.requests.append(now)
        planned = self.planned.pop(task_id, None)
        if planned is not None:
            self.late.append(now - planned)
        index = int(task_id[1:])
        finish, total = self._workload.finish[index], self._workload.total[index]
        if now >= finish:
            self.detected.setdefault(index, now)
            return TaskSnapshot(
                task_id,
                total_count=total,
                success_count=total,
                failure_count=0,
                begin_time=self.begin,
                end_time=datetime.fromtimestamp(self.wall0 + finish, UTC),
            )
        fraction = now / finish * (1.0 + self._rngs[index].uniform(-NOISE, NOISE))
        count = min(total - 1, math.floor(total * min(max(fraction, 0.0), 1.0)))
        return TaskSnapshot(
            task_id,
            total_count=total,
            success_count=count,
            failure_count=0,
            begin_time=self.begin,
        )

    async def aclose(self) -> None:
        pass


class PlannedTimes:
    """Delegates to a policy and notes when each next poll is due, to measure queueing."""

    def __init__(self, policy: BackoffPolicy, clock: FakeClock, planned: dict[str, float]):
        self._policy = policy
        self._clock = clock
        self._planned = planned

    def observe(self, history: PollHistory, snapshot: TaskSnapshot, *, now: float) -> Bounds | None:
        return self._policy.observe(history, snapshot, now=now)

    def next_delay(
        self,
        history: PollHistory,
        result: TaskSnapshot | SourceError,
        *,
        now: float,
        rng: random.Random,
    ) -> float:
        delay = self._policy.next_delay(history, result, now=now, rng=rng)
        self._planned[cast("Watch", history).task_id] = self._clock.now() + max(delay, 0.0)
        return delay


@dataclass(slots=True)
class RunResult:
    policy: str
    tasks: int
    seed: int
    calls_per_task: float
    p50: float
    p95: float
    p99: float
    max_latency: float
    over_budget: int
    undetected: int
    late_mean: float  # how long after its planned time a poll went out (queueing), mean
    late_p95: float
    simulated_seconds: float
    wall_seconds: float
    epoch_skew: float  # |engine's wall origin - the source's|, seconds (should be ~0)
    sweep_p95: float  # what the first round of polls alone forces on any policy (see sweep_bound)
    sweep_p99: float


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def over_budget(times: Sequence[float], rate: float = RATE, window: float = 1.0) -> int:
    """Requests that are the (rate+1)-th or later inside a window shorter than ``window``."""
    ordered = sorted(times)
    limit = math.floor(rate * window)
    return sum(1 for i in range(limit, len(ordered)) if ordered[i] - ordered[i - limit] < window)


def sweep_bound(workload: Workload, rate: float = RATE, margin: float = 0.05) -> list[float]:
    """Per task, the latency that the engine's first round of polls alone forces.

    ``Watcher.add`` spreads the first polls evenly over ``tasks / rate`` seconds, in id order,
    and the limiter lets at most ``rate`` requests into any ``1 s + margin``; so task i's first
    poll is not before ``max(i / rate, (i // rate) * (1 + margin))``, whatever the policy. A
    task that finished before that is detected at least that late.
    """
    per_window = math.floor(rate)
    return [
        max(0.0, max(i / rate, (i // per_window) * (1.0 + margin)) - finish)
        for i, finish in enumerate(workload.finish)
    ]


async def run_once(name: str, policy: BackoffPolicy, workload: Workload, seed: int) -> RunResult:
    clock = FakeClock()
    source = SimulatedSource(workload, clock, seed=seed)
    tasks = len(workload.finish)
    ids = [f"t{i}" for i in range(tasks)]
    started = time.perf_counter()
    async with clock.autojump():
        watcher = Watcher(
            sources={"sim": source},
            policy=PlannedTimes(policy, clock, source.planned),
            clock=clock,
            seed=seed,
            rates={"sim": (RATE, None)},
            sinks=[],
            polling=PollingConfig(deadline=DEADLINE),
        )
        async with watcher as w:
            await w.add(ids)
            # The engine maps clock to wall time with an offset taken on entering; the tasks
            # began when they were added (clock time 0), whose wall time the store recorded.
            # The memory store never yields, so no poll has gone out yet.
            record = await w.store.get("sim", ids[0])
            if record is None or clock.now() != 0.0:
                raise RuntimeError("the clock moved while adding the tasks")
            source.start(record.watched_at)
            events = await w.wait_all()
        simulated = clock.now()
    wall = time.perf_counter() - started
    if source.wall0 is None or len(events) != tasks:
        raise RuntimeError("the run ended before every task did")
    # begin_time is a datetime (microseconds): what the engine's elapsed times are off by.
    skew = abs(source.begin.timestamp() - source.wall0)
    latencies = [source.detected[i] - workload.finish[i] for i in source.detected]
    bound = sweep_bound(workload)
    return RunResult(
        policy=name,
        tasks=tasks,
        seed=seed,
        calls_per_task=len(source.requests) / tasks,
        p50=percentile(latencies, 50),
        p95=percentile(latencies, 95),
        p99=percentile(latencies, 99),
        max_latency=max(latencies),
        over_budget=over_budget(source.requests),
        undetected=tasks - len(latencies),
        late_mean=statistics.fmean(source.late) if source.late else 0.0,
        late_p95=percentile(source.late, 95),
        simulated_seconds=simulated,
        wall_seconds=wall,
        epoch_skew=skew,
        sweep_p95=percentile(bound, 95),
        sweep_p99=percentile(bound, 99),
    )


BASELINES = ("fixed 15 s", "fixed 30 s", "exp. full jitter 2 s x1.5 cap 60 s")
VARIANT = "progress, growth_min 5m"


def policies() -> dict[str, Callable[[], BackoffPolicy]]:
    return {
        # Exactly what a Watcher builds from the default configuration.
        DEFAULT: lambda: policy_from(PollingConfig()),
        # The knob the 5,000-task run is sensitive to (not a baseline, not the default).
        VARIANT: lambda: policy_from(PollingConfig(backoff=BackoffConfig(growth_min=300.0))),
        BASELINES[0]: lambda: make_policy("fixed", initial=15.0),
        BASELINES[1]: lambda: make_policy("fixed", initial=30.0),
        BASELINES[2]: lambda: make_policy(
            "exponential", initial=2.0, multiplier=1.5, max_delay=60.0, jitter=True
        ),
    }


FIELDS = (
    "calls_per_task",
    "p50",
    "p95",
    "p99",
    "max_latency",
    "over_budget",
    "undetected",
    "late_mean",
    "late_p95",
    "simulated_seconds",
    "wall_seconds",
    "sweep_p95",
    "sweep_p99",
)


@dataclass(slots=True)
class Summary:
    medians: dict[str, dict[str, float]]  # policy -> field -> median over runs
    ratios: dict[str, dict[str, float]]  # baseline -> median over runs of default / baseline
    best_baseline: str | None  # lowest median p95 (then calls per task)
    targets: dict[str, object] | None


def summarise(results: list[RunResult]) -> Summary:
    """Medians over runs per policy, and the default's ratios to each baseline (per run)."""
    by_policy: dict[str, list[RunResult]] = {}
    for r in results:
        by_policy.setdefault(r.policy, []).append(r)
    medians = {
        name: {f: float(statistics.median(getattr(r, f) for r in runs)) for f in FIELDS}
        for name, runs in by_policy.items()
    }
    baselines = [name for name in by_policy if name in BASELINES]
    best = min(
        baselines, key=lambda n: (medians[n]["p95"], medians[n]["calls_per_task"]), default=None
    )
    ratios: dict[str, dict[str, float]] = {}
    defaults = {r.seed: r for r in by_policy.get(DEFAULT, [])}
    for name in baselines:
        pairs = [(defaults[b.seed], b) for b in by_policy[name] if b.seed in defaults]
        if pairs:
            ratios[name] = {
                f: statistics.median(getattr(d, f) / getattr(b, f) for d, b in pairs)
                for f in ("p95", "calls_per_task", "p50", "p99")
            }
    targets: dict[str, object] | None = None
    if best is not None and best in ratios:
        ratio, default = ratios[best], medians[DEFAULT]
        targets = {
            "best_baseline": best,
            "p95_ratio": ratio["p95"],
            "calls_ratio": ratio["calls_per_task"],
            "over_budget": default["over_budget"],
            "met": ratio["p95"] <= TARGET_P95_RATIO
            and ratio["calls_per_task"] <= TARGET_CALLS_RATIO
            and default["over_budget"] == 0,
        }
    return Summary(medians, ratios, best, targets)


def print_table(tasks: int, runs: int, summary: Summary) -> None:
    print(f"\n{tasks} tasks, median of {runs} runs (latencies in seconds)")
    header = (
        f"{'policy':36} {'calls/task':>10} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7} "
        f"{'over':>5} {'late':>6} {'late95':>6} {'sim h':>6} {'wall s':>6}"
    )
    print(header)
    print("-" * len(header))
    for name, m in summary.medians.items():
        print(
            f"{name:36} {m['calls_per_task']:10.2f} {m['p50']:7.1f} {m['p95']:7.1f} "
            f"{m['p99']:7.1f} {m['max_latency']:7.1f} {m['over_budget']:5.0f} "
            f"{m['late_mean']:6.2f} {m['late_p95']:6.1f} {m['simulated_seconds'] / 3600:6.2f} "
            f"{m['wall_seconds']:6.1f}"
        )
    any_run = next(iter(summary.medians.values()))
    print(
        f"first round of polls alone (any policy): p95 >= {any_run['sweep_p95']:.1f}, "
        f"p99 >= {any_run['sweep_p99']:.1f}"
    )
    for name, r in summary.ratios.items():
        print(
            f"default / {name}: p95 x{r['p95']:.3f}, calls/task x{r['calls_per_task']:.3f}, "
            f"p50 x{r['p50']:.3f}, p99 x{r['p99']:.3f}"
        )
    if summary.targets is not None:
        met = "MET" if summary.targets["met"] else "NOT MET"
        print(
            f"targets vs best baseline ({summary.best_baseline}): p95 <= x{TARGET_P95_RATIO}, "
            f"calls/task <= x{TARGET_CALLS_RATIO}, 0 over budget: {met}"
        )


def machine() -> dict[str, object]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[2000, 5000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1, help="seed of the first run")
    parser.add_argument("--policy", action="append", help="only these policies (repeatable)")
    parser.add_argument("--quick", action="store_true", help="one run of 2,000 tasks")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("frugality.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.runs = [2000], 1
    chosen = policies()
    if args.policy:
        chosen = {k: v for k, v in chosen.items() if any(p in k for p in args.policy)}
    report: dict[str, object] = {
        "command": " ".join(["python", "benchmarks/frugality.py", *sys.argv[1:]]),
        "machine": machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "results": {},
    }
    started = time.perf_counter()
    results_by_size = report["results"]
    assert isinstance(results_by_size, dict)
    for tasks in args.tasks:
        results: list[RunResult] = []
        for run in range(args.runs):
            seed = args.seed + run
            workload = make_workload(tasks, seed)
            for name, build in chosen.items():
                result = anyio.run(run_once, name, build(), workload, seed)
                results.append(result)
                print(
                    f"  {tasks} tasks seed {seed} {name}: {result.calls_per_task:.2f} calls/task, "
                    f"p95 {result.p95:.1f} s, {result.wall_seconds:.1f} s wall",
                    file=sys.stderr,
                )
        summary = summarise(results)
        print_table(tasks, args.runs, summary)
        results_by_size[str(tasks)] = {
            "summary": asdict(summary),
            "runs": [asdict(r) for r in results],
        }
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
