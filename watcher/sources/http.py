"""Any JSON task API: a URL template with ``{task_id}``, a status at a dotted path, outcomes.

The wire side (session, bounded reads, error translation, HTTP status to error class) is
``_http.py``'s, shared with MetaStudio; this module only knows where the fields are.
"""

from __future__ import annotations

import base64
import enum
import json
import re
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import aiohttp

from .._exceptions import ClosedError, MalformedResponseError
from .._models import TaskSnapshot, to_count, to_status, to_utc
from .._taskid import quote_segment, validate_task_id
from ..config._schema import TASK_ID, HttpBasicAuth, HttpBearerAuth, HttpSourceConfig
from ._http import HttpResponse, error_for_response, loads_json, make_session, send, ssl_for

__all__ = ["HttpSource", "JsonPath", "parse_http_task"]

_INDEX = re.compile(r"-?[0-9]{1,9}")  # longer digit runs are keys, never list indexes


class JsonPath:
    """A dotted path into parsed JSON: ``data.job.state``; integer parts index lists.

    >>> JsonPath("items.0.state").get({"items": [{"state": "DONE"}]})
    'DONE'
    """

    __slots__ = ("parts", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.parts = tuple(text.split("."))

    def __repr__(self) -> str:
        return f"JsonPath({self.text!r})"

    def get(self, data: object, default: object = None) -> object:
        """The value at the path, or ``default`` when any step is absent."""
        node = data
        for part in self.parts:
            if isinstance(node, dict):
                if part not in node:
                    return default
                node = node[part]
            elif isinstance(node, list) and _INDEX.fullmatch(part):
                index = int(part)
                if not -len(node) <= index < len(node):
                    return default
                node = node[index]
            else:
                return default
        return node


class _Paths:
    """The config's paths, parsed once."""

    def __init__(self, config: HttpSourceConfig) -> None:
        self.status = JsonPath(config.status_path)
        progress = config.progress
        self.done = _opt(progress.done_path if progress else None)
        self.success = _opt(progress.success_path if progress else None)
        self.failure = _opt(progress.failure_path if progress else None)
        self.total = _opt(progress.total_path if progress else None)
        self.begin = _opt(config.begin_time_path)
        self.end = _opt(config.end_time_path)


def _opt(text: str | None) -> JsonPath | None:
    return JsonPath(text) if text is not None else None


def _count(data: object, path: JsonPath | None) -> int | None:
    return None if path is None else to_count(path.get(data), name=path.text)


def _time(data: object, path: JsonPath | None) -> object:
    return None if path is None else to_utc(path.get(data), name=path.text)


def parse_http_task(body: bytes, task_id: str, config: HttpSourceConfig) -> TaskSnapshot:
    """A 2xx body to a snapshot, or ``MalformedResponseError`` naming the path at fault.

    The status must be present (a string or an integer); counts and times are optional.
    ``done_path`` is reported as successes, so progress estimates see it as items done.
    """
    return _parse(body, task_id, _Paths(config))


def _parse(body: bytes, task_id: str, paths: _Paths) -> TaskSnapshot:
    data = loads_json(body)
    status = paths.status.get(data)
    if status is None:
        raise MalformedResponseError(f"{paths.status.text}: missing")
    done = _count(data, paths.done)
    return TaskSnapshot.from_fields(
        task_id,
        status=to_status(status, name=paths.status.text),
        total_count=_count(data, paths.total),
        success_count=done if paths.done is not None else _count(data, paths.success),
        failure_count=_count(data, paths.failure),
        begin_time=_time(data, paths.begin),
        end_time=_time(data, paths.end),
        # The whole body, so sinks see everything the API said (a list is wrapped: raw is a map).
        raw=data if isinstance(data, dict) else {"body": data},
    )


def _fill(value: Any, task_id: str) -> Any:
    """The body template with ``{task_id}`` replaced in every string (never in JSON text)."""
    if isinstance(value, str):
        return value.replace(TASK_ID, task_id)
    if isinstance(value, dict):
        return {k: _fill(v, task_id) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, task_id) for v in value]
    return value


def _auth_header(auth: HttpBearerAuth | HttpBasicAuth | None) -> dict[str, str]:
    if isinstance(auth, HttpBearerAuth):
        return {"Authorization": f"Bearer {auth.token.get_secret_value()}"}
    if isinstance(auth, HttpBasicAuth):
        pair = f"{auth.username}:{auth.password.get_secret_value()}".encode()
        return {"Authorization": f"Basic {base64.b64encode(pair).decode('ascii')}"}
    return {}


def _request_headers(config: HttpSourceConfig) -> Mapping[str, str]:
    """Defaults, then the configured headers (which win, whatever their case), then auth."""
    configured = {k: v.get_secret_value() for k, v in config.headers.items()}
    defaults = {"Accept": "application/json"}
    if config.method == "POST":
        defaults["Content-Type"] = "application/json"
    given = {k.lower() for k in configured}
    return {
        **{k: v for k, v in defaults.items() if k.lower() not in given},
        **configured,
        **_auth_header(config.auth),
    }


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class HttpSource:
    """Polls one task per request from a JSON API described by an ``http`` source config.

    >>> async with HttpSource("jobs", config) as source:  # doctest: +SKIP
    ...     snapshot = await source.fetch("job/42")

    The id is percent-encoded as one path segment (or query value) wherever ``{task_id}``
    stands, so ``/``, ``?`` and ``#`` stay inside it. A 404 is a permanent error, or with
    ``not_found: running`` a snapshot without status (the task is not visible yet).
    """

    def __init__(self, name: str, config: HttpSourceConfig) -> None:
        self.name = name
        self._config = config
        self._state = _State.NEW
        self._session: aiohttp.ClientSession | None = None
        # Built now, so a bad CA file is a config error at startup, not at the first poll.
        self._ssl = ssl_for(config, where=f"sources.{name}")
        self._paths = _Paths(config)
        self._headers = _request_headers(config)
        scheme, _, rest = config.url.partition("://")
        self._origin = f"{scheme}://{re.split(r'[/?]', rest, maxsplit=1)[0]}"

    def __repr__(self) -> str:
        # Only the origin: the path or query of a template may carry an API key.
        auth = self._config.auth.type if self._config.auth else None
        return (
            f"HttpSource(name={self.name!r}, origin={self._origin!r}, "
            f"auth={auth!r}, state={self._state.value!r})"
        )

    async def __aenter__(self) -> HttpSource:
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
        if session is not None:
            await session.close()

    def _open_session(self) -> aiohttp.ClientSession:
        if self._state is _State.CLOSED:
            raise ClosedError(f"source {self.name!r} is closed")
        if self._session is None:
            self._session = make_session(self._config, ssl_context=self._ssl)
            self._state = _State.OPEN
        return self._session

    def url_for(self, task_id: str) -> str:
        """The request URL for ``task_id``, percent-encoded and ready to send as is."""
        # Unreserved characters only: safe both as one path segment and as a query value.
        return self._config.url.replace(TASK_ID, quote_segment(task_id))

    def _body_for(self, task_id: str) -> bytes | None:
        if self._config.method != "POST" or self._config.body is None:
            return None
        return json.dumps(_fill(self._config.body, task_id), ensure_ascii=False).encode()

    async def fetch(self, task_id: str) -> TaskSnapshot:
        """Poll one task."""
        validate_task_id(task_id)
        session = self._open_session()
        method = self._config.method
        what = f"{method} task {task_id[:40]!r}"
        resp = await send(
            session,
            method,
            self.url_for(task_id),
            what=what,
            headers=self._headers,
            body=self._body_for(task_id),
            max_body_bytes=self._config.max_body_bytes,
        )
        if resp.status == 404 and self._config.not_found == "running":
            return TaskSnapshot(task_id)  # no status: the classifier keeps it running
        if not 200 <= resp.status < 300:
            raise error_for_response(resp, what=what)
        try:
            return _parse(resp.body, task_id, self._paths)
        except MalformedResponseError as exc:
            raise _with_context(exc, what, resp) from None


def _with_context(
    exc: MalformedResponseError, what: str, resp: HttpResponse
) -> MalformedResponseError:
    return MalformedResponseError(
        f"{what}: {exc.message}", status=resp.status, request_id=resp.request_id
    )
