"""Fault injection: errors, unusable bodies, dropped connections, latency, huge bodies.

One seeded RNG decides, per request and in arrival order, which fault (if any) applies, so a
test that sends the same requests in the same order meets the same faults.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass

from ._config import FaultConfig

__all__ = ["FaultDecision", "FaultInjector", "error_body", "malformed_body", "oversize_chunks"]

_HTML_ERROR = (
    b"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    b"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


def error_body(code: str, message: str, request_id: str) -> bytes:
    """The error shape shared by MetaStudio and the API gateway."""
    return json.dumps(
        {"error_code": code, "error_msg": message, "request_id": request_id},
        separators=(",", ":"),
    ).encode()


def _html(status: int) -> bytes:
    reason = _REASONS.get(status, "Error")
    return _HTML_ERROR.replace(b"{status}", str(status).encode()).replace(
        b"{reason}", reason.encode()
    )


@dataclass(frozen=True, slots=True)
class FaultDecision:
    """What to do instead of (or before) the real answer."""

    kind: str  # "none", "drop", "error", "malformed", "oversize", "outage"
    delay: float = 0.0
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"


_NO_FAULT = FaultDecision("none")


class FaultInjector:
    """Holds the current ``FaultConfig`` and its RNG; ``decide`` is called once per request."""

    __slots__ = ("_base_seed", "_rng", "config")

    def __init__(self, config: FaultConfig, base_seed: int) -> None:
        self._base_seed = base_seed
        self.config = config
        self._rng = random.Random()  # noqa: S311 - seeded simulation, not security
        self.set(config)

    def set(self, config: FaultConfig) -> None:
        self.config = config
        seed = config.seed if config.seed is not None else self._base_seed
        self._rng = random.Random(f"faults\x00{seed}")  # noqa: S311 - seeded simulation

    def decide(self, request_id: str) -> FaultDecision:  # noqa: PLR0911 - one return per fault
        """Draw this request's fault; each rate draws only when it is non-zero."""
        cfg = self.config
        if not cfg.enabled:
            return _NO_FAULT
        rng = self._rng
        delay = 0.0
        if isinstance(cfg.latency, tuple):
            delay = rng.uniform(*cfg.latency)
        elif cfg.latency:
            delay = float(cfg.latency)
        if cfg.outage:
            body = error_body("MSS.000000002", "Service unavailable (simulated outage)", request_id)
            return FaultDecision("outage", delay, 503, body)
        if cfg.drop_rate and rng.random() < cfg.drop_rate:
            return FaultDecision("drop", delay)
        if cfg.error_rate and rng.random() < cfg.error_rate:
            return self._error(rng, delay, request_id)
        if cfg.malformed_rate and rng.random() < cfg.malformed_rate:
            kind = rng.choice(cfg.malformed_kinds)
            body, content_type = malformed_body(kind, rng)
            return FaultDecision("malformed", delay, 200, body, content_type)
        if cfg.oversize_body:
            return FaultDecision("oversize", delay)
        return FaultDecision("none", delay) if delay else _NO_FAULT

    @staticmethod
    def _error(rng: random.Random, delay: float, request_id: str) -> FaultDecision:
        status = rng.choice((500, 502, 503))
        if rng.random() < 0.5:
            body = error_body("MSS.000000002", "Internal error (simulated)", request_id)
            return FaultDecision("error", delay, status, body)
        if rng.random() < 0.5:
            return FaultDecision("error", delay, status, _html(status), "text/html")
        return FaultDecision("error", delay, status, _REASONS[status].encode(), "text/plain")


def malformed_body(kind: str, rng: random.Random) -> tuple[bytes, str]:
    """A 200 body that no careful client may accept as a task."""
    if kind == "garbage":
        size = rng.randint(8, 64)
        return bytes(rng.getrandbits(8) for _ in range(size)), "application/json"
    if kind == "truncated":
        full = json.dumps({"resource": "asset-import", "task_name": "x", "total_count": 3})
        return full[: rng.randint(1, len(full) - 2)].encode(), "application/json"
    if kind == "wrong_types":
        body = {
            "resource": ["asset-import"],
            "task_name": 7,
            "begin_time": {"ms": 1744276967708},
            "end_time": [1744276967708],
            "task_type": None,
            "operator": 0,
            "total_count": "many",
            "success_count": {"n": 1},
            "failure_count": [0],
            "task_status": {"code": 0},
            "task_id": 12345,
            "user_id": False,
        }
        return json.dumps(body).encode(), "application/json"
    if kind == "array":
        return b'[{"task_id":"x","task_status":0}]', "application/json"
    return _html(500).replace(b"500 Internal Server Error", b"Service Error"), "text/html"


def oversize_chunks(size: int, task_json: bytes, chunk: int = 64 * 1024) -> Iterator[bytes]:
    """A body of exactly ``size`` bytes, in chunks: the task plus a padding field (valid JSON).

    Generated lazily so even a gigabyte body costs one chunk of memory. When ``size`` is
    too small to hold the task, the body is ``size`` bytes of padding alone.
    """
    prefix = b'{"padding":"'
    suffix = b'",' + task_json[1:]
    pad = size - len(prefix) - len(suffix)
    if pad < 0:
        prefix, suffix, pad = b"", b"", size
    if prefix:
        yield prefix
    block = b"x" * chunk
    full, rest = divmod(pad, chunk)
    for _ in range(full):
        yield block
    if rest:
        yield block[:rest]
    if suffix:
        yield suffix
