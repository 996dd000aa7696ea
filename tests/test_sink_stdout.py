"""The stdout sink: one JSON line per event, flushed at once."""

from __future__ import annotations

import io
import json
import os
from typing import BinaryIO, TextIO

import pytest
from _sink_receiver import event

from watcher.sinks import DeliveryError, StdoutSink

pytestmark = pytest.mark.anyio


def pipe() -> tuple[BinaryIO, TextIO]:
    """A non-blocking reader and a writer with a large buffer, over one OS pipe."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    return open(read_fd, "rb", buffering=0), open(write_fd, "w", encoding="utf-8", buffering=65536)


async def test_each_event_is_flushed_through_a_pipe_at_once() -> None:
    """A reader on the other end of a buffered pipe sees every line as soon as it is sent."""
    reader, writer = pipe()
    with reader, writer:
        sink = StdoutSink(stream=writer)
        for n in (1, 2):
            await sink.deliver(event(n))
            got = reader.read(65536)
            assert got is not None
            assert json.loads(got.decode("utf-8")) == event(n)
            assert got.endswith(b"\n") and got.count(b"\n") == 1
        await sink.aclose()


async def test_default_stream_is_sys_stdout_at_write_time(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without a stream the sink writes to whatever sys.stdout is when it delivers."""
    sink = StdoutSink("out")
    await sink.deliver(event(1))
    out = capsys.readouterr().out
    assert out == json.dumps(event(1), ensure_ascii=False, separators=(",", ":")) + "\n"


async def test_a_stream_that_cannot_encode_gets_escaped_json() -> None:
    """On an ASCII-only stream, non-ASCII text is \\u-escaped: same JSON, still one line."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii")
    sink = StdoutSink(stream=stream)
    await sink.deliver(event(1))
    data = raw.getvalue()
    assert data.isascii() and data.count(b"\n") == 1
    assert json.loads(data) == event(1)


async def test_a_closed_stream_is_a_retryable_error() -> None:
    """Writing to a closed stream raises DeliveryError (the runner retries)."""
    stream = io.StringIO()
    stream.close()
    with pytest.raises(DeliveryError) as caught:
        await StdoutSink(stream=stream).deliver(event(1))
    assert caught.value.retryable


async def test_unserialisable_event_is_not_retryable() -> None:
    """NaN is not JSON: the event can never be written."""
    with pytest.raises(DeliveryError) as caught:
        await StdoutSink(stream=io.StringIO()).deliver({"v": float("nan")})
    assert not caught.value.retryable
