"""Logging setup for the CLI and daemon. The library itself never calls this.

structlog renders every line; stdlib ``logging`` (aiohttp, asyncio, plugins) is routed through
the same renderer, so a daemon writes one format only: JSON lines off a terminal, readable
text on one. Each line names its ``logger`` (``watcher.scheduler``, ``aiohttp.server``, ...).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

__all__ = ["configure_logging"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# The handler this module put on the root logger, replaced by the next call (others' handlers,
# pytest's for instance, are left alone).
_handler: logging.Handler | None = None


def _logger_name(logger: Any, method_name: str, event_dict: Any) -> Any:
    # structlog.get_logger("watcher.x") hands the name to the stdlib logger; foreign records
    # carry theirs in `_record`.
    record = event_dict.get("_record")
    name = record.name if record is not None else getattr(logger, "name", None)
    if name and name != "root":
        event_dict.setdefault("logger", name)
    return event_dict


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """structlog to ``stream`` (stderr): JSON lines off a terminal, readable text on one."""
    global _handler  # noqa: PLW0603 - one root handler per process, replaced on reconfigure
    out = stream or sys.stderr
    tty = out.isatty()
    use_json = fmt == "json" or (fmt == "auto" and not tty)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=tty)
    )
    numeric = _LEVELS.get(level, logging.INFO)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        # Filtering in structlog first: a debug call below the level costs one method call.
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    # Other libraries' debug output (aiosqlite logs every statement, with its parameters) is
    # noise, and may hold task payloads: they log from info up; watcher at the level asked.
    root.setLevel(max(numeric, logging.INFO))
    logging.getLogger("watcher").setLevel(numeric)
    _handler = handler
    # aiohttp's own access log is replaced by the daemon's structured one.
    logging.getLogger("aiohttp.access").propagate = False
