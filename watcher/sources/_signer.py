"""AK/SK request signing (``SDK-HMAC-SHA256``), byte for byte as Huawei Cloud's SDK signs.

The canonicalisation helpers are shared with the simulator, which verifies signatures with
exactly the same rules; ``tests/test_signer.py`` checks every published signing vector.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote, urlsplit, urlunsplit

__all__ = [
    "ALGORITHM",
    "AkSkSigner",
    "SignedRequest",
    "canonical_query",
    "canonical_request",
    "canonical_uri",
    "parse_authorization",
    "parse_query",
    "payload_hash",
    "sdk_date",
    "signature",
    "string_to_sign",
]

ALGORITHM = "SDK-HMAC-SHA256"
SDK_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
HEADER_DATE = "X-Sdk-Date"
HEADER_CONTENT_SHA = "X-Sdk-Content-Sha256"
HEADER_PROJECT = "X-Project-Id"
HEADER_SECURITY_TOKEN = "X-Security-Token"  # noqa: S105 - a header name, not a secret
_SIGNED_CONTENT_TYPES = ("application/json", "application/bson")


def _encode(text: str) -> str:
    # The SDK's encoding: everything but letters, digits and "-_.~" is percent-encoded.
    return quote(text, safe="~")


def sdk_date(now: datetime | None = None) -> str:
    """``X-Sdk-Date`` for ``now`` (default: the current UTC time)."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime(SDK_DATE_FORMAT)


def canonical_uri(path: str) -> str:
    """Decode the path, encode each segment, and always end with ``/`` (the SDK's rule)."""
    segments = [_encode(unquote(seg)) for seg in path.split("/")]
    uri = "/".join(segments)
    if not uri.startswith("/"):
        uri = "/" + uri
    return uri if uri.endswith("/") else uri + "/"


def parse_query(query: str) -> list[tuple[str, str]]:
    """Split a raw query string into decoded pairs; ``+`` is a literal plus, as the SDK sends."""
    pairs: list[tuple[str, str]] = []
    for part in query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append((unquote(key), unquote(value)))
    return pairs


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    """Pairs sorted by key then value, each encoded as a segment, empty values kept as ``k=``."""
    encoded = sorted((_encode(k), _encode(v)) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def payload_hash(body: bytes | str | None) -> str:
    if isinstance(body, str):
        body = body.encode("utf-8")
    return hashlib.sha256(body or b"").hexdigest()


def signed_header_names(headers: Iterable[str]) -> list[str]:
    """Every header whose name has no ``_``, lower-cased and sorted."""
    return sorted({name.lower() for name in headers if "_" not in name})


def canonical_request(
    method: str,
    path: str,
    *,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    body_hash: str,
) -> str:
    """The canonical request; ``headers`` may use any case, ``signed_headers`` are lower-case."""
    lowered = {name.lower(): value for name, value in headers.items()}
    header_lines = "".join(f"{name}:{lowered.get(name, '').strip()}\n" for name in signed_headers)
    return "\n".join(
        [
            method.upper(),
            canonical_uri(path),
            canonical_query(query),
            header_lines,
            ";".join(signed_headers),
            body_hash,
        ]
    )


def string_to_sign(date: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{date}\n{digest}"


def signature(sk: str, to_sign: str) -> str:
    return hmac.new(sk.encode("utf-8"), to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def parse_authorization(value: str) -> tuple[str, list[str], str] | None:
    """``(ak, signed_headers, signature)`` from an ``Authorization`` header, or None."""
    prefix = ALGORITHM + " "
    if not value.startswith(prefix):
        return None
    fields: dict[str, str] = {}
    for part in value[len(prefix) :].split(","):
        key, sep, val = part.strip().partition("=")
        if not sep:
            return None
        fields[key] = val
    try:
        return fields["Access"], fields["SignedHeaders"].split(";"), fields["Signature"]
    except KeyError:
        return None


@dataclass(frozen=True, slots=True)
class SignedRequest:
    url: str
    headers: dict[str, str]
    canonical_request: str
    string_to_sign: str
    signed_headers: str
    authorization: str


class AkSkSigner:
    """Signs requests with an access key and secret key.

    >>> signer = AkSkSigner("AK", "SK", project_id="p1")
    >>> signed = signer.sign("GET", "https://example.test/v2/p1/ies/task/abc")
    >>> signed.headers["Authorization"].startswith("SDK-HMAC-SHA256 Access=AK, ")
    True
    """

    __slots__ = ("_ak", "_project_id", "_security_token", "_sk")

    def __init__(
        self,
        ak: str,
        sk: str,
        *,
        project_id: str | None = None,
        security_token: str | None = None,
    ) -> None:
        self._ak = ak
        self._sk = sk
        self._project_id = project_id
        self._security_token = security_token

    def __repr__(self) -> str:
        # Never show the secret key, even in a debugger or a traceback.
        return f"AkSkSigner(ak={self._ak[:4]}..., sk=***)"

    def sign(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | str | None = None,
        params: Sequence[tuple[str, str]] | None = None,
        date: str | None = None,
    ) -> SignedRequest:
        """Sign one request; returns the URL to send (query canonicalised) and all headers."""
        parts = urlsplit(url)
        query = parse_query(parts.query) + list(params or ())
        # Values are sent trimmed, as the SDK does; the canonical form trims them too.
        out = {name: value.strip() for name, value in (headers or {}).items()}
        names = {name.lower() for name in out}
        if "x-sdk-date" not in names:
            out[HEADER_DATE] = date or sdk_date()
        if "host" not in names:
            out["Host"] = parts.netloc.rpartition("@")[2]
        if self._project_id and "x-project-id" not in names:
            out[HEADER_PROJECT] = self._project_id
        if self._security_token and "x-security-token" not in names:
            out[HEADER_SECURITY_TOKEN] = self._security_token
        content_type = next((v for k, v in out.items() if k.lower() == "content-type"), "")
        if content_type and not content_type.lower().startswith(_SIGNED_CONTENT_TYPES):
            out.setdefault(HEADER_CONTENT_SHA, UNSIGNED_PAYLOAD)

        signed = signed_header_names(out)
        lowered = {k.lower(): v for k, v in out.items()}
        body_hash = lowered.get(HEADER_CONTENT_SHA.lower()) or payload_hash(body)
        canonical = canonical_request(
            method, parts.path, query=query, headers=out, signed_headers=signed, body_hash=body_hash
        )
        to_sign = string_to_sign(lowered["x-sdk-date"], canonical)
        signed_str = ";".join(signed)
        authorization = (
            f"{ALGORITHM} Access={self._ak}, SignedHeaders={signed_str}, "
            f"Signature={signature(self._sk, to_sign)}"
        )
        out["Authorization"] = authorization
        final_url = urlunsplit(
            (parts.scheme, parts.netloc, parts.path, canonical_query(query), parts.fragment)
        )
        return SignedRequest(final_url, out, canonical, to_sign, signed_str, authorization)
