"""`watcher run` as a real subprocess: control API, sinks, batches, metrics, spool, signals.

The simulator and the webhook receiver run in the test process; the daemon listens on
``127.0.0.1:0`` and writes the address it bound to its ``--ready-file``, so no port is ever
guessed. Most tests share one daemon (module fixture); the lifecycle test runs its own.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import anyio
import pytest
from _sink_receiver import SECRET, Receiver
from _waiting import wait_until
from anyio.abc import Process
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks.webhooks import Webhook

from watcher.simulator import FaultConfig, Simulator, SimulatorConfig

pytestmark = pytest.mark.anyio

AK, SK = "AKDAEMON000000000001", "daemon-test-secret-key-0123"
TOKEN = "daemon-api-token-0123456789abcdef"
ENV = {"TEST_SK": SK, "TEST_WEBHOOK_SECRET": SECRET, "WATCHER_API_TOKEN": TOKEN}
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def config_text(sim: Simulator, hook: str, **extra: str) -> str:
    """A daemon config; ``extra`` adds top-level blocks (YAML text by key)."""
    blocks = "".join(f"{key}: {value}\n" for key, value in extra.items())
    return f"""
sources:
  ms:
    type: metastudio
    endpoint: {sim.url}
    project_id: sim-project
    auth: {{type: aksk, ak: {AK}, sk: ${{TEST_SK}}}}
    rate_limit: 100
    status_map: {{"1": running, "2": cancelled}}
polling:
  backoff: {{min: 100ms, initial: 150ms, max: 400ms, progress_max: 400ms}}
  error_backoff: {{initial: 100ms, max: 300ms}}
sinks:
  - {{type: file, path: results.jsonl}}
  - {{type: webhook, url: "{hook}", secret: "${{TEST_WEBHOOK_SECRET}}", initial_backoff: 100ms}}
api: {{listen: "127.0.0.1:0", max_body_bytes: 1MiB}}
log: {{level: debug}}
{blocks}"""


@dataclass
class Daemon:
    """One `watcher run` process and what it wrote."""

    proc: Process
    dir: Path
    url: str
    pid: int
    log_from: int  # where this process's lines start in daemon.err (a restart appends)

    def stderr(self) -> str:
        data = (self.dir / "daemon.err").read_bytes()[self.log_from :]
        return data.decode("utf-8", errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.stderr().splitlines() if x.startswith("{")]

    def events(self, name: str = "results.jsonl") -> list[dict[str, Any]]:
        path = self.dir / name
        if not path.exists():
            return []
        return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x]


async def start_daemon(directory: Path, config: str, *, env: dict[str, str] = ENV) -> Daemon:
    (directory / "watcher.yaml").write_text(config, encoding="utf-8")
    ready = directory / "ready.json"
    ready.unlink(missing_ok=True)
    err_path = directory / "daemon.err"
    log_from = err_path.stat().st_size if err_path.exists() else 0
    cmd = [sys.executable, "-m", "watcher", "run", "-c", "watcher.yaml", "--ready-file", str(ready)]
    with (directory / "daemon.out").open("ab") as out, (directory / "daemon.err").open("ab") as err:
        proc = await anyio.open_process(
            cmd, stdout=out, stderr=err, cwd=directory, env={**os.environ, **env}
        )

    def up() -> bool:
        if proc.returncode is not None:
            text = (directory / "daemon.err").read_text(errors="replace")[-3000:]
            raise AssertionError(f"the daemon exited with {proc.returncode}:\n{text}")
        return ready.exists()

    await wait_until(up, within=30)
    info = json.loads(ready.read_text())
    return Daemon(proc, directory, info["url"], info["pid"], log_from)


async def stop_daemon(daemon: Daemon, *, within: float = 15) -> float:
    """SIGTERM; the seconds until it exited."""
    begin = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    with anyio.fail_after(within):
        await daemon.proc.wait()
    await daemon.proc.aclose()
    return time.monotonic() - begin


@dataclass
class World:
    sim: Simulator
    receiver: Receiver
    daemon: Daemon
    http: aiohttp.ClientSession

    async def call(
        self, method: str, path: str, *, auth: bool = True, **kwargs: Any
    ) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
        headers = {**(AUTH if auth else {}), **kwargs.pop("headers", {})}
        async with self.http.request(
            method, self.daemon.url + path, headers=headers, **kwargs
        ) as resp:
            raw = await resp.read()
            ctype = resp.headers.get("Content-Type", "")
            body = json.loads(raw) if ctype.startswith("application/json") else raw.decode()
            return resp.status, body, resp.headers

    def hook_events(self) -> list[dict[str, Any]]:
        return [c.event for c in self.receiver.calls]


def simulator() -> Simulator:
    cfg = SimulatorConfig(
        seed=5, auth="aksk", credentials={AK: SK},
        duration_median=0.4, duration_sigma=0.3, duration_max=1.2,
    )  # fmt: skip
    return Simulator(cfg)


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("daemon")


@pytest.fixture(scope="module")
async def world(module_dir: Path) -> AsyncIterator[World]:
    (module_dir / "spool").mkdir()
    async with simulator() as sim, Receiver() as receiver:
        # No `store:` key: the daemon must default to SQLite, not memory.
        text = config_text(
            sim, receiver.url, spool="{dir: spool, poll_interval: 100ms}", daemon="{grace: 10s}"
        )
        daemon = await start_daemon(module_dir, text)
        try:
            async with aiohttp.ClientSession() as http:
                yield World(sim, receiver, daemon, http)
        finally:
            took = await stop_daemon(daemon)
            assert daemon.proc.returncode == 0, daemon.stderr()[-3000:]
            assert took < 10


def task_events(events: list[dict[str, Any]], *ids: str) -> dict[str, dict[str, Any]]:
    return {e["task_id"]: e for e in events if e.get("task_id") in ids}


# --- the control API ---------------------------------------------------------------------------


async def test_v1_needs_the_bearer_token(world: World) -> None:
    """Without the token /v1 answers 401 with WWW-Authenticate; health and readiness need none."""
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {TOKEN}"},
    ):
        status, body, resp_headers = await world.call(
            "GET", "/v1/status", auth=False, headers=headers
        )
        assert status == 401
        assert resp_headers["WWW-Authenticate"].startswith("Bearer")
        assert body["error"] == "unauthorized"
    status, _, _ = await world.call("POST", "/v1/watches", auth=False, json={"task_ids": ["x1"]})
    assert status == 401
    assert (await world.call("GET", "/healthz", auth=False))[:2] == (200, {"status": "ok"})
    assert (await world.call("GET", "/readyz", auth=False))[:2] == (200, {"ready": True})
    status, body, _ = await world.call("GET", "/v1/status")
    assert status == 200 and body["ready"] is True and body["default_source"] == "ms"
    assert (world.daemon.dir / "watcher.db").exists()  # no store key: SQLite by default


async def test_watches_are_accepted_deduplicated_and_delivered(world: World) -> None:
    """Accepted, duplicate and invalid ids are told apart; events reach the file and webhook."""
    long_id = "x" * 200
    body = {"task_ids": ["d1", "d2", "d1", "", long_id], "labels": {"team": "kb"}, "deadline": "1h"}
    status, first, _ = await world.call("POST", "/v1/watches", json=body)
    assert status == 202
    assert first["accepted"] == ["d1", "d2"] and first["duplicates"] == ["d1"]
    assert first["source"] == "ms"
    reasons = {item["task_id"]: item["reason"] for item in first["invalid"]}
    assert reasons[""] == "is empty" and "at most 128" in reasons[long_id]
    status, second, _ = await world.call("POST", "/v1/watches", json={"task_ids": ["d1", "d3"]})
    assert status == 202 and second["duplicates"] == ["d1"] and second["accepted"] == ["d3"]
    ids = ("d1", "d2", "d3")
    await wait_until(lambda: len(task_events(world.daemon.events(), *ids)) == 3, within=15)
    await wait_until(lambda: len(task_events(world.hook_events(), *ids)) == 3, within=15)
    in_file = task_events(world.daemon.events(), *ids)
    for call in world.receiver.calls:
        Webhook(SECRET).verify(call.body, call.headers)
    hooked = task_events(world.hook_events(), *ids)
    assert {t: e["event_id"] for t, e in hooked.items()} == {
        t: e["event_id"] for t, e in in_file.items()
    }
    assert in_file["d1"]["labels"] == {"team": "kb"}
    status, watch, _ = await world.call("GET", "/v1/watches/ms/d1")
    assert status == 200
    assert watch["state"] == "done" and watch["outcome"] == in_file["d1"]["outcome"]
    assert watch["polls"] >= 1 and watch["labels"] == {"team": "kb"} and watch["batch"] is None
    watched = datetime.fromisoformat(watch["watched_at"])
    deadline = datetime.fromisoformat(watch["deadline_at"])
    assert 3590 <= (deadline - watched).total_seconds() <= 3610
    assert datetime.fromisoformat(watch["finished_at"]) >= watched
    assert (await world.call("GET", "/v1/watches/ms/never-added"))[0] == 404
    assert (await world.call("GET", "/v1/watches/nosuch/d1"))[0] == 404


async def test_ids_with_slashes_and_queries_round_trip(world: World) -> None:
    """An id holding '/', '?' and '#' is one path segment when percent-encoded, both ways."""
    odd = "dir/x?y#z %41"
    status, body, _ = await world.call("POST", "/v1/watches", json={"task_ids": [odd]})
    assert status == 202 and body["accepted"] == [odd]
    path = "/v1/watches/ms/" + quote(odd, safe="")
    status, watch, _ = await world.call("GET", path)
    assert status == 200 and watch["task_id"] == odd
    await wait_until(lambda: task_events(world.daemon.events(), odd), within=15)
    code, out, err = await run_cli("status", "--url", world.daemon.url, "--json", odd)
    assert code == 0, err
    assert json.loads(out)["task_id"] == odd


async def test_a_batch_finishes_exactly_once(world: World) -> None:
    """The last watch of a batch ending emits one batch.finished, in both sinks."""
    outcomes = {"b1": "succeeded", "b2": "failed", "b3": "succeeded", "b4": "partial"}
    for task_id, outcome in outcomes.items():
        world.sim.add_task(task_id, life=0.3, total=4, outcome=outcome)
    status, _, _ = await world.call(
        "POST", "/v1/watches", json={"task_ids": list(outcomes), "batch": "b-7"}
    )
    assert status == 202

    def batch_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in events if e["event"] == "batch.finished" and e["batch"] == "b-7"]

    await wait_until(lambda: batch_events(world.daemon.events()), within=15)
    await wait_until(lambda: batch_events(world.hook_events()), within=15)
    # A later event through both sinks: a second batch.finished would have gone out before it.
    await world.call("POST", "/v1/watches", json={"task_ids": ["after-b7"]})
    await wait_until(lambda: task_events(world.daemon.events(), "after-b7"), within=15)
    await wait_until(lambda: task_events(world.hook_events(), "after-b7"), within=15)
    in_file, hooked = batch_events(world.daemon.events()), batch_events(world.hook_events())
    assert len(in_file) == 1 and len(hooked) == 1
    assert in_file[0]["tasks"] == 4
    assert in_file[0]["outcomes"] == {"succeeded": 2, "failed": 1, "partial": 1}
    assert in_file[0]["event_id"] == hooked[0]["event_id"]
    status, batch, _ = await world.call("GET", "/v1/batches/b-7")
    assert status == 200 and batch["finished"] is True and batch["pending"] == 0
    assert batch["tasks"] == 4 and batch["outcomes"] == in_file[0]["outcomes"]
    assert batch["started_at"] is not None and batch["estimated_finish_at"] is None
    assert (await world.call("GET", "/v1/batches/no-such-batch"))[0] == 404


async def test_bad_requests_are_refused_and_the_daemon_stays_up(world: World) -> None:
    """Too large: 413; malformed or wrong types: 400 with details; the daemon keeps serving."""
    huge = json.dumps({"task_ids": ["y" * 100] * 12_000}).encode()  # ~1.3 MB > 1 MiB
    status, body, _ = await world.call("POST", "/v1/watches", data=io.BytesIO(huge))
    assert status == 413 and body["error"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b" " * 65536  # no Content-Length: the stream itself is bounded

    status, body, _ = await world.call("POST", "/v1/watches", data=chunks())
    assert status == 413
    status, body, _ = await world.call("POST", "/v1/watches", data=b'{"task_ids": [')
    assert status == 400 and body["error"] == "malformed_json"
    status, body, _ = await world.call("POST", "/v1/watches", data=b"\xff\xfe")
    assert status == 400
    cases: list[tuple[Any, str]] = [
        ([1, 2], "(body)"),
        ({"task_ids": "abc"}, "task_ids"),
        ({"task_ids": [1]}, "task_ids.0"),
        ({"task_ids": ["ok1"], "bacth": "x"}, "bacth"),
        ({"task_ids": []}, "task_ids"),
        ({"task_ids": ["a"] * 100_001}, "task_ids"),
        ({"task_ids": ["ok1"], "deadline": "soon"}, "deadline"),
        ({"task_ids": ["ok1"], "labels": {"k": 1}}, "labels.k"),
    ]
    for payload, loc in cases:
        status, body, _ = await world.call("POST", "/v1/watches", json=payload)
        assert status == 400, payload
        if loc != "(body)":
            assert loc in [d["loc"] for d in body["details"]], body
    status, body, _ = await world.call(
        "POST", "/v1/watches", json={"task_ids": ["a"], "source": "nope"}
    )
    assert status == 400 and "nope" in body["message"] and "ms" in body["message"]
    for query in ("limit=5000", "limit=0", "offset=-1", "state=bogus", "stat=done"):
        assert (await world.call("GET", f"/v1/watches?{query}"))[0] == 400, query
    assert (await world.call("PUT", "/v1/watches"))[0] == 405
    assert (await world.call("GET", "/healthz", auth=False))[0] == 200
    status, body, _ = await world.call("POST", "/v1/watches", json={"task_ids": ["still-up"]})
    assert status == 202 and body["accepted"] == ["still-up"]


async def test_listing_pages_through_a_batch(world: World) -> None:
    """GET /v1/watches filters by batch and pages with next_offset (limit at most 1000)."""
    ids = [f"page{i}" for i in range(5)]
    await world.call("POST", "/v1/watches", json={"task_ids": ids, "batch": "paged"})
    seen: list[str] = []
    offset: int | None = 0
    pages = 0
    while offset is not None:
        status, page, _ = await world.call(
            "GET", f"/v1/watches?batch=paged&limit=2&offset={offset}"
        )
        assert status == 200 and len(page["watches"]) <= 2
        seen += [w["task_id"] for w in page["watches"]]
        offset, pages = page["next_offset"], pages + 1
    assert seen == ids and pages == 3
    status, page, _ = await world.call("GET", "/v1/watches?batch=paged&source=ms&limit=1000")
    assert status == 200 and page["next_offset"] is None and len(page["watches"]) == 5


async def test_delete_stops_watching(world: World) -> None:
    """DELETE forgets a pending watch: 404 afterwards, no more polls, no event."""
    world.sim.add_task("long-1", life=3600, total=100, outcome="succeeded")
    await world.call("POST", "/v1/watches", json={"task_ids": ["long-1"], "batch": "gone"})
    await wait_until(lambda: world.sim.stats().polls_per_task.get("long-1", 0) >= 2, within=10)
    status, body, _ = await world.call("DELETE", "/v1/watches/ms/long-1")
    assert status == 200 and body["forgotten"] is True and body["state"] == "pending"
    assert (await world.call("GET", "/v1/watches/ms/long-1"))[0] == 404
    assert (await world.call("DELETE", "/v1/watches/ms/long-1"))[0] == 404
    polls = world.sim.stats().polls_per_task["long-1"]
    # Time passes through another task's whole life meanwhile.
    await world.call("POST", "/v1/watches", json={"task_ids": ["after-delete"]})
    await wait_until(lambda: task_events(world.daemon.events(), "after-delete"), within=15)
    assert world.sim.stats().polls_per_task["long-1"] <= polls + 1  # one may have been in flight
    assert not task_events(world.daemon.events(), "long-1")
    assert (await world.call("GET", "/v1/batches/gone"))[0] == 404


async def test_spool_ingests_renamed_files_once(world: World) -> None:
    """A file renamed into the spool is watched and moved to done/; a bad one to failed/."""
    spool = world.daemon.dir / "spool"
    partial = spool / "upload-9.txt.part"
    partial.write_text("never-read\n")
    staged = spool / ".upload-9.txt"
    staged.write_text("# upload 9\nsp1\n\n sp2 \nsp1\n" + "z" * 130 + "\n")
    staged.rename(spool / "upload-9.txt")
    (spool / ".j").write_text(json.dumps({"task_ids": ["sj1"], "batch": "json-batch"}))
    (spool / ".j").rename(spool / "mine.json")
    (spool / ".b").write_text('{"task_ids": ')
    (spool / ".b").rename(spool / "broken.json")
    await wait_until((spool / "done" / "upload-9.txt").exists, within=10)
    await wait_until((spool / "done" / "mine.json").exists, within=10)
    await wait_until((spool / "failed" / "broken.json").exists, within=10)
    assert "malformed JSON" in (spool / "failed" / "broken.json.reason").read_text()
    assert "at most 128" in (spool / "done" / "upload-9.txt.reason").read_text()
    assert partial.exists() and not (spool / "upload-9.txt").exists()
    status, batch, _ = await world.call("GET", "/v1/batches/upload-9")
    assert status == 200 and batch["tasks"] == 2
    status, watch, _ = await world.call("GET", "/v1/watches/ms/sj1")
    assert status == 200 and watch["batch"] == "json-batch"
    # The same name again (say after a crash before the move): duplicates only, kept apart.
    (spool / ".again").write_text("sp1\nsp2\n")
    (spool / ".again").rename(spool / "upload-9.txt")
    await wait_until((spool / "done" / "upload-9.txt.1").exists, within=10)
    status, batch, _ = await world.call("GET", "/v1/batches/upload-9")
    assert batch["tasks"] == 2


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    full_env = {**os.environ, **(ENV if env is None else env)}
    full_env.pop("WATCHER_URL", None)
    with anyio.fail_after(30):
        done = await anyio.run_process(
            [sys.executable, "-m", "watcher", *args], env=full_env, check=False
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_cli_add_and_status_talk_to_the_daemon(world: World) -> None:
    """`watcher add` and `watcher status`, human and --json; exit codes for each failure."""
    world.sim.add_task("cli-1", life=0.3, total=3, outcome="succeeded")
    world.sim.add_task("cli-2", life=0.3, total=3, outcome="failed")
    url = world.daemon.url
    code, out, err = await run_cli(
        "add", "--url", url, "--batch", "cli", "--label", "team=kb", "cli-1", "cli-2"
    )
    assert code == 0, err
    assert "watching 2 new task(s) in source ms, batch cli" in out
    code, out, err = await run_cli("add", "--url", url, "--json", "--batch", "cli", "cli-1", "")
    assert code == 65  # an invalid id
    answer = json.loads(out)
    assert answer["duplicates"] == ["cli-1"] and answer["invalid"][0]["reason"] == "is empty"

    async def finished() -> bool:
        return bool((await world.call("GET", "/v1/batches/cli"))[1]["finished"])

    with anyio.fail_after(20):
        while not await finished():  # noqa: ASYNC110 - the state is in the daemon process
            await anyio.sleep(0.05)
    code, out, _ = await run_cli("status", "--url", url, "--batch", "cli", "--json")
    assert code == 0
    batch = json.loads(out)
    assert batch["outcomes"] == {"succeeded": 1, "failed": 1}
    # -c: the config gives no usable URL (port 0), --url does; the token comes from the env.
    config = str(world.daemon.dir / "watcher.yaml")
    code, out, err = await run_cli("status", "-c", config, "--url", url, "cli-2")
    assert code == 0, err
    assert "ms/cli-2: failed" in out and "team=kb" in out
    # The rest are independent: run them side by side.
    runs: dict[str, tuple[int, str, str]] = {}

    async def one(name: str, env: dict[str, str] | None, *args: str) -> None:
        runs[name] = await run_cli(*args, env=env)

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, "batch", None, "status", "--url", url, "--batch", "cli")
        tg.start_soon(one, "daemon", None, "status", "--url", url)
        tg.start_soon(one, "unknown", None, "status", "--url", url, "nope-id")
        tg.start_soon(one, "wrong", {"WATCHER_API_TOKEN": "wrong"}, "status", "--url", url)
        tg.start_soon(one, "no-token", {}, "status", "--url", url)
        tg.start_soon(one, "refused", None, "add", "--url", "http://127.0.0.1:9", "t1")
    assert runs["batch"][0] == 0 and "batch cli: 2 task(s), finished" in runs["batch"][1]
    assert runs["daemon"][0] == 0 and "ready" in runs["daemon"][1]
    assert "sink webhook" in runs["daemon"][1]
    assert runs["unknown"][0] == 66 and "not watched" in runs["unknown"][2]
    assert runs["wrong"][0] == 77 and "token" in runs["wrong"][2]
    assert runs["no-token"][0] == 78 and "WATCHER_API_TOKEN" in runs["no-token"][2]
    assert runs["refused"][0] == 69 and "cannot reach the daemon" in runs["refused"][2]


async def test_metrics_count_what_the_simulator_saw(world: World) -> None:
    """/metrics parses; its poll counter equals the simulator's request count; no secrets."""

    async def idle() -> bool:
        _, status, _ = await world.call("GET", "/v1/status")
        return status["watches"]["pending"] == 0 and status["sources"]["ms"]["in_flight"] == 0

    with anyio.fail_after(20):
        while not await idle():  # noqa: ASYNC110 - the state is in the daemon process
            await anyio.sleep(0.05)
    status, text, headers = await world.call("GET", "/metrics", auth=False)
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    polls = families["watcher_polls"]
    assert polls.type == "counter"
    total = sum(s.value for s in polls.samples if s.name == "watcher_polls_total")
    assert total == world.sim.stats().requests > 0
    assert families["watcher_poll_duration_seconds"].type == "histogram"
    assert families["watcher_detection_latency_seconds"].type == "histogram"
    states = {s.labels["state"]: s.value for s in families["watcher_watches"].samples}
    assert states["pending"] == 0 and states["done"] >= 10
    deliveries = {
        s.labels["sink"]: s.value
        for s in families["watcher_sink_deliveries"].samples
        if s.name.endswith("_total")
    }
    assert deliveries["file"] >= 10 and deliveries["webhook"] >= 10
    depth = {s.labels["sink"] for s in families["watcher_sink_queue_depth"].samples}
    assert depth == {"file", "webhook"}
    for name in (
        "watcher_throttled",
        "watcher_rate_limiter_wait_seconds",
        "watcher_rate_current",
        "watcher_sink_failures",
        "watcher_sink_dead_letters",
        "watcher_outbox_size",
    ):
        assert name in families, name
    rate = next(s.value for s in families["watcher_rate_current"].samples)
    assert 0 < rate <= 100
    for secret in (SK, TOKEN, SECRET, SECRET.removeprefix("whsec_")):
        assert secret not in text


async def test_logs_carry_ids_and_request_ids_and_no_secrets(world: World) -> None:
    """Debug logs: retried errors carry request_id, task lines task_id/batch/source; no secret."""
    world.sim.set_faults(FaultConfig(error_rate=1.0))
    try:
        await world.call("POST", "/v1/watches", json={"task_ids": ["flaky-1"], "batch": "flaky"})

        def retried() -> bool:
            return any(
                x.get("event") == "poll failed; will retry" for x in world.daemon.log_lines()
            )

        await wait_until(retried, within=10)
    finally:
        world.sim.set_faults(FaultConfig())
    await wait_until(lambda: task_events(world.daemon.events(), "flaky-1"), within=15)
    lines = world.daemon.log_lines()
    retry = next(x for x in lines if x.get("event") == "poll failed; will retry")
    assert retry["task_id"] == "flaky-1" and retry["batch"] == "flaky" and retry["source"] == "ms"
    assert (
        retry["request_id"] and retry["level"] == "debug" and retry["logger"] == "watcher.scheduler"
    )
    about_tasks = [x for x in lines if "task_id" in x and x.get("logger") != "watcher.classifier"]
    assert about_tasks and all({"source", "batch"} <= set(x) for x in about_tasks)
    access = [x for x in lines if x.get("logger") == "watcher.api.access"]
    assert access and all(x.get("request_id") for x in access)
    everything = world.daemon.stderr() + (world.daemon.dir / "daemon.out").read_text()
    for secret in (SK, TOKEN, SECRET, SECRET.removeprefix("whsec_")):
        assert secret not in everything


# --- start-up refusal and the whole lifecycle --------------------------------------------------


async def run_once(directory: Path, config: str, env: dict[str, str]) -> Any:
    """`watcher run` that is expected to refuse to start; its CompletedProcess."""
    (directory / "watcher.yaml").write_text(config)
    full = {k: v for k, v in os.environ.items() if k != "WATCHER_API_TOKEN"}
    with anyio.fail_after(30):
        return await anyio.run_process(
            [sys.executable, "-m", "watcher", "run", "-c", "watcher.yaml"],
            cwd=directory,
            env={**full, **env},
            check=False,
        )


async def test_config_problems_refuse_the_start(tmp_path: Path) -> None:
    """No api.token nor $WATCHER_API_TOKEN, or a missing spool dir: no start, exit 78."""
    async with simulator() as sim:
        env = {k: v for k, v in ENV.items() if k != "WATCHER_API_TOKEN"}
        done = await run_once(tmp_path, config_text(sim, "http://127.0.0.1:9/hook"), env)
        assert done.returncode == 78
        err = done.stderr.decode()
        assert "api.token" in err and "WATCHER_API_TOKEN" in err and "always requires" in err
        # A spool directory that does not exist is a typo, not something to create.
        text = config_text(sim, "http://127.0.0.1:9/hook", spool="{dir: no-such-dir}")
        done = await run_once(tmp_path, text, ENV)
    assert done.returncode == 78
    assert "spool.dir" in done.stderr.decode() and not (tmp_path / "no-such-dir").exists()


async def test_a_port_in_use_exits_69(tmp_path: Path) -> None:
    """A daemon that cannot bind its api.listen address says so and exits 69."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with simulator() as sim:
            text = config_text(sim, "http://127.0.0.1:9/hook").replace(
                '"127.0.0.1:0"', f'"127.0.0.1:{port}"'
            )
            done = await run_once(tmp_path, text, ENV)
    assert done.returncode == 69
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr.decode()


async def test_grace_runs_out_then_a_second_signal_exits_at_once(tmp_path: Path) -> None:
    """A sink that never succeeds: SIGTERM exits 0 once the grace is over; a second signal
    during a long grace exits 130 at once. The undelivered event stays queued."""
    async with simulator() as sim:
        dead_hook = "http://127.0.0.1:9/hook"  # nothing listens on the discard port
        text = config_text(sim, dead_hook, daemon="{grace: 1s}")
        first = await start_daemon(tmp_path, text)
        async with (
            aiohttp.ClientSession() as http,
            http.post(first.url + "/v1/watches", json={"task_ids": ["g1"]}, headers=AUTH) as resp,
        ):
            assert resp.status == 202
        await wait_until(lambda: task_events(first.events(), "g1"), within=15)
        took = await stop_daemon(first)
        assert first.proc.returncode == 0 and 1 <= took < 1 + 3
        assert "grace period over" in first.stderr()
        with sqlite3.connect(tmp_path / "watcher.db") as db:
            (queued,) = db.execute("SELECT count(*) FROM outbox WHERE sink = 'webhook'").fetchone()
        assert queued == 1

        second = await start_daemon(tmp_path, config_text(sim, dead_hook, daemon="{grace: 60s}"))
        second.proc.send_signal(signal.SIGTERM)
        await wait_until(lambda: "shutting down" in second.stderr(), within=10)
        begin = time.monotonic()
        second.proc.send_signal(signal.SIGINT)
        with anyio.fail_after(10):
            await second.proc.wait()
        await second.proc.aclose()
    assert second.proc.returncode == 130 and time.monotonic() - begin < 5
    assert "second signal" in second.stderr()


async def test_sigterm_drains_sighup_reopens_and_restart_finishes_everything(
    tmp_path: Path,
) -> None:
    """SIGTERM exits 0 within the grace; a restart resumes; SIGHUP moves on to a new file."""
    ids = [f"life{i:02d}" for i in range(30)]
    async with simulator() as sim, Receiver() as receiver:
        for i, task_id in enumerate(ids):
            sim.add_task(task_id, life=0.3 + (i % 10) * 0.5, total=5, outcome="succeeded")
        text = config_text(
            sim, receiver.url, store="{type: sqlite, path: state.db}", daemon="{grace: 5s}"
        )
        first = await start_daemon(tmp_path, text)
        body = {"task_ids": ids, "batch": "life"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(first.url + "/v1/watches", json=body, headers=AUTH) as resp,
        ):
            assert resp.status == 202
        await wait_until(lambda: len(first.events()) >= 6, within=15)
        took = await stop_daemon(first)
        assert first.proc.returncode == 0
        assert took < 5 + 2
        assert "shutdown complete" in first.stderr()
        with sqlite3.connect(tmp_path / "state.db") as db:
            (pending,) = db.execute(
                "SELECT count(*) FROM watches WHERE state = 'pending'"
            ).fetchone()
        assert 0 < pending < len(ids)  # it really stopped mid-run
        before = len(first.events())

        second = await start_daemon(tmp_path, text)
        (tmp_path / "results.jsonl").rename(tmp_path / "rotated.jsonl")
        second.proc.send_signal(signal.SIGHUP)

        def all_in() -> bool:
            events = second.events("rotated.jsonl") + second.events()
            return len({e.get("task_id") for e in events} & set(ids)) == len(ids) and any(
                e["event"] == "batch.finished" for e in events
            )

        await wait_until(all_in, within=30)
        hooked = lambda: {c.event.get("task_id") for c in receiver.calls}  # noqa: E731
        await wait_until(lambda: set(ids) <= hooked(), within=15)
        await wait_until(
            lambda: any(c.event["event"] == "batch.finished" for c in receiver.calls), within=15
        )
        assert (await stop_daemon(second)) < 5 + 2
        assert second.proc.returncode == 0
        calls = list(receiver.calls)
    old, new = second.events("rotated.jsonl"), second.events()
    assert len(old) >= before and new  # events after SIGHUP went to a new file at the path
    events = old + new
    by_task = Counter(e.get("task_id") for e in events if e["event"] == "task.finished")
    assert set(by_task) == set(ids) and max(by_task.values()) == 1  # each exactly once
    assert [e["batch"] for e in events if e["event"] == "batch.finished"] == ["life"]
    file_ids = {e["task_id"]: e["event_id"] for e in events if e["event"] == "task.finished"}
    hook_ids = {c.event["task_id"]: c.event["event_id"] for c in calls if c.event.get("task_id")}
    assert hook_ids == file_ids
    assert (
        len({c.headers["webhook-id"] for c in calls if c.event["event"] == "batch.finished"}) == 1
    )
    assert not (tmp_path / "ready.json").exists()  # removed at exit
