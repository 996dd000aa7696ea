"""MetaStudio body parsing: every documented form, and every way a body can be unusable."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from watcher._exceptions import AuthError, MalformedResponseError, PermanentError, ServerError
from watcher.sources.metastudio import classify_metastudio, parse_search, parse_task

DOCUMENTED = (
    b'{"resource":"knowledge-intent-question-create","task_name":"Imported Q&A pairs.",'
    b'"begin_time":1744276967708,"end_time":1744276967708,"task_type":0,'
    b'"operator":"adminUserAccount","total_count":3,"success_count":2,"failure_count":1,'
    b'"task_status":0,"task_id":"fd1c56acbb2c4b1aa24ba37df99f3129",'
    b'"user_id":"246748d3d76b4779aea38c201a284810"}'
)
DOC_ID = "fd1c56acbb2c4b1aa24ba37df99f3129"


def test_documented_example_parses() -> None:
    """API.md's example body gives the documented snapshot, raw body kept."""
    snap = parse_task(DOCUMENTED, DOC_ID)
    moment = datetime(2025, 4, 10, 9, 22, 47, 708000, tzinfo=UTC)
    assert snap.task_id == DOC_ID
    assert snap.status == "0"
    assert (snap.total_count, snap.success_count, snap.failure_count) == (3, 2, 1)
    assert snap.begin_time == moment
    assert snap.end_time == moment
    assert snap.raw == json.loads(DOCUMENTED)
    assert snap.raw["operator"] == "adminUserAccount"


@pytest.mark.parametrize(
    ("begin", "status", "end"),
    [
        ("1744276967708", "0", None),
        ("2025-04-10T09:22:47.708Z", "RUNNING", ""),
        (1744276967708, 1, 0),
        (1744276967708.0, 1.0, "0"),
        ("2025-04-10T09:22:47.708", " 1 ", "missing"),
    ],
)
def test_mixed_field_forms(begin: object, status: object, end: object) -> None:
    """Times as ms, ms strings or ISO; status as int or string; "unset" in every form."""
    body: dict[str, object] = {
        "task_id": "t",
        "begin_time": begin,
        "task_status": status,
        "total_count": "10",
        "success_count": 4,
        "failure_count": "0",
    }
    if end != "missing":
        body["end_time"] = end
    snap = parse_task(json.dumps(body).encode(), "t")
    assert snap.begin_time == datetime(2025, 4, 10, 9, 22, 47, 708000, tzinfo=UTC)
    assert snap.end_time is None
    assert snap.status == str(status).strip().removesuffix(".0")
    assert (snap.total_count, snap.success_count, snap.failure_count) == (10, 4, 0)


def test_missing_task_id_in_body_is_the_requested_one() -> None:
    """A body without task_id is taken as the task asked for."""
    assert parse_task(b'{"task_status": 1}', "abc").task_id == "abc"


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"", "not JSON"),
        (b"<html>oops</html>", "not JSON"),
        (b'{"task_id": "t", "task_status"', "not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        (b'{"task_status": NaN}', "not JSON"),
        (b"[1, 2]", "task object"),
        (b'"a string"', "task object"),
        (b"null", "task object"),
        (b"{}", "none of the task fields"),
        (b'{"unrelated": 1}', "none of the task fields"),
        (b"[" * 50_000 + b"]" * 50_000, "nested"),
        (b'{"task_id": "t", "x": ' + b"[" * 40 + b"]" * 40 + b"}", "nested"),
        (b'{"task_id": "other"}', "task_id"),
        (b'{"task_id": ["t"]}', "task_id"),
        (b'{"task_id": "t", "total_count": "three"}', "total_count"),
        (b'{"task_id": "t", "success_count": -1}', "success_count"),
        (b'{"task_id": "t", "failure_count": true}', "failure_count"),
        (b'{"task_id": "t", "task_status": {"a": 1}}', "task_status"),
        (b'{"task_id": "t", "begin_time": "yesterday"}', "begin_time"),
        (b'{"task_id": "t", "end_time": [1]}', "end_time"),
        (b'{"task_id": "t", "total_count": ' + b"9" * 5000 + b"}", "not JSON"),
    ],
)
def test_unusable_bodies_are_malformed(body: bytes, match: str) -> None:
    """Garbage, wrong shapes, wrong types, another task's body: MalformedResponseError."""
    with pytest.raises(MalformedResponseError, match=match):
        parse_task(body, "t")


def test_search_body() -> None:
    """A search page lists snapshots by their own ids and reports a cut when count is larger."""
    body = {
        "offset": 0,
        "limit": 10,
        "count": 2,
        "data": [json.loads(DOCUMENTED), {"task_id": "b", "task_status": "1"}],
    }
    page = parse_search(json.dumps(body).encode())
    assert set(page.by_id()) == {DOC_ID, "b"}
    assert (page.count, page.offset, page.limit) == (2, 0, 10)
    assert not page.cut
    cut = parse_search(json.dumps({**body, "count": "7"}).encode())
    assert cut.cut


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"[]", "JSON object"),
        (b'{"data": {}}', "data"),
        (b'{"data": [1]}', r"data\[0\]"),
        (b'{"data": [{"task_status": 1}]}', r"data\[0\]: task_id: missing"),
        (b'{"data": [], "count": "many"}', "count"),
    ],
)
def test_search_body_malformed(body: bytes, match: str) -> None:
    """Unusable search bodies name what is wrong."""
    with pytest.raises(MalformedResponseError, match=match):
        parse_search(body)


def test_empty_search_body() -> None:
    """A search with no data is an empty, uncut page."""
    page = parse_search(b'{"count": 0}')
    assert page.snapshots == ()
    assert not page.cut


def test_classify_codes() -> None:
    """MSS codes classify only on 400; gateway codes by their number."""
    assert classify_metastudio(400, "MSS.000000003") is PermanentError
    assert classify_metastudio(400, "MSS.000000004") is AuthError
    assert classify_metastudio(400, "MSS.000000002") is ServerError
    assert classify_metastudio(500, "MSS.000000003") is None
    assert classify_metastudio(401, "APIG.0307") is AuthError
    assert classify_metastudio(400, None) is None
