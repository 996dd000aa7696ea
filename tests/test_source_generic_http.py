"""The generic ``http`` source against a loopback jobs API shaped unlike MetaStudio."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import pytest
from aiohttp import web

from watcher._exceptions import (
    AuthError,
    ClosedError,
    ConfigError,
    InvalidTaskIdError,
    MalformedResponseError,
    PermanentError,
    RateLimitedError,
    ServerError,
    SourceError,
)
from watcher._models import Outcome, TaskSnapshot
from watcher._watcher import Watcher
from watcher.classifier import Classifier
from watcher.config import config_from_dict
from watcher.config._schema import HttpSourceConfig
from watcher.sources import HttpSource, build_source
from watcher.sources.http import JsonPath, parse_http_task

pytestmark = pytest.mark.anyio

TOKEN = "bearer-token-7f3a9c"
API_KEY = "api-key-value-51d2e8"
PASSWORD = "basic-password-0b6e"
SECRETS = (TOKEN, API_KEY, PASSWORD)
PREFIX = "/api/jobs/"
HOSTILE_IDS = ["a/b", "x?y=1&z=2", "frag#ment", "%2F", "a b", "任务-ü", "...", 'q"uote']


def job(state: object, done: int | None = 0, total: int | None = 10, **extra: Any) -> Any:
    """A body shaped like the fake API's: ``{"data": {"job": {...}}}``."""
    body: dict[str, Any] = {"state": state, **extra}
    if done is not None or total is not None:
        body["progress"] = {"done": done, "total": total}
    return {"data": {"job": body}}


@dataclass
class JobsApi:
    """A fake jobs API: each id has a script of answers; the last one repeats."""

    scripts: dict[str, list[Any]] = field(default_factory=dict)
    polls: dict[str, int] = field(default_factory=dict)
    seen: list[web.Request] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    auth: str | None = f"Bearer {TOKEN}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request)
        self.bodies.append(await request.read())
        if self.auth is not None and request.headers.get("Authorization") != self.auth:
            return web.json_response({"error_code": "UNAUTHORIZED"}, status=401)
        path = request.raw_path.partition("?")[0]
        if request.method == "POST":
            task_id = json.loads(self.bodies[-1])["ids"][0]
        elif "id" in request.query:
            task_id = request.query["id"]
        else:
            task_id = unquote(path.removeprefix(PREFIX))
        count = self.polls.get(task_id, 0)
        self.polls[task_id] = count + 1
        script = self.scripts.get(task_id)
        if script is None:
            return web.json_response({"error_code": "NOT_FOUND"}, status=404)
        answer = script[min(count, len(script) - 1)]
        if isinstance(answer, web.StreamResponse):
            return answer
        if isinstance(answer, int):
            return web.json_response({"error_code": f"E{answer}"}, status=answer)
        return web.json_response(answer)


@asynccontextmanager
async def serve(api: JobsApi) -> AsyncIterator[str]:
    """The jobs API on an ephemeral loopback port; yields its base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", api.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def source_config(base: str, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "type": "http",
        "url": base + PREFIX + "{task_id}",
        "headers": {"X-Api-Key": API_KEY},
        "auth": {"type": "bearer", "token": TOKEN},
        "status_path": "data.job.state",
        "progress": {
            "done_path": "data.job.progress.done",
            "total_path": "data.job.progress.total",
        },
        "begin_time_path": "data.job.started_at",
        "end_time_path": "data.job.finished_at",
        "outcomes": {
            "succeeded": ["SUCCEEDED", "DONE"],
            "failed": ["FAILED"],
            "cancelled": ["CANCELLED"],
            "running": ["RUNNING", "QUEUED"],
        },
        "connect_timeout": 2.0,
        "read_timeout": 2.0,
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def make(base: str, **overrides: Any) -> HttpSourceConfig:
    config = config_from_dict({"sources": {"jobs": source_config(base, **overrides)}})
    result = config.sources["jobs"]
    assert isinstance(result, HttpSourceConfig)
    return result


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


# --- fetch ------------------------------------------------------------------------------------


async def test_running_job_becomes_a_snapshot() -> None:
    """Status, counts and times come from their paths; the raw body is kept whole."""
    body = job("RUNNING", 3, 10, started_at="2025-04-10T09:22:47Z", extra={"k": [1]})
    api = JobsApi(scripts={"j1": [body]})
    async with serve(api) as base, HttpSource("jobs", make(base)) as src:
        snap = await src.fetch("j1")
    assert snap.task_id == "j1"
    assert snap.status == "RUNNING"
    assert (snap.success_count, snap.failure_count, snap.total_count) == (3, None, 10)
    assert snap.done_count == 3
    assert (
        snap.begin_time is not None and snap.begin_time.isoformat() == "2025-04-10T09:22:47+00:00"
    )
    assert snap.end_time is None
    assert snap.raw == body
    assert (
        Classifier(make("http://h").status_map, progress_rule=False).classify(snap).outcome is None
    )


async def test_headers_and_bearer_auth_are_sent() -> None:
    """Every request carries the bearer token, the configured headers and watcher's agent."""
    api = JobsApi(scripts={"j1": [job("DONE")]})
    async with serve(api) as base, HttpSource("jobs", make(base)) as src:
        await src.fetch("j1")
    headers = api.seen[0].headers
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["X-Api-Key"] == API_KEY
    assert headers["Accept"] == "application/json"
    assert headers["User-Agent"].startswith("watcher/")


async def test_configured_headers_replace_defaults_whatever_their_case() -> None:
    """A configured ``accept`` header replaces the default one instead of adding a second."""
    api = JobsApi(scripts={"j1": [job("DONE")]})
    headers = {"accept": "application/vnd.jobs+json", "X-Api-Key": API_KEY}
    async with serve(api) as base, HttpSource("jobs", make(base, headers=headers)) as src:
        await src.fetch("j1")
    assert api.seen[0].headers.getall("Accept") == ["application/vnd.jobs+json"]


async def test_basic_auth_is_sent() -> None:
    """``auth: basic`` sends RFC 7617 credentials."""
    pair = base64.b64encode(f"svc:{PASSWORD}".encode()).decode()
    api = JobsApi(scripts={"j1": [job("DONE")]}, auth=f"Basic {pair}")
    auth = {"type": "basic", "username": "svc", "password": PASSWORD}
    async with serve(api) as base, HttpSource("jobs", make(base, auth=auth)) as src:
        snap = await src.fetch("j1")
    assert snap.status == "DONE"


async def test_refused_credentials_are_an_auth_error_without_secrets() -> None:
    """A 401 is an AuthError; neither it nor the source's repr shows a secret."""
    api = JobsApi(scripts={"j1": [job("DONE")]}, auth="Bearer something-else")
    config = make("http://127.0.0.1:1")
    async with serve(api) as base:
        config = make(base)
        async with HttpSource("jobs", config) as src:
            with pytest.raises(AuthError) as caught:
                await src.fetch("j1")
            shown = repr(src)
    assert caught.value.status == 401
    assert caught.value.error_code == "UNAUTHORIZED"
    assert_no_secret(str(caught.value), repr(caught.value), shown, repr(config), str(config))
    assert "auth='bearer'" in shown


async def test_throttled_with_retry_after() -> None:
    """A 429 with Retry-After is a RateLimitedError carrying the delay; the next poll works."""
    limited = web.json_response({}, status=429, headers={"Retry-After": "7"})
    api = JobsApi(scripts={"j1": [limited, job("RUNNING")]})
    async with serve(api) as base, HttpSource("jobs", make(base)) as src:
        with pytest.raises(RateLimitedError) as caught:
            await src.fetch("j1")
        snap = await src.fetch("j1")
    assert caught.value.retry_after == 7.0
    assert caught.value.status == 429
    assert snap.status == "RUNNING"


async def test_statuses_map_to_error_classes() -> None:
    """404 permanent, 500/503/409 server errors, 400 permanent, 403 auth."""
    cases = {"e500": 500, "e503": 503, "e409": 409, "e400": 400, "e403": 403}
    expected = {
        "missing": PermanentError,
        "e500": ServerError,
        "e503": ServerError,
        "e409": ServerError,
        "e400": PermanentError,
        "e403": AuthError,
    }
    api = JobsApi(scripts={k: [v] for k, v in cases.items()})
    async with serve(api) as base, HttpSource("jobs", make(base)) as src:
        for task_id, cls in expected.items():
            with pytest.raises(SourceError) as caught:
                await src.fetch(task_id)
            assert type(caught.value) is cls, task_id
            assert caught.value.status == cases.get(task_id, 404)
            assert_no_secret(str(caught.value))


async def test_not_found_running_keeps_polling() -> None:
    """With ``not_found: running`` a 404 is a snapshot the classifier keeps running."""
    api = JobsApi(scripts={})
    config_404 = make("http://h", not_found="running")
    async with serve(api) as base, HttpSource("jobs", make(base, not_found="running")) as src:
        snap = await src.fetch("late")
    assert snap == TaskSnapshot("late")
    verdict = Classifier(config_404.status_map, progress_rule=config_404.progress_rule)
    assert verdict.classify(snap).outcome is None


async def test_malformed_bodies_name_the_path() -> None:
    """Missing status, a non-scalar status, a bad count or non-JSON: malformed, path named."""
    bad_json = web.Response(body=b"<html>", content_type="text/html")
    api = JobsApi(
        scripts={
            "nostate": [{"data": {"job": {}}}],
            "nulljob": [{"data": None}],
            "dict": [job({"x": 1})],
            "count": [job("RUNNING", done="three")],
            "html": [bad_json],
            "time": [job("RUNNING", finished_at="yesterday")],
        }
    )
    messages = {}
    async with serve(api) as base, HttpSource("jobs", make(base)) as src:
        for task_id in api.scripts:
            with pytest.raises(MalformedResponseError) as caught:
                await src.fetch(task_id)
            messages[task_id] = caught.value.message
    assert "data.job.state: missing" in messages["nostate"]
    assert "data.job.state: missing" in messages["nulljob"]
    assert "data.job.state" in messages["dict"]
    assert "data.job.progress.done" in messages["count"]
    assert "not JSON" in messages["html"]
    assert "data.job.finished_at" in messages["time"]


async def test_list_paths_and_integer_statuses() -> None:
    """List indexes (also negative) work, and integer statuses compare as strings."""
    body = {"items": [{"state": 1, "n": "4"}, {"state": 0, "n": 9, "ok": 7, "bad": 2}]}
    overrides = {
        "status_path": "items.-1.state",
        "progress": {
            "success_path": "items.1.ok",
            "failure_path": "items.1.bad",
            "total_path": "items.-1.n",
        },
        "outcomes": {"succeeded": [0], "running": [1]},
    }
    config = make("http://h", **overrides)
    assert config.status_map == {"0": Outcome.SUCCEEDED, "1": "running"}
    snap = parse_http_task(json.dumps(body).encode(), "t", config)
    assert (snap.status, snap.success_count, snap.failure_count, snap.total_count) == ("0", 7, 2, 9)
    assert Classifier(config.status_map).classify(snap).outcome is Outcome.SUCCEEDED
    assert JsonPath("items.5.state").get(body, "absent") == "absent"
    assert JsonPath("items.x").get(body) is None
    top = parse_http_task(b'[{"state": "DONE"}]', "t", make("http://h", status_path="0.state"))
    assert top.status == "DONE"
    assert top.raw == {"body": [{"state": "DONE"}]}


async def test_hostile_ids_arrive_as_one_path_segment() -> None:
    """Ids with /, ?, #, %2F, spaces and unicode reach the server as one exact segment."""
    api = JobsApi(scripts={t: [job("DONE")] for t in HOSTILE_IDS})
    async with serve(api) as base, HttpSource("jobs", make(base)) as src:
        snaps = [await src.fetch(t) for t in HOSTILE_IDS]
    assert [s.task_id for s in snaps] == HOSTILE_IDS
    assert all(s.status == "DONE" for s in snaps)
    for request, task_id in zip(api.seen, HOSTILE_IDS, strict=True):
        segment = request.raw_path.removeprefix(PREFIX)
        assert "/" not in segment
        assert "?" not in segment
        assert "#" not in segment
        assert unquote(segment) == task_id


async def test_task_id_as_a_query_value() -> None:
    """``{task_id}`` in the query is one encoded value; other query parameters survive."""
    api = JobsApi(scripts={t: [job("DONE")] for t in HOSTILE_IDS})
    url = "{base}/api/lookup?id={task_id}&view=full"
    async with (
        serve(api) as base,
        HttpSource("jobs", make(base, url=url.replace("{base}", base))) as src,
    ):
        for task_id in HOSTILE_IDS:
            assert (await src.fetch(task_id)).status == "DONE"
    for request, task_id in zip(api.seen, HOSTILE_IDS, strict=True):
        assert request.path == "/api/lookup"
        assert request.query["id"] == task_id
        assert request.query["view"] == "full"
        assert len(request.query) == 2


async def test_post_with_a_body_template() -> None:
    """POST sends the JSON body with the id substituted as data, never as JSON syntax."""
    api = JobsApi(scripts={t: [job("FAILED")] for t in HOSTILE_IDS})
    overrides = {
        "url": "{base}/api/describe",
        "method": "POST",
        "body": {"ids": ["{task_id}"], "detail": True, "note": "id={task_id}"},
    }
    async with serve(api) as base:
        overrides["url"] = f"{base}/api/describe"
        async with HttpSource("jobs", make(base, **overrides)) as src:
            for task_id in HOSTILE_IDS:
                assert (await src.fetch(task_id)).status == "FAILED"
    for request, sent, task_id in zip(api.seen, api.bodies, HOSTILE_IDS, strict=True):
        assert request.method == "POST"
        assert request.headers["Content-Type"] == "application/json"
        assert json.loads(sent) == {"ids": [task_id], "detail": True, "note": f"id={task_id}"}


async def test_invalid_ids_and_closed_source_send_nothing() -> None:
    """A control character or dot-segment is refused before any request; closed is closed."""
    api = JobsApi(scripts={})
    async with serve(api) as base:
        src = HttpSource("jobs", make(base))
        for bad in ["..", "a\nb", ""]:
            with pytest.raises(InvalidTaskIdError):
                await src.fetch(bad)
        await src.aclose()
        await src.aclose()
        with pytest.raises(ClosedError):
            await src.fetch("j1")
    assert api.seen == []


# --- config -----------------------------------------------------------------------------------


def problems(**overrides: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        make("https://api.test", **overrides)
    return str(caught.value)


def test_config_refuses_bad_templates() -> None:
    """No {task_id}, {task_id} in the host, credentials, fragments, raw spaces: config errors."""
    assert "{task_id}" in problems(url="https://api.test/jobs/current")
    assert "host" in problems(url="https://{task_id}.api.test/jobs")
    assert "credentials" in problems(url="https://u:p@api.test/jobs/{task_id}")
    assert "fragment" in problems(url="https://api.test/jobs/{task_id}#x")
    assert "percent-encoded" in problems(url="https://api.test/my jobs/{task_id}")
    assert "placeholder" in problems(url="https://api.test/{project}/{task_id}")
    assert "%XX" in problems(url="https://api.test/a%zz/{task_id}")
    assert "port" in problems(url="https://api.test:99999/{task_id}")
    assert "http" in problems(url="ftp://api.test/{task_id}")


def test_config_refuses_inconsistent_settings() -> None:
    """Duplicate statuses, no terminal outcome, body with GET, double auth, bad paths."""
    assert "both" in problems(outcomes={"succeeded": ["X"], "failed": ["X"]})
    assert "no terminal outcome" in problems(outcomes={"running": ["R"]})
    assert "POST" in problems(body={"id": "{task_id}"})
    assert "Authorization" in problems(headers={"Authorization": "Bearer x"})
    assert "dotted path" in problems(status_path="data..state")
    assert "done_path" in problems(
        progress={"done_path": "a", "success_path": "b", "total_path": "c"}
    )
    assert "not_found" in problems(not_found="ignore")
    assert "method" in problems(method="DELETE")
    assert make("https://api.test/q", method="post", body=["{task_id}"]).method == "POST"
    # POST without {task_id} anywhere is refused; in the body alone is enough.
    assert "{task_id}" in problems(url="https://api.test/q", method="POST", body={"a": 1})
    assert make("https://api.test/q", url="https://api.test/q", method="POST", body=["{task_id}"])


def test_config_errors_never_show_header_values() -> None:
    """A header value with a newline is refused without echoing it."""
    text = problems(headers={"X-Api-Key": API_KEY + "\r\nInjected: 1"})
    assert "X-Api-Key" in text
    assert_no_secret(text)
    assert "header name" in problems(headers={"Bad Name": "v"})


def test_build_source_builds_the_http_source() -> None:
    """``type: http`` builds an HttpSource through build_source; progress_rule is off."""
    config = make("https://api.test")
    src = build_source("jobs", config)
    assert isinstance(src, HttpSource)
    assert config.progress_rule is False
    assert src.url_for("a/b") == "https://api.test/api/jobs/a%2Fb"
    assert repr(src) == (
        "HttpSource(name='jobs', origin='https://api.test', auth='bearer', state='new')"
    )


# --- end to end -------------------------------------------------------------------------------


async def test_engine_waits_on_the_http_source_to_every_outcome() -> None:
    """Watcher(config) with an http source: each job ends with the outcome its status means."""
    done_ms = 1_744_276_967_708
    limited = web.json_response({}, status=429, headers={"Retry-After": "0"})
    api = JobsApi(
        scripts={
            "job/1": [
                job("RUNNING", 0, 4),
                job("RUNNING", 2, 4),
                job("SUCCEEDED", 4, 4, finished_at=done_ms),
            ],
            "job?2": [job("QUEUED", None, None), job("RUNNING", 1, 3), job("FAILED", 1, 3)],
            "job#3": [job("RUNNING"), job("CANCELLED")],
            "j4": [job("DONE", 10, 10)],
            "j 5": [500, limited, job("SUCCEEDED", 1, 1)],
        }
    )
    expected = {
        "job/1": Outcome.SUCCEEDED,
        "job?2": Outcome.FAILED,
        "job#3": Outcome.CANCELLED,
        "j4": Outcome.SUCCEEDED,
        "j 5": Outcome.SUCCEEDED,
        "gone": Outcome.ERROR,
    }
    async with serve(api) as base:
        config = config_from_dict(
            {
                "sources": {"jobs": source_config(base, rate_limit=200)},
                "polling": {
                    "backoff": {"policy": "fixed", "initial": "20ms", "min": 0, "max": "50ms"},
                    "error_backoff": {"initial": "10ms", "max": "50ms"},
                },
                "sinks": [],
                "store": {"type": "memory"},
            }
        )
        async with Watcher(config, seed=3) as w:
            added = await w.add(list(expected), batch="b1")
            assert sorted(added.accepted) == sorted(expected)
            events = await w.wait_all(list(expected), timeout=10)
    by_id = {e.task_id: e for e in events}
    assert {t: e.outcome for t, e in by_id.items()} == expected
    assert by_id["job/1"].snapshot is not None
    assert by_id["job/1"].to_dict()["task_status"] == "SUCCEEDED"
    assert by_id["job/1"].to_dict()["success_count"] == 4
    assert by_id["job/1"].to_dict()["end_time"] == "2025-04-10T09:22:47.708000Z"
    assert by_id["job/1"].to_dict()["snapshot"] == job("SUCCEEDED", 4, 4, finished_at=done_ms)
    assert by_id["job?2"].polls == 3
    assert by_id["j 5"].polls == 3
    gone = by_id["gone"].to_dict()["error"]
    assert gone is not None and gone["kind"] == "permanent" and gone["code"] == "NOT_FOUND"
    assert all(e.source == "jobs" and e.batch == "b1" for e in events)
    # Every request authenticated, every id one path segment, polls as the engine counted.
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in api.seen)
    assert all(r.headers["X-Api-Key"] == API_KEY for r in api.seen)
    assert {unquote(r.raw_path.removeprefix(PREFIX)) for r in api.seen} == set(expected)
    assert all("/" not in r.raw_path.removeprefix(PREFIX) for r in api.seen)
    assert api.polls == {t: e.polls for t, e in by_id.items()}
    assert_no_secret(json.dumps([e.to_dict() for e in events]))
