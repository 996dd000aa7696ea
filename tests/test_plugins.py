"""Third-party plugins: a package on sys.path with a dist-info, loaded both ways.

The package is written to ``tmp_path`` with a ``*.dist-info`` (``METADATA`` and
``entry_points.txt``), exactly what pip leaves behind, so ``importlib.metadata`` finds its
entry points the way it finds an installed plugin's. ``monkeypatch.syspath_prepend`` calls
``importlib.invalidate_caches()``, which also clears ``importlib.metadata``'s path cache.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest

from watcher._exceptions import ConfigError
from watcher._models import Outcome
from watcher._watcher import Watcher
from watcher.config import PluginSinkConfig, PluginSourceConfig, PluginStoreConfig, config_from_dict
from watcher.sinks import Sink, build_sink
from watcher.sources import Source, build_source
from watcher.stores import Store, build_store

PACKAGE = "watcher_plugin_demo"

PLUGIN_MODULE = '''
"""A third-party watcher plugin: a source factory, a sink class and a store class."""

from __future__ import annotations

import anyio

from watcher.stores.memory import MemoryStore
from watcher.testing import finished, running

DELIVERED: dict[str, list[dict]] = {}
SINKS: dict = {}


class CountdownSource:
    """Every task finishes on its ``polls_to_finish``-th poll."""

    def __init__(self, name, polls_to_finish):
        self.name = name
        self.polls_to_finish = polls_to_finish
        self.polls: dict[str, int] = {}
        self.closed = False

    async def fetch(self, task_id):
        count = self.polls[task_id] = self.polls.get(task_id, 0) + 1
        if count >= self.polls_to_finish:
            return finished(task_id, succeeded=3)
        return running(task_id, done=count)

    async def aclose(self):
        self.closed = True


def make_source(name, config):
    """The factory the `watcher.sources` entry point names: (name, config) -> Source."""
    return CountdownSource(name, int(getattr(config, "polls_to_finish", 1)))


def not_a_source(name, config):
    return object()


class ListSink:
    """Keeps what it is given in DELIVERED[name]; a class is a factory (name, config) -> Sink."""

    def __init__(self, name, config):
        self.name = name
        self.config = config
        self.events = DELIVERED.setdefault(name, [])
        self.arrived = anyio.Event()  # set (and replaced) on every delivery
        self.closed = False
        SINKS[name] = self

    async def deliver(self, event):
        self.events.append(dict(event))
        self.arrived.set()
        self.arrived = anyio.Event()

    async def aclose(self):
        self.closed = True


def not_a_sink(name, config):
    return "a string"


STORES: list = []


class DemoStore(MemoryStore):
    """A third-party store: the factory (config) -> Store is the class itself."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        STORES.append(self)


def not_a_store(config):
    return None
'''

# Two ways an import fails: a missing dependency (ImportError) and a bug (any exception).
BROKEN_MODULE = """
raise RuntimeError("plugin import failed on purpose")
"""
NEEDS_DEPENDENCY_MODULE = """
import no_such_dependency_xyz  # noqa: F401
"""

ENTRY_POINTS = f"""
[watcher.sources]
demo-source = {PACKAGE}.plugin:make_source
broken-source = {PACKAGE}.broken:make_source
needsdep-source = {PACKAGE}.needsdep:make_source
missing-source = {PACKAGE}.plugin:NoSuchThing

[watcher.sinks]
demo-sink = {PACKAGE}.plugin:ListSink
broken-sink = {PACKAGE}.broken:ListSink
needsdep-sink = {PACKAGE}.needsdep:ListSink
missing-sink = {PACKAGE}.plugin:NoSuchThing

[watcher.stores]
demo-store = {PACKAGE}.plugin:DemoStore
broken-store = {PACKAGE}.broken:DemoStore
needsdep-store = {PACKAGE}.needsdep:DemoStore
missing-store = {PACKAGE}.plugin:NoSuchThing
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The demo plugin package, installed (dist-info and all) on a temporary sys.path entry."""
    package = tmp_path / PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "plugin.py").write_text(PLUGIN_MODULE, encoding="utf-8")
    (package / "broken.py").write_text(BROKEN_MODULE, encoding="utf-8")
    (package / "needsdep.py").write_text(NEEDS_DEPENDENCY_MODULE, encoding="utf-8")
    dist = tmp_path / f"{PACKAGE}-1.0.dist-info"
    dist.mkdir()
    metadata = f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: 1.0\n"
    (dist / "METADATA").write_text(metadata, encoding="utf-8")
    (dist / "entry_points.txt").write_text(textwrap.dedent(ENTRY_POINTS), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__(f"{PACKAGE}.plugin", fromlist=["plugin"])
    yield module
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]


def source_config(kind: str, **extra: Any) -> Any:
    config = config_from_dict({"sources": {"demo": {"type": kind, **extra}}})
    return config.sources["demo"]


# --- discovery ----------------------------------------------------------------------------------


def test_entry_points_are_visible(plugin: ModuleType) -> None:
    """importlib.metadata sees the temporary dist-info's entry points in every group."""
    for group in ("watcher.sources", "watcher.sinks", "watcher.stores"):
        names = {ep.name for ep in entry_points(group=group)}
        kind = group.removeprefix("watcher.").removesuffix("s")
        assert {f"demo-{kind}", f"broken-{kind}", f"missing-{kind}"} <= names, group


# --- sources ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["demo-source", f"{PACKAGE}.plugin:make_source"])
def test_source_loads_both_ways(plugin: ModuleType, kind: str) -> None:
    """A plugin source loads by entry-point name and as module:Name, with its own keys."""
    config = source_config(kind, polls_to_finish=4, rate_limit="5/s")
    assert isinstance(config, PluginSourceConfig)
    assert config.rate_limit == 5.0
    source = build_source("demo", config)
    assert isinstance(source, plugin.CountdownSource)
    assert isinstance(source, Source)
    assert source.name == "demo"
    assert source.polls_to_finish == 4


LOAD_FAILURES = [
    ("no-such-plugin", "unknown {kind} type 'no-such-plugin'"),
    ("broken-{kind}", "RuntimeError: plugin import failed on purpose"),
    ("{pkg}.broken:Thing", "RuntimeError: plugin import failed on purpose"),
    ("needsdep-{kind}", "No module named 'no_such_dependency_xyz'"),
    ("{pkg}.needsdep:Thing", "No module named 'no_such_dependency_xyz'"),
    ("missing-{kind}", "NoSuchThing"),
    ("{pkg}.plugin:NoSuchThing", "NoSuchThing"),
    ("no_such_package_xyz.mod:Thing", "No module named 'no_such_package_xyz'"),
    ("{pkg}.plugin:not_a_{kind}", "did not return a {Kind}"),
]


def _fill(text: str, kind: str) -> str:
    return text.format(kind=kind, Kind=kind.capitalize(), pkg=PACKAGE)


@pytest.mark.parametrize(("kind", "reason"), LOAD_FAILURES)
def test_source_load_failures_are_config_errors(plugin: ModuleType, kind: str, reason: str) -> None:
    """Unknown names, failing imports, missing attributes, non-sources: one clear ConfigError."""
    kind, reason = _fill(kind, "source"), _fill(reason, "source")
    with pytest.raises(ConfigError) as caught:
        build_source("demo", source_config(kind))
    issue = caught.value.issues[0]
    assert issue.path == "sources.demo.type"
    assert reason in issue.message


# --- sinks --------------------------------------------------------------------------------------


SIMPLE_SOURCE = {"demo": {"type": "demo-source"}}


def sink_config(kind: str, **extra: Any) -> Any:
    config = config_from_dict({"sources": SIMPLE_SOURCE, "sinks": [{"type": kind, **extra}]})
    return config.sinks[0]


@pytest.mark.parametrize("kind", ["demo-sink", f"{PACKAGE}.plugin:ListSink"])
def test_sink_loads_both_ways(plugin: ModuleType, kind: str) -> None:
    """A plugin sink loads by entry-point name and as module:Name, with its own keys."""
    config = sink_config(kind, topic="results")
    assert isinstance(config, PluginSinkConfig)
    sink = build_sink(config, name="kafka")
    assert isinstance(sink, plugin.ListSink)
    assert isinstance(sink, Sink)
    assert sink.name == "kafka"
    assert sink.config.topic == "results"


@pytest.mark.parametrize(("kind", "reason"), LOAD_FAILURES)
def test_sink_load_failures_are_config_errors(plugin: ModuleType, kind: str, reason: str) -> None:
    """Unknown names, failing imports, missing attributes, non-sinks: one clear ConfigError."""
    kind, reason = _fill(kind, "sink"), _fill(reason, "sink")
    with pytest.raises(ConfigError) as caught:
        build_sink(sink_config(kind), name="out")
    issue = caught.value.issues[0]
    assert issue.path.startswith("sinks") and issue.path.endswith(".type")
    assert reason in issue.message


# --- stores -------------------------------------------------------------------------------------


def store_config(kind: str, **extra: Any) -> Any:
    return config_from_dict({"sources": SIMPLE_SOURCE, "store": {"type": kind, **extra}}).store


@pytest.mark.parametrize("kind", ["demo-store", f"{PACKAGE}.plugin:DemoStore"])
def test_store_loads_both_ways(plugin: ModuleType, kind: str) -> None:
    """A plugin store loads by entry-point name and as module:Name, with its own keys."""
    config = store_config(kind, url="demo://somewhere")
    assert isinstance(config, PluginStoreConfig)
    store = build_store(config)
    assert isinstance(store, plugin.DemoStore)
    assert isinstance(store, Store)
    assert store.config.url == "demo://somewhere"


@pytest.mark.parametrize(("kind", "reason"), LOAD_FAILURES)
def test_store_load_failures_are_config_errors(plugin: ModuleType, kind: str, reason: str) -> None:
    """Unknown names, failing imports, missing attributes, non-stores: one clear ConfigError."""
    kind, reason = _fill(kind, "store"), _fill(reason, "store")
    with pytest.raises(ConfigError) as caught:
        build_store(store_config(kind))
    issue = caught.value.issues[0]
    assert issue.path == "store.type"
    assert reason in issue.message


# --- the engine, built from config --------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("source", "sink", "store"),
    [
        ("demo-source", "demo-sink", f"{PACKAGE}.plugin:DemoStore"),
        (f"{PACKAGE}.plugin:make_source", f"{PACKAGE}.plugin:ListSink", "demo-store"),
    ],
)
async def test_engine_runs_on_plugins_from_config(
    plugin: ModuleType, source: str, sink: str, store: str
) -> None:
    """Watcher(config) polls a plugin source, keeps state in a plugin store, feeds a plugin sink."""
    ids = [f"t{i}" for i in range(5)]
    config = config_from_dict(
        {
            "sources": {"demo": {"type": source, "polls_to_finish": 3, "rate_limit": 500}},
            "polling": {"backoff": {"policy": "fixed", "initial": "5ms", "min": 0, "max": "20ms"}},
            "sinks": [{"type": sink, "name": "collected", "topic": "done"}],
            "store": {"type": store, "url": "demo://"},
        }
    )
    async with Watcher(config, seed=5) as w:
        assert (await w.add(ids)).accepted == ids
        events = await w.wait_all(ids, timeout=10)
        sink_object = plugin.SINKS["collected"]
        delivered = sink_object.events
        with anyio.fail_after(5):
            while len([e for e in delivered if e.get("event") == "task.finished"]) < len(ids):
                await sink_object.arrived.wait()
        assert w.store is plugin.STORES[0]
    assert [e.outcome for e in events] == [Outcome.SUCCEEDED] * len(ids)
    assert all(e.polls == 3 for e in events)
    finished = [e for e in delivered if e.get("event") == "task.finished"]
    assert sorted(e["task_id"] for e in finished) == ids
    assert all(e["outcome"] == "succeeded" and e["source"] == "demo" for e in finished)
    assert {e["event_id"] for e in finished} == {e.event_id for e in events}
    assert len(plugin.STORES) == 1
    assert plugin.STORES[0].config.url == "demo://"
    assert sink_object.closed
    assert sink_object.config.topic == "done"


def test_entry_points_vanish_with_the_path() -> None:
    """After the fixture is gone the demo plugin is not installed (no leak between tests)."""
    assert "demo-source" not in {ep.name for ep in entry_points(group="watcher.sources")}
    assert "demo-sink" not in {ep.name for ep in entry_points(group="watcher.sinks")}
    assert PACKAGE not in sys.modules
