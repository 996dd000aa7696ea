"""The CLI's event loop: uvloop when installed, plain asyncio on request."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from watcher.cli import _loop

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_commands_run_on_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """With uvloop installed and no override, the main coroutine runs on a uvloop loop."""
    monkeypatch.delenv("WATCHER_EVENT_LOOP", raising=False)
    assert _loop.uses_uvloop() is HAVE_UVLOOP
    module = _loop.run(_loop_module)
    assert module.startswith("uvloop") is HAVE_UVLOOP


@pytest.mark.parametrize("value", ["asyncio", " AsyncIO "])
def test_environment_picks_plain_asyncio(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """WATCHER_EVENT_LOOP=asyncio keeps the standard loop even when uvloop is there."""
    monkeypatch.setenv("WATCHER_EVENT_LOOP", value)
    assert _loop.uses_uvloop() is False
    assert _loop.run(_loop_module).startswith("asyncio")


def test_arguments_and_result_pass_through() -> None:
    """Positional arguments reach the coroutine and its value comes back."""

    async def add(a: int, b: int) -> int:
        return a + b

    assert _loop.run(add, 2, 3) == 5
