"""Loggers for watcher's modules that behave well inside someone else's program.

The CLI and daemon configure structlog (``_logging.configure_logging``) and get structured
lines. A program that embeds watcher and configures nothing would otherwise get structlog's
default, every level printed to stdout; instead, until structlog is configured, records go
to the standard ``logging`` module, where unconfigured means warnings and errors on stderr.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

__all__ = ["get_logger"]


class _Logger:
    __slots__ = ("_proxy", "_std")

    def __init__(self, name: str) -> None:
        self._proxy = structlog.get_logger(name)
        self._std = logging.getLogger(name)

    def _emit(self, method: str, level: int, event: str, fields: dict[str, Any]) -> None:
        if structlog.is_configured():
            getattr(self._proxy, method)(event, **fields)
        elif self._std.isEnabledFor(level):
            text = " ".join(f"{key}={value!r}" for key, value in fields.items())
            self._std.log(level, "%s %s", event, text, exc_info=method == "exception")

    def debug(self, event: str, **fields: Any) -> None:
        self._emit("debug", logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit("warning", logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", logging.ERROR, event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        self._emit("exception", logging.ERROR, event, fields)


def get_logger(name: str) -> _Logger:
    return _Logger(name)
