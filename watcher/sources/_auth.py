"""Credentials for HTTP sources: a static token, AK/SK signing, or an IAM password token.

Every provider keeps its secrets out of ``repr`` and out of every exception it raises.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

import aiohttp
import anyio

from .._exceptions import (
    AuthError,
    MalformedResponseError,
    RateLimitedError,
    ServerError,
    SourceError,
)
from .._models import to_utc
from ..config._schema import AkSkAuth, IamPasswordAuth, TokenAuth
from ._http import error_for_response, loads_json, send
from ._signer import AkSkSigner, sdk_date

__all__ = [
    "AkSkProvider",
    "AuthProvider",
    "IamPasswordProvider",
    "TokenProvider",
    "make_auth",
]

HEADER_TOKEN = "X-Auth-Token"  # noqa: S105 - a header name, not a secret
# API.md: an IAM token is valid for 24 hours; assumed when IAM does not say.
DEFAULT_TOKEN_LIFETIME = 24 * 3600.0


@runtime_checkable
class AuthProvider(Protocol):
    """Adds credentials to requests.

    The caller guarantees: ``apply`` is called for every attempt (so signatures and dates are
    fresh), with the final URL (already percent-encoded) and body; ``on_unauthorized`` is
    called at most once per request, with the error and the headers ``apply`` returned for
    it; calls may be concurrent; ``aclose`` is called once, after the last request.
    """

    async def apply(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> tuple[str, dict[str, str]]:
        """Return the URL and headers to send."""
        ...

    async def on_unauthorized(self, error: AuthError, sent: Mapping[str, str]) -> bool:
        """The API refused the credentials in ``sent``; True if fresh ones are ready to retry."""
        ...

    async def aclose(self) -> None: ...


class TokenProvider:
    """A static token in ``X-Auth-Token``; nothing to refresh."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "TokenProvider(token=***)"

    async def apply(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> tuple[str, dict[str, str]]:
        return url, {**headers, HEADER_TOKEN: self._token}

    async def on_unauthorized(self, error: AuthError, sent: Mapping[str, str]) -> bool:
        return False

    async def aclose(self) -> None:
        return None


class AkSkProvider:
    """Signs every request with ``SDK-HMAC-SHA256`` (a fresh ``X-Sdk-Date`` each time).

    ``clock`` (epoch seconds) dates the signatures. The signed ``Host`` is the URL's netloc
    and is sent as an explicit header, so what aiohttp puts on the wire is exactly what was
    signed. A refused signature is never retried: more than five failures in a row lock the
    AK for five minutes.
    """

    def __init__(self, signer: AkSkSigner, *, clock: Callable[[], float] | None = None) -> None:
        self._signer = signer
        self._clock = clock or time.time
        self._date_second = math.nan  # the whole second `_date` was formatted for
        self._date = ""

    def __repr__(self) -> str:
        return f"AkSkProvider({self._signer!r})"

    async def apply(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> tuple[str, dict[str, str]]:
        # X-Sdk-Date has whole seconds: format it once per second, not once per request.
        second = math.floor(self._clock())
        if second != self._date_second:
            self._date = sdk_date(datetime.fromtimestamp(second, UTC))
            self._date_second = second
        signed = self._signer.sign(method, url, headers=headers, body=body, date=self._date)
        return signed.url, signed.headers

    async def on_unauthorized(self, error: AuthError, sent: Mapping[str, str]) -> bool:
        return False

    async def aclose(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    expires: float  # on the provider's clock
    lifetime: float
    generation: int


SessionGetter = Callable[[], aiohttp.ClientSession]


class IamPasswordProvider:
    """A token from IAM (user, password, domain), cached and refreshed ahead of expiry.

    Single flight: however many requests need a token at once, one IAM request is in flight;
    requests that queued behind a refresh reuse its token (the generation counter tells them
    a refresh already happened). Expiry is measured as IAM's ``expires_at - issued_at`` from
    the moment the token arrived, so a skewed local clock does not shorten or stretch it.
    """

    def __init__(
        self,
        config: IamPasswordAuth,
        *,
        session: SessionGetter,
        max_body_bytes: int,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._config = config
        self._session = session
        self._max_body_bytes = max_body_bytes
        self._clock = clock or time.time
        self._url = f"{config.iam_endpoint}/v3/auth/tokens"
        self._lock = anyio.Lock()
        self._token: _Token | None = None
        self._generation = 0

    def __repr__(self) -> str:
        return (
            f"IamPasswordProvider(iam_endpoint={self._config.iam_endpoint!r}, "
            f"user={self._config.user!r}, domain={self._config.domain!r}, password=***)"
        )

    async def apply(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> tuple[str, dict[str, str]]:
        token = await self._current(stale=None)
        return url, {**headers, HEADER_TOKEN: token.value}

    async def on_unauthorized(self, error: AuthError, sent: Mapping[str, str]) -> bool:
        current = self._token
        # Only the token that was refused is stale; if it was already replaced, reuse that.
        stale = current.generation if current and current.value == sent.get(HEADER_TOKEN) else None
        await self._current(stale=stale)
        return True

    async def aclose(self) -> None:
        self._token = None

    def _usable(self, token: _Token | None, stale: int | None) -> bool:
        if token is None or token.generation == stale:
            return False
        # Never refresh more often than every half lifetime, even with a long refresh_ahead.
        ahead = min(self._config.refresh_ahead, token.lifetime / 2)
        return self._clock() < token.expires - ahead

    async def _current(self, *, stale: int | None) -> _Token:
        token = self._token
        if self._usable(token, stale):
            assert token is not None
            return token
        async with self._lock:
            token = self._token
            if self._usable(token, stale):  # refreshed while we queued for the lock
                assert token is not None
                return token
            token = await self._issue()
            self._token = token
            return token

    def _request_body(self) -> bytes:
        cfg = self._config
        auth: dict[str, object] = {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": cfg.user,
                        "password": cfg.password.get_secret_value(),
                        "domain": {"name": cfg.domain},
                    }
                },
            }
        }
        if cfg.project is not None:
            auth["scope"] = {"project": {"name": cfg.project}}
        return json.dumps({"auth": auth}).encode("utf-8")

    async def _issue(self) -> _Token:
        what = "IAM token request"
        resp = await send(
            self._session(),
            "POST",
            self._url,
            what=what,
            headers={"Content-Type": "application/json;charset=utf8"},
            body=self._request_body(),
            max_body_bytes=self._max_body_bytes,
        )
        if resp.status not in (200, 201):
            raise error_for_response(resp, what=what, classify=_classify_iam)
        value = (resp.headers.get("X-Subject-Token") or "").strip()
        if not value or not value.isascii() or not value.isprintable():
            raise MalformedResponseError(
                f"{what}: no usable X-Subject-Token header",
                status=resp.status,
                request_id=resp.request_id,
            )
        now = self._clock()
        lifetime = _lifetime(resp.body, now)
        self._generation += 1
        return _Token(value, now + lifetime, lifetime, self._generation)


def _classify_iam(status: int, code: str | None) -> type[SourceError] | None:
    # A refused login, and also a wrong IAM URL (404) or a bad request, are credential or
    # config problems: pause the source loudly. Never PermanentError, which would end tasks.
    if status == 429:
        return RateLimitedError
    if status in (408, 409, 425) or status >= 500 or status < 400:
        return ServerError
    return AuthError


def _lifetime(body: bytes, now: float) -> float:
    """Seconds the token lives, from ``token.expires_at`` (and ``issued_at`` when given)."""
    try:
        data = loads_json(body)
        token = data.get("token") if isinstance(data, dict) else None
        if not isinstance(token, dict):
            return DEFAULT_TOKEN_LIFETIME
        expires: datetime | None = to_utc(token.get("expires_at"), name="expires_at")
        issued: datetime | None = to_utc(token.get("issued_at"), name="issued_at")
    except MalformedResponseError:
        return DEFAULT_TOKEN_LIFETIME
    if expires is None:
        return DEFAULT_TOKEN_LIFETIME
    start = issued.timestamp() if issued is not None else now
    return max(expires.timestamp() - start, 0.0)


def make_auth(
    config: TokenAuth | AkSkAuth | IamPasswordAuth,
    *,
    project_id: str | None,
    session: SessionGetter,
    max_body_bytes: int,
    clock: Callable[[], float] | None = None,
) -> AuthProvider:
    """The provider for an ``auth:`` config block."""
    if isinstance(config, TokenAuth):
        return TokenProvider(config.token.get_secret_value())
    if isinstance(config, AkSkAuth):
        security = config.security_token.get_secret_value() if config.security_token else None
        signer = AkSkSigner(
            config.ak,
            config.sk.get_secret_value(),
            project_id=project_id,
            security_token=security,
        )
        return AkSkProvider(signer, clock=clock)
    return IamPasswordProvider(config, session=session, max_body_bytes=max_body_bytes, clock=clock)
