"""The ``webhook`` sink: POST each event as JSON, signed per Standard Webhooks.

Every attempt carries ``webhook-id`` (the event id, the same on every retry, so receivers
dedupe), ``webhook-timestamp`` (this attempt's unix seconds) and, with a ``secret``,
``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, so a receiver
verifies with any stock Standard Webhooks library. Neither the URL's path or query (Slack-style
URLs hold their secret there) nor a header value ever appears in an error or a log line.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
from multidict import CIMultiDict
from standardwebhooks.webhooks import Webhook
from yarl import URL

from .._exceptions import (
    ClosedError,
    ConfigError,
    ConfigIssue,
    ConnectError,
    PermanentError,
    PollTimeoutError,
    SourceError,
)
from ..config._schema import WebhookSinkConfig
from ..sources._http import USER_AGENT, parse_retry_after, read_bounded, translate_errors
from .base import DeliveryError
from .file import dumps_event

__all__ = ["RESPONSE_LIMIT", "RETRYABLE_STATUSES", "WebhookSink"]

# The response body only matters for an error message; the rest is never read.
RESPONSE_LIMIT = 4096
# 4xx answers that mean "not now" rather than "never" (timeout, conflict, too early, throttled).
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})
_SNIPPET = 200


class WebhookSink:
    """POST events to ``config.url``; 2xx is delivered, anything else raises ``DeliveryError``.

    5xx, 408/409/425/429, 1xx/3xx (redirects are not followed), timeouts and network errors
    are retryable (with ``retry_after`` from ``Retry-After``); other 4xx are not. ``wall``
    gives the epoch seconds for ``webhook-timestamp`` (receivers compare it with their clock,
    so it is real time even when the runner runs on a fake clock).

    >>> sink = WebhookSink("hook", config)                             # doctest: +SKIP
    >>> await sink.deliver(event); await sink.aclose()                 # doctest: +SKIP
    """

    def __init__(
        self,
        name: str,
        config: WebhookSinkConfig,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._config = config
        self._wall = wall
        url = URL(config.url)
        self._url = url
        self._where = f"{url.scheme}://{url.host}:{url.port}"  # never the path or query
        self._what = f"POST to webhook {name!r} at {self._where}"
        self._signer = _signer_for(config, name)
        self._ssl = _ssl_for(config, name)
        self._extra = {key: value.get_secret_value() for key, value in config.headers.items()}
        self._secrets = _redactions(config)
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"WebhookSink(name={self.name!r}, at={self._where!r})"

    def _session_now(self) -> aiohttp.ClientSession:
        # Made on first use: a ClientSession belongs to the event loop it is created in.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=4, ssl=self._ssl),
                timeout=aiohttp.ClientTimeout(total=self._config.timeout),
                headers={"User-Agent": USER_AGENT},
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    def headers_for(self, event_id: str, body: bytes, timestamp: int) -> CIMultiDict[str]:
        """The request headers of one attempt: custom ones, then the protocol's (which win)."""
        headers: CIMultiDict[str] = CIMultiDict(self._extra)
        headers["Content-Type"] = "application/json"
        headers["webhook-id"] = event_id
        headers["webhook-timestamp"] = str(timestamp)
        if self._signer is not None:
            when = datetime.fromtimestamp(timestamp, UTC)
            headers["webhook-signature"] = self._signer.sign(event_id, when, body)
        return headers

    async def deliver(self, event: Mapping[str, Any]) -> None:
        if self._closed:
            raise ClosedError(f"webhook sink {self.name!r} is closed")
        event_id = event.get("event_id")
        if not isinstance(event_id, str) or not event_id:
            raise DeliveryError("event has no event_id to send as webhook-id", retryable=False)
        try:
            body = dumps_event(event).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise DeliveryError(
                f"event is not JSON-serialisable ({type(exc).__name__})", retryable=False
            ) from exc
        headers = self.headers_for(event_id, body, int(self._wall()))
        session = self._session_now()
        try:
            with translate_errors(self._what):
                async with session.post(
                    self._url, data=body, headers=headers, allow_redirects=False
                ) as resp:
                    status = resp.status
                    retry_after = resp.headers.get("Retry-After")
                    answer = await read_bounded(resp, RESPONSE_LIMIT, truncate=True)
        except PollTimeoutError as exc:
            message = f"{self._what}: timed out after {self._config.timeout:g}s"
            raise DeliveryError(message) from exc
        except ConnectError as exc:  # its cause names host:port at most
            raise DeliveryError(exc.message) from exc
        except SourceError as exc:
            # Not chained: aiohttp's response and URL errors quote the whole URL.
            raise DeliveryError(
                exc.message, retryable=not isinstance(exc, PermanentError)
            ) from None
        if 200 <= status < 300:
            return
        retryable = status in RETRYABLE_STATUSES or not 400 <= status < 500
        message = f"{self._what}: HTTP {status}"
        snippet = self._snippet(answer)
        if snippet:
            message += f": {snippet}"
        raise DeliveryError(
            message,
            retryable=retryable,
            retry_after=parse_retry_after(retry_after, now=self._wall()) if retryable else None,
        )

    def _snippet(self, body: bytes) -> str:
        """The start of the receiver's answer, printable, with our secrets cut out (a
        receiver might echo the request headers back)."""
        text = body.decode("utf-8", "replace")
        for secret in self._secrets:
            text = text.replace(secret, "***")
        text = "".join(ch if ch.isprintable() else " " for ch in text).strip()
        return text[:_SNIPPET] + ("..." if len(text) > _SNIPPET else "")

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _signer_for(config: WebhookSinkConfig, name: str) -> Webhook | None:
    if config.secret is None:
        return None
    try:
        return Webhook(config.secret.get_secret_value())
    except Exception:  # binascii.Error, EmptyWebhookSecretError: never show the value
        issue = ConfigIssue(f"sinks.{name}.secret", "must be whsec_ followed by base64")
        raise ConfigError([issue]) from None


def _ssl_for(config: WebhookSinkConfig, name: str) -> ssl.SSLContext | bool:
    if not config.verify_tls:
        return False
    if config.ca_file is None:
        return True
    try:
        return ssl.create_default_context(cafile=config.ca_file)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        issue = ConfigIssue(f"sinks.{name}.ca_file", f"cannot load CA file: {reason}")
        raise ConfigError([issue]) from exc


def _redactions(config: WebhookSinkConfig) -> list[str]:
    values = [v.get_secret_value() for v in config.headers.values()]
    if config.secret is not None:
        secret = config.secret.get_secret_value()
        values += [secret, secret.removeprefix("whsec_")]
    # "Bearer <token>": the token alone may be echoed too.
    values += [part for v in list(values) for part in v.split() if len(part) >= 6]
    return sorted({v for v in values if v}, key=len, reverse=True)
