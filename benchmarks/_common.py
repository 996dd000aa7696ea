"""Helpers shared by the benchmark scripts: the machine, CPU and RSS readings, child processes."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ROOT = HERE.parent

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def run_async(main: Coroutine[Any, Any, Any]) -> Any:
    """Run ``main`` on uvloop when it is installed (the ``fast`` extra), else on asyncio."""
    try:
        import uvloop
    except ImportError:
        import asyncio

        return asyncio.run(main)
    return uvloop.run(main)


def loop_name() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    return f"uvloop {uvloop.__version__}"


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) the process ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss() -> int:
    """Resident set size of this process, in bytes."""
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * _PAGE


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    import aiohttp

    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "loop": loop_name(),
        "aiohttp": aiohttp.__version__,
        "loadavg": os.getloadavg(),
    }


def _start(args: Sequence[str], core: int | None, **options: Any) -> subprocess.Popen[str]:
    """Start ``python args...`` and pin it to ``core`` (None: leave it alone)."""
    proc = subprocess.Popen(  # noqa: S603 - our own scripts, with our own arguments
        [sys.executable, *args], text=True, cwd=ROOT, **options
    )
    if core is not None:
        # Set before it has done anything measurable: imports alone take longer than this.
        os.sched_setaffinity(proc.pid, {core})
    return proc


def cores() -> tuple[int | None, int | None]:
    """(client core, endpoint core): 0 and 1 when this process may use two cores."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None
    return allowed[0], allowed[1]


def run_child(args: Sequence[str], *, core: int | None, timeout: float = 900.0) -> Any:
    """Run ``python args...`` pinned to ``core``; its last stdout line is JSON, returned."""
    proc = _start(args, core, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{err[-4000:]}")
    return json.loads(out.strip().splitlines()[-1])


@contextlib.contextmanager
def server(args: Sequence[str], *, core: int | None) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start a server child pinned to ``core``; yields it and the first line it prints."""
    proc = _start(args, core, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{' '.join(args)} exited before it was ready")
        yield proc, line.strip()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def write_json(name: str, data: Any) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def now_iso() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")
