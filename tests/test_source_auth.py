"""Auth providers against the simulator: AK/SK signing, static tokens, IAM password tokens."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest
from aiohttp import web

from watcher._exceptions import (
    AuthError,
    ConnectError,
    PollTimeoutError,
    RateLimitedError,
    ServerError,
    TransientError,
)
from watcher._taskid import quote_segment
from watcher.config import MetaStudioSourceConfig
from watcher.simulator import FaultConfig, Simulator, SimulatorConfig
from watcher.sources import MetaStudioSource
from watcher.sources._signer import parse_authorization

PROJECT = "sim-project"
AK, SK = "AK1", "SK1-very-secret"
USER, PASSWORD, DOMAIN = "user1", "pw1-very-secret", "domain1"


class FakeClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_config(
    url: str, auth: dict[str, Any], *, iam_url: str | None = None, **extra: Any
) -> MetaStudioSourceConfig:
    if auth["type"] == "iam_password":
        auth = {
            "iam_endpoint": iam_url or url,
            "user": USER,
            "password": PASSWORD,
            "domain": DOMAIN,
            **auth,
        }
    values: dict[str, Any] = {
        "type": "metastudio",
        "endpoint": url,
        "project_id": PROJECT,
        "auth": auth,
        "connect_timeout": 2.0,
        "read_timeout": 2.0,
        **extra,
    }
    return MetaStudioSourceConfig.model_validate(values)


def sim_config(**overrides: Any) -> SimulatorConfig:
    values: dict[str, Any] = {
        "seed": 7,
        "project_id": PROJECT,
        "auth": "any",
        "credentials": {AK: SK},
        "iam_users": {(DOMAIN, USER): PASSWORD},
    }
    values.update(overrides)
    return SimulatorConfig(**values)


IAM = {"type": "iam_password"}
AKSK = {"type": "aksk", "ak": AK, "sk": SK}


# --- AK/SK ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_aksk_signed_requests_are_accepted() -> None:
    """Signed fetches of running and finished tasks pass the simulator's verification."""
    clock = FakeClock()
    async with Simulator(sim_config(auth="aksk", clock=clock)) as sim:
        sim.add_task("job", life=30.0, total=5, outcome="succeeded")
        async with MetaStudioSource("ms", make_config(sim.url, AKSK), clock=clock) as source:
            first = await source.fetch("job")
            clock.advance(60)
            second = await source.fetch("job")
            hostile = await source.fetch("a/b?c#d %2F ü")
        stats = sim.stats()
    assert first.end_time is None
    assert second.end_time is not None
    assert second.success_count == 5
    assert hostile.task_id == "a/b?c#d %2F ü"
    assert stats.auth_failures == 0
    assert stats.responses_by_status == {200: 3}


@pytest.mark.anyio
async def test_aksk_with_security_token_is_accepted() -> None:
    """Temporary credentials add a signed X-Security-Token; the signature still verifies."""
    auth = {**AKSK, "security_token": "temp-token"}
    async with (
        Simulator(sim_config(auth="aksk")) as sim,
        MetaStudioSource("ms", make_config(sim.url, auth)) as source,
    ):
        await source.fetch("t1")
        assert sim.stats().auth_failures == 0


@pytest.mark.anyio
async def test_aksk_wrong_secret_is_auth_error_without_retry() -> None:
    """A wrong sk: 401 APIGW.0303 as AuthError with request id; never retried (AK lockout)."""
    auth = {**AKSK, "sk": "wrong-secret"}
    async with (
        Simulator(sim_config(auth="aksk")) as sim,
        MetaStudioSource("ms", make_config(sim.url, auth)) as source,
    ):
        with pytest.raises(AuthError) as info:
            await source.fetch("t1")
        assert sim.stats().requests == 1
    err = info.value
    assert (err.status, err.error_code) == (401, "APIGW.0303")
    assert err.request_id
    assert "wrong-secret" not in str(err)
    assert "wrong-secret" not in repr(source)


@pytest.mark.anyio
async def test_aksk_stale_date_is_refused() -> None:
    """A gateway clock 20 minutes off refuses the signature date (APIGW.0305)."""
    async with (
        Simulator(sim_config(auth="aksk")) as sim,
        MetaStudioSource("ms", make_config(sim.url, AKSK)) as source,
    ):
        sim.set_faults(FaultConfig(clock_skew=1200.0))
        with pytest.raises(AuthError) as info:
            await source.fetch("t1")
    assert info.value.error_code == "APIGW.0305"


@pytest.mark.anyio
async def test_aksk_signed_search_is_accepted() -> None:
    """A signed search (repeated, encoded query values) passes verification."""
    clock = FakeClock(1_700_000_000.0)
    async with Simulator(sim_config(auth="aksk", clock=clock)) as sim:
        sim.add_task("s1", resource="asset-import")
        begin = int(clock() * 1000) - 1000
        async with MetaStudioSource("ms", make_config(sim.url, AKSK), clock=clock) as source:
            page = await source.search(
                ["asset-import", "r with space"], begin, begin + 5000, business_id="b/1"
            )
        stats = sim.stats()
    assert [s.task_id for s in page.snapshots] == ["s1"]
    assert stats.auth_failures == 0


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[tuple[str, list[web.Request]]]:
    """A catch-all loopback server; yields (url, requests seen)."""
    seen: list[web.Request] = []

    async def record(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def task_ok(request: web.Request) -> web.StreamResponse:
    return web.json_response({"task_status": 1})


@pytest.mark.anyio
async def test_aksk_headers_on_the_wire() -> None:
    """Host is the URL's host:port, every request is signed with a current X-Sdk-Date."""
    async with serve(task_ok) as (url, seen), MetaStudioSource("ms", make_config(url, AKSK)) as src:
        await src.fetch("t1")
        await src.fetch("t2")
    assert len(seen) == 2
    for request in seen:
        assert request.headers["Host"] == url.removeprefix("http://")
        assert request.headers["X-Project-Id"] == PROJECT
        parsed = parse_authorization(request.headers["Authorization"])
        assert parsed is not None
        ak, signed, _ = parsed
        assert ak == AK
        assert {"host", "x-sdk-date", "x-project-id"} <= set(signed)
        signed_at = datetime.strptime(request.headers["X-Sdk-Date"], "%Y%m%dT%H%M%SZ")
        assert abs(signed_at.replace(tzinfo=UTC).timestamp() - time.time()) < 60


# --- static token ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_static_token_fetch() -> None:
    """A static X-Auth-Token is accepted."""
    async with (
        Simulator(sim_config(auth="token", tokens={"static-token"})) as sim,
        MetaStudioSource(
            "ms", make_config(sim.url, {"type": "token", "token": "static-token"})
        ) as source,
    ):
        snap = await source.fetch("t1")
    assert snap.task_id == "t1"


# --- IAM password ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_iam_fetch_running_and_finished() -> None:
    """An IAM token is fetched once and used for running and finished polls."""
    clock = FakeClock()
    async with Simulator(sim_config(auth="token", clock=clock)) as sim:
        sim.add_task("job", life=30.0, total=4, outcome="failed")
        async with MetaStudioSource("ms", make_config(sim.url, IAM), clock=clock) as source:
            first = await source.fetch("job")
            clock.advance(60)
            second = await source.fetch("job")
        stats = sim.stats()
    assert first.end_time is None
    assert second.end_time is not None
    assert second.failure_count == 4
    assert stats.tokens_issued == 1
    assert stats.paths[0] == "/v3/auth/tokens"
    assert stats.auth_failures == 0


@pytest.mark.anyio
async def test_iam_single_flight_for_concurrent_polls() -> None:
    """20 concurrent polls with no token cached cause exactly one IAM request."""
    async with Simulator(sim_config(auth="token")) as sim:
        async with MetaStudioSource("ms", make_config(sim.url, IAM)) as source:
            results: dict[str, str] = {}

            async def poll(task_id: str) -> None:
                results[task_id] = (await source.fetch(task_id)).task_id

            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(poll, f"t{i}")
        stats = sim.stats()
    assert stats.tokens_issued == 1
    assert stats.auth_failures == 0
    assert results == {f"t{i}": f"t{i}" for i in range(20)}


@pytest.mark.anyio
async def test_iam_revoked_token_refreshes_once_then_succeeds() -> None:
    """A revoked token (401 APIGW.0307) triggers one refresh, and the retry succeeds."""
    async with (
        Simulator(sim_config(auth="token")) as sim,
        MetaStudioSource("ms", make_config(sim.url, IAM)) as source,
    ):
        await source.fetch("t1")
        # The simulator does not list the tokens it issued; read the one the provider holds.
        sim.revoke_token(source._auth._token.value)  # type: ignore[attr-defined]
        before = sim.stats()
        snap = await source.fetch("t1")
        after = sim.stats()
    assert snap.task_id == "t1"
    assert before.tokens_issued == 1
    assert after.tokens_issued == 2
    assert after.auth_failures == 1
    # The refused poll, the IAM request and the retried poll.
    assert after.requests - before.requests == 3


@pytest.mark.anyio
async def test_iam_concurrent_refusals_share_one_refresh() -> None:
    """Ten polls refused with the same revoked token refresh it only once."""
    async with Simulator(sim_config(auth="token")) as sim:
        async with MetaStudioSource("ms", make_config(sim.url, IAM)) as source:
            await source.fetch("warm")
            sim.revoke_token(source._auth._token.value)  # type: ignore[attr-defined]
            async with anyio.create_task_group() as tg:
                for i in range(10):
                    tg.start_soon(source.fetch, f"t{i}")
        stats = sim.stats()
    assert stats.tokens_issued == 2
    assert 1 <= stats.auth_failures <= 10


@pytest.mark.anyio
async def test_iam_refresh_ahead_of_expiry() -> None:
    """With a fake clock, the token is replaced refresh_ahead before it expires, with no 401."""
    clock = FakeClock()
    sim_cfg = sim_config(auth="token", clock=clock, token_ttl=7200.0)
    async with Simulator(sim_cfg) as sim:
        config = make_config(sim.url, {**IAM, "refresh_ahead": "10m"})
        async with MetaStudioSource("ms", config, clock=clock) as source:
            await source.fetch("t1")
            clock.advance(7200 - 600 - 5)
            await source.fetch("t1")
            assert sim.stats().tokens_issued == 1
            clock.advance(10)
            await source.fetch("t1")
            assert sim.stats().tokens_issued == 2
            clock.advance(7200 - 600 - 5)
            await source.fetch("t1")
        stats = sim.stats()
    assert stats.tokens_issued == 2
    assert stats.auth_failures == 0


@pytest.mark.anyio
async def test_iam_short_lived_token_is_not_refreshed_every_poll() -> None:
    """A token shorter-lived than refresh_ahead is refreshed at half its life, not per poll."""
    clock = FakeClock()
    async with Simulator(sim_config(auth="token", clock=clock, token_ttl=600.0)) as sim:
        async with MetaStudioSource("ms", make_config(sim.url, IAM), clock=clock) as source:
            for _ in range(5):
                await source.fetch("t1")
            clock.advance(301)
            await source.fetch("t1")
        stats = sim.stats()
    assert stats.tokens_issued == 2


@pytest.mark.anyio
async def test_iam_wrong_password_is_auth_error() -> None:
    """A refused IAM login is an AuthError (status 401); the API is never called."""
    async with Simulator(sim_config(auth="token", iam_users={(DOMAIN, USER): "other"})) as sim:
        async with MetaStudioSource("ms", make_config(sim.url, IAM)) as source:
            with pytest.raises(AuthError) as info:
                await source.fetch("t1")
        stats = sim.stats()
    assert info.value.status == 401
    assert info.value.error_msg == "The username or password is wrong."
    assert PASSWORD not in str(info.value)
    assert PASSWORD not in repr(source)
    assert list(stats.paths) == ["/v3/auth/tokens"]


@pytest.mark.anyio
async def test_iam_token_refused_after_refresh_is_auth_error() -> None:
    """If the fresh token is refused too, the poll fails with AuthError after one refresh."""
    async with Simulator(sim_config(auth="aksk")) as sim:  # tokens are never accepted
        async with MetaStudioSource("ms", make_config(sim.url, IAM)) as source:
            with pytest.raises(AuthError) as info:
                await source.fetch("t1")
        stats = sim.stats()
    assert info.value.status == 401
    assert info.value.request_id
    assert stats.tokens_issued == 2
    assert stats.polls_per_task == {"t1": 2}


@pytest.mark.anyio
async def test_iam_request_body_and_scope() -> None:
    """The IAM body follows API.md; the scope is the configured project name."""
    bodies: list[Any] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path == "/v3/auth/tokens":
            bodies.append(json.loads(await request.read()))
            token = {"expires_at": "2999-01-01T00:00:00.000000Z"}
            return web.json_response(
                {"token": token}, status=201, headers={"X-Subject-Token": "tok"}
            )
        assert request.headers["X-Auth-Token"] == "tok"
        return web.json_response({"task_status": 1})

    async with serve(handler) as (url, _):
        async with MetaStudioSource("ms", make_config(url, {**IAM, "project": "cn-north-4"})) as s:
            await s.fetch("t1")
        async with MetaStudioSource("ms", make_config(url, IAM)) as s:
            await s.fetch("t1")
    identity = {
        "methods": ["password"],
        "password": {"user": {"name": USER, "password": PASSWORD, "domain": {"name": DOMAIN}}},
    }
    assert bodies[0] == {
        "auth": {"identity": identity, "scope": {"project": {"name": "cn-north-4"}}}
    }
    assert bodies[1] == {"auth": {"identity": identity}}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (503, ServerError),
        (500, ServerError),
        (429, RateLimitedError),
        (404, AuthError),
        (400, AuthError),
    ],
)
@pytest.mark.anyio
async def test_iam_failures_are_typed(status: int, expected: type[Exception]) -> None:
    """IAM 5xx/429 are transient; other IAM refusals are AuthError, never PermanentError."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": {"code": status, "message": "no"}}, status=status)

    async with serve(handler) as (url, seen), MetaStudioSource("ms", make_config(url, IAM)) as src:
        with pytest.raises(expected) as info:
            await src.fetch("t1")
    assert type(info.value) is expected
    assert [r.path for r in seen] == ["/v3/auth/tokens"]


@pytest.mark.anyio
async def test_iam_without_subject_token_is_transient() -> None:
    """A 201 without X-Subject-Token is a transient malformed answer."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response({"token": {}}, status=201)

    async with serve(handler) as (url, _), MetaStudioSource("ms", make_config(url, IAM)) as source:
        with pytest.raises(TransientError, match="X-Subject-Token"):
            await source.fetch("t1")


@pytest.mark.anyio
async def test_iam_timeout_and_unreachable_are_transient() -> None:
    """A slow IAM is a PollTimeoutError, an unreachable one a ConnectError."""
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(status=503)

    async with serve(slow) as (url, _):
        config = make_config(url, IAM, read_timeout=0.1)
        async with MetaStudioSource("ms", config) as source:
            with pytest.raises(PollTimeoutError):
                await source.fetch("t1")
        release.set()
    async with Simulator(sim_config(auth="token")) as sim:
        config = make_config(sim.url, IAM, iam_url=url)  # the IAM server is gone now
        async with MetaStudioSource("ms", config) as source:
            with pytest.raises(ConnectError):
                await source.fetch("t1")
        assert sim.stats().requests == 0


def test_provider_reprs_hide_secrets() -> None:
    """Neither the source nor its providers show a secret in their repr."""
    for auth, secret in (
        (AKSK, SK),
        (IAM, PASSWORD),
        ({"type": "token", "token": "tk-s3cr3t"}, "tk-s3cr3t"),
    ):
        source = MetaStudioSource("ms", make_config("http://127.0.0.1:9", auth))
        assert secret not in repr(source)
        assert secret not in repr(source._auth)  # type: ignore[attr-defined]


def test_quote_segment_matches_signed_path() -> None:
    """The path segment the source sends is the one the signer canonicalises."""
    from watcher.sources._signer import canonical_uri

    segment = quote_segment("a/b c")
    assert canonical_uri(f"/v2/p/ies/task/{segment}") == f"/v2/p/ies/task/{segment}/"
