"""The ``stdout`` sink: one JSON object per line, flushed per event."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from .base import DeliveryError
from .file import dumps_event

__all__ = ["StdoutSink"]


class StdoutSink:
    """Write each event as a JSON line to ``stream`` (default: ``sys.stdout`` at write time,
    so a redirected ``sys.stdout`` is honoured) and flush, so a pipe reader sees it at once.
    """

    def __init__(self, name: str = "stdout", *, stream: TextIO | None = None) -> None:
        self.name = name
        self._stream = stream

    def __repr__(self) -> str:
        return f"StdoutSink(name={self.name!r})"

    async def deliver(self, event: Mapping[str, Any]) -> None:
        stream = self._stream if self._stream is not None else sys.stdout
        try:
            text = dumps_event(event)
        except (TypeError, ValueError) as exc:
            raise DeliveryError(
                f"event is not JSON-serialisable ({type(exc).__name__})", retryable=False
            ) from exc
        try:
            try:
                stream.write(text + "\n")
            except UnicodeEncodeError:
                # A stream that cannot encode some character (a cp1252 console, say) still
                # gets the same JSON, with \\u escapes.
                stream.write(json.dumps(event, ensure_ascii=True, separators=(",", ":")) + "\n")
            stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed
            raise DeliveryError(f"cannot write to {self.name}: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        """Nothing to release: the stream belongs to whoever gave it (or to the process)."""
