"""Sinks: where result events go, and the runner that feeds each one from the outbox.

Built-ins sit here; third parties register a factory ``(name, config) -> Sink`` under the
``watcher.sinks`` entry-point group, or name it as ``package.module:Name`` in ``type:``.

>>> sink = build_sink(config.sinks[0], name="stdout")                 # doctest: +SKIP
>>> runner = SinkRunner.from_config(sink, store, config.sinks[0])   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from .._exceptions import ConfigError, ConfigIssue
from ..config._schema import FileSinkConfig, StdoutSinkConfig, WebhookSinkConfig
from ._runner import Flushable, SinkRunner, SinkStats
from .base import DeliveryError, Sink
from .deadletter import DEFAULT_DEAD_LETTER_PATH, DeadLetterFile
from .file import FileSink, dumps_event
from .stdout import StdoutSink
from .webhook import WebhookSink

__all__ = [
    "DEFAULT_DEAD_LETTER_PATH",
    "DeadLetterFile",
    "DeliveryError",
    "FileSink",
    "Flushable",
    "Sink",
    "SinkRunner",
    "SinkStats",
    "StdoutSink",
    "WebhookSink",
    "build_sink",
    "dumps_event",
]


def _plugin_factory(name: str, kind: str) -> Any:
    found = [ep for ep in entry_points(group="watcher.sinks") if ep.name == kind]
    try:
        if found:
            return found[0].load()
        if ":" in kind:
            module, _, attr = kind.partition(":")
            return getattr(importlib.import_module(module), attr)
    except Exception as exc:  # a plugin's import-time bug is any exception, not only ImportError
        reason = f"{type(exc).__name__}: {exc}"
        issue = ConfigIssue(f"sinks.{name}.type", f"cannot load sink {kind!r}: {reason}")
        raise ConfigError([issue]) from exc
    issue = ConfigIssue(
        f"sinks.{name}.type",
        f"unknown sink type {kind!r} (built-in: stdout, file, webhook; or an entry point, "
        "or module:Name)",
    )
    raise ConfigError([issue])


def build_sink(config: Any, *, name: str) -> Sink:
    """The sink for one ``sinks:`` entry (built-in or plugin), called ``name``."""
    if isinstance(config, StdoutSinkConfig):
        return StdoutSink(name)
    if isinstance(config, FileSinkConfig):
        return FileSink.from_config(name, config)
    if isinstance(config, WebhookSinkConfig):
        return WebhookSink(name, config)
    factory = _plugin_factory(name, str(getattr(config, "type", "")))
    sink = factory(name, config)
    if not isinstance(sink, Sink):
        issue = ConfigIssue(f"sinks.{name}.type", "plugin did not return a Sink")
        raise ConfigError([issue])
    return sink
