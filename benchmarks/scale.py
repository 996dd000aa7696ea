"""Memory and scale: RSS per watch with the memory store, and the CPU to dispatch due watches.

For each size (1k to 1M watches), each in a fresh process pinned to one core:

- ``watcher``: ``Watcher.add(ids)`` with the memory store, the default 32 workers and a budget
  of 1,000,000 requests/s whose burst is 1, so the first polls are spread as for any add
  larger than the burst (``polling.spread`` 0: over ids / rate, 1 µs apart, faster than they
  can be dispatched, so dispatching is CPU-bound at every size); the source answers
  instantly with one shared "running" snapshot and the ``fixed`` backoff is an hour, so
  every watch is polled exactly once. RSS is read
  (after ``gc.collect()``) before the add, after it, and after every watch has been polled
  once; the CPU of the add and of dispatching every watch once (pop from the heap, take a
  token, poll, classify, back off, reschedule, record the reschedule in the store) is
  ``time.process_time()``.
- ``coroutines``: the baseline, one asyncio task per id, each sleeping until its first poll
  (1 µs apart the same way), then ``async with semaphore(32)`` around the same instant
  fetch, then sleeping an hour.

The ids are 32 hex characters, as MetaStudio's, and are built before the first reading in
both cases (they belong to the caller; each costs another 81 bytes). The rate limiter's window
ring is allocated when the Watcher opens, also before it. The first poll of each watch is
when the engine first stores per-watch progress, hence the second RSS reading.

    python benchmarks/scale.py          # writes results/scale.json and benchmarks/scale.png
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import HERE, cores, machine, median, now_iso, rss, run_async, run_child, write_json

from watcher.testing import running

SIZES = (1_000, 10_000, 100_000, 1_000_000)
MODES = ("watcher", "coroutines")
RATE = 1_000_000.0
STEP = 1 / RATE  # first polls this far apart, as the limiter's rate spreads them
INTERVAL = 3600.0
WORKERS = 32
TARGET_BYTES = 512

_SNAPSHOT = running("0" * 32, done=1, total=3)


class InstantSource:
    """Answers every poll at once with the same running snapshot (no per-id state)."""

    name = "bench"

    async def fetch(self, task_id: str) -> Any:
        return _SNAPSHOT

    async def aclose(self) -> None:
        return None


def _ids(n: int) -> list[str]:
    return [f"{i:032x}" for i in range(n)]


def _settled_rss() -> int:
    gc.collect()
    return rss()


async def _watcher(n: int) -> dict[str, Any]:
    from watcher import Watcher
    from watcher.backoff import make_policy
    from watcher.config import PollingConfig
    from watcher.stores.memory import MemoryStore

    ids = _ids(n)
    polling = PollingConfig(workers=WORKERS, spread=0.0)
    async with Watcher(
        sources={"bench": InstantSource()},
        store=MemoryStore(),
        polling=polling,
        policy=make_policy("fixed", initial=INTERVAL, min_delay=0.0),
        rates={"bench": (RATE, 1)},
    ) as watcher:
        stats = watcher.scheduler().stats
        before = _settled_rss()
        cpu0 = time.process_time()
        await watcher.add(ids)
        cpu1 = time.process_time()
        added = _settled_rss()
        start, wall = time.process_time(), time.perf_counter()  # nothing ran meanwhile
        while stats.snapshots < n:  # noqa: ASYNC110 - a counter nothing signals; 5 ms is noise
            await asyncio.sleep(0.005)
        cpu2 = time.process_time()
        wall = time.perf_counter() - wall
        polled = _settled_rss()
        assert stats.polls == n, (stats.polls, n)
    return _result(n, before, added, polled, add_cpu=cpu1 - cpu0, poll_cpu=cpu2 - start, wall=wall)


async def _coroutines(n: int) -> dict[str, Any]:
    ids = _ids(n)
    source = InstantSource()
    sem = asyncio.Semaphore(WORKERS)
    polls = 0
    all_polled = asyncio.Event()

    async def watch(task_id: str, first: float) -> None:
        nonlocal polls
        await asyncio.sleep(first)
        while True:
            async with sem:
                await source.fetch(task_id)
            polls += 1
            if polls == n:
                all_polled.set()
            await asyncio.sleep(INTERVAL)

    before = _settled_rss()
    cpu0 = time.process_time()
    tasks = [asyncio.create_task(watch(task_id, i * STEP)) for i, task_id in enumerate(ids)]
    await asyncio.sleep(0)  # every task runs to its first sleep
    cpu1 = time.process_time()
    added = _settled_rss()
    start, wall = time.process_time(), time.perf_counter()  # nothing ran meanwhile
    await all_polled.wait()
    cpu2 = time.process_time()
    wall = time.perf_counter() - wall
    polled = _settled_rss()
    del tasks  # still running; the process exits without tearing them down
    return _result(n, before, added, polled, add_cpu=cpu1 - cpu0, poll_cpu=cpu2 - start, wall=wall)


def _result(
    n: int,
    before: int,
    added: int,
    polled: int,
    *,
    add_cpu: float,
    poll_cpu: float,
    wall: float,
) -> dict[str, Any]:
    return {
        "n": n,
        "bytes_per_watch": (added - before) / n,
        "bytes_per_watch_polled": (polled - before) / n,
        "add_cpu_s": add_cpu,
        "dispatch_cpu_s": poll_cpu,
        "dispatch_wall_s": wall,
        "add_us_per_watch": add_cpu / n * 1e6,
        "dispatch_us_per_watch": poll_cpu / n * 1e6,
    }


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    core, _ = cores()
    table: dict[str, dict[str, Any]] = {mode: {} for mode in MODES}
    for n in args.sizes:
        runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
        for _ in range(args.runs):
            for mode in MODES:  # interleaved, so drift in the machine hits both alike
                result = run_child(
                    ["benchmarks/scale.py", "--child", mode, "--n", str(n)], core=core
                )
                runs[mode].append(result)
        for mode in MODES:
            rows = runs[mode]
            summary = {key: median([r[key] for r in rows]) for key in rows[0] if key != "n"}
            summary["runs"] = len(rows)
            table[mode][str(n)] = summary
            print(
                f"{mode:10s} n={n:>9,}: {summary['bytes_per_watch']:7.0f} B/watch "
                f"({summary['bytes_per_watch_polled']:5.0f} after a poll), "
                f"add {summary['add_us_per_watch']:5.1f} us, "
                f"dispatch {summary['dispatch_us_per_watch']:5.1f} us/watch",
                file=sys.stderr,
            )
    return {
        "when": now_iso(),
        "machine": machine(),
        "params": {
            "sizes": list(args.sizes),
            "runs": args.runs,
            "workers": WORKERS,
            "step_s": STEP,
        },
        "results": table,
        "target_bytes_per_watch": TARGET_BYTES,
    }


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [int(n) for n in data["results"]["watcher"]]
    w = data["results"]["watcher"]
    c = data["results"]["coroutines"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(sizes, [w[str(n)]["bytes_per_watch"] for n in sizes], "o-", label="watcher")
    left.plot(
        sizes,
        [w[str(n)]["bytes_per_watch_polled"] for n in sizes],
        "o--",
        label="watcher, after one poll each",
    )
    left.plot(sizes, [c[str(n)]["bytes_per_watch"] for n in sizes], "s-", label="coroutine per id")
    left.axhline(data["target_bytes_per_watch"], color="grey", ls=":", label="target 512 B")
    left.set(xscale="log", xlabel="watches", ylabel="RSS bytes per watch", ylim=(0, None))
    left.set_title("Memory per watch")
    left.legend(fontsize=8)
    for key, style, label in (
        ("dispatch_us_per_watch", "o-", "watcher: dispatch (poll once)"),
        ("add_us_per_watch", "o--", "watcher: add"),
    ):
        right.plot(sizes, [w[str(n)][key] for n in sizes], style, label=label)
    right.plot(
        sizes,
        [c[str(n)]["dispatch_us_per_watch"] for n in sizes],
        "s-",
        label="coroutine per id: poll once",
    )
    right.plot(
        sizes, [c[str(n)]["add_us_per_watch"] for n in sizes], "s--", label="coroutine: start"
    )
    right.set(xscale="log", xlabel="watches", ylabel="CPU µs per watch", ylim=(0, None))
    right.set_title("CPU per watch")
    right.legend(fontsize=8)
    fig.suptitle("watcher scale: memory store, instant source, one core", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def _child(mode: str, n: int) -> None:
    result = await (_watcher(n) if mode == "watcher" else _coroutines(n))
    print(json.dumps(result), flush=True)
    os._exit(0)  # tearing down a million tasks is not measured: skip it


def main() -> None:
    parser = argparse.ArgumentParser(description="memory per watch and dispatch CPU, 1k..1M")
    parser.add_argument("--child", choices=MODES)
    parser.add_argument("--n", type=int)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.child:
        run_async(_child(args.child, args.n))
        return
    data = orchestrate(args)
    print(f"wrote {write_json('scale.json', data)}", file=sys.stderr)
    plot(data, HERE / "scale.png")
    print(f"wrote {HERE / 'scale.png'}", file=sys.stderr)


if __name__ == "__main__":
    main()
