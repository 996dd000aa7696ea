"""Hostile input end to end (issue 7, item 4): each gets a clear error, and the process goes on.

Task ids that try to change the request path, through the library, `watcher wait` and the
daemon's control API; 100 MB, deeply nested and mistyped API bodies; hostile control-API
bodies and spool files; configs with wrong values anywhere in the schema. The simulator's
access log must show nothing but ``/v2/{project_id}/ies/task/{one segment}``.
"""

from __future__ import annotations

import copy
import json
import os
import re
import tracemalloc
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, unquote

import aiohttp
import anyio
import pytest
from _sink_receiver import Receiver
from _waiting import wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli_wait import events as cli_events
from test_cli_wait import run_watcher, write_config
from test_cli_wait import simulator as cli_simulator
from test_config import _EXAMPLE_DATA, _VALUES, _at, _mutation, _outcome
from test_daemon import World, config_text, start_daemon, stop_daemon
from test_daemon import simulator as daemon_simulator

from watcher._exceptions import ConfigError
from watcher._models import Outcome, ResultEvent
from watcher._watcher import Watcher
from watcher.config import Config, config_from_dict
from watcher.config._yaml import format_path
from watcher.simulator import FaultConfig, Simulator, SimulatorConfig

pytestmark = pytest.mark.anyio

AK, SK = "AKHOSTILE00000000001", "hostile-test-secret"
PREFIX = "/v2/sim-project/ies/task/"
MASK = "**********"  # how the loader prints a key that may be a secret
# Sent, percent-encoded as one segment: none of these may change the path.
ODD_IDS = [
    "a/b",
    "a%2Fb",  # must stay a different task from "a/b"
    "../../v3/auth/tokens",
    "%2F..%2F..",
    "q?x=1&y=2",
    "h#frag",
    "sp ace",
    " lead and trail ",
    "tâche-任务",
    "📦",
    "...",
    "%",
    "%zz",
    "a;b=c",
    "\\..\\x",
    "\u202eevil",
    "y" * 128,
]
# Refused before any request, each with the reason it must name.
INVALID_IDS = {
    "": "is empty",
    ".": "dot-segment",
    "..": "dot-segment",
    "nul\x00id": "U+0000",
    "new\nline": "U+000A",
    "\x1b[31mred": "U+001B",
    "del\x7f": "U+007F",
    "lone\ud800": "U+D800",
    "z" * 10_240: "is 10240 characters long; at most 128",
}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def assert_one_segment_paths(paths: Sequence[str], ids: Iterable[str]) -> None:
    """Every request path is the task path with exactly one canonical segment, decoding to an id."""
    wanted = set(ids)
    assert paths
    for path in paths:
        assert path.startswith(PREFIX), path
        segment = path[len(PREFIX) :]
        assert re.fullmatch(r"(?:[A-Za-z0-9_.~-]|%[0-9A-F]{2})+", segment), path
        assert segment not in (".", "..")
        assert unquote(segment) in wanted, path
    assert {unquote(p[len(PREFIX) :]) for p in paths} == wanted


def sim_config(**extra: Any) -> SimulatorConfig:
    return SimulatorConfig(seed=7, auth="aksk", credentials={AK: SK}, **extra)


def library_config(sim: Simulator) -> Config:
    """A fast-polling config, no sinks: the results are read from the Watcher."""
    backoff = {"min": "50ms", "initial": "100ms", "max": "200ms", "progress_max": "200ms"}
    return Config.model_validate(
        {
            "sources": {
                "ms": {
                    "type": "metastudio",
                    "endpoint": sim.url,
                    "project_id": "sim-project",
                    "auth": {"type": "aksk", "ak": AK, "sk": SK},
                    "rate_limit": 500,
                    "status_map": {"2": "cancelled"},
                }
            },
            "polling": {"backoff": backoff, "error_backoff": {"initial": "50ms", "max": "150ms"}},
            "sinks": [],
        }
    )


async def wait_for(w: Watcher, task_ids: Sequence[str]) -> dict[str, ResultEvent]:
    with anyio.fail_after(20):
        return {e.task_id: e for e in await w.wait_all(task_ids)}


# --- task ids ----------------------------------------------------------------------------------


async def test_library_refuses_invalid_ids_and_polls_odd_ones_as_one_segment() -> None:
    """Watcher.add names each invalid id's reason and never sends it; odd ids are polled as
    one path segment each, to their true outcome, and the Watcher goes on."""
    async with Simulator(sim_config()) as sim:
        for task_id in ODD_IDS:
            sim.add_task(task_id, life=0.3, total=3, outcome="partial")
        async with Watcher(library_config(sim)) as w:
            hostile: list[Any] = [*ODD_IDS, *INVALID_IDS, 42, None]
            result = await w.add(cast("list[str]", hostile))
            events = await wait_for(w, ODD_IDS)
            sim.add_task("after", life=0.1, total=1, outcome="succeeded")
            await w.add(["after"])
            after = await wait_for(w, ["after"])
        stats = sim.stats()
    reasons = dict(result.invalid)
    assert sorted(result.accepted) == sorted(ODD_IDS)
    for task_id, reason in INVALID_IDS.items():
        assert reason in reasons[task_id]
    assert reasons["42"] == "must be a string, not int"
    assert reasons["None"] == "must be a string, not NoneType"
    assert {t: e.outcome for t, e in events.items()} == dict.fromkeys(ODD_IDS, Outcome.PARTIAL)
    assert after["after"].outcome is Outcome.SUCCEEDED
    assert set(stats.polls_per_task) == {*ODD_IDS, "after"}  # no invalid id was ever sent
    assert stats.auth_failures == 0  # the signer canonicalised every odd path as sent
    assert_one_segment_paths(stats.paths, [*ODD_IDS, "after"])


async def test_cli_wait_refuses_invalid_ids_with_reasons_and_exit_codes(tmp_path: Path) -> None:
    """`watcher wait`: only invalid ids exit 64, each named with its reason; odd ids beside an
    invalid one are all watched to the end and the run exits 2 (a refused id has no result)."""
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("nul\x00id\n" + "z" * 10_240 + "\n", encoding="utf-8")
    bad_utf8 = os.fsdecode(b"bad\xffid")  # argv bytes that are not UTF-8 arrive as U+DCxx
    async with cli_simulator() as sim:
        odd = [*ODD_IDS, "-rf"]  # after `--`, even an id like an option is an id
        for task_id in odd:
            sim.add_task(task_id, life=0.3, total=2, outcome="succeeded")
        config = str(write_config(tmp_path, sim))
        runs: dict[str, Any] = {}

        async def one(name: str, args: list[str]) -> None:
            runs[name] = await run_watcher("wait", "-c", config, *args)

        async with anyio.create_task_group() as tg:
            ids_args = ["--ids-file", str(ids_file), "--", "", "..", "a\nb", bad_utf8]
            tg.start_soon(one, "invalid", ids_args)
            tg.start_soon(one, "mixed", ["--timeout", "30s", "--", *odd, "\x1b[2J"])
        stats = sim.stats()
    invalid, mixed = runs["invalid"], runs["mixed"]
    assert invalid.returncode == 64, invalid.stderr.decode()
    err = invalid.stderr.decode()
    for reason in ("U+0000", "is 10240 characters long", "is empty", "dot-segment", "U+000A"):
        assert reason in err
    assert "U+DCFF" in err and "no valid task ids given" in err
    assert invalid.stdout == b""
    assert mixed.returncode == 2, mixed.stderr.decode()
    assert "U+001B" in mixed.stderr.decode()
    got = {e["task_id"]: e["outcome"] for e in cli_events(mixed.stdout)}
    assert got == dict.fromkeys(odd, "succeeded")
    assert_one_segment_paths(stats.paths, odd)


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    """One daemon (SQLite store, file and webhook sinks, a spool) for the control-API tests."""
    directory = tmp_path_factory.mktemp("hostile-daemon")
    (directory / "spool").mkdir()
    async with daemon_simulator() as sim, Receiver() as receiver:
        text = config_text(
            sim, receiver.url, spool="{dir: spool, poll_interval: 50ms}", daemon="{grace: 5s}"
        )
        daemon = await start_daemon(directory, text)
        try:
            async with aiohttp.ClientSession() as http:
                yield World(sim, receiver, daemon, http)
        finally:
            await stop_daemon(daemon)
            assert daemon.proc.returncode == 0, daemon.stderr()[-3000:]


def finished(world: World, ids: Iterable[str]) -> dict[str, str]:
    wanted = set(ids)
    events = world.daemon.events()
    return {e["task_id"]: e["outcome"] for e in events if e.get("task_id") in wanted}


async def test_control_api_takes_odd_ids_refuses_invalid_ones_and_routes_each_exactly(
    world: World,
) -> None:
    """POST /v1/watches reports each invalid id with its reason; GET and DELETE with encoded
    hostile ids reach exactly that watch (or a clear 4xx); the simulator sees one segment."""
    sim = world.sim
    sim.reset_stats()
    for task_id in ODD_IDS:
        sim.add_task(task_id, life=0.3, total=2, outcome="failed")
    sim.add_task("a%2Fb", life=3600, total=100, outcome="succeeded")  # pending when deleted
    body = {"task_ids": [*ODD_IDS, *INVALID_IDS], "batch": "odd"}
    status, added, _ = await world.call("POST", "/v1/watches", json=body)
    assert status == 202, added
    assert sorted(added["accepted"]) == sorted(ODD_IDS)
    reasons = {item["task_id"]: item["reason"] for item in added["invalid"]}
    assert set(reasons) == set(INVALID_IDS)  # the lone surrogate too, escaped on the way back
    for task_id, reason in INVALID_IDS.items():
        assert reason in reasons[task_id]
    for task_id in ODD_IDS:
        status, watch, _ = await world.call("GET", "/v1/watches/ms/" + quote(task_id, safe=""))
        assert (status, watch["task_id"]) == (200, task_id)
    await wait_until(lambda: sim.stats().polls_per_task.get("a%2Fb", 0) >= 1, within=10)
    status, gone, _ = await world.call("DELETE", "/v1/watches/ms/a%252Fb")
    assert status == 200 and gone["forgotten"] is True and gone["task_id"] == "a%2Fb"
    assert (await world.call("GET", "/v1/watches/ms/a%252Fb"))[0] == 404
    assert (await world.call("GET", "/v1/watches/ms/a%2Fb"))[0] == 200  # "a/b" is untouched
    for path in ("%2E%2E", "..", "%00", "%ZZ", "%C3%28", "..%2F..%2Fstatus", "z" * 10_240):
        for method in ("GET", "DELETE"):
            status, answer, _ = await world.call(method, "/v1/watches/ms/" + path)
            assert status in (400, 404), (method, path[:20], status)
            assert answer, (method, path[:20])
    rest = [i for i in ODD_IDS if i != "a%2Fb"]
    await wait_until(lambda: len(finished(world, rest)) == len(rest), within=20)
    assert finished(world, rest) == dict.fromkeys(rest, "failed")
    assert "a%2Fb" not in finished(world, ODD_IDS)
    assert (await world.call("GET", "/healthz", auth=False))[0] == 200
    assert_one_segment_paths(sim.stats().paths, ODD_IDS)


def _nested(depth: int, inner: bytes = b"") -> bytes:
    return b"[" * depth + inner + b"]" * depth


# Beyond test_daemon's test_bad_requests_are_refused_and_the_daemon_stays_up: (body, status,
# error, the details loc that must be named or None).
_CONTROL_BODIES: list[tuple[bytes, int, str, str | None]] = [
    (_nested(100_000), 400, "malformed_json", None),
    (b'{"task_ids": ' + _nested(100_000) + b"}", 400, "malformed_json", None),
    (b'{"task_ids": ["x"], "labels": {"k": ' + _nested(500) + b"}}", 400, "invalid_request",
     "labels.k"),
    (b"null", 400, "invalid_request", None),
    (b"42", 400, "invalid_request", None),
    (b'"task-1"', 400, "invalid_request", None),
    (b"true", 400, "invalid_request", None),
    (b"", 400, "malformed_json", None),
    (b'{"task_ids": ["x"], "task_ids": 7}', 400, "invalid_request", "task_ids"),
]  # fmt: skip
_WRONG_FIELDS: list[tuple[str, Any, str]] = [
    ("task_ids", None, "task_ids"),
    ("task_ids", 123, "task_ids"),
    ("task_ids", {"a": 1}, "task_ids"),
    ("task_ids", [None], "task_ids.0"),
    ("task_ids", [["nested"]], "task_ids.0"),
    ("task_ids", [{"id": 1}], "task_ids.0"),
    ("task_ids", [True], "task_ids.0"),
    ("task_ids", [1.5], "task_ids.0"),
    ("batch", 7, "batch"),
    ("batch", ["b"], "batch"),
    ("batch", {"x": 1}, "batch"),
    ("batch", "", "batch"),
    ("batch", "b" * 201, "batch"),
    ("batch", "two\nlines", "batch"),
    ("source", 5, "source"),
    ("source", [], "source"),
    ("labels", [], "labels"),
    ("labels", "team=kb", "labels"),
    ("labels", {"": "v"}, "labels."),
    ("labels", {"k": {"n": 1}}, "labels.k"),
    ("labels", {"k": "v" * 1001}, "labels.k"),
    ("labels", {"k": "lone\ud800"}, "labels.k"),
    ("labels", {f"k{i}": "v" for i in range(65)}, "labels"),
    ("deadline", -1, "deadline"),
    ("deadline", 0, "deadline"),
    ("deadline", "forever", "deadline"),
    ("deadline", [], "deadline"),
    ("deadline", {"h": 1}, "deadline"),
    ("deadline", 1e300, "deadline"),
    ("deadline", float("inf"), "deadline"),  # sent as Infinity
    ("deadline", float("nan"), "deadline"),
    ("extra", {"deep": {"er": 1}}, "extra"),
]


async def test_control_api_refuses_hostile_bodies_and_stays_up(world: World) -> None:
    """Deep, null, scalar and mistyped bodies: 400 with a reason naming the field, never a
    500; a valid request afterwards is accepted and watched to the end."""
    bodies = list(_CONTROL_BODIES)
    for field, value, loc in _WRONG_FIELDS:
        payload = {"task_ids": ["x"], field: value}
        bodies.append((json.dumps(payload).encode(), 400, "invalid_request", loc))
    for body, want_status, want_error, want_loc in bodies:
        status, answer, _ = await world.call("POST", "/v1/watches", data=body)
        assert (status, answer["error"]) == (want_status, want_error), (body[:80], answer)
        assert answer["message"]
        if want_loc is not None:
            locs = [d["loc"] for d in answer["details"]]
            assert any(x.startswith(want_loc) for x in locs), (body[:80], locs)
    deep = (await world.call("POST", "/v1/watches", data=_nested(100_000)))[1]
    assert "nested too deeply" in deep["message"]
    world.sim.add_task("after-hostile", life=0.2, total=1, outcome="succeeded")
    status, answer, _ = await world.call(
        "POST", "/v1/watches", json={"task_ids": ["after-hostile"]}
    )
    assert status == 202 and answer["accepted"] == ["after-hostile"]
    await wait_until(lambda: finished(world, ["after-hostile"]), within=15)
    assert "api handler failed" not in world.daemon.stderr()


async def test_a_hostile_spool_file_is_refused_and_does_not_block_the_next(world: World) -> None:
    """A .json spool file nested 100,000 deep goes to failed/ with the reason; a later file
    (with hostile ids, each noted) is still ingested."""
    spool = world.daemon.dir / "spool"
    (spool / ".deep").write_bytes(_nested(100_000))
    (spool / ".deep").rename(spool / "a-deep.json")
    (spool / ".ids").write_text("sp-ok\n..\nnul\x00id\n" + "z" * 200 + "\n", encoding="utf-8")
    (spool / ".ids").rename(spool / "b-ids.txt")
    await wait_until((spool / "failed" / "a-deep.json").exists, within=10)
    await wait_until((spool / "done" / "b-ids.txt").exists, within=10)
    assert "malformed JSON" in (spool / "failed" / "a-deep.json.reason").read_text()
    note = (spool / "done" / "b-ids.txt.reason").read_text()
    assert "3 invalid id(s)" in note and "dot-segment" in note and "U+0000" in note
    assert (await world.call("GET", "/v1/watches/ms/sp-ok"))[0] == 200


# --- API bodies --------------------------------------------------------------------------------


def _send_buffer_max() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):
        return 4 * 1024 * 1024  # Linux's default maximum


async def test_the_simulator_streams_100_mb_without_holding_it() -> None:
    """The oversize fault really serves 100 MB, chunked, to a client that reads it all,
    while the process's memory stays at a few chunks."""
    size = 100 * 1024 * 1024
    async with Simulator(SimulatorConfig(seed=7)) as sim, aiohttp.ClientSession() as http:
        sim.set_faults(FaultConfig(oversize_body=size, oversize_chunked=True))
        tracemalloc.start()
        try:
            async with http.get(sim.url + PREFIX + "whole") as resp:
                assert resp.content_length is None
                received = 0
                async for chunk in resp.content.iter_chunked(256 * 1024):
                    received += len(chunk)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        sent = sim.stats().oversize_bytes_sent
    assert received == sent == size
    assert peak < 8 * 1024 * 1024, peak


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_100_mb_bodies_are_refused_after_a_bounded_read(chunked: bool) -> None:
    """A 100 MB answer (declared, or streamed with no length) is a malformed, too-large poll:
    memory stays near the 1 MiB limit, the server could send only a fraction, and the task
    goes on being watched to its true outcome once the answers are sane again."""
    size, limit = 100 * 1024 * 1024, 1024 * 1024  # limit: the max_body_bytes default
    async with Simulator(sim_config()) as sim:
        sim.add_task("big-1", life=0.5, total=4, outcome="partial")
        sim.add_task("big-2", life=0.5, total=4, outcome="succeeded")
        sim.set_faults(FaultConfig(oversize_body=size, oversize_chunked=chunked))
        async with Watcher(library_config(sim)) as w:
            tracemalloc.start()
            try:
                await w.add(["big-1"])
                await w.add(["big-2"], deadline=0.6)
                timed_out = (await wait_for(w, ["big-2"]))["big-2"]
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert w.is_pending("big-1")
            refused = sim.stats()
            sim.set_faults(FaultConfig())
            done = (await wait_for(w, ["big-1"]))["big-1"]
            errors = dict(w.scheduler("ms").stats.errors_by_kind)
    assert timed_out.outcome is Outcome.TIMED_OUT
    assert timed_out.error is not None and timed_out.error.kind == "malformed"
    assert f"over the {limit} byte limit" in (timed_out.error.message or "")
    assert refused.faults_injected >= 4  # every one of them refused, none taken as a result
    # What the server got out before the client hung up: the part read, plus what the kernel
    # buffered on the way (the send buffer, autotuned up to tcp_wmem's maximum).
    per_answer = refused.oversize_bytes_sent / refused.faults_injected
    assert per_answer < limit + _send_buffer_max() + 4 * 1024 * 1024, per_answer
    assert peak < 8 * limit, peak
    assert done.outcome is Outcome.PARTIAL
    assert set(errors) == {"malformed"} and errors["malformed"] >= refused.faults_injected


# (field, hostile value): every field the MetaStudio source reads, in types it must refuse.
_WRONG_TYPES: list[tuple[str, Any]] = [
    *[("task_id", v) for v in (["t"], {"id": 1}, True, 1.5, "some-other-task")],
    *[("task_status", v) for v in ({"code": 0}, [0], True, 0.5)],
    *[
        (field, v)
        for field in ("total_count", "success_count", "failure_count")
        for v in ("many", -1, True, [3], {"n": 3}, 2.5, 10**13)
    ],
    *[
        (field, v)
        for field in ("begin_time", "end_time")
        for v in ("yesterday", [1], {"ms": 1}, True, -5, 10**400, "NaN", 1e300)
    ],
]
# Raw bodies, each with what the error must say.
_RAW_BODIES: list[tuple[bytes, str]] = [
    (_nested(100_000), "nested too deeply"),
    (b'{"task_status": 0, "x": ' + _nested(100_000) + b"}", "nested too deeply"),
    (b'{"a": ' * 50_000 + b"1" + b"}" * 50_000, "nested too deeply"),
    (b'{"task_status": 0, "x": ' + _nested(40) + b"}", "nested deeper than 32 levels"),
    (b"null", "expected a task object"),
    (b'"done"', "expected a task object"),
    (b"{}", "none of the task fields"),
    (b'{"task_status": 0, "operator": 1e400}', "number out of range"),
    (b'{"task_status": 0, "user_id": "\\ud800"}', "not valid Unicode"),
    (b'{"task_status": 0, "total_count": ' + b"9" * 5000 + b"}", "not JSON"),
]  # fmt: skip


async def test_mistyped_and_deep_bodies_are_clear_malformed_errors_and_heal() -> None:
    """Wrong types in every field the source reads, and deep or non-JSON-safe bodies: each
    poll is a MalformedResponseError naming the field (never a TypeError or RecursionError);
    with a deadline the task ends timed_out carrying that error, without one it ends with its
    true outcome once the body is sane again."""
    cases: list[tuple[bytes | dict[str, Any], str]] = [
        ({field: value}, f"{field}:") for field, value in _WRONG_TYPES
    ]
    cases += list(_RAW_BODIES)
    expired = [f"t{i}" for i in range(len(cases))]
    healed = [f"h{i}" for i in range(len(cases))]
    async with Simulator(sim_config()) as sim:
        for ids in (expired, healed):
            for task_id, (body, _) in zip(ids, cases, strict=True):
                sim.add_task(task_id, life=0.2, total=3, outcome="failed")
                sim.override_body(task_id, body)
        async with Watcher(library_config(sim)) as w:
            await w.add(expired, deadline=1.0)
            await w.add(healed)
            ended = await wait_for(w, expired)
            polls = sim.recorder.polls_per_task  # live counts; stats() would copy the log
            await wait_until(lambda: all(polls.get(i, 0) >= 2 for i in healed), within=10)
            for task_id in healed:
                sim.override_body(task_id, None)
            recovered = await wait_for(w, healed)
            errors = dict(w.scheduler("ms").stats.errors_by_kind)
    for task_id, (body, says) in zip(expired, cases, strict=True):
        event = ended[task_id]
        assert event.outcome is Outcome.TIMED_OUT, (body, event)
        assert event.error is not None and event.error.kind == "malformed", (body, event.error)
        assert says in (event.error.message or ""), (body, event.error.message)
    assert {e.outcome for e in recovered.values()} == {Outcome.FAILED}
    assert set(errors) == {"malformed"}  # no "transient" wrapper of an unexpected exception


# --- configs -----------------------------------------------------------------------------------


def _related(issue_path: str, where: str) -> bool:
    """The issue is at the changed key, at an ancestor of it, or inside its new value.

    A key that may hold a secret (unknown keys where secrets live, text after a missing
    space in ``key:value``) is printed masked; then only the path to its parent is compared.
    """
    if MASK in issue_path:
        head = issue_path[: issue_path.index(MASK)]
        return where.startswith(head[: max(head.rfind("["), head.rfind("."), 0)])
    return any(
        a == b or a.startswith((b + ".", b + "["))
        for a, b in ((issue_path, where), (where, issue_path))
    )


@st.composite
def _wrong_value(draw: st.DrawFn) -> tuple[tuple[Any, ...], Any, Any]:
    """A key of the example (or a new one) and a value of the wrong shape for it."""
    path, key, value = draw(_mutation())
    original = _at(_EXAMPLE_DATA, (*path, key))
    if isinstance(original, dict | list):
        value = draw(st.one_of(st.none(), st.integers(), st.text(max_size=5), st.booleans()))
    elif original is not None and draw(st.booleans()):
        value = draw(st.lists(_VALUES, max_size=2) | st.dictionaries(st.text(max_size=4), _VALUES))
    return path, key, value


@settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(_wrong_value())
def test_a_wrong_value_anywhere_is_a_config_error_naming_its_key(
    change: tuple[tuple[Any, ...], Any, Any],
) -> None:
    """One wrong value or unknown key put anywhere in the schema-shaped example: only a
    ConfigError, and every issue names that key's path (or a key inside or above it)."""
    path, key, value = change
    data = copy.deepcopy(_EXAMPLE_DATA)
    node = _at(data, path)
    if isinstance(node, list) and not (isinstance(key, int) and key < len(node)):
        return
    if not isinstance(node, dict | list):
        return
    node[key] = value
    outcome = _outcome(config_from_dict, data)
    if isinstance(outcome, Config):
        return
    assert isinstance(outcome, ConfigError)
    where = format_path((*path, key))
    for issue in outcome.issues:
        assert issue.path, (where, str(issue))
        assert _related(issue.path, where), (where, str(issue))
