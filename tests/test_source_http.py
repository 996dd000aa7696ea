"""HTTP plumbing of the sources against small loopback servers: wire format, limits, errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import anyio
import pytest
from aiohttp import web
from aiohttp.client_reqrep import ConnectionKey

from watcher._exceptions import (
    AuthError,
    ConfigError,
    ConnectError,
    MalformedResponseError,
    PermanentError,
    PollTimeoutError,
    RateLimitedError,
    ServerError,
)
from watcher._taskid import quote_segment
from watcher._version import __version__
from watcher.config import MetaStudioSourceConfig
from watcher.sources import MetaStudioSource
from watcher.sources._http import (
    parse_error_body,
    parse_retry_after,
    status_error_class,
    translate_errors,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TASK = {"task_id": "t1", "task_status": 1, "total_count": 3, "success_count": 1}

HOSTILE_IDS = [
    "a/b",
    "%2F",
    "a%2Fb",
    "x?y=1",
    "frag#ment",
    "../etc/passwd",
    "..%2F..",
    "...",
    "a b",
    "ünïcødé-任务",
    "semi;colon",
    "plus+and&amp=",
    "back\\slash",
    "%",
    "%%2e%2e",
    "./.",
]


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[tuple[str, list[web.Request]]]:
    """A catch-all aiohttp server on an ephemeral loopback port; yields (url, requests seen)."""
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


def make_config(endpoint: str, **overrides: Any) -> MetaStudioSourceConfig:
    values: dict[str, Any] = {
        "type": "metastudio",
        "endpoint": endpoint,
        "project_id": "proj/1",
        "auth": {"type": "token", "token": "secret-token-value"},
        "connect_timeout": 2.0,
        "read_timeout": 2.0,
        "max_body_bytes": 4096,
    }
    values.update(overrides)
    return MetaStudioSourceConfig.model_validate(values)


def echo_task(request: web.Request) -> web.Response:
    task_id = unquote(request.raw_path.rsplit("/", 1)[1])
    return web.json_response({**TASK, "task_id": task_id})


async def echo_handler(request: web.Request) -> web.StreamResponse:
    return echo_task(request)


@pytest.mark.anyio
async def test_hostile_ids_arrive_as_one_segment() -> None:
    """Ids with /, %2F, ?, #, dots, spaces and unicode reach the server as one exact segment."""
    async with serve(echo_handler) as (url, seen), MetaStudioSource("m", make_config(url)) as src:
        for task_id in HOSTILE_IDS:
            snap = await src.fetch(task_id)
            assert snap.task_id == task_id
        paths = [r.raw_path for r in seen]
    prefix = "/v2/proj%2F1/ies/task/"
    assert paths == [prefix + quote_segment(t) for t in HOSTILE_IDS]
    for path, task_id in zip(paths, HOSTILE_IDS, strict=True):
        segment = path.removeprefix(prefix)
        assert "/" not in segment
        assert "?" not in segment
        assert "#" not in segment
        assert unquote(segment) == task_id


@pytest.mark.anyio
async def test_user_agent_and_token_header() -> None:
    """Requests carry watcher's User-Agent and the static token."""
    async with serve(echo_handler) as (url, seen), MetaStudioSource("m", make_config(url)) as src:
        await src.fetch("t1")
    assert seen[0].headers["User-Agent"] == f"watcher/{__version__}"
    assert seen[0].headers["X-Auth-Token"] == "secret-token-value"
    assert seen[0].headers["Accept"] == "application/json"


@pytest.mark.anyio
async def test_declared_oversize_body_is_malformed_and_source_recovers() -> None:
    """A Content-Length over the limit is refused up front; the next poll works."""
    calls = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        if calls == 1:
            return web.Response(body=b"{" + b" " * 100_000 + b"}", content_type="application/json")
        return echo_task(request)

    async with serve(handler) as (url, _), MetaStudioSource("m", make_config(url)) as src:
        with pytest.raises(MalformedResponseError, match="limit") as info:
            await src.fetch("t1")
        assert info.value.status == 200
        assert (await src.fetch("t1")).task_id == "t1"


@pytest.mark.anyio
async def test_streamed_oversize_body_stops_reading() -> None:
    """A chunked body without Content-Length is cut at the limit, not buffered whole."""
    sent = 0
    finished = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        try:
            for _ in range(10_000):  # 10 MB if the client kept reading
                await resp.write(b" " * 1024)
                sent += 1024
        except (ConnectionError, RuntimeError):
            pass
        finally:
            finished.set()
        return resp

    async with serve(handler) as (url, _), MetaStudioSource("m", make_config(url)) as src:
        with pytest.raises(MalformedResponseError, match="limit"):
            await src.fetch("t1")
        # The client closed the connection, so the server's writes start failing.
        with anyio.fail_after(5):
            await finished.wait()
    assert sent < 10_000 * 1024


@pytest.mark.anyio
async def test_truncated_body_is_connect_error() -> None:
    """A body shorter than its Content-Length is a ConnectError (connection dropped)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.content_length = 500
        await resp.prepare(request)
        await resp.write(b'{"task_id": "t1"')
        assert request.transport is not None
        request.transport.close()
        return resp

    async with serve(handler) as (url, _), MetaStudioSource("m", make_config(url)) as src:
        with pytest.raises(ConnectError) as info:
            await src.fetch("t1")
    assert info.value.__cause__ is not None


@pytest.mark.anyio
async def test_read_timeout_is_poll_timeout() -> None:
    """A server slower than read_timeout gives PollTimeoutError."""
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return echo_task(request)

    async with serve(handler) as (url, _):
        async with MetaStudioSource("m", make_config(url, read_timeout=0.1)) as src:
            with pytest.raises(PollTimeoutError):
                await src.fetch("t1")
        release.set()


@pytest.mark.anyio
async def test_connection_refused_is_connect_error() -> None:
    """Nothing listening: ConnectError, with the aiohttp error as the cause."""
    async with serve(echo_handler) as (url, _):
        pass  # the port is now closed
    async with MetaStudioSource("m", make_config(url)) as src:
        with pytest.raises(ConnectError) as info:
            await src.fetch("t1")
    assert "secret-token-value" not in str(info.value)
    assert info.value.__cause__ is not None


@pytest.mark.anyio
async def test_redirect_is_not_followed() -> None:
    """A 302 is not followed (it would carry the token elsewhere): a transient ServerError."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/elsewhere"):
            return echo_task(request)
        raise web.HTTPFound("/elsewhere/t1")

    async with serve(handler) as (url, seen), MetaStudioSource("m", make_config(url)) as src:
        with pytest.raises(ServerError) as info:
            await src.fetch("t1")
    assert info.value.status == 302
    assert len(seen) == 1


@pytest.mark.anyio
async def test_error_body_oversize_still_typed() -> None:
    """A 503 with a huge HTML body is still a ServerError carrying the header request id."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(
            status=503, body=b"<html>" + b"x" * 500_000, headers={"X-Request-Id": "rid-9"}
        )

    async with serve(handler) as (url, _), MetaStudioSource("m", make_config(url)) as src:
        with pytest.raises(ServerError) as info:
            await src.fetch("t1")
    assert (info.value.status, info.value.request_id) == (503, "rid-9")


def _error(status: int, code: str, **headers: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = {"error_code": code, "error_msg": f"msg {code}", "request_id": "body-rid"}
        return web.json_response(body, status=status, headers=headers)

    return handler


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "MSS.000000003", PermanentError),
        (400, "MSS.000000004", AuthError),
        (400, "MSS.000000001", ServerError),
        (400, "MSS.000000002", ServerError),
        (400, "OTHER.1", PermanentError),
        (404, "MSS.000000003", PermanentError),
        (401, "APIGW.0301", AuthError),
        (403, "APIGW.0302", AuthError),
        (408, "X", ServerError),
        (409, "X", ServerError),
        (425, "X", ServerError),
        (422, "X", PermanentError),
        (500, "MSS.000000002", ServerError),
        (502, "X", ServerError),
        (429, "APIGW.0308", RateLimitedError),
    ],
)
@pytest.mark.anyio
async def test_status_and_code_mapping(status: int, code: str, expected: type[Exception]) -> None:
    """Every documented status/code pair maps to its error class, with code and request id."""
    async with (
        serve(_error(status, code)) as (url, _),
        MetaStudioSource("m", make_config(url)) as src,
    ):
        with pytest.raises(expected) as info:
            await src.fetch("t1")
    err = info.value
    assert type(err) is expected
    assert (err.status, err.error_code, err.request_id) == (status, code, "body-rid")  # type: ignore[attr-defined]
    assert err.error_msg == f"msg {code}"  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_retry_after_http_date() -> None:
    """Retry-After as an HTTP-date becomes seconds from now."""
    when = format_datetime(
        datetime.fromtimestamp(datetime.now(UTC).timestamp() + 120, UTC), usegmt=True
    )
    handler = _error(429, "APIGW.0308", **{"Retry-After": when})
    async with serve(handler) as (url, _), MetaStudioSource("m", make_config(url)) as src:
        with pytest.raises(RateLimitedError) as info:
            await src.fetch("t1")
    assert info.value.retry_after is not None
    assert 100 < info.value.retry_after <= 120


@pytest.mark.anyio
async def test_unparseable_error_body_uses_header_request_id() -> None:
    """An error body that is not JSON still gives a typed error and the X-Request-Id."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=404, text="not here", headers={"X-Request-Id": "hdr-rid"})

    async with serve(handler) as (url, _), MetaStudioSource("m", make_config(url)) as src:
        with pytest.raises(PermanentError) as info:
            await src.fetch("t1")
    assert (info.value.status, info.value.error_code, info.value.request_id) == (
        404,
        None,
        "hdr-rid",
    )


@pytest.mark.anyio
async def test_search_query_and_cut_page() -> None:
    """Search sends repeated resources and epoch-ms times; count > len(data) marks a cut page."""

    async def handler(request: web.Request) -> web.StreamResponse:
        data = [{**TASK, "task_id": "a"}, {**TASK, "task_id": "b"}]
        return web.json_response({"offset": 0, "limit": 2, "count": 5, "data": data})

    async with serve(handler) as (url, seen), MetaStudioSource("m", make_config(url)) as src:
        page = await src.search(["r 1", "r2"], 1000, 2000, business_id="b/1")
    assert seen[0].raw_path == (
        "/v2/proj%2F1/ies/task?resource=r%201&resource=r2&business_id=b%2F1"
        "&begin_time=1000&end_time=2000"
    )
    assert [s.task_id for s in page.snapshots] == ["a", "b"]
    assert page.count == 5
    assert page.cut


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5", 5.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("99999999999999999999", 3600.0),
        ("7200", 3600.0),
        ("-3", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past
        ("nan", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    """Retry-After: seconds or HTTP-date, garbage ignored, capped at an hour."""
    assert parse_retry_after(value) == expected


def test_parse_retry_after_date_relative_to_now() -> None:
    """An HTTP-date is measured from the given now."""
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0


def test_parse_error_body_tolerates_garbage() -> None:
    """Error bodies of any shape give fields or None, never an exception."""
    assert parse_error_body(b"<html>").error_code is None
    assert parse_error_body(b"[1]").error_code is None
    assert parse_error_body(b"[" * 100_000).error_code is None
    body = json.dumps({"error": {"code": 401, "message": "bad password"}}).encode()
    assert parse_error_body(body).error_code == "401"
    long = json.dumps({"error_code": "X" * 10_000, "error_msg": "a\nb"}).encode()
    parsed = parse_error_body(long)
    assert parsed.error_code is not None
    assert len(parsed.error_code) <= 500
    assert parsed.error_msg == "a?b"


def test_status_error_class_defaults() -> None:
    """Without an API code, the status alone decides."""
    assert status_error_class(429) is RateLimitedError
    assert status_error_class(401) is AuthError
    assert status_error_class(404) is PermanentError
    assert status_error_class(503) is ServerError
    assert status_error_class(302) is ServerError


def _connector_error() -> aiohttp.ClientConnectorError:
    key = ConnectionKey("127.0.0.1", 1, False, True, None, None, None)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "Connect call failed"))


@pytest.mark.parametrize(
    ("make", "expected", "match"),
    [
        (aiohttp.ConnectionTimeoutError, PollTimeoutError, "connect timeout"),
        (aiohttp.SocketTimeoutError, PollTimeoutError, "read timeout"),
        (aiohttp.ServerTimeoutError, PollTimeoutError, "read timeout"),
        (asyncio.TimeoutError, PollTimeoutError, "read timeout"),
        (_connector_error, ConnectError, "cannot connect to 127.0.0.1:1"),
        (aiohttp.ServerDisconnectedError, ConnectError, "disconnected"),
        (lambda: aiohttp.ClientOSError(104, "reset"), ConnectError, "connection failed"),
        (lambda: aiohttp.ClientPayloadError("cut"), ConnectError, "cut short"),
        (lambda: ConnectionResetError(104, "reset"), ConnectError, "connection failed"),
    ],
)
def test_translate_errors(
    make: Callable[[], Exception], expected: type[Exception], match: str
) -> None:
    """Each aiohttp/socket error becomes its watcher class, with the original as the cause."""
    original = make()
    with pytest.raises(expected, match=match) as info, translate_errors("GET task 't'"):
        raise original
    assert info.value.__cause__ is original


def test_translate_errors_leaves_our_errors_alone() -> None:
    """Errors that are already watcher errors pass through unchanged."""
    original = MalformedResponseError("bad")
    with pytest.raises(MalformedResponseError) as info, translate_errors("x"):
        raise original
    assert info.value is original


def test_unreadable_ca_file_is_config_error(tmp_path: Path) -> None:
    """A ca_file that cannot be loaded is a ConfigError naming the key, at construction."""
    config = make_config("https://127.0.0.1:9", ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError) as info:
        MetaStudioSource("main", config)
    assert info.value.issues[0].path == "sources.main.ca_file"
