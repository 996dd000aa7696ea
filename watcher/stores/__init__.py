"""Stores: the durable record of watches and the outbox of undelivered events.

Built-ins sit here (``memory``, ``sqlite``); third parties register a factory
``(config) -> Store`` under the ``watcher.stores`` entry-point group, or name it as
``package.module:Name`` in ``store.type``.
"""

from __future__ import annotations

from typing import Any

from .._exceptions import ConfigError, ConfigIssue
from .._plugins import load_factory
from ..config._schema import MemoryStoreConfig, SqliteStoreConfig
from ._groupcommit import WriterStats
from .base import DeadLetter, OutboxItem, QueryableStore, Store, WatchRecord, WatchState
from .memory import MemoryStore
from .sqlite import SqliteStore

__all__ = [
    "DeadLetter",
    "MemoryStore",
    "OutboxItem",
    "QueryableStore",
    "SqliteStore",
    "Store",
    "WatchRecord",
    "WatchState",
    "WriterStats",
    "build_store",
]


def _plugin_factory(kind: str) -> Any:
    return load_factory(
        "watcher.stores", kind, key="store.type", what="store", builtins="memory, sqlite"
    )


def build_store(config: Any) -> Store:
    """The store for the ``store:`` config block (built-in or plugin); not opened yet."""
    if isinstance(config, MemoryStoreConfig):
        return MemoryStore()
    if isinstance(config, SqliteStoreConfig):
        return SqliteStore(config.path)
    factory = _plugin_factory(str(getattr(config, "type", "")))
    store = factory(config)
    if not isinstance(store, Store):
        raise ConfigError([ConfigIssue("store.type", "plugin did not return a Store")])
    return store
