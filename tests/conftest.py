"""Shared fixtures. Tests run on asyncio through anyio's pytest plugin."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    # aiohttp is asyncio-only, so trio is not a backend watcher supports.
    return "asyncio"
