"""Throughput: polls per second on one core, AK/SK signing on, against a local endpoint.

The endpoint runs in its own process on the other core (its CPU share is recorded, to show it
is not the bottleneck). Every client signs every request with the same ``AkSkSigner`` and
runs pinned to one core, on uvloop when installed. The workload: ``--ids`` tasks that never
finish, each to be polled every ``--interval`` seconds -- more than one core can serve, so
every client runs flat out and the figure is its capacity. Clients:

- ``bare``: ``--concurrency`` workers taking ids round-robin and doing sign + GET + read; no
  scheduling at all. The ceiling of this stack.
- ``naive``: what users write: one asyncio task per id, ``async with semaphore`` around
  sign + GET + ``await resp.json()``, then ``await asyncio.sleep(interval)``.
- ``source``: the same workers as ``bare`` calling ``MetaStudioSource.fetch`` (validation,
  signing, bounded read, parsing): splits the gap between ``bare`` and ``watcher`` into
  source and engine.
- ``watcher``: ``Watcher`` with the real ``MetaStudioSource``, memory store, a rate limit
  far above the load, ``fixed`` backoff of ``--interval``.

Variants run interleaved, ``--rounds`` times (order rotated each round), each in a fresh
process; ratios are taken within a round and their median reported.

    python benchmarks/throughput.py            # writes benchmarks/results/throughput.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
from _common import (
    cores,
    machine,
    median,
    now_iso,
    process_cpu,
    run_async,
    run_child,
    server,
    write_json,
)

from watcher.sources._signer import AkSkSigner

AK, SK, PROJECT = "BENCHAK", "bench-secret-key", "sim-project"
VARIANTS = ("bare", "naive", "source", "watcher")


def _ids(n: int) -> list[str]:
    return [f"{i:032x}" for i in range(n)]


def _task_url(base: str, task_id: str) -> str:
    return f"{base}/v2/{PROJECT}/ies/task/{task_id}"


async def _lean_work(url: str) -> float:
    """Seconds the lean endpoint has spent answering requests (its ``/_stats``)."""
    host, _, port = url.removeprefix("http://").partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"GET /_stats HTTP/1.1\r\nHost: bench\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        return float(json.loads(await reader.readexactly(length))["seconds"])
    finally:
        writer.close()


class _Meter:
    """Counts answered polls; measures a window after a warm-up."""

    def __init__(self) -> None:
        self.polls = 0

    async def measure(self, args: argparse.Namespace, count: Callable[[], int]) -> dict[str, Any]:
        lean = args.endpoint_kind == "lean"
        await asyncio.sleep(args.warmup)
        w0 = await _lean_work(args.url) if lean else 0.0
        c0, t0, p0 = count(), time.perf_counter(), time.process_time()
        e0 = process_cpu(args.endpoint_pid)
        await asyncio.sleep(args.window)
        c1, t1, p1 = count(), time.perf_counter(), time.process_time()
        e1 = process_cpu(args.endpoint_pid)
        w1 = await _lean_work(args.url) if lean else 0.0
        polls, seconds = c1 - c0, t1 - t0
        return {
            "polls": polls,
            "seconds": seconds,
            "polls_per_s": polls / seconds,
            "cpu_us_per_poll": (p1 - p0) / polls * 1e6 if polls else None,
            "client_cpu_share": (p1 - p0) / seconds,
            "endpoint_cpu_share": (e1 - e0) / seconds,
            # The lean endpoint spins (100 % CPU); this is how much of that answered requests.
            "endpoint_busy_share": (w1 - w0) / seconds if lean else (e1 - e0) / seconds,
        }


def _session(concurrency: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))


async def _bare(args: argparse.Namespace) -> dict[str, Any]:
    signer = AkSkSigner(AK, SK, project_id=PROJECT)
    ring = collections.deque(_ids(args.ids))
    meter = _Meter()
    headers = {"Accept": "application/json"}

    async def worker(session: aiohttp.ClientSession) -> None:
        while True:
            task_id = ring.popleft()
            ring.append(task_id)
            signed = signer.sign("GET", _task_url(args.url, task_id), headers=headers)
            async with session.get(signed.url, headers=signed.headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}")
            meter.polls += 1

    async with _session(args.concurrency) as session:
        workers = [asyncio.create_task(worker(session)) for _ in range(args.concurrency)]
        result = await meter.measure(args, lambda: meter.polls)
        await _cancel(workers)
    return result


async def _naive(args: argparse.Namespace) -> dict[str, Any]:
    signer = AkSkSigner(AK, SK, project_id=PROJECT)
    meter = _Meter()
    headers = {"Accept": "application/json"}
    sem = asyncio.Semaphore(args.concurrency)

    async def watch(session: aiohttp.ClientSession, task_id: str) -> None:
        url = _task_url(args.url, task_id)
        while True:
            async with sem:
                signed = signer.sign("GET", url, headers=headers)
                async with session.get(signed.url, headers=signed.headers) as resp:
                    body = await resp.json()
            meter.polls += 1
            if body.get("end_time"):
                return
            await asyncio.sleep(args.interval)

    async with _session(args.concurrency) as session:
        tasks = [asyncio.create_task(watch(session, task_id)) for task_id in _ids(args.ids)]
        result = await meter.measure(args, lambda: meter.polls)
        await _cancel(tasks)
    return result


def _source_config(args: argparse.Namespace) -> Any:
    from watcher.config import MetaStudioSourceConfig

    return MetaStudioSourceConfig.model_validate(
        {
            "type": "metastudio",
            "endpoint": args.url,
            "project_id": PROJECT,
            "auth": {"type": "aksk", "ak": AK, "sk": SK},
            "rate_limit": 100_000,
            "max_connections": args.concurrency,
        }
    )


async def _source(args: argparse.Namespace) -> dict[str, Any]:
    from watcher.sources.metastudio import MetaStudioSource

    ring = collections.deque(_ids(args.ids))
    meter = _Meter()

    async def worker(source: MetaStudioSource) -> None:
        while True:
            task_id = ring.popleft()
            ring.append(task_id)
            await source.fetch(task_id)
            meter.polls += 1

    async with MetaStudioSource("metastudio", _source_config(args)) as source:
        workers = [asyncio.create_task(worker(source)) for _ in range(args.concurrency)]
        result = await meter.measure(args, lambda: meter.polls)
        await _cancel(workers)
    return result


async def _watcher(args: argparse.Namespace) -> dict[str, Any]:
    from watcher import Watcher
    from watcher.config import Config

    config = Config.model_validate(
        {
            "sources": {"metastudio": _source_config(args).model_dump()},
            "polling": {
                "deadline": None,
                "workers": args.concurrency,
                "backoff": {"policy": "fixed", "initial": args.interval, "min": 0},
            },
            "store": {"type": "memory"},
            "sinks": [],
        }
    )
    async with Watcher(config) as watcher:
        await watcher.add(_ids(args.ids))
        stats = watcher.scheduler().stats
        result = await _Meter().measure(args, lambda: stats.snapshots)
        result["errors"] = dict(stats.errors_by_kind)
    return result


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


CLIENTS: dict[str, Callable[[argparse.Namespace], Awaitable[dict[str, Any]]]] = {
    "bare": _bare,
    "naive": _naive,
    "source": _source,
    "watcher": _watcher,
}


def _client_args(
    variant: str, url: str, pid: int, args: argparse.Namespace, *, kind: str = "lean"
) -> list[str]:
    return [
        "benchmarks/throughput.py",
        "--client",
        variant,
        "--url",
        url,
        "--endpoint-pid",
        str(pid),
        "--endpoint-kind",
        kind,
        "--ids",
        str(args.ids),
        "--interval",
        str(args.interval),
        "--concurrency",
        str(args.concurrency),
        "--warmup",
        str(args.warmup),
        "--window",
        str(args.window),
    ]


def _simulator_args() -> list[str]:
    # Tasks that never finish in the benchmark's time, so every poll is a real GET.
    return [
        "-m",
        "watcher",
        "simulate",
        "--port",
        "0",
        "--auth",
        "aksk",
        "--ak",
        AK,
        "--sk",
        SK,
        "--duration-median",
        "10000h",
    ]


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    client_core, endpoint_core = cores()
    load_before = os.getloadavg()
    started = time.perf_counter()
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    sim_runs: list[dict[str, Any]] = []
    ratios: dict[str, list[float]] = {
        "watcher_vs_bare": [],
        "watcher_vs_naive": [],
        "bare_vs_naive": [],
        "watcher_vs_bare_cpu": [],
        "watcher_vs_naive_cpu": [],
        "bare_vs_naive_cpu": [],
    }
    with server(["benchmarks/endpoint.py", "--spin"], core=endpoint_core) as (lean, port):
        url = f"http://127.0.0.1:{port}"
        for round_no in range(args.rounds):
            shift = round_no % len(VARIANTS)
            order = VARIANTS[shift:] + VARIANTS[:shift]
            this: dict[str, dict[str, Any]] = {}
            for variant in order:
                result = run_child(
                    _client_args(variant, url, lean.pid, args), core=client_core, timeout=120
                )
                this[variant] = result
                runs[variant].append(result)
                print(
                    f"round {round_no + 1} {variant:8s} {result['polls_per_s']:8.0f} polls/s "
                    f"{result['cpu_us_per_poll']:6.1f} us/poll "
                    f"endpoint busy {result['endpoint_busy_share']:.0%}",
                    file=sys.stderr,
                )
            rate = {v: this[v]["polls_per_s"] for v in VARIANTS}
            cpu = {v: this[v]["cpu_us_per_poll"] for v in VARIANTS}
            ratios["watcher_vs_bare"].append(rate["watcher"] / rate["bare"])
            ratios["watcher_vs_naive"].append(rate["watcher"] / rate["naive"])
            ratios["bare_vs_naive"].append(rate["bare"] / rate["naive"])
            # Polls per CPU-second: what each would do with the core to itself.
            ratios["watcher_vs_bare_cpu"].append(cpu["bare"] / cpu["watcher"])
            ratios["watcher_vs_naive_cpu"].append(cpu["naive"] / cpu["watcher"])
            ratios["bare_vs_naive_cpu"].append(cpu["naive"] / cpu["bare"])
    # The simulator, for contrast: it verifies every signature, so it is the bottleneck.
    with server(_simulator_args(), core=endpoint_core) as (sim, banner):
        url = banner.split(" on ", 1)[1].split()[0]
        for round_no in range(args.rounds):
            result = run_child(
                _client_args("bare", url, sim.pid, args, kind="simulator"),
                core=client_core,
                timeout=120,
            )
            sim_runs.append(result)
            print(
                f"round {round_no + 1} bare→simulator {result['polls_per_s']:8.0f} polls/s "
                f"endpoint {result['endpoint_cpu_share']:.0%}",
                file=sys.stderr,
            )

    def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            key: median([r[key] for r in results])
            for key in (
                "polls_per_s",
                "cpu_us_per_poll",
                "client_cpu_share",
                "endpoint_cpu_share",
                "endpoint_busy_share",
            )
        } | {"runs": [round(r["polls_per_s"]) for r in results]}

    return {
        "when": now_iso(),
        "seconds": time.perf_counter() - started,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "machine": machine(),
        "pinning": {"client_core": client_core, "endpoint_core": endpoint_core},
        "params": {
            "ids": args.ids,
            "interval": args.interval,
            "concurrency": args.concurrency,
            "warmup": args.warmup,
            "window": args.window,
            "rounds": args.rounds,
        },
        "variants": {v: summary(runs[v]) for v in VARIANTS},
        "simulator_bare": summary(sim_runs),
        "ratios": {
            name: {"median": median(values), "runs": [round(v, 3) for v in values]}
            for name, values in ratios.items()
        },
        "targets": {"watcher_vs_bare": 0.75, "watcher_vs_naive": 1.5},
        "errors": [r.get("errors") for r in runs["watcher"] if r.get("errors")],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="polls/s of watcher vs bare and naive clients")
    parser.add_argument("--client", choices=VARIANTS)
    parser.add_argument("--url")
    parser.add_argument("--endpoint-pid", type=int, default=0)
    parser.add_argument("--endpoint-kind", choices=("lean", "simulator"), default="lean")
    parser.add_argument("--ids", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--window", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if args.client:
        print(json.dumps(run_async(CLIENTS[args.client](args))))
        return
    result = orchestrate(args)
    path = write_json("throughput.json", result)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
