"""The webhook sink against loopback receivers: wire format, signing, status handling, secrets."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest
from _sink_receiver import SECRET, Call, Receiver, event, status, webhook_config
from standardwebhooks import Webhook, WebhookVerificationError

from watcher._exceptions import ClosedError, ConfigError
from watcher.config import (
    FileSinkConfig,
    PluginSinkConfig,
    StdoutSinkConfig,
    config_from_dict,
)
from watcher.sinks import (
    DeliveryError,
    FileSink,
    Sink,
    StdoutSink,
    WebhookSink,
    build_sink,
    dumps_event,
)

pytestmark = pytest.mark.anyio

HEADER_TOKEN = "hdr-Tok3n-very-private-77"
PATH_TOKEN = "PathSecretXYZ123"


async def test_event_is_posted_as_signed_json() -> None:
    """The body is the event's JSON and the signature verifies with the stock library."""
    async with Receiver() as rx:
        sink = WebhookSink("hook", webhook_config(rx.url))
        before = int(time.time())
        await sink.deliver(event(1))
        await sink.aclose()
    (call,) = rx.calls
    assert call.body == dumps_event(event(1)).encode("utf-8")
    assert call.headers["content-type"] == "application/json"
    assert call.headers["webhook-id"] == event(1)["event_id"]
    assert before <= int(call.headers["webhook-timestamp"]) <= int(time.time())
    assert call.headers["webhook-signature"].startswith("v1,")
    assert call.headers["user-agent"].startswith("watcher/")
    assert Webhook(SECRET).verify(call.body, call.headers) == event(1)


async def test_signature_fails_with_another_secret_or_body() -> None:
    """A wrong key or a changed body does not verify: the signature covers both."""
    async with Receiver() as rx:
        sink = WebhookSink("hook", webhook_config(rx.url))
        await sink.deliver(event(2))
        await sink.aclose()
    (call,) = rx.calls
    other = "whsec_" + "b3RoZXIta2V5LW9mLXNvbWUtbGVuZ3RoLTEyMzQ1Ng=="
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(call.body, call.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(call.body.replace(b"task-2", b"task-3"), call.headers)


async def test_unsigned_without_a_secret_but_still_identified() -> None:
    """With no secret there is no signature header, but id and timestamp are still sent."""
    async with Receiver() as rx:
        sink = WebhookSink("hook", webhook_config(rx.url, secret=None))
        await sink.deliver(event(3))
        await sink.aclose()
    (call,) = rx.calls
    assert "webhook-signature" not in call.headers
    assert call.headers["webhook-id"] == event(3)["event_id"]
    assert "webhook-timestamp" in call.headers


async def test_custom_headers_are_sent() -> None:
    """Configured headers reach the receiver alongside the protocol's own."""
    async with Receiver() as rx:
        config = webhook_config(
            rx.url, headers={"Authorization": f"Bearer {HEADER_TOKEN}", "X-Team": "infra"}
        )
        sink = WebhookSink("hook", config)
        await sink.deliver(event(4))
        await sink.aclose()
    (call,) = rx.calls
    assert call.headers["authorization"] == f"Bearer {HEADER_TOKEN}"
    assert call.headers["x-team"] == "infra"
    assert Webhook(SECRET).verify(call.body, call.headers) == event(4)


def _config_problem(headers: dict[str, str]) -> str:
    data = {
        "sources": {"m": {"type": "token-less-plugin:Source"}},
        "sinks": [{"type": "webhook", "url": "http://127.0.0.1:9/hook", "headers": headers}],
    }
    with pytest.raises(ConfigError) as caught:
        config_from_dict(data)
    return str(caught.value)


@pytest.mark.parametrize(
    "name", ["webhook-id", "Webhook-Signature", "content-type", "Content-Length", "bad name"]
)
def test_headers_the_sink_owns_or_invalid_names_are_refused(name: str) -> None:
    """Protocol headers cannot be overridden and header names must be HTTP tokens."""
    problem = _config_problem({name: HEADER_TOKEN})
    assert "sinks[0].headers" in problem
    assert HEADER_TOKEN not in problem


def test_header_values_with_newlines_are_refused_without_echoing_them() -> None:
    """A CR/LF in a header value (request splitting) fails config, and is never shown."""
    problem = _config_problem({"X-A": f"{HEADER_TOKEN}\r\nX-B: 1"})
    assert "CR, LF or NUL" in problem
    assert HEADER_TOKEN not in problem


@pytest.mark.parametrize("code", [200, 201, 202, 204])
async def test_any_2xx_is_delivered(code: int) -> None:
    """Every 2xx answer counts as delivered."""
    async with Receiver(lambda call: status(code)) as rx:
        sink = WebhookSink("hook", webhook_config(rx.url))
        await sink.deliver(event(5))
        await sink.aclose()
    assert len(rx.calls) == 1


@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (410, False),
        (422, False),
        (408, True),
        (409, True),
        (425, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (301, True),
    ],
)
async def test_status_decides_whether_to_retry(code: int, retryable: bool) -> None:
    """Retryable: 5xx, 408/409/425/429 and unfollowed redirects; other 4xx are final."""
    answer = (
        (lambda call: status(code, Location="http://127.0.0.1:9/elsewhere"))
        if code == 301
        else (lambda call: status(code, text="nope"))
    )
    async with Receiver(answer) as rx:
        sink = WebhookSink("hook", webhook_config(rx.url))
        with pytest.raises(DeliveryError) as caught:
            await sink.deliver(event(6))
        await sink.aclose()
    assert caught.value.retryable is retryable
    assert f"HTTP {code}" in str(caught.value)
    assert len(rx.calls) == 1  # redirects are not followed


@pytest.mark.parametrize(("code", "value", "seconds"), [(429, "7", 7.0), (503, "120", 120.0)])
async def test_retry_after_is_reported(code: int, value: str, seconds: float) -> None:
    """Retry-After (delta seconds) becomes the error's retry_after."""
    async with Receiver(lambda call: status(code, **{"Retry-After": value})) as rx:
        sink = WebhookSink("hook", webhook_config(rx.url))
        with pytest.raises(DeliveryError) as caught:
            await sink.deliver(event(7))
        await sink.aclose()
    assert caught.value.retry_after == seconds


async def test_retry_after_as_http_date() -> None:
    """An HTTP-date Retry-After is measured from the sink's wall clock."""
    wall = 1_700_000_000.0
    date = "Tue, 14 Nov 2023 22:14:20 GMT"  # 1_700_000_060
    async with Receiver(lambda call: status(503, **{"Retry-After": date})) as rx:
        sink = WebhookSink("hook", webhook_config(rx.url, secret=None), wall=lambda: wall)
        with pytest.raises(DeliveryError) as caught:
            await sink.deliver(event(7))
        await sink.aclose()
    assert caught.value.retry_after == pytest.approx(60.0)
    assert rx.calls[0].headers["webhook-timestamp"] == "1700000000"


async def test_a_huge_error_body_is_cut_short() -> None:
    """Only a few KB of the answer are read and a short, printable piece is reported."""
    async with Receiver(lambda call: status(500, text="E\x07" * 500_000)) as rx:
        sink = WebhookSink("hook", webhook_config(rx.url))
        with pytest.raises(DeliveryError) as caught:
            await sink.deliver(event(8))
        await sink.aclose()
    message = str(caught.value)
    assert "HTTP 500: E E" in message
    assert len(message) < 400
    assert "\x07" not in message


async def test_timeout_is_retryable() -> None:
    """A receiver that never answers costs one timeout and a retryable error."""

    async def hang(call: Call) -> Any:
        return await rx.hold()

    async with Receiver(hang) as rx:
        sink = WebhookSink("hook", webhook_config(rx.url, timeout=0.2))
        started = time.monotonic()
        with pytest.raises(DeliveryError) as caught:
            await sink.deliver(event(9))
        elapsed = time.monotonic() - started
        await sink.aclose()
    assert caught.value.retryable
    assert "timed out after 0.2s" in str(caught.value)
    assert elapsed < 2.0


async def test_connection_refused_is_retryable_and_names_only_the_host() -> None:
    """A closed port is a retryable error whose message shows host:port, never the path."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/services/{PATH_TOKEN}?token={PATH_TOKEN}"
    sink = WebhookSink("hook", webhook_config(url))
    with pytest.raises(DeliveryError) as caught:
        await sink.deliver(event(10))
    await sink.aclose()
    assert caught.value.retryable
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert PATH_TOKEN not in str(caught.value)
    assert PATH_TOKEN not in repr(sink)


async def test_secrets_never_show_in_errors_even_when_echoed() -> None:
    """A receiver echoing our headers back cannot put the secrets into the error message."""

    def echo(call: Call) -> Any:
        return status(400, text=json.dumps(call.headers))

    async with Receiver(echo) as rx:
        config = webhook_config(
            rx.url + f"/{PATH_TOKEN}", headers={"Authorization": f"Bearer {HEADER_TOKEN}"}
        )
        sink = WebhookSink("hook", config)
        with pytest.raises(DeliveryError) as caught:
            await sink.deliver(event(11))
        await sink.aclose()
    text = f"{caught.value} {caught.value!r} {sink!r}"
    assert "authorization" in text  # the echo is there ...
    for secret in (HEADER_TOKEN, SECRET, SECRET.removeprefix("whsec_"), PATH_TOKEN):
        assert secret not in text  # ... without the values


async def test_event_without_id_is_not_retryable() -> None:
    """webhook-id must be the event id; an event without one can never be sent."""
    async with Receiver() as rx:
        sink = WebhookSink("hook", webhook_config(rx.url))
        with pytest.raises(DeliveryError) as caught:
            await sink.deliver({"event": "task.finished"})
        await sink.aclose()
    assert not caught.value.retryable
    assert rx.calls == []


async def test_closed_sink_refuses_and_close_is_idempotent() -> None:
    """After aclose, deliver raises ClosedError; closing twice is fine."""
    sink = WebhookSink("hook", webhook_config("http://127.0.0.1:9/hook"))
    await sink.aclose()
    await sink.aclose()
    with pytest.raises(ClosedError):
        await sink.deliver(event(12))


def test_a_malformed_secret_is_a_config_error_that_hides_it() -> None:
    """A secret that is not whsec_<base64> fails when the sink is built, without showing it."""
    bad = "whsec_!!!not-base64!!!"
    with pytest.raises(ConfigError) as caught:
        WebhookSink("hook", webhook_config("http://127.0.0.1:9/hook", secret=bad))
    assert "sinks.hook.secret" in str(caught.value)
    assert "not-base64" not in str(caught.value)


# --- build_sink -------------------------------------------------------------------------------


class _PluginSink:
    def __init__(self, name: str, config: Any) -> None:
        self.name = name
        self.topic = config.topic

    async def deliver(self, event: Any) -> None:
        return None

    async def aclose(self) -> None:
        return None


def make_plugin(name: str, config: Any) -> Any:
    return _PluginSink(name, config)


def make_nothing(name: str, config: Any) -> Any:
    return object()


def test_build_sink_makes_the_built_ins(tmp_path: Any) -> None:
    """Each built-in config type yields its sink, named as asked."""
    stdout = build_sink(StdoutSinkConfig(type="stdout"), name="out")
    file = build_sink(FileSinkConfig(type="file", path=str(tmp_path / "r.jsonl")), name="f")
    hook = build_sink(webhook_config("http://127.0.0.1:9/hook"), name="h")
    assert isinstance(stdout, StdoutSink) and stdout.name == "out"
    assert isinstance(file, FileSink) and file.name == "f"
    assert isinstance(hook, WebhookSink) and hook.name == "h"
    assert all(isinstance(s, Sink) for s in (stdout, file, hook))


def test_build_sink_loads_a_module_colon_name_plugin() -> None:
    """type: package.module:Name calls that factory with (name, config)."""
    config = PluginSinkConfig.model_validate({"type": f"{__name__}:make_plugin", "topic": "t"})
    sink = build_sink(config, name="kafka")
    assert isinstance(sink, _PluginSink)
    assert (sink.name, sink.topic) == ("kafka", "t")


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("no-such-sink", "unknown sink type"),
        ("no_such_module_xyz:Sink", "cannot load sink"),
        (f"{__name__}:missing", "cannot load sink"),
        (f"{__name__}:make_nothing", "did not return a Sink"),
    ],
)
def test_build_sink_reports_bad_plugins(kind: str, message: str) -> None:
    """Unknown, unloadable or wrong plugins are config errors naming the sink."""
    with pytest.raises(ConfigError) as caught:
        build_sink(PluginSinkConfig(type=kind), name="p")
    assert message in str(caught.value)
    assert "sinks.p.type" in str(caught.value)
