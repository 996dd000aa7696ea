"""Talking to a running daemon (``watcher add``, ``watcher status``): where, with what token,
and what each failure means as an exit status.

Exit codes (sysexits.h): 0 ok, 64 usage, 65 the daemon refused the data (invalid ids, a
400/413), 66 no such task or batch (404), 69 the daemon is unreachable or unavailable
(connection refused, timeout, 503), 76 the daemon answered something unexpected, 77 the token
was refused (401), 78 configuration error (no token anywhere).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Any, NoReturn

import aiohttp
import click

from ._exit import EX_CONFIG, EX_USAGE

__all__ = [
    "EX_DATAERR",
    "EX_NOINPUT",
    "EX_NOPERM",
    "EX_PROTOCOL",
    "EX_UNAVAILABLE",
    "ClientError",
    "DaemonClient",
    "Endpoint",
    "config_options",
    "fail",
    "resolve_endpoint",
]

EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_PROTOCOL = 76
EX_NOPERM = 77

URL_ENV = "WATCHER_URL"
TOKEN_ENV = "WATCHER_API_TOKEN"  # noqa: S105 - a variable name
DEFAULT_URL = "http://127.0.0.1:8787"
_TIMEOUT = 60.0


class ClientError(Exception):
    """A request that did not succeed, with the exit status it maps to."""

    def __init__(self, code: int, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.body = code, message, body


def fail(code: int, message: str) -> NoReturn:
    click.echo(f"watcher: {message}", err=True)
    sys.exit(code)


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    token: str = ""

    def __repr__(self) -> str:  # the token never shows
        return f"Endpoint(url={self.url!r})"


def _url_from_listen(listen: str) -> str:
    host, _, port = listen.rpartition(":")
    if port == "0":
        fail(EX_USAGE, f"api.listen is {listen} (a random port): pass --url or set ${URL_ENV}")
    bare = host.strip("[]")
    bare = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(bare, bare)  # noqa: S104
    return f"http://[{bare}]:{port}" if ":" in bare else f"http://{bare}:{port}"


def resolve_endpoint(config_path: str | None, url: str | None) -> Endpoint:
    """The daemon's URL: ``--url``/``$WATCHER_URL``, else the config's ``api.listen``, else
    127.0.0.1:8787. The token: the config's ``api.token``, else ``$WATCHER_API_TOKEN`` (the
    same rule as the daemon's, so a shared config just works)."""
    token = ""
    listen_url = None
    if config_path is not None:
        from ._wait import load_config_or_exit

        config = load_config_or_exit(config_path)
        listen_url = _url_from_listen(config.api.listen) if url is None else None
        if config.api.token is not None:
            token = config.api.token.get_secret_value().strip()
    token = token or os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        fail(EX_CONFIG, f"no API token: set ${TOKEN_ENV}, or pass -c CONFIG with api.token")
    chosen = (url or listen_url or DEFAULT_URL).rstrip("/")
    authority = chosen.split("://", 1)[-1].split("/", 1)[0]
    if "@" in authority:
        # Never echoed: the userinfo holds a password. (aiohttp would refuse to send it
        # beside the Authorization header anyway, with a traceback.)
        fail(
            EX_USAGE,
            "the daemon URL must not hold credentials (user:password@); "
            f"the API token is what authenticates (${TOKEN_ENV} or api.token)",
        )
    if not chosen.startswith(("http://", "https://")):
        fail(EX_USAGE, f"the daemon URL must start with http:// or https://, not {chosen[:40]!r}")
    return Endpoint(chosen, token)


def config_options(command: Any) -> Any:
    """``-c/--config``, ``--url`` and ``--json``, shared by the client commands."""
    command = click.option(
        "--json", "as_json", is_flag=True, help="Print the daemon's JSON answer instead of text."
    )(command)
    command = click.option(
        "--url",
        envvar=URL_ENV,
        metavar="URL",
        help=f"The daemon, e.g. http://127.0.0.1:8787 (or ${URL_ENV}; default: from the config).",
    )(command)
    return click.option(
        "-c",
        "--config",
        "config_path",
        envvar="WATCHER_CONFIG",
        metavar="CONFIG",
        help="Config file whose api.listen and api.token to use (or $WATCHER_CONFIG).",
    )(command)


def _message(body: Any, status: int) -> str:
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        text: str = body["message"]
        for detail in body.get("details") or []:
            if isinstance(detail, dict):
                text += f"\n  {detail.get('loc')}: {detail.get('msg')}"
        return text
    return f"HTTP {status}"


class DaemonClient:
    """One session to the daemon; ``await client.request(...)`` returns the decoded JSON."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> DaemonClient:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=_TIMEOUT),
            headers={"Authorization": f"Bearer {self.endpoint.token}"},
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self, method: str, path: str, *, body: Any = None, query: dict[str, str] | None = None
    ) -> Any:
        assert self._session is not None
        url = self.endpoint.url + path
        where = self.endpoint.url
        try:
            async with self._session.request(
                method, url, json=body, params=query, allow_redirects=False
            ) as response:
                status = response.status
                raw = await response.read()
        except aiohttp.ClientConnectorError as exc:
            reason = exc.os_error.strerror or str(exc.os_error)
            raise ClientError(
                EX_UNAVAILABLE,
                f"cannot reach the daemon at {where} ({reason}); is `watcher run` up?",
            ) from None
        except TimeoutError:
            raise ClientError(
                EX_UNAVAILABLE, f"the daemon at {where} did not answer in time"
            ) from None
        except aiohttp.ClientError as exc:
            raise ClientError(
                EX_UNAVAILABLE, f"talking to the daemon at {where} failed: {exc}"
            ) from None
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            raise ClientError(
                EX_PROTOCOL, f"the daemon at {where} answered {status} with non-JSON"
            ) from None
        if 200 <= status < 300:
            return decoded
        message = _message(decoded, status)
        if status == 401:
            raise ClientError(EX_NOPERM, f"the daemon refused the API token: {message}", decoded)
        if status == 404:
            raise ClientError(EX_NOINPUT, message, decoded)
        if status in (400, 413, 422):
            raise ClientError(EX_DATAERR, message, decoded)
        if status in (502, 503, 504):
            raise ClientError(EX_UNAVAILABLE, f"the daemon is unavailable: {message}", decoded)
        raise ClientError(
            EX_PROTOCOL, f"unexpected answer {status} from the daemon: {message}", decoded
        )
