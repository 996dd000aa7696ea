"""MetaStudioSource against the simulator over loopback: snapshots, errors, ids, lifecycle."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote

import pytest

from watcher._exceptions import (
    AuthError,
    ClosedError,
    ConnectError,
    InvalidTaskIdError,
    MalformedResponseError,
    PermanentError,
    PollTimeoutError,
    RateLimitedError,
    ServerError,
)
from watcher._taskid import quote_segment
from watcher.config import MetaStudioSourceConfig
from watcher.simulator import MALFORMED_KINDS, FaultConfig, Simulator, SimulatorConfig
from watcher.sources import MetaStudioSource

PROJECT = "sim-project"
TOKEN = "static-token"


class FakeClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def source_config(
    url: str, auth: dict[str, Any] | None = None, **extra: Any
) -> MetaStudioSourceConfig:
    values: dict[str, Any] = {
        "type": "metastudio",
        "endpoint": url,
        "project_id": PROJECT,
        "auth": auth or {"type": "token", "token": TOKEN},
        "connect_timeout": 2.0,
        "read_timeout": 2.0,
    }
    values.update(extra)
    return MetaStudioSourceConfig.model_validate(values)


@asynccontextmanager
async def running(
    sim_options: dict[str, Any] | None = None,
    auth: dict[str, Any] | None = None,
    **extra: Any,
) -> AsyncIterator[tuple[Simulator, MetaStudioSource]]:
    """A token-auth simulator and a source pointed at it."""
    options: dict[str, Any] = {"seed": 1, "project_id": PROJECT, "auth": "token", "tokens": {TOKEN}}
    options.update(sim_options or {})
    async with Simulator(SimulatorConfig(**options)) as sim:
        source = MetaStudioSource("ms", source_config(sim.url, auth, **extra))
        async with source:
            yield sim, source


@pytest.mark.anyio
async def test_fetch_running_then_finished_task() -> None:
    """A running task reports progress and no end; after its life it is finished."""
    clock = FakeClock()
    async with running({"clock": clock}) as (sim, source):
        sim.add_task("job-1", life=100.0, total=10, outcome="partial")
        clock.advance(50)
        running_snap = await source.fetch("job-1")
        assert running_snap.status == "1"
        assert running_snap.end_time is None
        assert running_snap.total_count == 10
        assert (running_snap.done_count or 0) < 10
        clock.advance(100)
        done = await source.fetch("job-1")
        truth = sim.task_state("job-1")
    assert truth.finished
    assert done.status == str(truth.task_status)
    assert (done.total_count, done.success_count, done.failure_count) == (
        truth.total_count,
        truth.success_count,
        truth.failure_count,
    )
    assert done.failure_count
    assert done.success_count
    assert done.end_time is not None
    assert done.raw == truth.body


@pytest.mark.anyio
async def test_mixed_field_forms_parse() -> None:
    """With field_forms=mixed every task parses to the simulator's truth."""
    clock = FakeClock()
    async with running({"clock": clock, "field_forms": "mixed"}) as (sim, source):
        ids = [f"mixed-{i}" for i in range(40)]
        for task_id in ids:
            sim.add_task(task_id, life=10.0 if int(task_id[6:]) % 2 else 1e6)
        clock.advance(20)
        snaps = [await source.fetch(task_id) for task_id in ids]
        truths = [sim.task_state(task_id) for task_id in ids]
    forms = {type(t.body.get("begin_time")).__name__ for t in truths}
    assert forms == {"int", "str"}  # the simulator really mixed them
    for snap, truth in zip(snaps, truths, strict=True):
        assert snap.status == str(truth.task_status)
        assert snap.success_count == truth.success_count
        assert snap.failure_count == truth.failure_count
        assert (snap.end_time is not None) == truth.finished
        assert snap.begin_time is not None
        assert abs(snap.begin_time.timestamp() * 1000 - truth.begin_time_ms) < 1


@pytest.mark.anyio
async def test_hostile_ids_arrive_as_one_segment() -> None:
    """Ids with /, %2F, ?, #, dot runs, spaces and unicode arrive as exactly one segment."""
    ids = ["a/b", "%2F", "x%2Fy/../z", "q?x=1&y", "h#frag", "..%2F..", "...", "a b", "tâche-任务"]
    async with running() as (sim, source):
        for task_id in ids:
            assert (await source.fetch(task_id)).task_id == task_id
        paths = sim.stats().paths
        known = set(sim.task_ids())
    prefix = f"/v2/{PROJECT}/ies/task/"
    assert list(paths) == [prefix + quote_segment(task_id) for task_id in ids]
    for path, task_id in zip(paths, ids, strict=True):
        segment = path.removeprefix(prefix)
        assert "/" not in segment
        assert "?" not in segment
        assert "#" not in segment
        assert unquote(segment) == task_id
    assert known == set(ids)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("", "empty"),
        (".", "dot-segment"),
        ("..", "dot-segment"),
        ("a\x00b", "control character"),
        ("line\nbreak", "control character"),
        ("x" * 129, "at most 128"),
        (42, "must be a string"),
    ],
)
@pytest.mark.anyio
async def test_invalid_ids_refused_before_any_request(bad: Any, reason: str) -> None:
    """Invalid ids raise InvalidTaskIdError with the reason; nothing reaches the server."""
    async with running() as (sim, source):
        with pytest.raises(InvalidTaskIdError, match=reason) as info:
            await source.fetch(bad)
        assert sim.stats().requests == 0
    assert reason in info.value.reason


@pytest.mark.anyio
async def test_invalid_parameter_is_permanent() -> None:
    """400 MSS.000000003 is a PermanentError with status, code, message and request id."""
    async with running() as (sim, source):
        with pytest.raises(PermanentError) as info:
            await source.fetch("invalid-123")
        assert sim.stats().responses_by_status == {400: 1}
    err = info.value
    assert (err.status, err.error_code) == (400, "MSS.000000003")
    assert err.error_msg
    assert err.request_id


@pytest.mark.anyio
async def test_unknown_task_is_permanent_404() -> None:
    """Without auto-creation an unknown id answers 404: PermanentError."""
    async with running({"task_ids": ["known"], "auto_create": False}) as (_, source):
        assert (await source.fetch("known")).task_id == "known"
        with pytest.raises(PermanentError) as info:
            await source.fetch("unknown")
    assert info.value.status == 404
    assert info.value.request_id


@pytest.mark.anyio
async def test_rate_limited_carries_retry_after() -> None:
    """A throttled poll is RateLimitedError with APIGW.0308 and the Retry-After seconds."""
    frozen = FakeClock(1000.0)
    async with running({"rate_limit": 1.0, "monotonic": frozen}) as (_, source):
        await source.fetch("t1")
        with pytest.raises(RateLimitedError) as info:
            await source.fetch("t1")
    err = info.value
    assert (err.status, err.error_code) == (429, "APIGW.0308")
    assert err.retry_after is not None
    assert 0 < err.retry_after <= 1.0
    assert err.request_id


@pytest.mark.anyio
async def test_server_errors_of_every_body_shape() -> None:
    """5xx with JSON, HTML or plain bodies: ServerError with the status (never a result)."""
    async with running() as (sim, source):
        sim.set_faults(FaultConfig(error_rate=1.0, seed=3))
        errors = []
        for i in range(12):
            with pytest.raises(ServerError) as info:
                await source.fetch(f"t{i}")
            errors.append(info.value)
        sim.set_faults(FaultConfig(outage=True))
        with pytest.raises(ServerError) as outage:
            await source.fetch("t1")
    assert {e.status for e in errors} <= {500, 502, 503}
    assert any(e.error_code == "MSS.000000002" for e in errors)
    assert any(e.error_code is None for e in errors)  # HTML / plain text bodies
    assert all(e.request_id for e in errors)  # from the X-Request-Id header at least
    assert (outage.value.status, outage.value.error_code) == (503, "MSS.000000002")


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
@pytest.mark.anyio
async def test_malformed_bodies(kind: str) -> None:
    """Every kind of unusable 200 body is a MalformedResponseError carrying the request id."""
    async with running() as (sim, source):
        sim.set_faults(FaultConfig(malformed_rate=1.0, malformed_kinds=(kind,)))
        with pytest.raises(MalformedResponseError) as info:
            await source.fetch("x")
    assert info.value.status == 200
    assert info.value.request_id


@pytest.mark.anyio
async def test_dropped_connection_is_connect_error() -> None:
    """A connection closed without an answer is a ConnectError; the next poll works."""
    async with running() as (sim, source):
        sim.set_faults(FaultConfig(drop_rate=1.0))
        with pytest.raises(ConnectError) as info:
            await source.fetch("t1")
        assert sim.stats().dropped >= 1
        sim.set_faults(FaultConfig())
        assert (await source.fetch("t1")).task_id == "t1"
    assert info.value.__cause__ is not None


@pytest.mark.anyio
async def test_latency_above_read_timeout_is_poll_timeout() -> None:
    """An answer slower than read_timeout is a PollTimeoutError."""
    async with running(read_timeout=0.2) as (sim, source):
        sim.set_faults(FaultConfig(latency=0.4))
        started = time.monotonic()
        with pytest.raises(PollTimeoutError):
            await source.fetch("t1")
        assert time.monotonic() - started < 0.38
        sim.set_faults(FaultConfig())
        assert (await source.fetch("t1")).task_id == "t1"


@pytest.mark.anyio
async def test_oversize_body_is_malformed_and_source_stays_usable() -> None:
    """A 200 body over max_body_bytes is refused unread; the next poll succeeds."""
    async with running(max_body_bytes=64 * 1024) as (sim, source):
        sim.set_faults(FaultConfig(oversize_body=50 * 1024 * 1024))
        with pytest.raises(MalformedResponseError, match="limit") as info:
            await source.fetch("big")
        sim.set_faults(FaultConfig())
        snap = await source.fetch("big")
    assert info.value.request_id
    assert snap.task_id == "big"


@pytest.mark.anyio
async def test_bad_static_token_is_auth_error_without_retry() -> None:
    """An unknown static token: AuthError 401 APIGW.0301, one request only."""
    auth = {"type": "token", "token": "not-the-token"}
    async with running(auth=auth) as (sim, source):
        with pytest.raises(AuthError) as info:
            await source.fetch("t1")
        assert sim.stats().requests == 1
    err = info.value
    assert (err.status, err.error_code) == (401, "APIGW.0301")
    assert err.request_id
    assert "not-the-token" not in str(err)
    assert "not-the-token" not in repr(source)


@pytest.mark.anyio
async def test_search_finds_tasks_and_reports_cut_pages() -> None:
    """Search returns the simulator's tasks of a resource; a capped page is marked cut."""
    clock = FakeClock(1_700_000_000.0)
    resource = "asset-import"
    async with running({"clock": clock, "page_cap": 3}) as (sim, source):
        for i in range(5):
            sim.add_task(f"s{i}", resource=resource, created=clock() + i)
        begin = int(clock() * 1000)
        page = await source.search([resource], begin, begin + 10_000)
        everything = await source.search(resource, begin + 3000, begin + 10_000, business_id="b")
        assert sim.stats().searches == 2
    assert [s.task_id for s in page.snapshots] == ["s0", "s1", "s2"]
    assert page.count == 5
    assert page.cut
    assert [s.task_id for s in everything.snapshots] == ["s3", "s4"]
    assert not everything.cut


@pytest.mark.anyio
async def test_closed_source_refuses_use() -> None:
    """After aclose: fetch and re-entry raise ClosedError; aclose is idempotent."""
    async with running() as (sim, source):
        await source.fetch("t1")
        await source.aclose()
        await source.aclose()
        with pytest.raises(ClosedError):
            await source.fetch("t1")
        with pytest.raises(ClosedError):
            await source.__aenter__()
        assert sim.stats().requests == 1


@pytest.mark.anyio
async def test_lazy_session_without_context_manager() -> None:
    """fetch opens the session on first use; entering twice is refused."""
    async with Simulator(SimulatorConfig(seed=1)) as sim:
        source = MetaStudioSource("ms", source_config(sim.url))
        try:
            assert (await source.fetch("lazy")).task_id == "lazy"
            with pytest.raises(ClosedError):
                await source.__aenter__()
        finally:
            await source.aclose()
