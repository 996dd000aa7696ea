"""Where the control API listens: loopback unless the config says otherwise, and loudly then."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from test_daemon import AUTH, config_text, start_daemon, stop_daemon

from watcher.config import Config
from watcher.simulator import Simulator, SimulatorConfig

pytestmark = pytest.mark.anyio


def test_the_default_listen_address_is_loopback() -> None:
    """A config without an api block listens on 127.0.0.1:8787."""
    config = Config.model_validate(
        {
            "sources": {
                "ms": {
                    "type": "metastudio",
                    "endpoint": "https://metastudio.example.test",
                    "project_id": "p",
                    "auth": {"type": "token", "token": "t"},
                }
            }
        }
    )
    assert config.api.listen == "127.0.0.1:8787"


async def test_listening_beyond_loopback_warns_and_still_needs_the_token(tmp_path: Path) -> None:
    """Bound to every interface, the daemon says so in a warning at start, and /v1 still
    refuses requests without the bearer token."""
    async with Simulator(SimulatorConfig(seed=4)) as sim:
        text = config_text(sim, "http://127.0.0.1:9/hook").replace(
            'listen: "127.0.0.1:0"', 'listen: "0.0.0.0:0"'
        )
        daemon = await start_daemon(tmp_path, text)
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{daemon.url}/v1/status") as bare:
                    assert bare.status == 401
                async with http.get(f"{daemon.url}/v1/status", headers=AUTH) as allowed:
                    assert allowed.status == 200
        finally:
            await stop_daemon(daemon)
    warnings = [
        line
        for line in daemon.log_lines()
        if line.get("level") == "warning" and "beyond this machine" in line.get("event", "")
    ]
    assert len(warnings) == 1
    assert warnings[0]["listen"] == "0.0.0.0:0"
