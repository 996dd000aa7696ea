"""HTTP plumbing shared by the HTTP sources: one session, bounded reads, typed errors.

``aiohttp`` errors are translated here, where they enter, into the ``SourceError`` tree
(``raise ... from`` keeps the cause). Nothing here ever puts a header value, a URL query or a
body into an exception message, so secrets cannot leak through errors.
"""

from __future__ import annotations

import json
import math
import re
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from .._exceptions import (
    AuthError,
    ConfigError,
    ConfigIssue,
    ConnectError,
    MalformedResponseError,
    PermanentError,
    PollTimeoutError,
    RateLimitedError,
    ServerError,
    SourceError,
)
from .._version import __version__
from ..config._schema import HttpClientConfig

__all__ = [
    "ERROR_BODY_LIMIT",
    "MAX_JSON_DEPTH",
    "MAX_RETRY_AFTER",
    "USER_AGENT",
    "ApiErrorBody",
    "Classifier",
    "HttpResponse",
    "error_for_response",
    "loads_json",
    "make_session",
    "parse_error_body",
    "parse_retry_after",
    "read_bounded",
    "send",
    "ssl_for",
    "status_error_class",
    "translate_errors",
]

USER_AGENT = f"watcher/{__version__}"
# A server may ask for a long pause, but an hour is the most we believe without a human.
MAX_RETRY_AFTER = 3600.0
# Error bodies are small JSON objects; anything past this is cut (the status still classifies).
ERROR_BODY_LIMIT = 64 * 1024
# Task bodies are flat; deeper nesting is garbage and would only strain later serialisation.
MAX_JSON_DEPTH = 32
# Huawei IAM tokens travel in a response header and can exceed aiohttp's 8 KiB default.
_MAX_HEADER_FIELD = 64 * 1024
_CHUNK = 64 * 1024
_MAX_TEXT = 500
_DIGITS = re.compile(r"[0-9]+(?:\.[0-9]+)?")

Classifier = Callable[[int, str | None], type[SourceError] | None]
"""Maps (HTTP status, API error code) to an error class, or None to use the status alone."""


def ssl_for(config: HttpClientConfig, *, where: str = "") -> ssl.SSLContext | bool:
    """The ``ssl`` argument for aiohttp: verified by default, a CA file if given, off on request."""
    if not config.verify_tls:
        return False
    if config.ca_file is None:
        return True  # aiohttp's default, verified context
    try:
        return ssl.create_default_context(cafile=config.ca_file)
    except (OSError, ssl.SSLError) as exc:
        path = f"{where}.ca_file" if where else "ca_file"
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ConfigError([ConfigIssue(path, f"cannot load CA file: {reason}")]) from exc


def make_session(
    config: HttpClientConfig,
    *,
    ssl_context: ssl.SSLContext | bool | None = None,
    headers: Mapping[str, str] | None = None,
) -> aiohttp.ClientSession:
    """One session per source: bounded pool, connect and read timeouts, no cookies."""
    connector = aiohttp.TCPConnector(
        limit=config.max_connections,
        ssl=ssl_for(config) if ssl_context is None else ssl_context,
    )
    timeout = aiohttp.ClientTimeout(
        total=None, connect=config.connect_timeout, sock_read=config.read_timeout
    )
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        headers={"User-Agent": USER_AGENT, **(headers or {})},
        # An API client has no use for cookies, and a shared jar would mix tenants' state.
        cookie_jar=aiohttp.DummyCookieJar(),
        max_field_size=_MAX_HEADER_FIELD,
    )
    # aiohttp silently resends an idempotent request once when the connection drops: a
    # second request the rate limiter never granted, so dropped connections would push the
    # API over its budget. The scheduler retries, with a token and backoff. There is no
    # public switch (aio-libs/aiohttp#10790); aiohttp's own TestClient sets the same field.
    session._retry_connection = False
    return session


@contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn aiohttp and socket errors into ``SourceError`` subclasses, keeping the cause.

    ``what`` names the operation (e.g. ``"GET task 'abc'"``); it must hold no secret.
    """
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        raise PollTimeoutError(f"{what}: connect timeout") from exc
    except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
        # ServerTimeoutError is also an asyncio.TimeoutError; both mean the read timed out.
        raise PollTimeoutError(f"{what}: read timeout") from exc
    except aiohttp.ClientPayloadError as exc:
        raise ConnectError(f"{what}: response body cut short") from exc
    except aiohttp.ClientConnectorError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConnectError(f"{what}: cannot connect to {exc.host}:{exc.port}: {reason}") from exc
    except aiohttp.ServerDisconnectedError as exc:
        raise ConnectError(f"{what}: server disconnected") from exc
    except aiohttp.ClientConnectionError as exc:
        raise ConnectError(f"{what}: connection failed ({type(exc).__name__})") from exc
    except (aiohttp.ClientResponseError, HttpProcessingError) as exc:
        raise MalformedResponseError(f"{what}: invalid HTTP response") from exc
    except aiohttp.InvalidURL as exc:
        raise PermanentError(f"{what}: invalid URL") from exc
    except aiohttp.ClientError as exc:
        raise ConnectError(f"{what}: request failed ({type(exc).__name__})") from exc
    except OSError as exc:
        raise ConnectError(f"{what}: connection failed ({type(exc).__name__})") from exc


async def read_bounded(
    resp: aiohttp.ClientResponse, limit: int, *, truncate: bool = False
) -> bytes:
    """Read at most ``limit`` bytes of the body, never buffering more than that.

    Too large: ``MalformedResponseError``, or with ``truncate`` the first ``limit`` bytes.
    Either way the connection is closed rather than drained, so the rest is never read.
    """
    declared = resp.content_length
    if declared is not None and declared > limit and not truncate:
        resp.close()
        raise MalformedResponseError(f"body of {declared} bytes is over the {limit} byte limit")
    chunks: list[bytes] = []
    total = 0
    while True:
        # Ask for one byte past the limit: that is how we know it was exceeded.
        chunk = await resp.content.read(min(_CHUNK, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            resp.close()
            if truncate:
                chunks.append(chunk[: len(chunk) - (total - limit)])
                return b"".join(chunks)
            raise MalformedResponseError(f"body is over the {limit} byte limit")
        chunks.append(chunk)
        if resp.content.at_eof():
            return b"".join(chunks)  # the usual small body: one read, not two


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A fully read (bounded) response."""

    status: int
    headers: Mapping[str, str]  # aiohttp's case-insensitive multidict
    body: bytes

    @property
    def request_id(self) -> str | None:
        return _clean(self.headers.get("X-Request-Id"))


async def send(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    what: str,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    max_body_bytes: int,
) -> HttpResponse:
    """Send one request with ``url`` exactly as given (already percent-encoded) and read it.

    2xx bodies over ``max_body_bytes`` raise ``MalformedResponseError``; error bodies are cut
    at ``ERROR_BODY_LIMIT`` so the status still yields a typed error. Redirects are never
    followed: they would carry credentials to another place and break signatures.
    """
    with translate_errors(what):
        async with session.request(
            method,
            URL(url, encoded=True),
            headers=dict(headers or {}),
            data=body,
            allow_redirects=False,
        ) as resp:
            if 200 <= resp.status < 300:
                try:
                    data = await read_bounded(resp, max_body_bytes)
                except MalformedResponseError as exc:
                    raise MalformedResponseError(
                        f"{what}: {exc.message}",
                        status=resp.status,
                        request_id=_clean(resp.headers.get("X-Request-Id")),
                    ) from None
            else:
                data = await read_bounded(
                    resp, min(max_body_bytes, ERROR_BODY_LIMIT), truncate=True
                )
            return HttpResponse(resp.status, resp.headers, data)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _depth_ok(value: object, limit: int) -> bool:
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


class _OutOfRange(ValueError):
    """A JSON number beyond any float (``1e400``): an Infinity in disguise."""


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _OutOfRange(text[:40])
    return value


# One decoder for every body: json.loads with a keyword argument would build a new one per call.
# Task bodies carry integers, so parse_float (a Python call per float) costs them nothing.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def loads_json(body: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON strictly (no NaN/Infinity, bounded nesting, valid Unicode) or raise
    MalformedResponseError.

    Non-finite numbers and lone surrogates are refused because no sink can write them: a
    result holding one could never be stored or delivered.
    """
    try:
        if isinstance(body, bytes | bytearray):
            # What json.loads does with bytes (detect UTF-8/16/32, then decode the text),
            # except that encoded surrogates are an error, not text.
            text = body.decode(json.detect_encoding(body))
        else:
            text = body
        value = _DECODER.decode(text)
    except RecursionError:
        raise MalformedResponseError("body is JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, huge numbers, NaN
        why = "a number out of range" if isinstance(exc, _OutOfRange) else type(exc).__name__
        raise MalformedResponseError(f"body is not JSON ({why})") from None
    # Nesting never exceeds the number of opening brackets (those inside strings only add to
    # the count), so the walk is needed only for bodies with many of them.
    if _openers(body) > max_depth and not _depth_ok(value, max_depth):
        raise MalformedResponseError(f"body is JSON nested deeper than {max_depth} levels")
    # Only a \uD8xx-style escape can make a surrogate (a pair of them makes one character).
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedResponseError("body has a string that is not valid Unicode") from None
    return value


def _openers(body: bytes | bytearray | str) -> int:
    if isinstance(body, str):
        return body.count("{") + body.count("[")
    return body.count(b"{") + body.count(b"[")


def _clean(value: object) -> str | None:
    """A server-supplied string, trimmed and bounded; None when empty or not scalar."""
    if value is None or isinstance(value, dict | list | bool):
        return None
    text = "".join(ch if ch.isprintable() else "?" for ch in str(value)[:_MAX_TEXT]).strip()
    return text or None


@dataclass(frozen=True, slots=True)
class ApiErrorBody:
    """What an error body said, as far as it could be read."""

    error_code: str | None = None
    error_msg: str | None = None
    request_id: str | None = None


def parse_error_body(body: bytes) -> ApiErrorBody:
    """Read ``{"error_code", "error_msg", "request_id"}`` (or IAM's ``{"error": {...}}``).

    Never raises: an unreadable body just yields empty fields.
    """
    try:
        data = loads_json(body, max_depth=8)
    except MalformedResponseError:
        return ApiErrorBody()
    if not isinstance(data, dict):
        return ApiErrorBody()
    nested = data.get("error")
    if isinstance(nested, dict) and "error_code" not in data:
        return ApiErrorBody(
            _clean(nested.get("code")),
            _clean(nested.get("message")),
            _clean(data.get("request_id")),
        )
    return ApiErrorBody(
        _clean(data.get("error_code")),
        _clean(data.get("error_msg")),
        _clean(data.get("request_id")),
    )


def parse_retry_after(
    value: str | None, *, now: float | None = None, cap: float = MAX_RETRY_AFTER
) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP-date), capped.

    Garbage, negative or non-finite values give None; a date in the past gives 0.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DIGITS.fullmatch(text):
        # Long digit strings would trip int-parsing limits and are "a long time" anyway.
        seconds = cap if len(text.partition(".")[0]) > 9 else float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        try:
            seconds = when.timestamp() - (time.time() if now is None else now)
        except (OverflowError, OSError, ValueError):
            return None
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), cap)


def status_error_class(status: int) -> type[SourceError]:
    """The error class a status means on its own, when no API code says otherwise."""
    if status == 429:
        return RateLimitedError
    if status in (401, 403):
        return AuthError
    if status in (408, 409, 425):
        return ServerError  # timeouts and conflicts: the same request may work later
    if 400 <= status < 500:
        return PermanentError
    return ServerError  # 5xx, and anything unexpected (1xx, 3xx) is worth another try


def error_for_response(
    resp: HttpResponse,
    *,
    what: str,
    classify: Classifier | None = None,
    now: float | None = None,
) -> SourceError:
    """The typed error for a non-success response; the caller raises it."""
    api = parse_error_body(resp.body)
    cls = (classify(resp.status, api.error_code) if classify else None) or status_error_class(
        resp.status
    )
    reason = api.error_code or f"HTTP {resp.status}"
    fields: dict[str, Any] = {
        "status": resp.status,
        "error_code": api.error_code,
        "error_msg": api.error_msg,
        "request_id": api.request_id or resp.request_id,
    }
    message = f"{what}: {reason}"
    if issubclass(cls, RateLimitedError):
        retry_after = parse_retry_after(resp.headers.get("Retry-After"), now=now)
        return cls(message, retry_after=retry_after, **fields)
    return cls(message, **fields)
