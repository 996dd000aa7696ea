"""The daemon's control API (aiohttp.web): watches, batches, status, health and metrics.

``/v1/...`` needs ``Authorization: Bearer <token>``; ``/healthz``, ``/readyz`` and
``/metrics`` do not (they hold no secrets). Every answer is JSON (``/metrics`` excepted),
errors are ``{"error": code, "message": ..., "details"?: [...]}``, and every response carries
``X-Request-Id`` (the client's, when it sent a sane one), which the daemon's log lines about
that request carry too.
"""

from __future__ import annotations

import hmac
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from pydantic import ValidationError

from .._exceptions import ClosedError
from .._log import get_logger
from .._version import __version__
from .._watcher import Watcher
from ..stores.base import QueryableStore, WatchRecord
from ._http import AccessLogger, ApiError, int_param, iso, json_response, slug, watch_json
from ._metrics import CONTENT_TYPE, DaemonMetrics
from ._requests import WatchRequest, describe_validation

__all__ = ["AccessLogger", "ApiError", "ControlApi"]

_log = get_logger("watcher.api")

MAX_LIST_LIMIT = 1000
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_LIST_PARAMS = frozenset({"batch", "state", "source", "offset", "limit"})

Readiness = Callable[[], Awaitable[list[str]]]  # problems; empty when ready
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ControlApi:
    """Builds the ``web.Application``; handlers work on ``watcher``'s store and engine."""

    def __init__(
        self,
        watcher: Watcher,
        *,
        token: str,
        max_body_bytes: int,
        metrics: DaemonMetrics,
        readiness: Readiness,
        extra_status: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        if not token:
            raise ValueError("the control API needs a token")
        self._watcher = watcher
        self._token = token.encode("utf-8")
        self._max_body = max_body_bytes
        self._metrics = metrics
        self._readiness = readiness
        self._extra_status = extra_status
        self._started = time.time()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self._max_body, middlewares=[self._middleware])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_handler)
        app.router.add_get("/v1/status", self._status)
        app.router.add_post("/v1/watches", self._add)
        app.router.add_get("/v1/watches", self._list)
        # The id may hold '/' (sent as %2F): it is the whole rest of the path.
        app.router.add_get("/v1/watches/{source}/{task_id:.+}", self._get)
        app.router.add_delete("/v1/watches/{source}/{task_id:.+}", self._delete)
        app.router.add_get("/v1/batches/{batch:.+}", self._batch)
        return app

    # --- middleware -------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get("X-Request-Id", "")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            response = await self._answer(request, handler, request_id)
        response.headers["X-Request-Id"] = request_id
        return response

    async def _answer(
        self, request: web.Request, handler: Handler, request_id: str
    ) -> web.StreamResponse:
        try:
            if request.path == "/v1" or request.path.startswith("/v1/"):
                self._authorize(request)
            return await handler(request)
        except ApiError as exc:
            if exc.status >= 500:
                _log.warning("api request failed", path=request.path, error=exc.message)
            return exc.response()
        except web.HTTPException as exc:  # the router's 404/405, aiohttp's 413
            response = ApiError(exc.status, slug(exc.reason), exc.reason).response()
            if "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        except Exception:
            _log.exception("api handler failed", method=request.method, path=request.path)
            return ApiError(500, "internal", f"internal error (request id {request_id})").response()

    def _authorize(self, request: web.Request) -> None:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>")
        # Constant time: the comparison must not tell how much of a guess was right.
        if not hmac.compare_digest(given.strip().encode("utf-8"), self._token):
            raise ApiError(401, "unauthorized", "invalid token")

    async def _readjson_response(self, request: web.Request) -> Any:
        limit = self._max_body
        too_large = ApiError(
            413,
            "payload_too_large",
            f"request body is larger than {limit} bytes (api.max_body_bytes)",
        )
        if request.content_length is not None and request.content_length > limit:
            raise too_large
        # Bounded while streaming too: a chunked body has no Content-Length to check.
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ApiError(400, "malformed_json", f"the body is not JSON: {exc}") from None
        except RecursionError:  # [[[[... a few thousand deep: json recurses per level
            raise ApiError(400, "malformed_json", "the body is JSON nested too deeply") from None

    # --- health and metrics -----------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        problems = await self._readiness()
        if problems:
            return json_response({"ready": False, "problems": problems}, status=503)
        return json_response({"ready": True})

    async def _metrics_handler(self, request: web.Request) -> web.Response:
        try:
            body = await self._metrics.render(self._watcher)
        except ClosedError as exc:
            raise ApiError(503, "unavailable", str(exc)) from None
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    # --- /v1 --------------------------------------------------------------------------------

    def _queryable(self) -> QueryableStore:
        try:
            store = self._watcher.store
        except ClosedError as exc:
            raise ApiError(503, "unavailable", "the daemon is shutting down") from exc
        if not isinstance(store, QueryableStore):
            raise ApiError(501, "not_implemented", "this store cannot list watches")
        return store

    def _source(self, name: str | None) -> str:
        known = self._watcher.sources
        if name is None:
            return known[0]
        if name not in known:
            raise ApiError(
                400, "unknown_source", f"unknown source {name!r}; known: {', '.join(known)}"
            )
        return name

    async def _status(self, request: web.Request) -> web.Response:
        store = self._queryable()
        sources = {}
        for name in self._watcher.sources:
            scheduler = self._watcher.scheduler(name)
            limiter = scheduler.limiter
            sources[name] = {
                "rate_limit": limiter.rate,
                "current_rate": round(limiter.current_rate, 3),
                "paused": limiter.paused,
                "polls": scheduler.stats.polls,
                "throttled": scheduler.stats.throttled,
                "in_flight": scheduler.in_flight,
                "finished": scheduler.stats.finished,
            }
        sinks = {}
        for runner in self._watcher.runners:
            stats = runner.stats
            sinks[stats.sink] = {
                "delivered": stats.delivered,
                "failed_attempts": stats.failed_attempts,
                "dead_lettered": stats.dead_lettered,
                "queue_depth": await store.outbox_size(stats.sink),
                "last_error": stats.last_error,
                "last_error_at": iso(stats.last_error_at),
            }
        body: dict[str, Any] = {
            "version": __version__,
            "started_at": iso(self._started),
            "uptime_seconds": round(time.time() - self._started, 3),
            "ready": not await self._readiness(),
            "default_source": self._watcher.sources[0],
            "watches": dict(await store.counts()),
            "sources": sources,
            "sinks": sinks,
        }
        if self._extra_status is not None:
            body.update(self._extra_status())
        return json_response(body)

    async def _add(self, request: web.Request) -> web.Response:
        data = await self._readjson_response(request)
        if not isinstance(data, dict):
            raise ApiError(
                400, "invalid_request", 'the body must be a JSON object: {"task_ids": [...]}'
            )
        try:
            req = WatchRequest.model_validate(data)
        except ValidationError as exc:
            raise ApiError(
                400,
                "invalid_request",
                "the request does not validate",
                details=describe_validation(exc),
            ) from None
        source = self._source(req.source)
        try:
            result = await self._watcher.add(
                req.task_ids,
                source=source,
                batch=req.batch,
                labels=req.labels or None,
                deadline=req.deadline,
            )
        except ClosedError as exc:
            raise ApiError(503, "unavailable", "the daemon is shutting down") from exc
        _log.info(
            "watches added",
            source=source,
            batch=req.batch,
            accepted=len(result.accepted),
            duplicates=len(result.duplicates),
            invalid=len(result.invalid),
        )
        body = {
            "source": source,
            "batch": req.batch,
            "accepted": result.accepted,
            "duplicates": result.duplicates,
            "invalid": [{"task_id": i, "reason": why} for i, why in result.invalid],
        }
        return json_response(body, status=202)

    async def _record(self, request: web.Request) -> tuple[str, str, WatchRecord]:
        source, task_id = request.match_info["source"], request.match_info["task_id"]
        if source not in self._watcher.sources:
            raise ApiError(404, "not_found", f"unknown source {source!r}")
        record = await self._queryable().get(source, task_id)
        if record is None:
            raise ApiError(404, "not_found", f"{task_id!r} is not watched in source {source!r}")
        return source, task_id, record

    async def _get(self, request: web.Request) -> web.Response:
        _, _, record = await self._record(request)
        return json_response(watch_json(record))

    async def _delete(self, request: web.Request) -> web.Response:
        source, task_id, record = await self._record(request)
        try:
            await self._watcher.forget(task_id, source=source)
        except ClosedError as exc:
            raise ApiError(503, "unavailable", "the daemon is shutting down") from exc
        _log.info("watch forgotten", source=source, task_id=task_id, batch=record.batch)
        return json_response({"forgotten": True, **watch_json(record)})

    async def _list(self, request: web.Request) -> web.Response:
        query = request.query
        unknown = sorted(set(query) - _LIST_PARAMS)
        if unknown:
            raise ApiError(
                400, "invalid_request", f"unknown query parameter(s): {', '.join(unknown)}"
            )
        state = query.get("state")
        if state not in (None, "pending", "done"):
            raise ApiError(400, "invalid_request", "state must be pending or done")
        offset = int_param(query.get("offset"), "offset", 0, 0, None)
        limit = int_param(query.get("limit"), "limit", 100, 1, MAX_LIST_LIMIT)
        store = self._queryable()
        # One more than asked tells whether there is a next page without a count(*).
        records = await store.list(
            batch=query.get("batch"),
            state=state,  # type: ignore[arg-type]  # checked just above
            source=query.get("source"),
            offset=offset,
            limit=limit + 1,
        )
        more = len(records) > limit
        body = {
            "watches": [watch_json(r) for r in records[:limit]],
            "offset": offset,
            "limit": limit,
            "next_offset": offset + limit if more else None,
        }
        return json_response(body)

    async def _batch(self, request: web.Request) -> web.Response:
        name = request.match_info["batch"]
        store = self._queryable()
        counts = await store.batch_counts(name)
        pending = counts.pop("pending", 0)
        done = sum(counts.values())
        if pending + done == 0:
            raise ApiError(404, "not_found", f"no watches in batch {name!r}")
        first = await store.list(batch=name, limit=1)
        started = first[0].watched_at if first else None
        now = time.time()
        estimate = None
        if pending and done and started is not None and now > started:
            rate = done / (now - started)  # finishes per second so far
            estimate = now + pending / rate
        body = {
            "batch": name,
            "tasks": pending + done,
            "pending": pending,
            "done": done,
            "outcomes": counts,
            "started_at": iso(started),
            "estimated_finish_at": iso(estimate),
            "finished": pending == 0,
        }
        return json_response(body)
