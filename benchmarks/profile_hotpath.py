"""Profile the hot path: the ``watcher`` throughput client under pyinstrument.

Runs the same client as ``throughput.py --client watcher`` (real ``MetaStudioSource``, AK/SK
signing, memory store) in this process, pinned to one core, against the lean endpoint on the
other, and samples it for a few seconds. Writes ``results/profile.txt`` (pyinstrument's call
tree, trimmed) and ``results/profile.json``: where the time goes by component and the
functions with the most time of their own.

    python benchmarks/profile_hotpath.py
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, ROOT, cores, machine, now_iso, run_async, server, write_json
from pyinstrument import Profiler
from pyinstrument.frame import Frame
from throughput import CLIENTS

# First match wins: file path fragments to the component they belong to.
COMPONENTS = (
    ("watcher/sources/_signer.py", "AK/SK signing"),
    ("watcher/sources/_auth.py", "AK/SK signing"),
    ("hmac.py", "AK/SK signing"),
    ("hashlib", "AK/SK signing"),
    ("urllib/parse.py", "AK/SK signing"),
    ("watcher/sources/", "source: request, read, parse"),
    ("watcher/_models.py", "source: request, read, parse"),
    ("watcher/_taskid.py", "source: request, read, parse"),
    ("json/", "source: request, read, parse"),
    ("watcher/scheduler.py", "engine: scheduler, limiter, store"),
    ("watcher/ratelimit.py", "engine: scheduler, limiter, store"),
    ("watcher/_watcher.py", "engine: scheduler, limiter, store"),
    ("watcher/stores/", "engine: scheduler, limiter, store"),
    ("watcher/classifier.py", "engine: scheduler, limiter, store"),
    ("watcher/backoff.py", "engine: scheduler, limiter, store"),
    ("watcher/_clock.py", "engine: scheduler, limiter, store"),
    ("watcher/_watch.py", "engine: scheduler, limiter, store"),
    ("aiohttp/", "aiohttp client"),
    ("yarl/", "aiohttp client"),
    ("multidict/", "aiohttp client"),
    ("anyio/", "anyio"),
    ("asyncio/", "event loop"),
    ("uvloop", "event loop"),
)


def component(path: str) -> str:
    for fragment, name in COMPONENTS:
        if fragment in path:
            return name
    return "other"


def breakdown(root: Frame) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """Own time by component and by function; a frame's own time goes to its nearest
    non-builtin ancestor (``len``, ``dict.get``... are charged to their caller)."""
    by_component: collections.Counter[str] = collections.Counter()
    by_function: collections.Counter[str] = collections.Counter()
    stack: list[tuple[Frame, str, str]] = [(root, "other", "")]
    while stack:
        frame, parent_component, parent_function = stack.pop()
        path = frame.file_path or ""
        if path and not path.startswith("<"):
            kind, function = component(path), f"{frame.function} ({_short(path)})"
        else:
            kind, function = parent_component, parent_function
        own = frame.time - sum(child.time for child in frame.children)
        if frame.function == "[self]" or frame.is_synthetic:
            kind, function = parent_component, parent_function
        by_component[kind] += own
        if function:
            by_function[function] += own
        stack.extend((child, kind, function) for child in frame.children)
    total = sum(by_component.values()) or 1.0
    shares = {k: v / total for k, v in by_component.most_common()}
    top = [(name, t / total) for name, t in by_function.most_common(25)]
    return shares, top


def _short(path: str) -> str:
    path = path.split("site-packages/", 1)[-1]
    path = re.sub(r"^.*/lib/python3\.\d+/", "", path)  # the standard library
    return path.split(str(ROOT) + "/", 1)[-1]


async def _profiled(args: argparse.Namespace, profiler: Profiler) -> dict[str, Any]:
    # Sample the measured window only, not the imports and the add().
    loop = asyncio.get_running_loop()
    loop.call_later(args.warmup, profiler.start)
    result = await CLIENTS["watcher"](args)
    profiler.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="profile the watcher client's hot path")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--ids", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    cli = parser.parse_args()
    client_core, endpoint_core = cores()
    with server(["benchmarks/endpoint.py", "--spin"], core=endpoint_core) as (lean, port):
        if client_core is not None:
            os.sched_setaffinity(0, {client_core})
        args = argparse.Namespace(
            url=f"http://127.0.0.1:{port}",
            endpoint_pid=lean.pid,
            endpoint_kind="lean",
            ids=cli.ids,
            interval=0.5,
            concurrency=cli.concurrency,
            warmup=1.5,
            window=cli.seconds,
        )
        profiler = Profiler(interval=0.0005, async_mode="disabled")
        result = run_async(_profiled(args, profiler))
    session = profiler.last_session
    assert session is not None
    root = session.root_frame()
    assert root is not None
    shares, top = breakdown(root)
    RESULTS.mkdir(exist_ok=True)
    text = profiler.output_text(unicode=True, color=False, show_all=False)
    (RESULTS / "profile.txt").write_text(text, encoding="utf-8")
    data = {
        "when": now_iso(),
        "machine": machine(),
        "params": {"ids": cli.ids, "concurrency": cli.concurrency, "seconds": cli.seconds},
        "polls_per_s_under_profiler": result["polls_per_s"],
        "samples": session.sample_count,
        "components": shares,
        "top_functions": top,
    }
    print(f"wrote {write_json('profile.json', data)}", file=sys.stderr)
    for name, share in shares.items():
        print(f"{share:6.1%}  {name}", file=sys.stderr)


if __name__ == "__main__":
    main()
