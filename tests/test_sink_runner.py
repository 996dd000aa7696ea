"""SinkRunner over the real MemoryStore: retries, Retry-After, dead letters, isolation, drain.

Where time matters the runner runs on a FakeClock in autojump mode, so minutes of backoff
pass instantly. Conditions are awaited with a bound (``wait_until``), never slept for.
"""

from __future__ import annotations

import errno
import json
import os
import random
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
from _sink_receiver import SECRET, Call, Receiver, event, fail_first, status, webhook_config
from _waiting import wait_until
from standardwebhooks import Webhook

from watcher._clock import Clock, FakeClock, MonotonicClock
from watcher._exceptions import ConfigError
from watcher.config import FileSinkConfig, PluginSinkConfig, WebhookSinkConfig
from watcher.sinks import DeliveryError, FileSink, Sink, SinkRunner, WebhookSink
from watcher.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio


class ScriptedSink:
    """A test sink: ``fail(n, payload)`` returns an exception to raise on attempt n, or None."""

    def __init__(self, name: str, fail: Any = None) -> None:
        self.name = name
        self._fail = fail or (lambda n, payload: None)
        self.attempts = 0
        self.got: list[Mapping[str, Any]] = []

    async def deliver(self, event: Mapping[str, Any]) -> None:
        self.attempts += 1
        problem = self._fail(self.attempts, event)
        if problem is not None:
            raise problem
        self.got.append(event)

    async def aclose(self) -> None:
        return None


class HangingSink(ScriptedSink):
    """Never returns from deliver."""

    async def deliver(self, event: Mapping[str, Any]) -> None:
        self.attempts += 1
        await anyio.Event().wait()


class FullDisk(FileSink):
    """A file sink whose disk is full while ``full`` is set."""

    full = False

    def _write(self, fd: int, data: memoryview) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super()._write(fd, data)


@asynccontextmanager
async def running(*runners: SinkRunner) -> AsyncIterator[None]:
    """Run the runners as tasks for the duration of the block."""
    async with anyio.create_task_group() as tg:
        for runner in runners:
            tg.start_soon(runner.run)
        try:
            yield
        finally:
            tg.cancel_scope.cancel()


def make_runner(
    sink: Sink, store: MemoryStore, tmp_path: Path, clock: Clock, **options: Any
) -> SinkRunner:
    options.setdefault("initial_backoff", 1.0)
    options.setdefault("max_backoff", 60.0)
    return SinkRunner(
        sink,
        store,
        clock=clock,
        rng=random.Random(7),
        dead_letter_path=str(tmp_path / "dead.jsonl"),
        **options,
    )


async def queue(store: MemoryStore, sink: str, *numbers: int) -> None:
    for n in numbers:
        await store.enqueue(event(n)["event_id"], event(n), [sink])


def dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "dead.jsonl"
    if not path.exists():
        return []
    return [json.loads(text) for text in path.read_text(encoding="utf-8").splitlines()]


# --- webhook retries --------------------------------------------------------------------------


async def test_retries_until_delivered_with_the_same_id_and_valid_signatures(
    tmp_path: Path,
) -> None:
    """503 three times, then 200: the event arrives, every attempt is signed, one webhook-id."""
    clock = FakeClock()
    async with clock.autojump(), MemoryStore() as store, Receiver(fail_first(3)) as rx:
        sink = WebhookSink("hook", webhook_config(rx.url))
        runner = make_runner(sink, store, tmp_path, clock)
        await queue(store, "hook", 1)
        async with running(runner):
            runner.notify()
            await wait_until(lambda: runner.stats.delivered == 1)
        await sink.aclose()
        assert await store.outbox_size("hook") == 0
    assert len(rx.calls) == 4
    assert {c.headers["webhook-id"] for c in rx.calls} == {event(1)["event_id"]}
    for call in rx.calls:
        assert Webhook(SECRET).verify(call.body, call.headers) == event(1)
    stats = runner.stats
    assert (stats.delivered, stats.failed_attempts, stats.dead_lettered) == (1, 3, 0)
    assert stats.last_error is not None and "HTTP 503" in stats.last_error
    assert dead_letters(tmp_path) == []


async def test_backoff_grows_between_initial_and_max(tmp_path: Path) -> None:
    """Waits between attempts are at least initial_backoff and never above max_backoff."""
    clock = FakeClock()
    async with (
        clock.autojump(),
        MemoryStore() as store,
        Receiver(fail_first(8), now=clock.now) as rx,
    ):
        sink = WebhookSink("hook", webhook_config(rx.url))
        runner = make_runner(sink, store, tmp_path, clock, initial_backoff=2.0, max_backoff=20.0)
        await queue(store, "hook", 1)
        async with running(runner):
            runner.notify()
            await wait_until(lambda: runner.stats.delivered == 1)
        await sink.aclose()
    gaps = [b.at - a.at for a, b in zip(rx.calls, rx.calls[1:], strict=False)]
    assert len(gaps) == 8
    assert all(2.0 - 1e-6 <= gap <= 20.0 + 1e-6 for gap in gaps), gaps
    assert max(gaps[4:]) > 4.0  # it does grow past the first steps


async def test_retry_after_is_honoured(tmp_path: Path) -> None:
    """A 503 with Retry-After: 120 puts the next attempt at least 120 s later, past max."""
    clock = FakeClock()
    answer = fail_first(1, 503, **{"Retry-After": "120"})
    async with clock.autojump(), MemoryStore() as store, Receiver(answer, now=clock.now) as rx:
        sink = WebhookSink("hook", webhook_config(rx.url))
        runner = make_runner(sink, store, tmp_path, clock, initial_backoff=1.0, max_backoff=5.0)
        await queue(store, "hook", 1)
        async with running(runner):
            runner.notify()
            await wait_until(lambda: runner.stats.delivered == 1)
        await sink.aclose()
    first, second = rx.calls
    assert second.at - first.at >= 120.0 - 1e-6
    assert second.at - first.at < 125.0


async def test_400_goes_to_the_dead_letter_file_at_once(tmp_path: Path) -> None:
    """A non-retryable answer is dead-lettered after one attempt, with the reason."""
    clock = FakeClock()
    answer = lambda call: status(400, text='{"error":"unknown field"}')  # noqa: E731
    async with clock.autojump(), MemoryStore() as store, Receiver(answer) as rx:
        sink = WebhookSink("hook", webhook_config(rx.url))
        runner = make_runner(sink, store, tmp_path, clock)
        await queue(store, "hook", 1, 2)
        async with running(runner):
            runner.notify()
            await wait_until(lambda: runner.stats.dead_lettered == 2)
        await sink.aclose()
        assert await store.outbox_size("hook") == 0
        stored = await store.dead_letters("hook")
    assert len(rx.calls) == 2  # one attempt each, no retry
    first, second = dead_letters(tmp_path)
    assert first["sink"] == "hook"
    assert first["event_id"] == event(1)["event_id"]
    assert first["attempts"] == 1
    assert first["event"] == event(1)
    assert "HTTP 400" in first["reason"] and "unknown field" in first["reason"]
    assert first["at"].endswith("Z")
    assert second["event_id"] == event(2)["event_id"]
    assert [d.event_id for d in stored] == [event(1)["event_id"], event(2)["event_id"]]
    assert "HTTP 400" in stored[0].reason


async def test_max_attempts_then_dead_letter_and_the_next_event_goes_on(tmp_path: Path) -> None:
    """After max_attempts failures the event is dead-lettered and the queue moves on."""
    clock = FakeClock()

    def answer(call: Call) -> Any:
        return status(200) if call.event["task_id"] == "task-2" else status(503)

    async with clock.autojump(), MemoryStore() as store, Receiver(answer) as rx:
        sink = WebhookSink("hook", webhook_config(rx.url))
        runner = make_runner(sink, store, tmp_path, clock, max_attempts=4)
        await queue(store, "hook", 1, 2)
        async with running(runner):
            runner.notify()
            await wait_until(lambda: runner.stats.delivered == 1)
        await sink.aclose()
    assert [c.event["task_id"] for c in rx.calls] == ["task-1"] * 4 + ["task-2"]
    (dead,) = dead_letters(tmp_path)
    assert dead["attempts"] == 4
    assert dead["reason"].startswith("gave up after 4 attempts")
    assert runner.stats.dead_lettered == 1


async def test_max_age_dead_letters_an_old_event(tmp_path: Path) -> None:
    """A failing event older than max_age is dead-lettered even with attempts to spare."""
    clock = FakeClock()
    async with clock.autojump(), MemoryStore() as store, Receiver(fail_first(10**6)) as rx:
        sink = WebhookSink("hook", webhook_config(rx.url))
        runner = make_runner(
            sink,
            store,
            tmp_path,
            clock,
            max_attempts=1000,
            max_age=60.0,
            initial_backoff=10.0,
            max_backoff=10.0,
        )
        await queue(store, "hook", 1)
        async with running(runner):
            runner.notify()
            await wait_until(lambda: runner.stats.dead_lettered == 1)
        await sink.aclose()
    (dead,) = dead_letters(tmp_path)
    assert "undelivered for over 60s" in dead["reason"]
    assert 6 <= dead["attempts"] <= 8
    assert len(rx.calls) == dead["attempts"]


async def test_timeout_is_retried(tmp_path: Path) -> None:
    """A receiver that hangs on the first attempt gets the event on the retry."""
    clock = FakeClock()

    async def answer(call: Call) -> Any:
        return await rx.hold() if call.number == 1 else status(200)

    async with clock.autojump(), MemoryStore() as store, Receiver(answer) as rx:
        sink = WebhookSink("hook", webhook_config(rx.url, timeout=0.2))
        runner = make_runner(sink, store, tmp_path, clock)
        await queue(store, "hook", 1)
        async with running(runner):
            runner.notify()
            await wait_until(lambda: runner.stats.delivered == 1)
        await sink.aclose()
    assert len(rx.calls) == 2
    assert rx.calls[0].headers["webhook-id"] == rx.calls[1].headers["webhook-id"]
    assert runner.stats.failed_attempts == 1
    assert runner.stats.last_error is not None and "timed out" in runner.stats.last_error


async def test_events_of_a_sink_stay_in_order_behind_a_retried_head(tmp_path: Path) -> None:
    """While the oldest event is retried the later ones wait, then all go out in order."""
    clock = FakeClock()
    async with clock.autojump(), MemoryStore() as store, Receiver(fail_first(2)) as rx:
        sink = WebhookSink("hook", webhook_config(rx.url))
        runner = make_runner(sink, store, tmp_path, clock)
        await queue(store, "hook", 1, 2, 3)
        async with running(runner):
            runner.notify()
            await wait_until(lambda: runner.stats.delivered == 3)
        await sink.aclose()
    assert [c.event["task_id"] for c in rx.calls] == ["task-1"] * 3 + ["task-2", "task-3"]


async def test_secrets_stay_out_of_logs_and_dead_letters(tmp_path: Path) -> None:
    """Header values, the signing secret and the URL path never reach logs or the file."""
    clock = FakeClock()
    token, path_token = "Bearer-tok-never-logged-5511", "PathTok-never-logged-9"

    def echo(call: Call) -> Any:
        code = 503 if call.number == 1 else 400
        return status(code, text=json.dumps({"seen": call.headers, "path": call.path}))

    with structlog.testing.capture_logs() as logs:
        async with clock.autojump(), MemoryStore() as store, Receiver(echo) as rx:
            config = webhook_config(
                rx.url + f"/{path_token}?key={path_token}",
                headers={"Authorization": f"Bearer {token}"},
            )
            sink = WebhookSink("hook", config)
            runner = make_runner(sink, store, tmp_path, clock)
            await queue(store, "hook", 1)
            async with running(runner):
                runner.notify()
                await wait_until(lambda: runner.stats.dead_lettered == 1)
            await sink.aclose()
    assert len(logs) >= 2  # the failure warning and the dead-letter error
    everything = repr(logs) + (tmp_path / "dead.jsonl").read_text(encoding="utf-8")
    everything += repr(runner.stats) + repr(runner) + repr(sink)
    assert "seen" in everything  # the echoed answer is quoted ...
    for secret in (token, path_token, SECRET, SECRET.removeprefix("whsec_")):
        assert secret not in everything  # ... but not the secrets in it


# --- isolation, notify, drain ----------------------------------------------------------------


async def test_a_broken_sink_does_not_delay_a_healthy_one(tmp_path: Path) -> None:
    """With one sink failing and one hanging, the healthy sink's events all arrive promptly."""
    clock = MonotonicClock()
    async with (
        MemoryStore() as store,
        Receiver() as good_rx,
        Receiver(lambda call: status(503)) as bad_rx,
    ):
        good = WebhookSink("good", webhook_config(good_rx.url))
        failing = WebhookSink("failing", webhook_config(bad_rx.url))
        hanging = HangingSink("hanging")
        fast = {"initial_backoff": 0.01, "max_backoff": 0.02, "max_attempts": 10**6}
        runners = [
            make_runner(sink, store, tmp_path, clock, **fast) for sink in (good, failing, hanging)
        ]
        for n in range(20):
            await store.enqueue(event(n)["event_id"], event(n), ["failing", "hanging", "good"])
        async with running(*runners):
            started = time.monotonic()
            for runner in runners:
                runner.notify()
            await wait_until(lambda: len(good_rx.calls) == 20, within=5.0)
            elapsed = time.monotonic() - started
            await wait_until(lambda: runners[1].stats.failed_attempts >= 3)
        await good.aclose()
        await failing.aclose()
    assert elapsed < 2.0
    assert [c.event["task_id"] for c in good_rx.calls] == [f"task-{n}" for n in range(20)]
    assert runners[0].stats.delivered == 20
    assert runners[1].stats.delivered == 0
    assert hanging.attempts == 1 and runners[2].stats.delivered == 0


async def test_notify_wakes_an_idle_runner(tmp_path: Path) -> None:
    """An idle runner delivers what is queued after notify(), without polling the store."""
    clock = FakeClock()
    async with clock.autojump(), MemoryStore() as store:
        sink = ScriptedSink("s")
        runner = make_runner(sink, store, tmp_path, clock)
        async with running(runner):
            await clock.sleep_until(3600)  # long idle: nothing queued, nothing delivered
            assert sink.attempts == 0
            await queue(store, "s", 1, 2)
            runner.notify()
            await wait_until(lambda: len(sink.got) == 2)
        assert [e["task_id"] for e in sink.got] == ["task-1", "task-2"]


async def test_drain_without_run_delivers_everything(tmp_path: Path) -> None:
    """drain() on a runner that is not running delivers the queue and reports it empty."""
    clock = FakeClock()
    async with clock.autojump(), MemoryStore() as store:
        sink = ScriptedSink("s", lambda n, p: DeliveryError("busy") if n == 1 else None)
        runner = make_runner(sink, store, tmp_path, clock)
        await queue(store, "s", 1, 2, 3)
        assert await runner.drain(30.0) is True
        assert [e["task_id"] for e in sink.got] == ["task-1", "task-2", "task-3"]
        assert await store.outbox_size("s") == 0


async def test_drain_gives_up_at_the_deadline_and_keeps_the_event(tmp_path: Path) -> None:
    """A head item that must wait past the deadline stays queued; drain returns False on time."""
    clock = FakeClock()
    async with clock.autojump(), MemoryStore() as store:
        sink = ScriptedSink("s", lambda n, p: DeliveryError("later", retry_after=100.0))
        runner = make_runner(sink, store, tmp_path, clock)
        await queue(store, "s", 1)
        started = clock.now()
        assert await runner.drain(10.0) is False
        assert clock.now() - started == pytest.approx(10.0)
        assert await store.outbox_size("s") == 1
        (item,) = await store.outbox("s")
        assert item.attempts == 1 and item.last_error == "later"


async def test_drain_with_run_active_waits_until_empty(tmp_path: Path) -> None:
    """While run() delivers, drain() waits for the outbox to empty and says so."""
    clock = FakeClock()
    async with clock.autojump(), MemoryStore() as store:
        sink = ScriptedSink("s", lambda n, p: DeliveryError("busy") if n <= 2 else None)
        runner = make_runner(sink, store, tmp_path, clock)
        async with running(runner):
            await queue(store, "s", 1, 2)  # nobody notifies: drain looks anyway
            assert await runner.drain(600.0) is True
            assert len(sink.got) == 2
            assert await store.outbox_size("s") == 0


# --- file sink through the runner -------------------------------------------------------------


async def test_full_disk_keeps_events_queued_until_space_returns(tmp_path: Path) -> None:
    """ENOSPC: events stay in the outbox; once space returns each is written exactly once."""
    clock = FakeClock()
    path = tmp_path / "results.jsonl"
    async with clock.autojump(), MemoryStore() as store:
        sink = FullDisk("file", path, fsync="batch")
        runner = make_runner(sink, store, tmp_path, clock, max_attempts=10**6)
        sink.full = True
        await queue(store, "file", 1, 2, 3)
        async with running(runner):
            runner.notify()
            await wait_until(lambda: runner.stats.failed_attempts >= 3)
            assert await store.outbox_size("file") == 3
            assert not path.exists() or path.read_bytes() == b""
            sink.full = False
            await wait_until(lambda: runner.stats.delivered == 3)
            await wait_until(lambda: sink.syncs >= 1)  # the idle flush of fsync "batch"
        await sink.aclose()
        assert await store.outbox_size("file") == 0
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(text)["task_id"] for text in lines] == ["task-1", "task-2", "task-3"]
    assert runner.stats.last_error is not None
    assert "No space left on device" in runner.stats.last_error
    assert dead_letters(tmp_path) == []


async def test_an_unwritable_dead_letter_file_keeps_the_event(tmp_path: Path) -> None:
    """If the dead-letter file cannot be written, the event stays queued until it can."""
    clock = FakeClock()
    folder = tmp_path / "later"
    async with clock.autojump(), MemoryStore() as store:
        sink = ScriptedSink("s", lambda n, p: DeliveryError("rejected", retryable=False))
        runner = SinkRunner(
            sink, store, clock=clock, dead_letter_path=str(folder / "dead.jsonl"), max_backoff=5
        )
        await queue(store, "s", 1)
        async with running(runner):
            runner.notify()
            await wait_until(lambda: "dead-letter file" in (runner.stats.last_error or ""))
            assert await store.outbox_size("s") == 1
            assert runner.stats.dead_lettered == 0
            folder.mkdir()
            await wait_until(lambda: runner.stats.dead_lettered == 1)
        assert await store.outbox_size("s") == 0
    (record,) = [json.loads(t) for t in (folder / "dead.jsonl").read_text().splitlines()]
    assert record["reason"] == "rejected"


async def test_any_exception_from_a_sink_is_retried(tmp_path: Path) -> None:
    """A plugin sink raising something other than DeliveryError is retried, not fatal."""
    clock = FakeClock()
    async with clock.autojump(), MemoryStore() as store:
        sink = ScriptedSink("s", lambda n, p: RuntimeError("boom") if n == 1 else None)
        runner = make_runner(sink, store, tmp_path, clock)
        await queue(store, "s", 1)
        assert await runner.drain(60.0) is True
    assert runner.stats.last_error == "RuntimeError: boom"
    assert runner.stats.delivered == 1


def test_runner_settings_come_from_a_sink_config(tmp_path: Path) -> None:
    """from_config reads the retry keys and the dead-letter path of a sink's config."""
    config = WebhookSinkConfig(
        type="webhook",
        url="http://127.0.0.1:9/hook",
        max_attempts=3,
        max_age=600.0,
        initial_backoff=2.0,
        max_backoff=30.0,
        dead_letter=str(tmp_path / "dl.jsonl"),
    )
    runner = SinkRunner.from_config(ScriptedSink("s"), MemoryStore(), config)
    assert (runner.max_attempts, runner.max_age) == (3, 600.0)
    assert (runner.initial_backoff, runner.max_backoff) == (2.0, 30.0)
    assert runner.dead_letters.path == tmp_path / "dl.jsonl"
    file_config = FileSinkConfig(type="file", path="r.jsonl")
    default = SinkRunner.from_config(ScriptedSink("f"), MemoryStore(), file_config)
    assert default.dead_letters.path == Path.cwd() / "watcher-dead-letters.jsonl"
    assert default.max_attempts is None  # no limit: max_age (24 h) decides
    assert default.max_age == 24 * 3600.0


def test_a_plugin_config_may_carry_retry_keys() -> None:
    """A plugin sink's block takes the runner's keys too, parsed with units; bad ones fail."""
    config = PluginSinkConfig.model_validate(
        {"type": "x.y:Z", "max_attempts": 3, "max_age": "5m", "topic": "t"}
    )
    runner = SinkRunner.from_config(ScriptedSink("p"), MemoryStore(), config)
    assert (runner.max_attempts, runner.max_age, runner.initial_backoff) == (3, 300.0, 1.0)
    bad = PluginSinkConfig.model_validate({"type": "x.y:Z", "max_attempts": 0})
    with pytest.raises(ConfigError) as caught:
        SinkRunner.from_config(ScriptedSink("p"), MemoryStore(), bad)
    assert caught.value.issues[0].path == "sinks.p.max_attempts"
