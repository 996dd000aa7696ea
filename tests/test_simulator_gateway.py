"""The simulator's API gateway: rate limit, IAM tokens, AK/SK signatures and lockout."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from yarl import URL

from watcher.simulator import Simulator, SimulatorConfig
from watcher.sources._signer import AkSkSigner, sdk_date

START = 1_744_276_967.0
TASK = "/v2/sim-project/ies/task/"


class Clock:
    """A clock that moves only when told to."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, Any, Mapping[str, str]]:
    async with session.request(
        method, URL(url, encoded=True), headers=headers, data=body
    ) as response:
        text = await response.text()
        return response.status, json.loads(text) if text else None, response.headers


# -- rate limit ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_rate_limit_throttles_with_retry_after(session: aiohttp.ClientSession) -> None:
    """Beyond the per-tenant limit the gateway answers 429 APIGW.0308 with Retry-After."""
    mono = Clock(100.0)
    async with Simulator(SimulatorConfig(rate_limit=5.0, monotonic=mono)) as sim:
        answers = [await call(session, "GET", sim.url + TASK + f"t{i}") for i in range(8)]
        assert [a[0] for a in answers] == [200] * 5 + [429] * 3
        status, body, headers = answers[-1]
        assert body["error_code"] == "APIGW.0308"
        assert body["request_id"] == headers["X-Request-Id"]
        assert headers["Retry-After"] == "1"
        mono.now += 0.5  # the window (99.0+, 100.0] is still full
        status, _, headers = await call(session, "GET", sim.url + TASK + "t0")
        assert status == 429
        mono.now += 0.5  # now the five accepted at 100.0 have left the window
        statuses = [(await call(session, "GET", sim.url + TASK + "t0"))[0] for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        # Another tenant has its own window (and, being another project, is refused).
        status, body, _ = await call(session, "GET", sim.url + "/v2/other/ies/task/t0")
        assert status == 403
        stats = sim.stats()
    assert stats.throttled == 5
    assert stats.responses_by_status == {200: 10, 429: 5, 403: 1}
    # Arrivals: 8 at 100.0 and 1 at 100.5 share a window; later windows hold 1 + 7.
    assert stats.max_requests_in_1s == 9
    # Polls count by id as they arrive, whatever the answer (the 403 one included).
    assert stats.polls_per_task["t0"] == 1 + 1 + 6 + 1


@pytest.mark.anyio
async def test_rate_limit_without_retry_after(session: aiohttp.ClientSession) -> None:
    """retry_after=False sends 429 without the header; a rate below 1/s widens the window."""
    mono = Clock(0.0)
    config = SimulatorConfig(rate_limit=0.5, retry_after=False, monotonic=mono)
    async with Simulator(config) as sim:
        assert (await call(session, "GET", sim.url + TASK + "a"))[0] == 200
        mono.now += 1.5
        status, _, headers = await call(session, "GET", sim.url + TASK + "a")
        assert status == 429
        assert "Retry-After" not in headers
        mono.now += 0.6
        assert (await call(session, "GET", sim.url + TASK + "a"))[0] == 200


@pytest.mark.anyio
async def test_max_requests_in_1s_counts_sliding_windows(session: aiohttp.ClientSession) -> None:
    """The busiest sliding second is found even when it straddles whole seconds."""
    mono = Clock(10.0)
    async with Simulator(SimulatorConfig(monotonic=mono)) as sim:
        for offset in (0.0, 0.6, 0.7, 0.8, 1.3, 1.5, 2.6):
            mono.now = 10.0 + offset
            await call(session, "GET", sim.url + TASK + "w")
        # (0.5, 1.5] holds 0.6, 0.7, 0.8, 1.3, 1.5 -> 5; no second holds more.
        assert sim.stats().max_requests_in_1s == 5
        sim.reset_stats()
        assert sim.stats().max_requests_in_1s == 0


# -- IAM tokens ------------------------------------------------------------------------------


def _iam_body(user: str, password: str, domain: str) -> bytes:
    auth = {
        "identity": {
            "methods": ["password"],
            "password": {"user": {"name": user, "password": password, "domain": {"name": domain}}},
        },
        "scope": {"project": {"name": "cn-north-4"}},
    }
    return json.dumps({"auth": auth}).encode()


@pytest.mark.anyio
async def test_iam_token_works_until_revoked(session: aiohttp.ClientSession) -> None:
    """IAM issues a token (201, X-Subject-Token); it is accepted, then 0307 once revoked."""
    clock = Clock(START)
    config = SimulatorConfig(auth="token", clock=clock, iam_users={("dom", "alice"): "pw"})
    async with Simulator(config) as sim:
        iam = sim.url + "/v3/auth/tokens"
        json_type = {"Content-Type": "application/json"}
        status, body, headers = await call(
            session, "POST", iam, json_type, _iam_body("alice", "pw", "dom")
        )
        assert status == 201
        token = headers["X-Subject-Token"]
        assert body["token"]["methods"] == ["password"]
        assert body["token"]["project"]["id"] == "sim-project"
        expires = datetime.fromisoformat(body["token"]["expires_at"].replace("Z", "+00:00"))
        assert expires.timestamp() == pytest.approx(START + 86400)
        assert body["token"]["expires_at"].endswith("Z")

        status, _, _ = await call(session, "GET", sim.url + TASK + "t", {"X-Auth-Token": token})
        assert status == 200
        sim.revoke_token(token)
        status, body, _ = await call(session, "GET", sim.url + TASK + "t", {"X-Auth-Token": token})
        assert status == 401
        assert body["error_code"] == "APIGW.0307"

        wrong = await call(session, "POST", iam, json_type, _iam_body("alice", "nope", "dom"))
        assert wrong[0] == 401
        garbled = await call(session, "POST", iam, json_type, b'{"auth": []}')
        assert garbled[0] == 400
        stats = sim.stats()
    assert stats.tokens_issued == 1
    assert stats.auth_failures == 1


@pytest.mark.anyio
async def test_token_expiry_unknown_and_static_tokens(session: aiohttp.ClientSession) -> None:
    """Expired tokens answer 0307, unknown or missing ones 0301; static tokens just work."""
    clock = Clock(START)
    async with Simulator(SimulatorConfig(auth="token", clock=clock, tokens={"static"})) as sim:
        token = sim.issue_token(ttl=60.0)
        url = sim.url + TASK + "t"
        assert (await call(session, "GET", url, {"X-Auth-Token": token}))[0] == 200
        clock.now += 61.0
        status, body, _ = await call(session, "GET", url, {"X-Auth-Token": token})
        assert (status, body["error_code"]) == (401, "APIGW.0307")
        status, body, _ = await call(session, "GET", url, {"X-Auth-Token": "forged"})
        assert (status, body["error_code"]) == (401, "APIGW.0301")
        status, body, _ = await call(session, "GET", url)
        assert (status, body["error_code"]) == (401, "APIGW.0301")
        assert (await call(session, "GET", url, {"X-Auth-Token": "static"}))[0] == 200
        assert sim.stats().auth_failures == 3


# -- AK/SK -----------------------------------------------------------------------------------


def _signed(
    url: str, clock: Clock, *, ak: str = "AK1", sk: str = "SK1", age: float = 0.0
) -> tuple[str, dict[str, str]]:
    signer = AkSkSigner(ak, sk, project_id="sim-project")
    date = sdk_date(datetime.fromtimestamp(clock.now - age, tz=UTC))
    signed = signer.sign("GET", url, date=date)
    return signed.url, signed.headers


def _aksk_sim(clock: Clock, mono: Clock, **extra: Any) -> Simulator:
    return Simulator(
        SimulatorConfig(
            auth="aksk", credentials={"AK1": "SK1"}, clock=clock, monotonic=mono, **extra
        )
    )


@pytest.mark.anyio
async def test_aksk_accepts_signed_and_refuses_tampered(session: aiohttp.ClientSession) -> None:
    """A correctly signed request passes; changing a header, the path or the query fails."""
    clock, mono = Clock(START), Clock(0.0)
    async with _aksk_sim(clock, mono) as sim:
        url, headers = _signed(sim.url + TASK + "a%2Fb", clock)
        assert headers["Host"] == URL(sim.url).raw_authority
        status, body, _ = await call(session, "GET", url, headers)
        assert status == 200
        assert body["task_id"] == "a/b"

        tampered = {**headers, "X-Project-Id": "someone-else"}
        status, body, _ = await call(session, "GET", url, tampered)
        assert (status, body["error_code"]) == (401, "APIGW.0303")
        status, body, _ = await call(session, "GET", url.replace("a%2Fb", "a%2Fc"), headers)
        assert (status, body["error_code"]) == (401, "APIGW.0303")

        search_url, search_headers = _signed(
            sim.url + "/v2/sim-project/ies/task?resource=asset-import", clock
        )
        assert (await call(session, "GET", search_url, search_headers))[0] == 200
        widened = search_url + "&resource=knowledge-intent-question-create"
        status, _, _ = await call(session, "GET", widened, search_headers)
        assert status == 401

        _, stranger = _signed(sim.url + TASK + "x", clock, ak="AK9")
        status, body, _ = await call(session, "GET", sim.url + TASK + "x", stranger)
        assert (status, body["error_code"]) == (401, "APIGW.0301")
        status, body, _ = await call(session, "GET", url, {"Authorization": "Basic abc"})
        assert (status, body["error_code"]) == (401, "APIGW.0301")
        assert sim.stats().auth_failures == 5


@pytest.mark.anyio
async def test_aksk_signed_body_and_unsigned_payload(session: aiohttp.ClientSession) -> None:
    """The payload hash covers the body; X-Sdk-Content-Sha256 replaces it when sent."""
    clock, mono = Clock(START), Clock(0.0)
    async with _aksk_sim(clock, mono) as sim:
        signer = AkSkSigner("AK1", "SK1")
        url = sim.url + TASK + "gone"
        date = sdk_date(datetime.fromtimestamp(clock.now, tz=UTC))
        signed = signer.sign("DELETE", url, body=b"{}", date=date)
        status, _, _ = await call(session, "DELETE", signed.url, signed.headers, b"{}")
        assert status == 204
        signed = signer.sign("DELETE", url, body=b"{}", date=date)
        status, _, _ = await call(session, "DELETE", signed.url, signed.headers, b"{ }")
        assert status == 401
        unsigned = signer.sign(
            "DELETE", sim.url + TASK + "other", headers={"Content-Type": "text/plain"}, date=date
        )
        assert unsigned.headers["X-Sdk-Content-Sha256"] == "UNSIGNED-PAYLOAD"
        status, _, _ = await call(session, "DELETE", unsigned.url, unsigned.headers, b"anything")
        assert status == 204


@pytest.mark.anyio
async def test_aksk_date_window_and_clock_skew(session: aiohttp.ClientSession) -> None:
    """X-Sdk-Date more than 15 minutes off answers 401 APIGW.0305; within it passes."""
    clock, mono = Clock(START), Clock(0.0)
    async with _aksk_sim(clock, mono) as sim:
        url = sim.url + TASK + "t"
        status, body, _ = await call(session, "GET", *_signed(url, clock, age=16 * 60))
        assert (status, body["error_code"]) == (401, "APIGW.0305")
        status, body, _ = await call(session, "GET", *_signed(url, clock, age=-16 * 60))
        assert (status, body["error_code"]) == (401, "APIGW.0305")
        assert (await call(session, "GET", *_signed(url, clock, age=14 * 60)))[0] == 200
        status, body, _ = await call(session, "GET", url, {"Authorization": "SDK-HMAC-SHA256 x"})
        assert (status, body["error_code"]) == (401, "APIGW.0301")


@pytest.mark.anyio
async def test_aksk_lockout_after_repeated_failures(session: aiohttp.ClientSession) -> None:
    """More than 5 consecutive failures lock the AK for 5 minutes; a success resets the count."""
    clock, mono = Clock(START), Clock(50.0)
    async with _aksk_sim(clock, mono) as sim:
        url = sim.url + TASK + "t"
        good = _signed(url, clock)
        bad = _signed(url, clock, sk="wrong")
        for _ in range(5):
            assert (await call(session, "GET", *bad))[0] == 401
        assert (await call(session, "GET", *good))[0] == 200  # resets the count
        failures = [await call(session, "GET", *bad) for _ in range(6)]
        assert all(f[0] == 401 for f in failures)
        assert "locked" not in failures[-1][1]["error_msg"]
        status, body, _ = await call(session, "GET", *good)
        assert status == 401
        assert "locked" in body["error_msg"]
        mono.now += 299.0
        assert (await call(session, "GET", *good))[0] == 401
        mono.now += 2.0
        assert (await call(session, "GET", *good))[0] == 200


@pytest.mark.anyio
async def test_auth_any_accepts_either(session: aiohttp.ClientSession) -> None:
    """auth="any" takes a valid token or a valid signature, and refuses neither."""
    clock, mono = Clock(START), Clock(0.0)
    config = SimulatorConfig(
        auth="any", credentials={"AK1": "SK1"}, tokens={"tok"}, clock=clock, monotonic=mono
    )
    async with Simulator(config) as sim:
        url = sim.url + TASK + "t"
        assert (await call(session, "GET", url, {"X-Auth-Token": "tok"}))[0] == 200
        assert (await call(session, "GET", *_signed(url, clock)))[0] == 200
        assert (await call(session, "GET", url))[0] == 401
