"""`watcher wait` and `watcher demo` as a user runs them: real subprocesses, real simulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from _waiting import wait_until

from watcher.simulator import Simulator, SimulatorConfig

pytestmark = pytest.mark.anyio

AK, SK = "AKCLIWAIT00000000001", "cli-wait-secret"


def write_config(tmp_path: Path, sim: Simulator) -> Path:
    path = tmp_path / "watcher.yaml"
    path.write_text(
        f"""
sources:
  ms:
    type: metastudio
    endpoint: {sim.url}
    project_id: sim-project
    auth: {{type: aksk, ak: {AK}, sk: ${{TEST_SK}}}}
    rate_limit: 50
    status_map: {{"2": cancelled}}
polling:
  backoff: {{min: 100ms, initial: 200ms, max: 1s, progress_max: 1s}}
log: {{level: info}}
"""
    )
    return path


async def run_watcher(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "TEST_SK": SK}
    with anyio.fail_after(60):
        return await anyio.run_process(
            [sys.executable, "-m", "watcher", *args], input=stdin, env=env, check=False
        )


def events(out: bytes) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


def simulator(**overrides: object) -> Simulator:
    cfg = SimulatorConfig(seed=21, auth="aksk", credentials={AK: SK}, **overrides)  # type: ignore[arg-type]
    return Simulator(cfg)


async def test_all_succeeded_exits_zero(tmp_path: Path) -> None:
    """Every task succeeded: one JSON line each on stdout, exit 0."""
    async with simulator() as sim:
        for i in ("a1", "a2", "a3"):
            sim.add_task(i, life=0.3, total=5, outcome="succeeded")
        result = await run_watcher("wait", "-c", str(write_config(tmp_path, sim)), "a1", "a2", "a3")
    assert result.returncode == 0, result.stderr.decode()
    got = events(result.stdout)
    assert sorted(e["task_id"] for e in got) == ["a1", "a2", "a3"]
    assert {e["outcome"] for e in got} == {"succeeded"}
    assert all(e["event"] == "task.finished" for e in got)


async def test_partial_exits_one_and_error_exits_two(tmp_path: Path) -> None:
    """Any failed/partial gives 1; any error (an id the API refuses) gives 2."""
    async with simulator() as sim:
        sim.add_task("p1", life=0.2, total=4, outcome="partial")
        sim.add_task("s1", life=0.2, total=4, outcome="succeeded")
        config = str(write_config(tmp_path, sim))
        partial = await run_watcher("wait", "-c", config, "p1", "s1")
        errored = await run_watcher("wait", "-c", config, "p1", "invalid-zz")
    assert partial.returncode == 1, partial.stderr.decode()
    assert errored.returncode == 2, errored.stderr.decode()
    bad = next(e for e in events(errored.stdout) if e["task_id"] == "invalid-zz")
    assert bad["outcome"] == "error"
    assert bad["error"]["code"] == "MSS.000000003"  # type: ignore[index]


async def test_ids_file_dedups_skips_comments_and_reports_invalid(tmp_path: Path) -> None:
    """--ids-file: duplicates dropped, comments and blanks skipped, invalid ids named on stderr."""
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("# upload 7\nf1\n\n f2 \nf1\n" + "x" * 200 + "\n")
    async with simulator() as sim:
        for i in ("f1", "f2"):
            sim.add_task(i, life=0.2, total=3, outcome="succeeded")
        result = await run_watcher(
            "wait", "-c", str(write_config(tmp_path, sim)), "--ids-file", str(ids_file)
        )
    stderr = result.stderr.decode()
    assert sorted(e["task_id"] for e in events(result.stdout)) == ["f1", "f2"]
    assert "invalid task id" in stderr
    assert "at most 128" in stderr
    assert result.returncode == 2  # a refused id never got a result


async def test_ids_from_stdin(tmp_path: Path) -> None:
    """--ids-file - reads ids from standard input."""
    async with simulator() as sim:
        sim.add_task("in1", life=0.2, total=3, outcome="succeeded")
        result = await run_watcher(
            "wait", "-c", str(write_config(tmp_path, sim)), "--ids-file", "-", stdin=b"in1\n"
        )
    assert result.returncode == 0, result.stderr.decode()
    assert [e["task_id"] for e in events(result.stdout)] == ["in1"]


async def test_timeout_gives_timed_out_and_exit_two(tmp_path: Path) -> None:
    """--timeout ends unfinished tasks as timed_out and exits 2."""
    async with simulator() as sim:
        sim.add_task("long1", life=3600, total=100, outcome="succeeded")
        result = await run_watcher(
            "wait", "-c", str(write_config(tmp_path, sim)), "--timeout", "1s", "long1"
        )
    assert result.returncode == 2, result.stderr.decode()
    assert [e["outcome"] for e in events(result.stdout)] == ["timed_out"]


async def test_usage_and_config_errors(tmp_path: Path) -> None:
    """No ids is a usage error (64); a typo in the config is a config error (78)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources:\n  ms:\n    type: metastudio\n    endpont: http://x\n")
    no_ids = await run_watcher("wait", "-c", str(bad))
    typo = await run_watcher("wait", "-c", str(bad), "t1")
    unknown_option = await run_watcher("wait", "--bogus")
    assert no_ids.returncode == 64
    assert typo.returncode == 78
    assert "bad.yaml:4 sources.ms.endpont: unknown key" in typo.stderr.decode()
    assert unknown_option.returncode == 64


async def test_progress_log_lines_off_a_terminal(tmp_path: Path) -> None:
    """Off a terminal, progress is a structured JSON log line on stderr; secrets never show."""
    async with simulator() as sim:
        sim.add_task("g1", life=0.2, total=3, outcome="succeeded")
        result = await run_watcher("wait", "-c", str(write_config(tmp_path, sim)), "g1")
    lines = [json.loads(x) for x in result.stderr.decode().splitlines() if x.startswith("{")]
    progress = [x for x in lines if x.get("event") == "progress"]
    assert progress and progress[-1]["done"] == 1 and progress[-1]["total"] == 1
    assert SK not in result.stderr.decode() + result.stdout.decode()


async def test_interrupt_lists_pending_and_exits_130(tmp_path: Path) -> None:
    """SIGINT stops the wait, lists the ids still pending and exits 130."""
    async with simulator() as sim:
        sim.add_task("int1", life=3600, total=100, outcome="succeeded")
        env = {**os.environ, "TEST_SK": SK}
        config = str(write_config(tmp_path, sim))
        async with await anyio.open_process(
            [sys.executable, "-m", "watcher", "wait", "-c", config, "int1"], env=env
        ) as proc:
            # Once polling has begun, the signal handler is installed.
            await wait_until(lambda: sim.stats().requests > 0, within=30)
            proc.send_signal(signal.SIGINT)
            with anyio.fail_after(30):
                await proc.wait()
            assert proc.stderr is not None
            stderr = (await proc.stderr.receive()).decode()
    assert proc.returncode == 130
    assert "still pending" in stderr and "int1" in stderr


async def test_demo_runs_to_a_summary() -> None:
    """`watcher demo` needs no config, watches simulated tasks and ends with a summary, exit 0."""
    result = await run_watcher("demo", "--tasks", "40", "--seed", "3")
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert "40 tasks" in out
    assert '"event": "task.finished"' not in out  # events only with --json
    assert "succeeded" in out and "429s from the API" in out


async def test_timeout_bounds_the_whole_run(tmp_path: Path) -> None:
    """--timeout ends the run on time even when the budget could not poll every task again."""
    ids = [f"slow{i:03d}" for i in range(300)]
    (tmp_path / "ids.txt").write_text("\n".join(ids))
    async with simulator() as sim:
        for i in ids:
            sim.add_task(i, life=3600, total=100, outcome="succeeded")
        config = write_config(tmp_path, sim)
        config.write_text(config.read_text().replace("rate_limit: 50", "rate_limit: 5"))
        started = anyio.current_time()
        result = await run_watcher(
            "wait", "-c", str(config), "--ids-file", str(tmp_path / "ids.txt"), "--timeout", "2s"
        )
        elapsed = anyio.current_time() - started
    assert result.returncode == 2, result.stderr.decode()[-500:]
    got = events(result.stdout)
    assert len(got) == 300 and {e["outcome"] for e in got} == {"timed_out"}
    assert elapsed < 20  # 300 polls at 5/s alone would take a minute


async def test_wrong_credentials_fail_fast_without_locking_the_key(tmp_path: Path) -> None:
    """A wrong secret key: one clear error, exit 78, and far fewer than 5 refused requests."""
    async with simulator() as sim:
        sim.add_task("w1", life=1, total=3, outcome="succeeded")
        config = write_config(tmp_path, sim)
        env = {**os.environ, "TEST_SK": "not-the-secret"}
        with anyio.fail_after(60):
            result = await anyio.run_process(
                [sys.executable, "-m", "watcher", "wait", "-c", str(config), "w1"],
                env=env,
                check=False,
            )
        refused = sim.stats().auth_failures
    stderr = result.stderr.decode()
    assert result.returncode == 78, stderr[-500:]
    assert "refused the credentials" in stderr and "APIGW.0303" in stderr
    assert "not-the-secret" not in stderr
    assert 1 <= refused <= 3


async def test_progress_counts_tasks_in_the_order_they_end(tmp_path: Path) -> None:
    """Interrupted while the first id still runs: only unfinished ids are listed as pending."""
    async with simulator() as sim:
        sim.add_task("first", life=3600, total=100, outcome="succeeded")
        sim.add_task("quick", life=0.1, total=2, outcome="succeeded")
        env = {**os.environ, "TEST_SK": SK}
        config = str(write_config(tmp_path, sim))
        async with await anyio.open_process(
            [sys.executable, "-m", "watcher", "wait", "-c", config, "first", "quick"], env=env
        ) as proc:
            assert proc.stdout is not None
            with anyio.fail_after(30):
                line = await proc.stdout.receive()  # the quick task's result
            assert b'"quick"' in line
            proc.send_signal(signal.SIGINT)
            with anyio.fail_after(30):
                await proc.wait()
            assert proc.stderr is not None
            stderr = (await proc.stderr.receive()).decode()
    assert proc.returncode == 130
    assert "1 task(s) still pending" in stderr
    assert "  first" in stderr and "  quick" not in stderr


async def test_problems_found_only_by_building_are_config_errors(tmp_path: Path) -> None:
    """A mistyped type, a bad webhook secret, a missing store folder: check and wait exit 78."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "sources:\n  ms:\n    type: metastudo\n    endpoint: http://127.0.0.1:9\n"
        "    project_id: p\n"
        "sinks:\n  - {type: webhook, url: 'http://127.0.0.1:9/h', secret: whsec_a}\n"
        f"store: {{type: sqlite, path: {tmp_path}/missing/w.db}}\n"
    )
    checked = await run_watcher("check", "-c", str(bad))
    waited = await run_watcher("wait", "-c", str(bad), "t1")
    stderr = checked.stderr.decode()
    assert checked.returncode == 78
    assert "unknown source type 'metastudo'" in stderr
    assert "sinks.webhook.secret" in stderr and "store.path" in stderr
    assert waited.returncode == 78
    assert "Traceback" not in waited.stderr.decode()


async def test_an_unreachable_api_is_reported_not_silent(tmp_path: Path) -> None:
    """Polls failing against a dead endpoint show up as a warning at the default log level."""
    async with simulator() as sim:
        config = write_config(tmp_path, sim)
    # The simulator has stopped: its port now refuses connections.
    result = await run_watcher("wait", "-c", str(config), "--timeout", "6s", "gone1")
    stderr = result.stderr.decode()
    assert result.returncode == 2
    assert "polls are failing and being retried" in stderr
    assert "connect" in stderr
