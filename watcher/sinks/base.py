"""The ``Sink`` seam: where result events go."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from .._exceptions import WatcherError

__all__ = ["DeliveryError", "Sink"]


class DeliveryError(WatcherError):
    """A delivery failed. ``retryable`` False sends the event to the dead-letter file at once;
    ``retry_after`` (seconds) is a floor for the next attempt when the receiver asked."""

    def __init__(
        self, message: str, *, retryable: bool = True, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


@runtime_checkable
class Sink(Protocol):
    """Receives result events.

    The caller guarantees: one ``deliver`` at a time per sink, events in outbox order; an
    event may be delivered again after a crash or a failed attempt (same ``event_id``), so
    sinks and their receivers must tolerate duplicates. ``deliver`` returns once the event is
    safely handed over and raises (``DeliveryError`` or anything) to have it retried.
    """

    name: str

    async def deliver(self, event: Mapping[str, Any]) -> None: ...

    async def aclose(self) -> None: ...
