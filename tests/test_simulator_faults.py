"""The simulator's faults: errors, bad bodies, drops, outage, latency, huge bodies."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest

from watcher._exceptions import MalformedResponseError
from watcher._models import TaskSnapshot
from watcher.simulator import MALFORMED_KINDS, FaultConfig, Simulator, SimulatorConfig
from watcher.sources._signer import AkSkSigner, sdk_date

TASK = "/v2/sim-project/ies/task/"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def statuses(session: aiohttp.ClientSession, url: str, n: int) -> list[int]:
    out = []
    for i in range(n):
        async with session.get(f"{url}{TASK}t{i}") as response:
            await response.read()
            out.append(response.status)
    return out


def _unusable(body: bytes) -> bool:
    """True when no careful client could take ``body`` as a task."""
    try:
        data = json.loads(body)
    except ValueError:
        return True
    if not isinstance(data, dict):
        return True
    try:
        TaskSnapshot.from_fields(
            "t",
            status=data.get("task_status"),
            total_count=data.get("total_count"),
            success_count=data.get("success_count"),
            failure_count=data.get("failure_count"),
            begin_time=data.get("begin_time"),
            end_time=data.get("end_time"),
        )
    except MalformedResponseError:
        return True
    return False


@pytest.mark.anyio
async def test_error_rate_answers_5xx_deterministically(session: aiohttp.ClientSession) -> None:
    """error_rate gives 500/502/503 at about that share, the same sequence for the same seed."""
    async with Simulator(SimulatorConfig(faults=FaultConfig(error_rate=0.5, seed=11))) as sim:
        first = await statuses(session, sim.url, 60)
        sim.set_faults(FaultConfig(error_rate=0.5, seed=11))
        again = await statuses(session, sim.url, 60)
        assert sim.stats().faults_injected == 2 * sum(s != 200 for s in first)
    assert first == again
    assert set(first) == {200, 500, 502, 503}
    assert 15 < sum(s != 200 for s in first) < 45


@pytest.mark.anyio
async def test_error_bodies_are_json_or_plain(session: aiohttp.ClientSession) -> None:
    """5xx bodies are MSS.000000002 JSON or a plain/HTML page, always with X-Request-Id."""
    kinds = set()
    async with Simulator(SimulatorConfig(faults=FaultConfig(error_rate=1.0))) as sim:
        for i in range(30):
            async with session.get(f"{sim.url}{TASK}e{i}") as response:
                assert response.status in (500, 502, 503)
                assert response.headers["X-Request-Id"]
                text = await response.text()
                if response.content_type == "application/json":
                    assert json.loads(text)["error_code"] == "MSS.000000002"
                kinds.add(response.content_type)
    assert kinds == {"application/json", "text/html", "text/plain"}


@pytest.mark.anyio
@pytest.mark.parametrize("kind", MALFORMED_KINDS)
async def test_malformed_bodies_are_unusable(session: aiohttp.ClientSession, kind: str) -> None:
    """Each malformed kind answers 200 with a body no careful client may accept."""
    faults = FaultConfig(malformed_rate=1.0, malformed_kinds=(kind,))
    async with Simulator(SimulatorConfig(faults=faults)) as sim:
        for i in range(5):
            async with session.get(f"{sim.url}{TASK}m{i}") as response:
                assert response.status == 200
                assert _unusable(await response.read())


@pytest.mark.anyio
async def test_drop_closes_the_connection(session: aiohttp.ClientSession) -> None:
    """drop_rate=1 closes every connection without an answer; clients see a disconnect."""
    async with Simulator(SimulatorConfig(faults=FaultConfig(drop_rate=1.0))) as sim:
        for _ in range(3):
            with pytest.raises(aiohttp.ClientConnectionError):
                async with session.get(f"{sim.url}{TASK}d") as response:
                    await response.read()
        sim.set_faults(FaultConfig())
        async with session.get(f"{sim.url}{TASK}d") as response:
            assert response.status == 200
        stats = sim.stats()
    # aiohttp retries an idempotent request once when a reused connection drops, so the
    # simulator may see up to two arrivals per attempt; every one of them was dropped.
    assert 3 <= stats.dropped == stats.requests - 1 <= 6
    assert stats.responses_by_status == {200: 1}


@pytest.mark.anyio
async def test_outage_answers_503(session: aiohttp.ClientSession) -> None:
    """During an outage every API request answers 503; IAM and the control plane still work."""
    async with Simulator(SimulatorConfig(faults=FaultConfig(outage=True))) as sim:
        assert await statuses(session, sim.url, 4) == [503] * 4
        async with session.get(sim.url + "/_sim/stats") as response:
            assert response.status == 200
        async with session.post(sim.url + "/v3/auth/tokens", data=b"{}") as response:
            assert response.status == 400


@pytest.mark.anyio
async def test_oversize_body_is_streamed_valid_json(session: aiohttp.ClientSession) -> None:
    """oversize_body answers 200 with exactly that many bytes, still a valid task object."""
    size = 3 * 1024 * 1024 + 17
    async with Simulator(SimulatorConfig(faults=FaultConfig(oversize_body=size))) as sim:
        async with session.get(f"{sim.url}{TASK}big") as response:
            assert response.status == 200
            assert response.content_length == size
            body = await response.read()
        # A client that stops reading early must not break the server.
        async with session.get(f"{sim.url}{TASK}big") as response:
            await response.content.read(1024)
            response.close()
        sim.set_faults(FaultConfig())
        async with session.get(f"{sim.url}{TASK}big") as response:
            assert response.status == 200
    assert len(body) == size
    data = json.loads(body)
    assert data["task_id"] == "big"
    assert len(data["padding"]) > size - 1024


@pytest.mark.anyio
async def test_latency_delays_answers(session: aiohttp.ClientSession) -> None:
    """A fixed latency delays every API answer by at least that long."""
    async with Simulator(SimulatorConfig(faults=FaultConfig(latency=(0.1, 0.15)))) as sim:
        started = time.monotonic()
        assert await statuses(session, sim.url, 2) == [200, 200]
        assert time.monotonic() - started >= 0.2


@pytest.mark.anyio
async def test_clock_skew_moves_the_signature_window(session: aiohttp.ClientSession) -> None:
    """With the simulator's clock an hour ahead, a request signed now has expired."""
    now = 1_744_276_967.0
    config = SimulatorConfig(auth="aksk", credentials={"AK": "SK"}, clock=lambda: now)
    async with Simulator(config) as sim:
        signed = AkSkSigner("AK", "SK").sign(
            "GET", f"{sim.url}{TASK}s", date=sdk_date(datetime.fromtimestamp(now, tz=UTC))
        )
        async with session.get(signed.url, headers=signed.headers) as response:
            assert response.status == 200
        sim.set_faults(FaultConfig(clock_skew=3600.0))
        async with session.get(signed.url, headers=signed.headers) as response:
            assert response.status == 401
            assert (await response.json())["error_code"] == "APIGW.0305"


@pytest.mark.anyio
async def test_faults_endpoint_sets_and_validates(session: aiohttp.ClientSession) -> None:
    """POST /_sim/faults replaces the faults; bad fields answer 400 and change nothing."""
    async with Simulator(SimulatorConfig()) as sim:
        async with session.post(sim.url + "/_sim/faults", json={"outage": True}) as response:
            assert response.status == 200
            assert (await response.json())["outage"] is True
        assert sim.faults == FaultConfig(outage=True)
        assert await statuses(session, sim.url, 1) == [503]
        for bad in ({"error_rate": 2}, {"nonsense": 1}, [1]):
            async with session.post(sim.url + "/_sim/faults", json=bad) as response:
                assert response.status == 400
        assert sim.faults == FaultConfig(outage=True)
        async with session.post(sim.url + "/_sim/faults", json={"latency": [0, 0.01]}) as resp:
            assert resp.status == 200
        async with session.get(sim.url + "/_sim/faults") as response:
            assert (await response.json())["latency"] == [0.0, 0.01]
        assert sim.faults.latency == (0.0, 0.01)


def test_fault_config_rejects_bad_values() -> None:
    """Rates outside [0, 1], inverted latency ranges and unknown kinds are refused."""
    with pytest.raises(ValueError, match="error_rate"):
        FaultConfig(error_rate=1.5)
    with pytest.raises(ValueError, match="max < min"):
        FaultConfig(latency=(0.5, 0.1))
    with pytest.raises(ValueError, match="malformed_kinds"):
        FaultConfig(malformed_kinds=("poetry",))
    assert not FaultConfig(clock_skew=5.0).enabled
    assert FaultConfig(drop_rate=0.1).enabled
