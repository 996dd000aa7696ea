"""A loopback webhook receiver for the sink tests: scripted answers, every request recorded."""

from __future__ import annotations

import inspect
import json
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import anyio
from aiohttp import web

from watcher.config import WebhookSinkConfig

SECRET = "whsec_" + "c2luay10ZXN0LXNpZ25pbmcta2V5LTAxMjM0NTY3ODk="  # "sink-test-signing-key-..."


@dataclass(frozen=True)
class Call:
    """One request as the receiver saw it."""

    number: int  # 1-based
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    at: float  # on the receiver's clock

    @property
    def event(self) -> Any:
        return json.loads(self.body)


Answer = Callable[[Call], "web.StreamResponse | Awaitable[web.StreamResponse]"]


def status(code: int, *, text: str = "", **headers: str) -> web.Response:
    return web.Response(status=code, text=text, headers=headers)


def fail_first(n: int, code: int = 503, **headers: str) -> Answer:
    """503 (or ``code``) for the first ``n`` calls, then 200."""
    return lambda call: status(code, **headers) if call.number <= n else status(200)


class Receiver:
    """An aiohttp server on 127.0.0.1:<ephemeral>; ``answer(call)`` makes each response.

    ``hold()`` inside an answer blocks that response until the receiver closes, to simulate
    a receiver that never answers.
    """

    def __init__(
        self,
        answer: Answer | None = None,
        *,
        now: Callable[[], float] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ):
        self._answer: Answer = answer or (lambda call: status(200))
        self._now = now or time.monotonic
        self._ssl = ssl_context
        self.calls: list[Call] = []
        self._runner: web.AppRunner | None = None
        self._released = anyio.Event()
        self.url = ""

    async def hold(self) -> web.Response:
        await self._released.wait()
        return status(200)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        call = Call(
            number=len(self.calls) + 1,
            path=request.path_qs,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=await request.read(),
            at=self._now(),
        )
        self.calls.append(call)
        response = self._answer(call)
        if inspect.isawaitable(response):
            response = await response
        return response

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        scheme = "https" if self._ssl is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()


def webhook_config(url: str, **overrides: Any) -> WebhookSinkConfig:
    values: dict[str, Any] = {"type": "webhook", "url": url, "secret": SECRET, "timeout": 5.0}
    values.update(overrides)
    return WebhookSinkConfig.model_validate(values)


def event(n: int, **extra: Any) -> dict[str, Any]:
    """A small task.finished event with a distinct id."""
    return {
        "event_id": f"00000000-0000-0000-0000-{n:012d}",
        "event": "task.finished",
        "task_id": f"task-{n}",
        "source": "main",
        "outcome": "succeeded",
        "labels": {"note": "résumé ✓"},
        **extra,
    }
