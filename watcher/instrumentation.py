"""Hooks for metrics: the engine reports each poll and each finished watch to them.

Kept as a tiny protocol so the engine pays nothing when no one listens, and the daemon's
Prometheus collector (or a user's own) plugs in without the engine importing it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["Instrumentation"]


@runtime_checkable
class Instrumentation(Protocol):
    """Called from the event loop; must be quick and must not raise."""

    def on_poll(self, source: str, result: str, seconds: float) -> None:
        """One request ended: ``result`` is ``ok`` or the error kind (``rate_limited``,
        ``timeout``, ``auth``, ...); ``seconds`` is how long the request took."""
        ...

    def on_finish(self, source: str, outcome: str, detection_latency: float | None) -> None:
        """A watch ended. ``detection_latency``: seconds from the task's own end time to
        the poll that saw it, when the API reported an end time."""
        ...
