"""The HTTP handlers: one dispatch function on aiohttp's low-level server.

The router is our own: aiohttp's would decode ``%2F`` before matching, and an id must stay
one segment whatever it contains. The pipeline for a MetaStudio API request (``/v2/...``):
count it, authenticate, rate-limit (per tenant = path project id), inject faults, answer.

Answers of our choosing: an unknown path or method answers 404 ``APIGW.0101``; a project id
other than the simulator's answers 403 ``APIGW.0302``; an unknown task id (no
auto-creation, or deleted) answers 404 ``MSS.000000003``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from aiohttp import web

from .._exceptions import InvalidTaskIdError
from .._taskid import validate_task_id
from ..sources._signer import parse_query
from ._auth import make_checker
from ._config import FaultConfig
from ._faults import error_body, oversize_chunks
from ._limits import SlidingWindowLimiter

if TYPE_CHECKING:
    from ._simulator import Simulator

__all__ = ["SimulatorApp"]

_JSON = "application/json"
_IAM_PATH = "/v3/auth/tokens"
_NO_API = "The API does not exist or has not been published in the environment"
_THROTTLED = "The throttling threshold has been reached"
_WRONG_PROJECT = "The project in the path is not authorized for this tenant"
_NO_TASK = "The task does not exist"


def _dumps(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SimulatorApp:
    """Request handling for one ``Simulator``; state lives on the simulator."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        cfg = sim.config
        self._cfg = cfg
        self._stats = sim.recorder
        self._tasks = sim.book
        self._faults = sim.injector
        self._check = make_checker(cfg, sim.authenticator)
        self._limiters: dict[str, SlidingWindowLimiter] = {}
        self._rid_prefix = f"{cfg.seed & 0xFFFFFFFF:08x}"
        self._rid = 0
        self._control: dict[tuple[str, str], Callable[[web.BaseRequest, str], Any]] = {
            ("GET", "/_sim/stats"): self._get_stats,
            ("POST", "/_sim/reset"): self._post_reset,
            ("GET", "/_sim/faults"): self._get_faults,
            ("POST", "/_sim/faults"): self._post_faults,
            ("POST", "/_sim/tokens"): self._post_token,
        }

    def clear_limits(self) -> None:
        self._limiters.clear()

    # -- responses --------------------------------------------------------------------------

    def _respond(
        self,
        status: int,
        body: bytes,
        rid: str,
        content_type: str = _JSON,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        self._stats.status(status)
        out = {"X-Request-Id": rid}
        if headers:
            out.update(headers)
        return web.Response(status=status, body=body, content_type=content_type, headers=out)

    def _error(
        self, status: int, code: str, message: str, rid: str, **headers: str
    ) -> web.Response:
        return self._respond(status, error_body(code, message, rid), rid, headers=headers)

    # -- dispatch ---------------------------------------------------------------------------

    async def handle(  # noqa: PLR0911, PLR0912 - a dispatcher
        self, request: web.BaseRequest
    ) -> web.StreamResponse:
        raw = request.raw_path
        self._rid += 1
        rid = f"{self._rid_prefix}{self._rid:024x}"
        if raw.startswith("/_sim/"):
            return await self._handle_control(request, raw, rid)
        stats = self._stats
        stats.requests += 1
        stats.paths.append(raw)
        path, _, query = raw.partition("?")
        if path == _IAM_PATH:
            return await self._iam(request, rid)
        stats.arrivals.hit(self._cfg.monotonic())
        parts = path.split("/")
        nparts = len(parts)
        method = request.method
        is_api = nparts in (5, 6) and parts[1] == "v2" and parts[3] == "ies" and parts[4] == "task"
        if not is_api or method not in ("GET", "DELETE") or (nparts == 5 and method != "GET"):
            return self._error(404, "APIGW.0101", _NO_API, rid)
        task_id = unquote(parts[5]) if nparts == 6 else None
        if task_id is not None and method == "GET":
            stats.poll(task_id)

        project = unquote(parts[2])
        faults = self._faults.config
        first = faults.before_auth and faults.enabled
        if first:
            faulted = await self._fault(request, rid, project, task_id, query)
            if faulted is not None:
                return faulted

        if self._check is not None:
            body = await request.read() if request.body_exists else b""
            failure = self._check(
                method, raw, request.headers, body, self._faults.config.clock_skew
            )
            if failure is not None:
                stats.auth_failures += 1
                return self._error(failure.status, failure.code, failure.message, rid)

        if self._cfg.rate_limit is not None:
            limiter = self._limiters.get(project)
            if limiter is None:
                limiter = self._limiters[project] = SlidingWindowLimiter(self._cfg.rate_limit)
            wait = limiter.try_acquire(self._cfg.monotonic())
            if wait is not None:
                stats.throttled += 1
                extra = {"Retry-After": str(wait)} if self._cfg.retry_after else {}
                return self._error(429, "APIGW.0308", _THROTTLED, rid, **extra)

        if faults.enabled and not first:
            faulted = await self._fault(request, rid, project, task_id, query)
            if faulted is not None:
                return faulted
        return self._answer(request, rid, project, task_id, query)

    async def _fault(
        self, request: web.BaseRequest, rid: str, project: str, task_id: str | None, query: str
    ) -> web.StreamResponse | None:
        decision = self._faults.decide(rid)
        if decision.delay:
            await asyncio.sleep(decision.delay)
        kind = decision.kind
        if kind == "none":
            return None
        self._stats.faults_injected += 1
        if kind == "drop":
            self._stats.dropped += 1
            if request.transport is not None:
                request.transport.close()
            # Nothing reaches the client: the transport is closed before this is written.
            return web.Response(status=200)
        if kind == "oversize":
            return await self._oversize(request, rid, project, task_id, query)
        return self._respond(decision.status, decision.body, rid, decision.content_type)

    async def _oversize(
        self, request: web.BaseRequest, rid: str, project: str, task_id: str | None, query: str
    ) -> web.StreamResponse:
        real = self._answer(request, rid, project, task_id, query)
        # The padded 200 replaces the real answer, in the stats too.
        self._stats.status(real.status, -1)
        self._stats.status(200)
        inner = real.body if isinstance(real.body, bytes) and real.status == 200 else b"{}"
        faults = self._faults.config
        size = faults.oversize_body
        response = web.StreamResponse(status=200, headers={"X-Request-Id": rid})
        response.content_type = _JSON
        if faults.oversize_chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = size
        await response.prepare(request)
        try:
            for chunk in oversize_chunks(size, inner if inner.startswith(b"{") else b"{}"):
                await response.write(chunk)
                # write() waits while the socket is backed up, so this tracks what the
                # client took (plus socket buffers), not what the generator could make.
                self._stats.oversize_bytes_sent += len(chunk)
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client gave up reading, as a careful client should
        return response

    # -- the MetaStudio API -----------------------------------------------------------------

    def _answer(  # noqa: PLR0911 - one return per documented answer
        self, request: web.BaseRequest, rid: str, project: str, task_id: str | None, query: str
    ) -> web.Response:
        cfg = self._cfg
        if project != cfg.project_id:
            return self._error(403, "APIGW.0302", _WRONG_PROJECT, rid)
        if task_id is None:
            return self._search(rid, query)
        try:
            validate_task_id(task_id)
        except InvalidTaskIdError:
            return self._error(400, "MSS.000000003", "Invalid parameter: task id", rid)
        if task_id.startswith(cfg.invalid_prefix):
            return self._error(400, "MSS.000000003", "Invalid parameter: task id", rid)
        book = self._tasks
        if request.method == "DELETE":
            self._stats.deletes += 1
            known = book.get(task_id) is not None or (
                cfg.auto_create_effective and not book.is_deleted(task_id)
            )
            if not known:
                return self._error(404, "MSS.000000003", _NO_TASK, rid)
            book.delete(task_id)
            self._stats.status(204)
            return web.Response(status=204, headers={"X-Request-Id": rid})
        now = cfg.clock()
        task = book.get(task_id)
        if task is None:
            if not cfg.auto_create_effective or book.is_deleted(task_id):
                return self._error(404, "MSS.000000003", _NO_TASK, rid)
            task = self._sim.create_task(task_id, created=now)
        overrides = self._sim.body_overrides
        if overrides and task_id in overrides:
            return self._overridden(task.body(now, cfg), overrides[task_id], rid)
        return self._respond(200, _dumps(task.body(now, cfg)), rid)

    def _overridden(
        self, truth: dict[str, Any], override: bytes | Mapping[str, Any], rid: str
    ) -> web.Response:
        self._stats.faults_injected += 1
        if isinstance(override, bytes):
            return self._respond(200, override, rid)
        return self._respond(200, _dumps({**truth, **override}), rid)

    def _search(self, rid: str, query: str) -> web.Response:
        self._stats.searches += 1
        resources: list[str] = []
        numbers: dict[str, int] = {}
        for key, value in parse_query(query):
            if key == "resource":
                resources.append(value)
            elif key in ("begin_time", "end_time", "offset", "limit") and value != "":
                try:
                    numbers[key] = int(value)
                except ValueError:
                    return self._error(400, "MSS.000000003", f"Invalid parameter: {key}", rid)
            # business_id is accepted and ignored: simulated tasks carry no business id.
        cap = self._cfg.page_cap
        offset = max(0, numbers.get("offset", 0))
        limit = min(cap, max(1, numbers.get("limit", cap)))
        count, page = self._tasks.search(
            resources, numbers.get("begin_time"), numbers.get("end_time"), offset, limit
        )
        now = self._cfg.clock()
        data = [task.body(now, self._cfg) for task in page]
        payload = {"offset": offset, "limit": limit, "count": count, "data": data}
        return self._respond(200, _dumps(payload), rid)

    # -- IAM --------------------------------------------------------------------------------

    async def _iam(self, request: web.BaseRequest, rid: str) -> web.Response:
        if request.method != "POST":
            return self._error(404, "APIGW.0101", _NO_API, rid)
        try:
            data = json.loads(await request.read())
            identity = data["auth"]["identity"]
            user = identity["password"]["user"]
            name, password, domain = user["name"], user["password"], user["domain"]["name"]
            scope = data["auth"].get("scope", {}).get("project", {}).get("name", "cn-north-4")
            if "password" not in identity["methods"]:
                raise KeyError("methods")
        except (ValueError, KeyError, TypeError, AttributeError):
            return self._error(400, "IAM.0011", "Request body is invalid", rid)
        if self._cfg.iam_users.get((domain, name)) != password:
            message = "The username or password is wrong."
            body = {"error": {"code": 401, "message": message, "title": "Unauthorized"}}
            return self._respond(401, _dumps(body), rid)
        issued = self._sim.authenticator.issue_token()
        self._stats.tokens_issued += 1
        domain_info = {"id": f"domain-{domain}", "name": domain}
        token = {
            "expires_at": _iso(issued.expires_at),
            "issued_at": _iso(issued.issued_at),
            "methods": ["password"],
            "project": {"id": self._cfg.project_id, "name": scope, "domain": domain_info},
            "user": {"id": f"user-{name}", "name": name, "domain": domain_info},
            "catalog": [],
        }
        headers = {"X-Subject-Token": issued.token}
        return self._respond(201, _dumps({"token": token}), rid, headers=headers)

    # -- control plane (unauthenticated, not counted in stats) ------------------------------

    async def _handle_control(self, request: web.BaseRequest, raw: str, rid: str) -> web.Response:
        path = raw.partition("?")[0]
        headers = {"X-Request-Id": rid}
        if request.method == "GET" and path.startswith("/_sim/tasks/"):
            return self._get_task(unquote(path[len("/_sim/tasks/") :]), rid)
        handler = self._control.get((request.method, path))
        if handler is None:
            body = error_body("APIGW.0101", "Unknown simulator control endpoint", rid)
            return web.Response(status=404, body=body, content_type=_JSON, headers=headers)
        try:
            payload = await handler(request, raw)
        except (ValueError, TypeError) as exc:
            body = error_body("SIM.0001", str(exc), rid)
            return web.Response(status=400, body=body, content_type=_JSON, headers=headers)
        return web.Response(body=_dumps(payload), content_type=_JSON, headers=headers)

    def _get_task(self, task_id: str, rid: str) -> web.Response:
        headers = {"X-Request-Id": rid}
        try:
            state = self._sim.task_state(task_id)
        except KeyError:
            body = error_body("MSS.000000003", _NO_TASK, rid)
            return web.Response(status=404, body=body, content_type=_JSON, headers=headers)
        payload = {
            "task_id": state.task_id,
            "outcome": state.outcome,
            "finished": state.finished,
            "finish_at": state.finish_at,
            "body": state.body,
        }
        return web.Response(body=_dumps(payload), content_type=_JSON, headers=headers)

    async def _get_stats(self, request: web.BaseRequest, raw: str) -> dict[str, Any]:
        return self._sim.stats().to_dict()

    async def _post_reset(self, request: web.BaseRequest, raw: str) -> dict[str, Any]:
        options = dict(parse_query(raw.partition("?")[2]))
        self._sim.reset_stats()
        if options.get("tasks") in ("1", "true"):
            self._sim.reset_tasks()
        if options.get("limits") in ("1", "true"):
            self._sim.reset_limits()
        return {"ok": True}

    async def _get_faults(self, request: web.BaseRequest, raw: str) -> dict[str, Any]:
        return self._faults.config.to_dict()

    async def _post_faults(self, request: web.BaseRequest, raw: str) -> dict[str, Any]:
        data = json.loads(await request.read() or b"{}")
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object of FaultConfig fields")
        self._sim.set_faults(FaultConfig.from_mapping(data))
        return self._faults.config.to_dict()

    async def _post_token(self, request: web.BaseRequest, raw: str) -> dict[str, Any]:
        issued = self._sim.authenticator.issue_token()
        self._stats.tokens_issued += 1
        return {"token": issued.token, "expires_at": _iso(issued.expires_at)}
