"""HTTP pieces of the control API: errors, JSON answers, watch views, the access log."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from .._log import get_logger
from ..stores.base import WatchRecord

__all__ = ["AccessLogger", "ApiError", "int_param", "iso", "json_response", "slug", "watch_json"]

_access = get_logger("watcher.api.access")

QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scrapes: debug only


class ApiError(Exception):
    """An answer other than success, raised from a handler."""

    def __init__(
        self, status: int, error: str, message: str, *, details: list[Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.error, self.message, self.details = status, error, message, details

    def response(self) -> web.Response:
        body: dict[str, Any] = {"error": self.error, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        response = json_response(body, status=self.status)
        if self.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="watcher"'
        return response


def json_response(data: Any, *, status: int = 200) -> web.Response:
    # A lone surrogate (say, in an invalid task id echoed back) has no UTF-8 form:
    # backslashreplace writes it as its \udxxx escape, which is how JSON spells it anyway.
    return web.Response(
        body=json.dumps(data, ensure_ascii=False).encode("utf-8", "backslashreplace"),
        status=status,
        content_type="application/json",
        charset="utf-8",
    )


def iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


def watch_json(record: WatchRecord) -> dict[str, Any]:
    """One watch as the API shows it; times in ISO 8601 (UTC)."""
    pending = record.state == "pending"
    return {
        "task_id": record.task_id,
        "source": record.source,
        "state": record.state,
        "outcome": record.outcome,
        "polls": record.polls,
        "errors": record.errors,
        "batch": record.batch,
        "labels": dict(record.labels),
        "watched_at": iso(record.watched_at),
        "due_at": iso(record.due_at) if pending else None,
        "deadline_at": iso(record.deadline_at),
        "finished_at": iso(record.finished_at),
    }


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access log as structured lines; never headers (``Authorization``)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        log = _access.debug if request.path in QUIET_PATHS else _access.info
        log(
            "http request",
            method=request.method,
            path=request.path,
            status=response.status,
            seconds=round(time, 4),
            bytes=response.body_length,
            remote=request.remote,
            request_id=response.headers.get("X-Request-Id"),
        )


def int_param(text: str | None, name: str, default: int, low: int, high: int | None) -> int:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, "invalid_request", f"{name} must be an integer") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ApiError(400, "invalid_request", f"{name} must be {bound}")
    return value


def slug(reason: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", reason.lower()).strip("_") or "error"
