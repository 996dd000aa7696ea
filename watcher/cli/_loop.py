"""Run a command's main coroutine on the fastest event loop available.

uvloop (the ``fast`` extra) roughly halves the event loop's share of every poll; watcher runs
on plain asyncio without it. ``WATCHER_EVENT_LOOP=asyncio`` picks plain asyncio even when uvloop
is installed, to rule the loop out when chasing a problem.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar, TypeVarTuple, Unpack

import anyio

__all__ = ["run", "uses_uvloop"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


def uses_uvloop() -> bool:
    """True when commands will run on uvloop: it is installed and not turned off."""
    if os.environ.get("WATCHER_EVENT_LOOP", "").strip().lower() == "asyncio":
        return False
    return importlib.util.find_spec("uvloop") is not None


def run(func: Callable[[Unpack[Ts]], Awaitable[T]], *args: *Ts) -> T:
    """``anyio.run`` on uvloop when :func:`uses_uvloop`, else on plain asyncio."""
    return anyio.run(func, *args, backend="asyncio", backend_options={"use_uvloop": uses_uvloop()})
