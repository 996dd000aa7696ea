"""Waiting on a condition with a bound, for state that offers no event to wait on."""

from __future__ import annotations

from collections.abc import Callable

import anyio


async def wait_until(
    predicate: Callable[[], object], *, within: float = 10.0, interval: float = 0.01
) -> None:
    """Return as soon as ``predicate()`` is true; fail the test after ``within`` seconds."""
    with anyio.fail_after(within):
        # Polled, not awaited: the state lives in another process or in a server's counters.
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(interval)
