"""A lean MetaStudio endpoint for the throughput benchmark: canned bodies, no verification.

The built-in simulator verifies every AK/SK signature, keeps per-tenant rate windows and
statistics, and goes through aiohttp's server: it tops out near the client's own speed, so it
cannot show the client's ceiling. This server answers ``GET .../ies/task/{id}`` with the body
of a running task (API.md's documented form, the id echoed back so the source accepts it) on
raw asyncio protocol callbacks. It never checks the signature: signing cost stays on the
client, which is what is measured.

With ``--spin`` its event loop never sleeps. A server idle in ``epoll_wait`` has to be woken
for every request, and in a VM that wake-up is charged to the client's core (tens of µs per
request here), which a remote endpoint would never cost the client. Its core then shows
100 % busy, so ``GET /_stats`` reports the time actually spent answering requests.

    python benchmarks/endpoint.py [--port 0] [--spin]   # prints the port, serves until SIGTERM
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import sys
import time
from typing import cast
from urllib.parse import unquote

_BODY = (
    '{"resource":"knowledge-intent-question-create","task_name":"Imported Q&A pairs.",'
    '"begin_time":1744276967708,"end_time":null,"task_type":0,"operator":"adminUserAccount",'
    '"total_count":3,"success_count":1,"failure_count":0,"task_status":1,'
    '"task_id":"%s","user_id":"246748d3d76b4779aea38c201a284810"}'
)
_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b"X-Request-Id: 00000000000000000000000000000001\r\nContent-Length: %d\r\n\r\n"
)
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
_STATS = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"

# Seconds spent in the request handler (writes included) and requests answered, for /_stats.
_work = {"seconds": 0.0, "requests": 0}


class _Http(asyncio.Protocol):
    """HTTP/1.1 keep-alive, GET only (no request bodies), answers in request order."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = cast("asyncio.Transport", transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Without it, small answers wait for the client's delayed ACK (~40 ms each).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        start = time.perf_counter()
        self._answer(data)
        _work["seconds"] += time.perf_counter() - start

    def _answer(self, data: bytes) -> None:
        buffer = self._buffer + data
        out: list[bytes] = []
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head, buffer = buffer[:end], buffer[end + 4 :]
            target = head[: head.find(b"\r\n")].split(b" ", 2)[1].decode("latin-1")
            path = target.partition("?")[0]
            if path == "/_stats":
                stats = json.dumps(_work).encode()
                out.append(_STATS % len(stats) + stats)
                continue
            _work["requests"] += 1
            if "/ies/task/" not in path:
                out.append(_NOT_FOUND)
                continue
            body = (_BODY % unquote(path.rpartition("/")[2]).replace('"', "")).encode()
            out.append(_HEAD % len(body) + body)
        self._buffer = buffer
        if out and self._transport is not None:
            self._transport.write(b"".join(out))


async def _serve(port: int, spin: bool) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Http, "127.0.0.1", port, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    while spin and not stop.is_set():  # noqa: ASYNC110 - spinning is the point
        await asyncio.sleep(0)  # a turn of the loop with a zero-timeout poll
    await stop.wait()
    server.close()  # and go: waiting for keep-alive connections to close could take forever


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--spin", action="store_true", help="never sleep in the event loop")
    args = parser.parse_args(argv)
    runner: object = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run
    runner(_serve(args.port, args.spin))  # type: ignore[operator]


if __name__ == "__main__":
    sys.exit(main())
