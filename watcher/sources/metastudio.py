"""Huawei Cloud MetaStudio import/export tasks: ``GET /v2/{project_id}/ies/task/{id}``.

See ``API.md`` for the wire format. Bodies are parsed tolerantly (every documented form of
every field) and strictly (wrong types, wrong task, too large or too deep: malformed).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from sys import intern
from types import TracebackType

import aiohttp
from yarl import URL

from .._exceptions import (
    AuthError,
    ClosedError,
    MalformedResponseError,
    PermanentError,
    RateLimitedError,
    ServerError,
    SourceError,
)
from .._models import TaskSnapshot, to_count
from .._taskid import quote_segment, validate_task_id
from ..config._schema import MetaStudioSourceConfig
from ._auth import AuthProvider, make_auth
from ._http import HttpResponse, error_for_response, loads_json, make_session, send, ssl_for

__all__ = ["MetaStudioSource", "SearchPage", "classify_metastudio", "parse_search", "parse_task"]

_MSS_CODES: dict[str, type[SourceError]] = {
    "MSS.000000001": ServerError,  # "failure": nothing says it is lasting
    "MSS.000000002": ServerError,  # internal error
    "MSS.000000003": PermanentError,  # invalid parameter: this id will never work
    "MSS.000000004": AuthError,  # invalid access (not authenticated)
}
_GATEWAY_AUTH = {"0301", "0302", "0303", "0304", "0305", "0306", "0307", "0310"}
# Fields that make an object a task; a body with none of them is not a task body.
_TASK_FIELDS = (
    "task_id",
    "task_status",
    "total_count",
    "success_count",
    "failure_count",
    "begin_time",
    "end_time",
)


def classify_metastudio(status: int, code: str | None) -> type[SourceError] | None:
    """MetaStudio and API gateway error codes; None leaves it to the HTTP status."""
    if code is None:
        return None
    if status == 400 and code in _MSS_CODES:
        return _MSS_CODES[code]
    prefix, _, number = code.partition(".")
    if prefix in ("APIG", "APIGW"):
        if number == "0308":
            return RateLimitedError
        if number in _GATEWAY_AUTH:
            return AuthError
    return None


def _snapshot(data: object, task_id: str | None) -> TaskSnapshot:
    """One task object to a snapshot; ``task_id`` is the id asked for (None: take the body's)."""
    if not isinstance(data, dict):
        raise MalformedResponseError(f"expected a task object, got {type(data).__name__}")
    if data.keys().isdisjoint(_TASK_FIELDS):
        raise MalformedResponseError("object has none of the task fields")
    body_id = data.get("task_id")
    if body_id is not None and body_id != "":
        if isinstance(body_id, bool) or not isinstance(body_id, str | int):
            raise MalformedResponseError(
                f"task_id: expected a string, got {type(body_id).__name__}"
            )
        if task_id is not None and str(body_id) != task_id:
            raise MalformedResponseError(
                f"task_id: body is for {str(body_id)[:40]!r}, not the id asked for"
            )
        task_id = str(body_id)
    if task_id is None:
        raise MalformedResponseError("task_id: missing")
    return TaskSnapshot.from_fields(
        task_id,
        status=data.get("task_status"),
        total_count=data.get("total_count"),
        success_count=data.get("success_count"),
        failure_count=data.get("failure_count"),
        begin_time=data.get("begin_time"),
        end_time=data.get("end_time"),
        raw=_shared_strings(data),
    )


def _shared_strings(data: dict[str, object]) -> dict[str, object]:
    """``data`` with its names and short text values interned.

    Every watch keeps its last snapshot until the next poll, and json makes new strings for
    every body: interned, the names (and values such as resource, operator, user) that every
    body repeats are stored once, and a poll frees and allocates that much less.
    """
    return {
        intern(name): intern(value) if type(value) is str and len(value) <= 64 else value
        for name, value in data.items()
    }


def parse_task(body: bytes, task_id: str) -> TaskSnapshot:
    """The 200 body of ``GET .../ies/task/{task_id}``, or ``MalformedResponseError`` saying why."""
    return _snapshot(loads_json(body), task_id)


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One answer of the task search: the tasks it carried and the total the server counted."""

    snapshots: tuple[TaskSnapshot, ...]
    count: int | None = None
    offset: int | None = None
    limit: int | None = None

    @property
    def cut(self) -> bool:
        """The server counted more tasks than it sent: poll the missing ones by id."""
        return self.count is not None and self.count > len(self.snapshots)

    def by_id(self) -> dict[str, TaskSnapshot]:
        return {snap.task_id: snap for snap in self.snapshots}


def parse_search(body: bytes) -> SearchPage:
    """The 200 body of the task search: ``{"offset", "limit", "count", "data": [task, ...]}``."""
    data = loads_json(body)
    if not isinstance(data, dict):
        raise MalformedResponseError(f"expected a JSON object, got {type(data).__name__}")
    items = data.get("data")
    if items is None:
        items = []
    if not isinstance(items, list):
        raise MalformedResponseError(f"data: expected a list, got {type(items).__name__}")
    snapshots = []
    for index, item in enumerate(items):
        try:
            snapshots.append(_snapshot(item, None))
        except MalformedResponseError as exc:
            raise MalformedResponseError(f"data[{index}]: {exc.message}") from None
    return SearchPage(
        tuple(snapshots),
        count=to_count(data.get("count"), name="count"),
        offset=to_count(data.get("offset"), name="offset"),
        limit=to_count(data.get("limit"), name="limit"),
    )


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class MetaStudioSource:
    """Polls MetaStudio tasks over one aiohttp session.

    >>> async with MetaStudioSource("metastudio", config) as source:  # doctest: +SKIP
    ...     snapshot = await source.fetch("fd1c56acbb2c4b1aa24ba37df99f3129")

    ``fetch`` raises ``InvalidTaskIdError`` before any request, else returns a snapshot or
    raises a ``SourceError`` subclass. On a refused credential an IAM token is refreshed once
    and the request retried once. ``clock`` (epoch seconds) drives token expiry.
    """

    def __init__(
        self,
        name: str,
        config: MetaStudioSourceConfig,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.name = name
        self._config = config
        self._clock = clock or time.time
        self._state = _State.NEW
        self._session: aiohttp.ClientSession | None = None
        # Built now, so a bad CA file is a config error at startup, not at the first poll.
        self._ssl = ssl_for(config, where=f"sources.{name}")
        base = str(URL(config.endpoint))
        self._tasks_url = f"{base}/v2/{quote_segment(config.project_id)}/ies/task"
        self._auth: AuthProvider = make_auth(
            config.auth,
            project_id=config.project_id,
            session=self._open_session,
            max_body_bytes=config.max_body_bytes,
            clock=self._clock,
        )

    def __repr__(self) -> str:
        return (
            f"MetaStudioSource(name={self.name!r}, endpoint={self._config.endpoint!r}, "
            f"auth={self._config.auth.type!r}, state={self._state.value!r})"
        )

    async def __aenter__(self) -> MetaStudioSource:
        if self._state is not _State.NEW:
            raise ClosedError(f"source {self.name!r} cannot be entered when {self._state.value}")
        self._open_session()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session; idempotent. The source cannot be used afterwards."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        session, self._session = self._session, None
        try:
            await self._auth.aclose()
        finally:
            if session is not None:
                await session.close()

    def _open_session(self) -> aiohttp.ClientSession:
        if self._state is _State.CLOSED:
            raise ClosedError(f"source {self.name!r} is closed")
        if self._session is None:
            self._session = make_session(self._config, ssl_context=self._ssl)
            self._state = _State.OPEN
        return self._session

    async def fetch(self, task_id: str) -> TaskSnapshot:
        """Poll one task."""
        validate_task_id(task_id)
        session = self._open_session()
        what = f"GET task {task_id[:40]!r}"
        resp = await self._request(
            session, "GET", f"{self._tasks_url}/{quote_segment(task_id)}", what
        )
        if resp.status != 200:
            raise error_for_response(resp, what=what, classify=classify_metastudio)
        try:
            return parse_task(resp.body, task_id)
        except MalformedResponseError as exc:
            raise _with_context(exc, what, resp) from None

    async def search(
        self,
        resources: Sequence[str] | str,
        begin_time_ms: int,
        end_time_ms: int,
        business_id: str | None = None,
    ) -> SearchPage:
        """Tasks of ``resources`` created in ``[begin_time_ms, end_time_ms]`` (epoch ms)."""
        if isinstance(resources, str):
            resources = [resources]
        for value in (begin_time_ms, end_time_ms):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"times must be epoch milliseconds >= 0, got {value!r}")
        params = [("resource", r) for r in resources]
        if business_id is not None:
            params.append(("business_id", business_id))
        params += [("begin_time", str(begin_time_ms)), ("end_time", str(end_time_ms))]
        query = "&".join(f"{quote_segment(k)}={quote_segment(v)}" for k, v in params)
        session = self._open_session()
        what = "GET task search"
        resp = await self._request(session, "GET", f"{self._tasks_url}?{query}", what)
        if resp.status != 200:
            raise error_for_response(resp, what=what, classify=classify_metastudio)
        try:
            return parse_search(resp.body)
        except MalformedResponseError as exc:
            raise _with_context(exc, what, resp) from None

    async def _request(
        self, session: aiohttp.ClientSession, method: str, url: str, what: str
    ) -> HttpResponse:
        """Send with credentials; on a refusal, let the provider refresh once and retry once."""
        resp, sent = await self._send_once(session, method, url, what)
        if resp.status >= 400:
            error = error_for_response(resp, what=what, classify=classify_metastudio)
            if isinstance(error, AuthError) and await self._auth.on_unauthorized(error, sent):
                resp, _ = await self._send_once(session, method, url, what)
        return resp

    async def _send_once(
        self, session: aiohttp.ClientSession, method: str, url: str, what: str
    ) -> tuple[HttpResponse, dict[str, str]]:
        headers = {"Accept": "application/json"}
        send_url, send_headers = await self._auth.apply(method, url, headers, None)
        resp = await send(
            session,
            method,
            send_url,
            what=what,
            headers=send_headers,
            max_body_bytes=self._config.max_body_bytes,
        )
        return resp, send_headers


def _with_context(
    exc: MalformedResponseError, what: str, resp: HttpResponse
) -> MalformedResponseError:
    return MalformedResponseError(
        f"{what}: {exc.message}", status=resp.status, request_id=resp.request_id
    )
