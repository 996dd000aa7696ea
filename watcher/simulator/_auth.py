"""The gateway's authentication: IAM tokens and AK/SK signatures, verified as APIG would.

Signatures are checked by rebuilding the canonical request from what was *received* with
the same helpers the client signer uses (``watcher.sources._signer``), so any change on the
wire after signing (a header, the path, the query, the body) makes verification fail.

Codes (API.md): ``APIGW.0301`` missing or unknown credentials (no token, bad token, unknown
AK, malformed ``Authorization``); ``APIGW.0303`` bad signature (also a locked AK, with its
own message); ``APIGW.0305`` ``X-Sdk-Date`` missing, malformed or too far from the clock;
``APIGW.0307`` token expired or revoked (clients refresh on it).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from ..sources._signer import (
    SDK_DATE_FORMAT,
    canonical_request,
    parse_authorization,
    parse_query,
    payload_hash,
    signature,
    string_to_sign,
)
from ._config import SimulatorConfig

__all__ = ["AuthFailure", "Authenticator", "IssuedToken"]

_HEADER_CONTENT_SHA = "x-sdk-content-sha256"


@dataclass(frozen=True, slots=True)
class AuthFailure:
    """Why a request was refused: always a 401 with an APIGW body."""

    code: str
    message: str
    status: int = 401


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    issued_at: float
    expires_at: float

    def __repr__(self) -> str:
        return f"IssuedToken(token=***, expires_at={self.expires_at})"


_NO_CREDENTIALS = AuthFailure(
    "APIGW.0301", "Incorrect IAM authentication information: no token or signature"
)
_BAD_TOKEN = AuthFailure("APIGW.0301", "Incorrect IAM authentication information: unknown token")
_EXPIRED_TOKEN = AuthFailure("APIGW.0307", "The token expired or was revoked")
_BAD_AUTHORIZATION = AuthFailure(
    "APIGW.0301", "Incorrect IAM authentication information: malformed Authorization header"
)
_UNKNOWN_AK = AuthFailure(
    "APIGW.0301", "Incorrect IAM authentication information: unknown access key"
)
_BAD_SIGNATURE = AuthFailure(
    "APIGW.0303", "Incorrect IAM authentication information: verify aksk signature fail"
)
_BAD_DATE = AuthFailure(
    "APIGW.0305", "Incorrect IAM authentication information: X-Sdk-Date missing or malformed"
)
_OLD_DATE = AuthFailure(
    "APIGW.0305",
    "Incorrect IAM authentication information: signature expired "
    "(X-Sdk-Date more than 15 minutes from server time)",
)
_LOCKED = AuthFailure(
    "APIGW.0303",
    "Incorrect IAM authentication information: access key locked after too many "
    "signature failures; retry in 5 minutes",
)


@functools.lru_cache(maxsize=256)
def _parse_sdk_date(value: str) -> float | None:
    # strptime is slow and a busy client sends the same date all second long: cache it.
    try:
        return datetime.strptime(value, SDK_DATE_FORMAT).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


class Authenticator:
    """Token registry, AK/SK verifier and per-AK lockout.

    Lockout: each failed signature check (bad signature or bad/expired date) counts; when an
    AK's consecutive failures exceed ``lockout_failures`` it is locked for ``lockout_seconds``
    of the monotonic clock, and every request with it answers the lock message, even a
    correctly signed one. A success resets the count.
    """

    __slots__ = ("_config", "_counter", "_failures", "_locked_until", "_static", "_tokens")

    def __init__(self, config: SimulatorConfig) -> None:
        self._config = config
        self._tokens: dict[str, IssuedToken] = {}
        self._static = frozenset(config.tokens)
        self._failures: dict[str, int] = {}
        self._locked_until: dict[str, float] = {}
        self._counter = 0

    # -- tokens -----------------------------------------------------------------------------

    def issue_token(self, ttl: float | None = None) -> IssuedToken:
        """A new token valid for ``ttl`` seconds (default: ``token_ttl``) of the wall clock."""
        self._counter += 1
        seed = f"{self._config.seed}\x00token\x00{self._counter}".encode()
        # Real tokens are long opaque base64 blobs starting with "MII"; the shape is enough.
        raw = hashlib.sha512(seed).digest() * 2
        token = "MII" + base64.urlsafe_b64encode(raw).decode().rstrip("=")
        now = self._config.clock()
        issued = IssuedToken(token, now, now + (ttl if ttl is not None else self._config.token_ttl))
        self._tokens[token] = issued
        return issued

    def revoke_token(self, token: str) -> None:
        """Revoke a token: from now on it answers ``APIGW.0307``."""
        issued = self._tokens.get(token)
        if issued is not None:
            self._tokens[token] = IssuedToken(token, issued.issued_at, float("-inf"))

    def check_token(self, token: str | None) -> AuthFailure | None:
        if not token:
            return _NO_CREDENTIALS
        if token in self._static:
            return None
        issued = self._tokens.get(token)
        if issued is None:
            return _BAD_TOKEN
        if self._config.clock() >= issued.expires_at:
            return _EXPIRED_TOKEN
        return None

    # -- AK/SK ------------------------------------------------------------------------------

    def check_aksk(
        self,
        method: str,
        raw_path: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        clock_skew: float = 0.0,
    ) -> AuthFailure | None:
        """Verify an ``SDK-HMAC-SHA256`` signature against the request as received."""
        parsed = parse_authorization(headers.get("Authorization", ""))
        if parsed is None:
            return _BAD_AUTHORIZATION if "Authorization" in headers else _NO_CREDENTIALS
        ak, signed_headers, received = parsed
        sk = self._config.credentials.get(ak)
        if sk is None:
            return _UNKNOWN_AK
        monotonic = self._config.monotonic()
        locked_until = self._locked_until.get(ak)
        if locked_until is not None:
            if monotonic < locked_until:
                return _LOCKED
            del self._locked_until[ak]
            self._failures.pop(ak, None)
        failure = self._verify(
            method=method,
            raw_path=raw_path,
            headers=headers,
            body=body,
            signed_headers=signed_headers,
            received=received,
            sk=sk,
            clock_skew=clock_skew,
        )
        if failure is None:
            self._failures.pop(ak, None)
            return None
        count = self._failures.get(ak, 0) + 1
        self._failures[ak] = count
        if count > self._config.lockout_failures:
            self._locked_until[ak] = monotonic + self._config.lockout_seconds
        return failure

    def _verify(
        self,
        *,
        method: str,
        raw_path: str,
        headers: Mapping[str, str],
        body: bytes,
        signed_headers: list[str],
        received: str,
        sk: str,
        clock_skew: float,
    ) -> AuthFailure | None:
        date = headers.get("X-Sdk-Date", "")
        signed_at = _parse_sdk_date(date)
        if signed_at is None:
            return _BAD_DATE
        if abs(self._config.clock() + clock_skew - signed_at) > self._config.signature_max_age:
            return _OLD_DATE
        # The gateway insists that the date is part of what was signed.
        if "x-sdk-date" not in signed_headers:
            return _BAD_SIGNATURE
        path, _, query = raw_path.partition("?")
        values = {name: headers.get(name, "") for name in signed_headers}
        body_hash = headers.get(_HEADER_CONTENT_SHA) or payload_hash(body)
        canonical = canonical_request(
            method,
            path,
            query=parse_query(query),
            headers=values,
            signed_headers=signed_headers,
            body_hash=body_hash,
        )
        expected = signature(sk, string_to_sign(date, canonical))
        if not hmac.compare_digest(expected, received):
            return _BAD_SIGNATURE
        return None

    def clear_lockouts(self) -> None:
        self._failures.clear()
        self._locked_until.clear()


def make_checker(
    config: SimulatorConfig, auth: Authenticator
) -> Callable[[str, str, Mapping[str, str], bytes, float], AuthFailure | None] | None:
    """The check for ``config.auth``, or None when auth is off (the hot path then skips it)."""
    mode = config.auth
    if mode == "none":
        return None

    def check(
        method: str, raw_path: str, headers: Mapping[str, str], body: bytes, skew: float
    ) -> AuthFailure | None:
        if mode == "aksk" or (mode == "any" and "Authorization" in headers):
            return auth.check_aksk(method, raw_path, headers, body, clock_skew=skew)
        return auth.check_token(headers.get("X-Auth-Token"))

    return check
