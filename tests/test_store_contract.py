"""The ``Store`` contract, run against every built-in store (memory and SQLite)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from watcher._exceptions import ClosedError, ConfigError
from watcher.config._schema import MemoryStoreConfig, PluginStoreConfig, SqliteStoreConfig
from watcher.stores import (
    MemoryStore,
    QueryableStore,
    SqliteStore,
    Store,
    WatchRecord,
    build_store,
)

pytestmark = pytest.mark.anyio

SRC = "main"


class Tick:
    """A wall clock that moves one second per reading."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def make(kind: str, tmp_path: Path, clock: Callable[[], float]) -> QueryableStore:
    if kind == "memory":
        return MemoryStore(clock=clock)
    return SqliteStore(tmp_path / "watcher.db", clock=clock)


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[QueryableStore]:
    """An opened store of each kind."""
    opened = make(request.param, tmp_path, Tick())
    await opened.open()
    try:
        yield opened
    finally:
        await opened.aclose()


def rec(task_id: str, **fields: Any) -> WatchRecord:
    values: dict[str, Any] = {"watched_at": 10.0, "due_at": 20.0, **fields}
    return WatchRecord(SRC, task_id, **values)


def finished(task_id: str, outcome: str = "succeeded", **fields: Any) -> WatchRecord:
    values: dict[str, Any] = {"polls": 4, "errors": 1, "finished_at": 99.0, **fields}
    return rec(task_id, state="done", outcome=outcome, **values)


def ev(task_id: str) -> str:
    return f"ev-{task_id}"


async def complete(store: Store, task_id: str, sinks: tuple[str, ...] = ("a", "b")) -> None:
    await store.complete(finished(task_id), ev(task_id), {"task_id": task_id}, sinks)


# --- watches ------------------------------------------------------------------------------


async def test_both_stores_satisfy_the_protocols(store: QueryableStore) -> None:
    """Each built-in store is a Store and a QueryableStore at runtime."""
    assert isinstance(store, Store)
    assert isinstance(store, QueryableStore)


async def test_add_reports_new_and_known(store: QueryableStore) -> None:
    """add() says True for new watches, False for known ones, duplicates within one call too."""
    assert await store.add([rec("t1"), rec("t2")]) == [True, True]
    assert await store.add([rec("t2"), rec("t3"), rec("t3")]) == [False, True, False]
    assert await store.add([]) == []
    assert await store.counts() == {"pending": 3, "done": 0}


async def test_add_leaves_a_known_watch_untouched(store: QueryableStore) -> None:
    """Adding a known (pending or done) watch again changes nothing that was stored."""
    labels = {"team": "video", "run": "7"}
    await store.add([rec("p", batch="b1", labels=labels, key="k1"), rec("d")])
    await complete(store, "d")
    assert await store.add([rec("p", due_at=5.0, batch="other"), rec("d")]) == [False, False]
    stored = await store.get(SRC, "p")
    assert stored == rec("p", batch="b1", labels=labels, key="k1")
    done = await store.get(SRC, "d")
    assert done is not None and done.state == "done"
    assert await store.outbox_size() == 2


async def test_get_returns_what_was_added(store: QueryableStore) -> None:
    """get() returns every field as added (labels, key, deadline), None for an unknown watch."""
    record = rec("t1", deadline_at=3600.5, batch="b", labels={"ü": "ß"}, key="2", polls=1)
    await store.add([record])
    assert await store.get(SRC, "t1") == record
    assert await store.get(SRC, "nope") is None
    assert await store.get("other-source", "t1") is None


async def test_same_task_id_in_two_sources_is_two_watches(store: QueryableStore) -> None:
    """(source, task_id) identifies a watch: one id in two sources is two watches."""
    assert await store.add([rec("t1"), WatchRecord("alt", "t1", 1.0, 2.0)]) == [True, True]
    await complete(store, "t1")
    alt = await store.get("alt", "t1")
    assert alt is not None and alt.state == "pending"


async def test_pending_is_ordered_by_due_time(store: QueryableStore) -> None:
    """pending() lists every unfinished watch, oldest due first; ties keep insertion order."""
    rng = random.Random(3)
    dues = {f"t{i}": float(rng.randint(0, 20)) for i in range(60)}
    await store.add([rec(t, due_at=d) for t, d in dues.items()])
    await complete(store, "t5")
    expected = sorted((t for t in dues if t != "t5"), key=lambda t: dues[t])
    assert [r.task_id for r in await store.pending()] == expected


async def test_reschedule_is_visible(store: QueryableStore) -> None:
    """reschedule() updates due time, polls and errors, as get() and pending() see them."""
    await store.add([rec("a", due_at=1.0), rec("b", due_at=2.0)])
    await store.reschedule(SRC, "a", due_at=50.0, polls=3, errors=2)
    got = await store.get(SRC, "a")
    assert got is not None and (got.due_at, got.polls, got.errors) == (50.0, 3, 2)
    assert [r.task_id for r in await store.pending()] == ["b", "a"]


async def test_reschedule_never_touches_a_finished_or_unknown_watch(store: QueryableStore) -> None:
    """A late reschedule of a done watch is ignored; of an unknown one, harmless."""
    await store.add([rec("a")])
    await complete(store, "a")
    await store.reschedule(SRC, "a", due_at=500.0, polls=9, errors=9)
    await store.reschedule(SRC, "ghost", due_at=1.0, polls=1, errors=0)
    await store.flush()
    got = await store.get(SRC, "a")
    assert got is not None and (got.state, got.due_at, got.polls) == ("done", 20.0, 4)
    assert await store.get(SRC, "ghost") is None


async def test_reschedules_apply_in_order(store: QueryableStore) -> None:
    """Many buffered reschedules of one watch leave the last one stored."""
    await store.add([rec("a")])
    for polls in range(1, 51):
        await store.reschedule(SRC, "a", due_at=float(polls), polls=polls, errors=0)
    await store.flush()
    got = await store.get(SRC, "a")
    assert got is not None and (got.due_at, got.polls) == (50.0, 50)


# --- complete -----------------------------------------------------------------------------


async def test_complete_ends_the_watch_and_queues_one_item_per_sink(store: QueryableStore) -> None:
    """complete() stores the outcome and puts exactly one outbox item on each sink."""
    await store.add([rec("t1", batch="b", labels={"x": "1"}, key="k")])
    payload = {"event": "task.finished", "task_id": "t1", "nested": {"list": [1, 2.5, None]}}
    await store.complete(finished("t1", "partial"), ev("t1"), payload, ["a", "b", "c"])
    got = await store.get(SRC, "t1")
    assert got is not None
    assert (got.state, got.outcome, got.polls, got.errors, got.finished_at) == (
        "done",
        "partial",
        4,
        1,
        99.0,
    )
    assert (got.batch, got.labels, got.key, got.watched_at) == ("b", {"x": "1"}, "k", 10.0)
    for sink in ("a", "b", "c"):
        (item,) = await store.outbox(sink)
        assert (item.sink, item.event_id, item.payload) == (sink, ev("t1"), payload)
        assert (item.attempts, item.next_attempt_at, item.last_error) == (0, 0.0, None)
        assert item.created_at > 1_000.0  # from the store's clock
    assert await store.counts() == {"pending": 0, "done": 1}


async def test_completing_twice_queues_nothing_more(store: QueryableStore) -> None:
    """A second complete() is a no-op: even with another event id, even after an ack."""
    await store.add([rec("t1")])
    await complete(store, "t1")
    await complete(store, "t1")
    await store.complete(finished("t1", "failed"), "other-id", {}, ["a", "b"])
    assert await store.outbox_size("a") == 1
    (item,) = await store.outbox("a")
    await store.ack("a", [item.seq])
    await complete(store, "t1")
    assert await store.outbox_size("a") == 0
    got = await store.get(SRC, "t1")
    assert got is not None and got.outcome == "succeeded"


async def test_concurrent_completions_of_one_watch_queue_once(store: QueryableStore) -> None:
    """Many concurrent complete() calls of one watch leave one item per sink."""
    await store.add([rec("t1")])
    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(complete, store, "t1")
    assert await store.outbox_size("a") == 1
    assert await store.outbox_size("b") == 1


async def test_complete_of_an_unknown_watch_stores_it_done(store: QueryableStore) -> None:
    """A watch the store never saw is stored as done, with its outbox items."""
    await complete(store, "new")
    got = await store.get(SRC, "new")
    assert got is not None and (got.state, got.outcome) == ("done", "succeeded")
    assert await store.outbox_size() == 2


async def test_complete_needs_an_outcome(store: QueryableStore) -> None:
    """complete() refuses a record without an outcome and changes nothing."""
    await store.add([rec("t1")])
    with pytest.raises(ValueError, match="outcome"):
        await store.complete(rec("t1"), ev("t1"), {}, ["a"])
    assert await store.outbox_size() == 0


async def test_complete_without_finished_at_uses_the_clock(store: QueryableStore) -> None:
    """A record without finished_at gets the store clock's time."""
    await store.add([rec("t1")])
    await store.complete(finished("t1", finished_at=None), ev("t1"), {}, ["a"])
    got = await store.get(SRC, "t1")
    assert got is not None and got.finished_at is not None and got.finished_at > 1_000.0


# --- outbox -------------------------------------------------------------------------------


async def test_enqueue_is_idempotent_per_sink_and_event(store: QueryableStore) -> None:
    """enqueue() twice queues once per sink; re-enqueueing after delivery queues nothing."""
    await store.enqueue("batch-1", {"event": "batch.finished"}, ["a", "b"])
    await store.enqueue("batch-1", {"event": "batch.finished"}, ["a", "b"])
    assert (await store.outbox_size("a"), await store.outbox_size("b")) == (1, 1)
    (item,) = await store.outbox("a")
    await store.ack("a", [item.seq])
    await store.enqueue("batch-1", {"event": "batch.finished"}, ["a", "b", "c"])
    assert (await store.outbox_size("a"), await store.outbox_size("b")) == (0, 1)
    assert await store.outbox_size("c") == 1  # a new sink for this event


async def test_outbox_keeps_seq_order_per_sink(store: QueryableStore) -> None:
    """Each sink's items come oldest first; sinks see only their own items; limit applies."""
    await store.add([rec(f"t{i}") for i in range(10)])
    for i in range(10):
        sinks = ("a",) if i % 3 == 0 else ("b",) if i % 3 == 1 else ("a", "b")
        await complete(store, f"t{i}", sinks)
    items_a = await store.outbox("a")
    items_b = await store.outbox("b")
    assert [i.event_id for i in items_a] == [ev(f"t{i}") for i in range(10) if i % 3 != 1]
    assert [i.event_id for i in items_b] == [ev(f"t{i}") for i in range(10) if i % 3 != 0]
    assert {i.sink for i in items_a} == {"a"} and {i.sink for i in items_b} == {"b"}
    for items in (items_a, items_b):
        seqs = [i.seq for i in items]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert await store.outbox("a", limit=2) == items_a[:2]
    assert await store.outbox("nobody") == []


async def test_sinks_are_independent(store: QueryableStore) -> None:
    """Acking, retrying or burying on one sink leaves the other sink's items alone."""
    await store.add([rec("t1"), rec("t2")])
    await complete(store, "t1")
    await complete(store, "t2")
    a1, a2 = await store.outbox("a")
    await store.ack("a", [a1.seq])
    await store.retry_later("a", a2.seq, attempts=1, next_attempt_at=5.0, error="down")
    b_items = await store.outbox("b")
    assert [i.event_id for i in b_items] == [ev("t1"), ev("t2")]
    assert all(i.attempts == 0 for i in b_items)
    await store.ack("b", [a2.seq])  # a seq of sink a: nothing happens on b (nor on a)
    assert await store.outbox_size("b") == 2 and await store.outbox_size("a") == 1


async def test_ack_removes_only_the_given_items(store: QueryableStore) -> None:
    """ack() removes the given seqs of that sink; unknown seqs and empty lists are harmless."""
    await store.add([rec(f"t{i}") for i in range(5)])
    for i in range(5):
        await complete(store, f"t{i}", ("a",))
    items = await store.outbox("a")
    await store.ack("a", [items[1].seq, items[3].seq, 10_000])
    await store.ack("a", [])
    assert await store.outbox("a") == [items[0], items[2], items[4]]
    await store.ack("a", [items[1].seq])  # acked twice
    assert await store.outbox_size("a") == 3


async def test_retry_later_is_remembered_in_place(store: QueryableStore) -> None:
    """retry_later() records attempts, when and why; the item keeps its place."""
    await store.add([rec("t1"), rec("t2")])
    await complete(store, "t1", ("a",))
    await complete(store, "t2", ("a",))
    first, second = await store.outbox("a")
    await store.retry_later("a", first.seq, attempts=3, next_attempt_at=777.5, error="HTTP 503")
    again, same = await store.outbox("a")
    assert (again.seq, again.attempts, again.next_attempt_at, again.last_error) == (
        first.seq,
        3,
        777.5,
        "HTTP 503",
    )
    assert again.payload == first.payload and same == second
    await store.retry_later("a", 10_000, attempts=1, next_attempt_at=1.0, error="gone")


async def test_dead_letter_moves_the_item_out(store: QueryableStore) -> None:
    """dead_letter() removes the item and records it with reason, attempts and last error."""
    await store.add([rec("t1"), rec("t2")])
    await complete(store, "t1")
    await complete(store, "t2", ("a",))
    one, two = await store.outbox("a")
    await store.retry_later("a", one.seq, attempts=12, next_attempt_at=1.0, error="HTTP 410")
    await store.dead_letter("a", one.seq, reason="gave up after 12 attempts")
    await store.dead_letter("a", 10_000, reason="unknown: no-op")
    assert await store.outbox("a") == [two]
    assert await store.outbox_size("b") == 1
    (dead,) = await store.dead_letters()
    assert (dead.sink, dead.event_id, dead.payload, dead.seq) == (
        "a",
        ev("t1"),
        one.payload,
        one.seq,
    )
    assert (dead.reason, dead.attempts, dead.last_error) == (
        "gave up after 12 attempts",
        12,
        "HTTP 410",
    )
    assert dead.at > 1_000.0
    await store.dead_letter("b", (await store.outbox("b"))[0].seq, reason="bad")
    assert [d.sink for d in await store.dead_letters()] == ["a", "b"]
    assert [d.sink for d in await store.dead_letters("b")] == ["b"]
    assert len(await store.dead_letters(limit=1)) == 1


async def test_a_dead_batch_event_is_not_queued_again(store: QueryableStore) -> None:
    """An enqueued event that was dead-lettered stays settled: enqueue() is still a no-op."""
    await store.enqueue("batch-9", {"n": 1}, ["a"])
    (item,) = await store.outbox("a")
    await store.dead_letter("a", item.seq, reason="rejected")
    await store.enqueue("batch-9", {"n": 1}, ["a"])
    assert await store.outbox_size("a") == 0


async def test_outbox_size_counts_per_sink_and_total(store: QueryableStore) -> None:
    """outbox_size() counts one sink's items, or all of them."""
    await store.add([rec("t1"), rec("t2")])
    await complete(store, "t1", ("a", "b"))
    await complete(store, "t2", ("a",))
    await store.enqueue("x", {}, ["c"])
    assert [await store.outbox_size(s) for s in ("a", "b", "c", "z")] == [2, 1, 1, 0]
    assert await store.outbox_size() == 4


# --- remove, counts, queries --------------------------------------------------------------


async def test_remove_forgets_the_watch_but_keeps_its_events(store: QueryableStore) -> None:
    """remove() deletes pending and done watches (True), keeps queued events; re-add works."""
    await store.add([rec("p"), rec("d")])
    await complete(store, "d")
    assert await store.remove(SRC, "p") is True
    assert await store.remove(SRC, "d") is True
    assert await store.remove(SRC, "d") is False
    assert await store.get(SRC, "p") is None
    assert await store.counts() == {"pending": 0, "done": 0}
    assert await store.outbox_size() == 2
    assert await store.add([rec("d")]) == [True]
    got = await store.get(SRC, "d")
    assert got is not None and got.state == "pending"


async def test_counts_follow_every_change(store: QueryableStore) -> None:
    """counts() tracks adds, completions and removals."""
    assert await store.counts() == {"pending": 0, "done": 0}
    await store.add([rec(f"t{i}") for i in range(6)])
    await complete(store, "t0")
    await complete(store, "t1")
    await store.remove(SRC, "t2")
    await store.remove(SRC, "t0")
    assert await store.counts() == {"pending": 3, "done": 1}


async def test_list_filters_and_pages_in_insertion_order(store: QueryableStore) -> None:
    """list() filters by batch, state and source and pages with offset/limit."""
    await store.add([rec(f"t{i}", batch="odd" if i % 2 else "even") for i in range(10)])
    await store.add([WatchRecord("alt", "x", 1.0, 2.0, batch="odd")])
    await complete(store, "t3")
    await store.reschedule(SRC, "t1", due_at=0.0, polls=1, errors=0)  # order is not due order

    async def ids(**filters: Any) -> list[str]:
        return [r.task_id for r in await store.list(**filters)]

    assert await ids() == [f"t{i}" for i in range(10)] + ["x"]
    assert await ids(batch="odd") == ["t1", "t3", "t5", "t7", "t9", "x"]
    assert await ids(batch="odd", state="pending", source=SRC) == ["t1", "t5", "t7", "t9"]
    assert await ids(state="done") == ["t3"]
    assert await ids(source="alt") == ["x"]
    assert await ids(offset=3, limit=4) == ["t3", "t4", "t5", "t6"]
    assert await ids(offset=20) == []
    assert await ids(batch="none") == []


async def test_batch_counts_give_pending_and_outcomes(store: QueryableStore) -> None:
    """batch_counts() reports pending and a count per outcome present."""
    assert await store.batch_counts("b") == {"pending": 0}
    await store.add([rec(f"t{i}", batch="b") for i in range(6)] + [rec("other", batch="c")])
    await store.complete(finished("t0", "succeeded"), ev("t0"), {}, ["a"])
    await store.complete(finished("t1", "succeeded"), ev("t1"), {}, ["a"])
    await store.complete(finished("t2", "failed"), ev("t2"), {}, ["a"])
    await store.remove(SRC, "t3")
    assert await store.batch_counts("b") == {"pending": 2, "succeeded": 2, "failed": 1}
    await store.remove(SRC, "t2")
    assert await store.batch_counts("b") == {"pending": 2, "succeeded": 2}
    assert await store.batch_counts("c") == {"pending": 1}


# --- lifecycle ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_closed_store_refuses_calls(kind: str, tmp_path: Path) -> None:
    """Calls before open or after aclose raise ClosedError; open twice too; aclose twice is ok."""
    store = make(kind, tmp_path, Tick())
    with pytest.raises(ClosedError):
        await store.add([rec("t1")])
    await store.open()
    with pytest.raises(ClosedError):
        await store.open()
    await store.add([rec("t1")])
    await store.aclose()
    await store.aclose()
    with pytest.raises(ClosedError):
        await store.get(SRC, "t1")
    with pytest.raises(ClosedError):
        await store.reschedule(SRC, "t1", due_at=1.0, polls=1, errors=0)


# --- concurrency --------------------------------------------------------------------------


async def test_many_tasks_mixing_operations_stay_consistent(store: QueryableStore) -> None:
    """100 concurrent tasks doing every kind of call leave exactly the expected state."""

    async def worker(i: int) -> None:
        ids = [f"w{i}-{j}" for j in range(6)]
        assert await store.add([rec(t, batch=f"b{i % 7}") for t in ids]) == [True] * 6
        await anyio.lowlevel.checkpoint()
        assert await store.add([rec(ids[0])]) == [False]
        for j, t in enumerate(ids):
            await store.reschedule(SRC, t, due_at=100.0 + j, polls=j, errors=i % 3)
        await anyio.lowlevel.checkpoint()
        await complete(store, ids[0])
        await complete(store, ids[1])
        await complete(store, ids[0])
        assert await store.remove(SRC, ids[2]) is True
        await store.enqueue(f"batch-{i}", {"i": i}, ["a"])
        await anyio.lowlevel.checkpoint()
        mine = {ev(ids[0]), ev(ids[1]), f"batch-{i}"}
        items = {it.event_id: it for it in await store.outbox("a", limit=10_000)}
        assert mine <= set(items)
        await store.ack("a", [items[ev(ids[0])].seq])
        await store.dead_letter("a", items[ev(ids[1])].seq, reason=f"r{i}")
        await store.retry_later(
            "a", items[f"batch-{i}"].seq, attempts=1, next_attempt_at=5.0, error="e"
        )

    async with anyio.create_task_group() as tg:
        for i in range(100):
            tg.start_soon(worker, i)

    assert await store.counts() == {"pending": 300, "done": 200}
    items_a = await store.outbox("a", limit=10_000)
    assert sorted(i.event_id for i in items_a) == sorted(f"batch-{i}" for i in range(100))
    assert all((i.attempts, i.last_error) == (1, "e") for i in items_a)
    items_b = await store.outbox("b", limit=10_000)
    assert len(items_b) == 200 and len({i.event_id for i in items_b}) == 200
    for items in (items_a, items_b):
        assert [i.seq for i in items] == sorted(i.seq for i in items)
    dead = await store.dead_letters("a")
    assert sorted(d.reason for d in dead) == sorted(f"r{i}" for i in range(100))
    pending = await store.pending()
    assert len(pending) == 300
    assert all(r.polls == int(r.task_id.rsplit("-", 1)[1]) for r in pending)
    assert [r.due_at for r in pending] == sorted(r.due_at for r in pending)
    total = {"pending": 0, "succeeded": 0}
    for b in range(7):
        for name, n in (await store.batch_counts(f"b{b}")).items():
            total[name] += n
    assert total == {"pending": 300, "succeeded": 200}


# --- build_store --------------------------------------------------------------------------


def plugin_factory(config: Any) -> Store:
    """A plugin store factory, named as module:Name."""
    return MemoryStore()


def not_a_store(config: Any) -> object:
    return object()


def test_build_store_makes_the_built_ins(tmp_path: Path) -> None:
    """memory and sqlite configs give those stores, the SQLite one at the configured path."""
    assert isinstance(build_store(MemoryStoreConfig(type="memory")), MemoryStore)
    path = str(tmp_path / "w.db")
    sqlite = build_store(SqliteStoreConfig(type="sqlite", path=path))
    assert isinstance(sqlite, SqliteStore) and sqlite.path == path


def test_build_store_loads_module_colon_name() -> None:
    """A `type: package.module:Name` store is built by calling that factory with the config."""
    store = build_store(PluginStoreConfig(type=f"{__name__}:plugin_factory"))
    assert isinstance(store, MemoryStore)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("redisish", "unknown store type 'redisish'"),
        ("no_such_module_xyz:Store", "cannot load store"),
        (f"{__name__}:NoSuchName", "cannot load store"),
        (f"{__name__}:not_a_store", "did not return a Store"),
    ],
)
def test_build_store_refuses_bad_plugins(kind: str, message: str) -> None:
    """Unknown, unloadable or wrong plugins are ConfigErrors naming store.type."""
    with pytest.raises(ConfigError, match=message) as caught:
        build_store(PluginStoreConfig(type=kind))
    assert caught.value.issues[0].path == "store.type"
