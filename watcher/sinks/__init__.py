"""Sinks: where result events go, and the runner that feeds each one from the outbox.

Built-ins sit here; third parties register a factory ``(name, config) -> Sink`` under the
``watcher.sinks`` entry-point group, or name it as ``package.module:Name`` in ``type:``.

>>> sink = build_sink(config.sinks[0], name="stdout")                 # doctest: +SKIP
>>> runner = SinkRunner.from_config(sink, store, config.sinks[0])   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from .._exceptions import ConfigError, ConfigIssue
from .._plugins import load_factory
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
    return load_factory(
        "watcher.sinks",
        kind,
        key=f"sinks.{name}.type",
        what="sink",
        builtins="stdout, file, webhook",
    )


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
