"""Issue 7, item 5: no secret, in any form, leaves watcher through any channel.

One campaign (a module fixture) runs `watcher run` at debug level with AK/SK (plus a security
token), IAM passwords, a source token, credentials in an endpoint URL, a webhook secret and the
API token all set, and forces every failure that touches them: a wrong SK (401), an IAM endpoint
that fails and then refuses the password, a webhook receiver answering 5xx and 401 (one event
dead-lettered), control-API calls with wrong tokens. Then `watcher wait`, `watcher status/add`
and `watcher check` (valid and invalid configs, each invalid one with a literal secret next to
its error) run as real processes. Everything that comes out is kept: logs, stdout/stderr,
events in every sink, what the receiver got, API answers, /metrics, dead letters, every file
written (the SQLite store included: it must not hold secrets either). The tests search all of
it for every secret in every form it could plausibly take.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import aiohttp
import anyio
import pytest
from _sink_receiver import Call, Receiver, status
from _waiting import wait_until
from aiohttp import web
from test_daemon import Daemon, start_daemon, stop_daemon

from watcher.simulator import FaultConfig, Simulator, SimulatorConfig

pytestmark = pytest.mark.anyio

# Every secret starts with this marker, so a leak of any part of one is caught too.
MARK = "SECRET-"
SK = "SECRET-sk-7f3a9c/+=&?%~e41b"
SK_WRONG = "SECRET-skwrong-0c55/+=&?%~91"  # refused, but still a secret
OTHER_SK = "SECRET-skother-real-44d1"  # what the simulator expects for AK_OTHER
SECURITY_TOKEN = "SECRET-sts-a81d+/=c0ffee"
IAM_PASSWORD = "SECRET-pw-Ünï/+?&= 5e1"  # non-ASCII: JSON logs would show it escaped
IAM_PASSWORD_BAD = "SECRET-pwbad-Ø/+?&= 77a"
IAM_TOKEN = "SECRET-iamtok-4c1e+/=9d"  # what the fake IAM issues
SOURCE_TOKEN = "SECRET-srctok-91b0+/=2f"
URL_USER, URL_PASSWORD = "urluser", "SECRET-urlpw-@:/?#b3"
API_TOKEN = "SECRET-api-5d2e+/=b7c9-0123456789"
WRONG_API_TOKENS = (API_TOKEN + "x", API_TOKEN[:-1], "SECRET-apiwrong-6a6a6a6a6a")
HOOK_KEY = b"SECRET-whk-3b9f-" + bytes(range(200, 216))  # the HMAC key behind whsec_
HOOK_SECRET = "whsec_" + base64.b64encode(HOOK_KEY).decode()
CLIENT_URL_PASSWORD = "SECRET-clientpw-77c"  # in a --url given to `watcher status`

AK, AK_OTHER = "AKGOOD00000000000001", "AKOTHER0000000000002"
GOOD_USER, BAD_USER = "good-user", "bad-user"
ENV = {
    "W_SK": SK,
    "W_SK_WRONG": SK_WRONG,
    "W_STS": SECURITY_TOKEN,
    "W_IAM_PW": IAM_PASSWORD,
    "W_IAM_PW_BAD": IAM_PASSWORD_BAD,
    "W_SRC_TOKEN": SOURCE_TOKEN,
    "W_URL_PW": quote(URL_PASSWORD, safe=""),
    "W_HOOK": HOOK_SECRET,
    "W_API": API_TOKEN,
}
SECRETS: tuple[str | bytes, ...] = (
    SK, SK_WRONG, OTHER_SK, SECURITY_TOKEN, IAM_PASSWORD, IAM_PASSWORD_BAD, IAM_TOKEN,
    SOURCE_TOKEN, URL_PASSWORD, f"{URL_USER}:{URL_PASSWORD}", API_TOKEN, *WRONG_API_TOKENS,
    HOOK_SECRET, HOOK_KEY, CLIENT_URL_PASSWORD,
)  # fmt: skip


def forms(secret: str | bytes) -> set[str]:
    """The ways a secret could be written out: raw, escaped, encoded."""
    raw = secret.encode("utf-8") if isinstance(secret, str) else secret
    found = {raw.hex(), raw.hex().upper()}
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        text = encode(raw).decode()
        found |= {text, text.rstrip("=")}
    if isinstance(secret, str):
        found |= {
            secret,
            json.dumps(secret)[1:-1],  # JSON with \\uXXXX escapes
            repr(secret)[1:-1],
            quote(secret, safe=""),
            quote(secret),
            quote_plus(secret),
        }
    return found


FORMS = sorted({form for secret in SECRETS for form in forms(secret)}, key=len, reverse=True)


def leaks(text: str | bytes) -> list[str]:
    """Which secret forms (or the marker) appear in ``text``."""
    if isinstance(text, bytes):
        found = [f for f in FORMS if f.encode() in text]
        return found + ([MARK] if MARK.encode() in text else [])
    return [f for f in FORMS if f in text] + ([MARK] if MARK in text else [])


# --- the world: simulator, fake IAM, webhook receiver --------------------------------------


class FakeIam:
    """IAM for both users: a token for the good one; for the bad one 503 twice, then 401."""

    def __init__(self) -> None:
        self.bad_statuses: list[int] = []  # what the bad user's requests were answered

    def __call__(self, call: Call) -> web.Response:
        user = json.loads(call.body)["auth"]["identity"]["password"]["user"]["name"]
        if user == GOOD_USER:
            body = json.dumps({"token": {"expires_at": "2099-01-01T00:00:00.000000Z"}})
            return web.Response(
                status=201, text=body, content_type="application/json",
                headers={"X-Subject-Token": IAM_TOKEN},
            )  # fmt: skip
        if len(self.bad_statuses) < 2:
            code, error = 503, {"code": "IAM.0001", "message": "service busy, try later"}
        else:
            code, error = 401, {"code": "IAM.0004", "message": "The username or password is wrong."}
        self.bad_statuses.append(code)
        return web.json_response({"error": error}, status=code)


def hook_status(call: Call) -> int:
    """The receiver: 503 twice, then 401 (that event is dead-lettered), then 200."""
    return 503 if call.number <= 2 else 401 if call.number == 3 else 200


def config_text(sim: Simulator, iam: str, hook: str, *, fmt: str = "json") -> str:
    def source(endpoint: str, auth: str) -> str:
        return f"""
    type: metastudio
    endpoint: "{endpoint}"
    project_id: sim-project
    auth: {auth}
    rate_limit: 50
    status_map: {{"1": running, "2": cancelled}}"""

    iam_auth = (
        "{{type: iam_password, iam_endpoint: {iam}, user: {user}, password: {pw}, domain: d}}"
    )
    return f"""
sources:
  ms: {source(sim.url, "{type: aksk, ak: " + AK + ', sk: "${W_SK}", security_token: "${W_STS}"}')}
  wrongsk: {source(sim.url, "{type: aksk, ak: " + AK_OTHER + ', sk: "${W_SK_WRONG}"}')}
  iam: {source(sim.url, iam_auth.format(iam=iam, user=GOOD_USER, pw='"${W_IAM_PW}"'))}
  iambad: {source(sim.url, iam_auth.format(iam=iam, user=BAD_USER, pw='"${W_IAM_PW_BAD}"'))}
  tok: {source(sim.url, '{type: token, token: "${W_SRC_TOKEN}"}')}
polling:
  backoff: {{min: 100ms, initial: 150ms, max: 300ms, progress_max: 300ms}}
  error_backoff: {{initial: 100ms, max: 300ms}}
sinks:
  - {{type: stdout}}
  - {{type: file, path: results.jsonl}}
  - type: webhook
    url: "{hook}"
    secret: "${{W_HOOK}}"
    initial_backoff: 100ms
    max_backoff: 200ms
    dead_letter: dead.jsonl
api: {{listen: "127.0.0.1:0", token: "${{W_API}}"}}
log: {{level: debug, format: {fmt}}}
daemon: {{grace: 5s}}
"""


# Invalid configs, each with a literal secret beside (or inside) the problem.
_BASE = """sources:
  m:
    type: metastudio
    endpoint: http://127.0.0.1:9
    project_id: p
    {auth}
{extra}"""
BAD_CONFIGS: dict[str, str] = {
    "no-space-after-colon": "auth: {type: aksk, ak: AKX, sk:SECRET-lit-colon-01}",
    "bare-secret-as-key": "auth: {type: aksk, ak: AKX, SECRET-lit-bare-02}",
    "unterminated-quote": 'auth: {type: aksk, ak: AKX, sk: "SECRET-lit-quote-03}',
    "wrong-type": "auth: {type: aksk, ak: AKX, sk: [SECRET-lit-list-04]}",
    "bad-iam-url": (
        "auth: {type: iam_password, iam_endpoint: 'ftp://u:SECRET-lit-url-05@h', user: u,"
        " password: SECRET-lit-pw-06, domain: d}"
    ),
    "unknown-key-with-secret": "auth: {type: aksk, ak: AKX, sk: SECRET-lit-07, skk: SECRET-lit-08}",
    "duplicate-key": "auth: {type: aksk, ak: AKX, sk: SECRET-lit-dup-09, sk: SECRET-lit-dup-10}",
    "control-character": 'auth: {type: aksk, ak: AKX, sk: "SECRET-lit-ctl-11\x07"}',
    "unset-variable": 'auth: {type: aksk, ak: AKX, sk: "SECRET-lit-12${NO_SUCH_VAR_W7}"}',
    "bad-webhook-secret": "auth: {type: token, token: SECRET-lit-tok-13}|"
    "sinks: [{type: webhook, url: 'http://127.0.0.1:9/h', secret: whsec_SECRET-hook-bad}]",
    "bad-listen": "auth: {type: token, token: SECRET-lit-tok-14}|"
    "api: {listen: nowhere, token: SECRET-lit-api-15}",
    # userinfo in an API URL is refused (aiohttp would send it as Basic auth), not echoed.
    "credentials-in-endpoint": "auth: {type: token, token: SECRET-lit-tok-16}|"
    f"  n:\n    type: metastudio\n    endpoint: 'http://{URL_USER}:{URL_PASSWORD}@127.0.0.1:9'"
    "\n    project_id: p\n    auth: {type: token, token: SECRET-lit-tok-17}",
}


def bad_config(case: str) -> str:
    auth, _, extra = BAD_CONFIGS[case].partition("|")
    return _BASE.format(auth=auth, extra=extra)


# --- running things ---------------------------------------------------------------------------


async def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """`python -m watcher ...`; the exit code and stdout + stderr."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")}
    with anyio.fail_after(30):
        done = await anyio.run_process(
            [sys.executable, "-m", "watcher", *args],
            cwd=cwd, env={**base, **ENV, **(env or {})}, check=False,
        )  # fmt: skip
    return done.returncode, done.stdout.decode() + done.stderr.decode()


@dataclass
class Campaign:
    """Everything that came out, by channel, plus what proves the failures happened."""

    texts: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)  # every file watcher wrote
    codes: dict[str, int] = field(default_factory=dict)
    log_lines: list[dict[str, Any]] = field(default_factory=list)
    hook_calls: list[Call] = field(default_factory=list)
    iam_bad_statuses: list[int] = field(default_factory=list)
    api_statuses: dict[str, int] = field(default_factory=dict)


async def api_calls(daemon: Daemon, out: Campaign) -> None:
    """Right and wrong tokens, a token in the query, a malformed body holding the token."""
    good = {"Authorization": f"Bearer {API_TOKEN}"}
    calls: list[tuple[str, str, str, dict[str, str], bytes | None]] = [
        ("status", "GET", "/v1/status", good, None),
        ("watches", "GET", "/v1/watches?limit=1000", good, None),
        ("paused-watch", "GET", "/v1/watches/wrongsk/wsk-1", good, None),
        ("batch", "GET", "/v1/batches/b", good, None),
        ("metrics", "GET", "/metrics", {}, None),
        ("readyz", "GET", "/readyz", {}, None),
        ("basic", "GET", "/v1/status", {"Authorization": f"Basic {API_TOKEN}"}, None),
        ("query", "GET", f"/v1/status?access_token={quote(API_TOKEN)}", {}, None),
        ("malformed", "POST", "/v1/watches", good, f'{{"token": "{API_TOKEN}'.encode()),
    ]
    calls += [
        (f"wrong-{i}", "GET", "/v1/status", {"Authorization": f"Bearer {t}"}, None)
        for i, t in enumerate(WRONG_API_TOKENS)
    ]
    async with aiohttp.ClientSession() as http:
        for name, method, path, headers, body in calls:
            async with http.request(method, daemon.url + path, headers=headers, data=body) as r:
                out.api_statuses[name] = r.status
                out.texts[f"api {name}"] = await r.text()


async def run_daemon(root: Path, sim: Simulator, iam: Receiver, hook: Receiver) -> Campaign:
    out = Campaign()
    iam_base = iam.url.removesuffix("/hook")
    daemon = await start_daemon(root, config_text(sim, iam_base, hook.url), env=ENV)
    try:
        sim.set_faults(FaultConfig(error_rate=0.3, seed=7))  # retried 5xx, with request ids
        ms_ids = [f"ms-{i}" for i in range(6)] + ["invalid-1"]  # invalid-: 400, outcome error
        adds = {
            "ms": {"task_ids": ms_ids, "batch": "b", "labels": {"team": "kb"}},
            "iam": {"task_ids": ["iam-1", "iam-2"]},
            "wrongsk": {"task_ids": ["wsk-1"]},
            "iambad": {"task_ids": ["ib-1"]},
            "tok": {"task_ids": ["tok-1"]},
        }
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        async with aiohttp.ClientSession() as http:
            for name, body in adds.items():
                url = daemon.url + "/v1/watches"
                async with http.post(url, json={**body, "source": name}, headers=headers) as r:
                    assert r.status == 202, await r.text()

        def finished() -> bool:
            done = {e.get("task_id") for e in daemon.events()}
            batch = any(e["event"] == "batch.finished" for e in daemon.events())
            return {*ms_ids, "iam-1", "iam-2"} <= done and batch

        def refused(source: str, event: str = "credentials refused; pausing the source") -> bool:
            return any(
                x.get("event") == event and x.get("source") == source for x in daemon.log_lines()
            )

        def hooked() -> bool:
            dead = root / "dead.jsonl"
            ok = {c.headers["webhook-id"] for c in hook.calls if hook_status(c) == 200}
            wanted = {e["event_id"] for e in daemon.events()}
            return dead.exists() and len(wanted - ok) == 1

        await wait_until(finished, within=20)
        for name in ("wrongsk", "iambad", "tok"):
            await wait_until(partial(refused, name), within=10)
        await wait_until(hooked, within=15)
        sim.set_faults(FaultConfig())
        await api_calls(daemon, out)
        url = daemon.url
        runs = {
            "status": ("status", "--url", url, "--json"),
            "status-task": ("status", "--url", url, "--source", "wrongsk", "wsk-1"),
            "add": ("add", "--url", url, "--batch", "late", "ms-late"),
            "status-creds-url": (
                "status", "--url", f"http://u:{CLIENT_URL_PASSWORD}@127.0.0.1:9",
            ),
            "status-creds-no-scheme": ("status", "--url", f"u:{CLIENT_URL_PASSWORD}@127.0.0.1:9"),
        }  # fmt: skip
        for name, args in runs.items():
            code, text = await cli(*args, cwd=root, env={"WATCHER_API_TOKEN": API_TOKEN})
            out.codes[name], out.texts[f"cli {name}"] = code, text
        for i, token in enumerate(WRONG_API_TOKENS):
            code, text = await cli(
                "status", "--url", url, cwd=root, env={"WATCHER_API_TOKEN": token}
            )
            out.codes[f"status-wrong-{i}"], out.texts[f"cli status-wrong-{i}"] = code, text
    finally:
        sim.set_faults(FaultConfig())
        await stop_daemon(daemon)
    out.codes["daemon"] = daemon.proc.returncode or 0
    out.log_lines = daemon.log_lines()
    out.texts["daemon stderr"] = daemon.stderr()
    return out


async def run_waits(
    root: Path, sim: Simulator, iam: Receiver, hook: Receiver, out: Campaign
) -> None:
    """`watcher wait` with console logs: one that works, and one per failing source."""
    config = root / "wait.yaml"
    config.write_text(config_text(sim, iam.url.removesuffix("/hook"), hook.url, fmt="console"))
    sinks = ("--sink", "stdout", "--sink", f"webhook:{hook.url}", "--store", "sqlite:wait.db")
    runs = {
        "wait-ms": ("--source", "ms", *sinks, "w-1", "w-2", "invalid-w"),
        "wait-wrongsk": ("--source", "wrongsk", "x-1"),
        "wait-iambad": ("--source", "iambad", "y-1"),
        "wait-tok": ("--source", "tok", "z-1"),
    }

    async def one(name: str, args: tuple[str, ...]) -> None:
        env = {"WATCHER_WEBHOOK_SECRET": HOOK_SECRET}
        out.codes[name], out.texts[f"cli {name}"] = await cli(
            "wait", "-c", str(config), *args, cwd=root, env=env
        )

    async with anyio.create_task_group() as tg:
        for name, args in runs.items():
            tg.start_soon(one, name, args)


async def run_checks(root: Path, out: Campaign) -> None:
    """`watcher check` on the valid config and on each invalid one; run and wait on one."""
    bad = root / "bad"
    bad.mkdir()
    jobs: dict[str, tuple[str, ...]] = {"check-valid": ("check", "-c", str(root / "wait.yaml"))}
    for case in BAD_CONFIGS:
        path = bad / f"{case}.yaml"
        path.write_text(bad_config(case), encoding="utf-8")
        jobs[f"check {case}"] = ("check", "-c", str(path))
    jobs["run bad"] = ("run", "-c", str(bad / "no-space-after-colon.yaml"))
    jobs["wait bad"] = ("wait", "-c", str(bad / "bad-iam-url.yaml"), "t-1")

    async def one(name: str, args: tuple[str, ...]) -> None:
        out.codes[name], out.texts[f"cli {name}"] = await cli(*args, cwd=bad)

    async with anyio.create_task_group() as tg:
        for name, args in jobs.items():
            tg.start_soon(one, name, args)
    for path in bad.glob("*.yaml"):  # the inputs hold secrets by design; the outputs may not
        path.unlink()


def written_files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` but the configs we wrote (they reference secrets by name)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix != ".yaml"
    }


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def campaign(tmp_path_factory: pytest.TempPathFactory) -> Campaign:
    root = tmp_path_factory.mktemp("secrets")
    # SOURCE_TOKEN is not among the tokens: source tok is refused with 401.
    cfg = SimulatorConfig(
        seed=11, auth="any", credentials={AK: SK, AK_OTHER: OTHER_SK},
        tokens={IAM_TOKEN}, duration_median=0.3, duration_sigma=0.3,
        duration_max=0.8,
    )  # fmt: skip
    fake_iam = FakeIam()
    hook_answer = lambda call: status(hook_status(call), text="refused")  # noqa: E731
    async with Simulator(cfg) as sim, Receiver(fake_iam) as iam, Receiver(hook_answer) as hook:
        out = await run_daemon(root, sim, iam, hook)
        await run_waits(root, sim, iam, hook, out)
        await run_checks(root, out)
        out.hook_calls = list(hook.calls)
        out.iam_bad_statuses = list(fake_iam.bad_statuses)
    out.files = written_files(root)
    return out


def assert_clean(channels: Iterable[tuple[str, str | bytes]]) -> None:
    found = {name: leaks(text) for name, text in channels}
    leaked = {name: forms for name, forms in found.items() if forms}
    assert not leaked, leaked


# --- the failures really happened (else a clean result would prove nothing) -----------------


async def test_the_forced_failures_happened(campaign: Campaign) -> None:
    """401s, IAM 503-then-401, webhook 5xx and 401, wrong API tokens: all really occurred."""
    lines = campaign.log_lines
    assert any(x["level"] == "debug" for x in lines)
    paused = {
        x["source"]: x for x in lines if x.get("event") == "credentials refused; pausing the source"
    }
    assert paused["wrongsk"]["error_code"] == "APIGW.0303"
    assert paused["tok"]["status"] == 401 and paused["iambad"]["status"] == 401
    assert campaign.iam_bad_statuses[:3] == [503, 503, 401]
    assert any(x.get("event") == "poll failed; will retry" and x.get("request_id") for x in lines)
    dead = [json.loads(x) for x in campaign.files["dead.jsonl"].splitlines()]
    assert len(dead) == 1 and "HTTP 401" in dead[0]["reason"]
    statuses = campaign.api_statuses
    assert statuses["status"] == 200 and statuses["malformed"] == 400
    assert all(statuses[k] == 401 for k in ("basic", "query", "wrong-0", "wrong-1", "wrong-2"))
    codes = campaign.codes
    assert codes["daemon"] == 0 and codes["status"] == 0 and codes["add"] == 0
    assert all(codes[f"status-wrong-{i}"] == 77 for i in range(len(WRONG_API_TOKENS)))
    assert codes["wait-ms"] == 2  # invalid-w ends in error
    assert codes["wait-wrongsk"] == codes["wait-iambad"] == codes["wait-tok"] == 78
    assert codes["status-creds-url"] == codes["status-creds-no-scheme"] == 64
    assert "must not hold credentials" in campaign.texts["cli status-creds-url"]


async def test_config_errors_still_say_what_is_wrong(campaign: Campaign) -> None:
    """Each invalid config exits 78 with a message that names the problem, secret or not."""
    codes, texts = campaign.codes, campaign.texts
    assert codes["check-valid"] == 0 and "sk: '**********'" in texts["cli check-valid"]
    assert all(codes[f"check {case}"] == 78 for case in BAD_CONFIGS)
    assert codes["run bad"] == 78 and codes["wait bad"] == 78
    expected = {
        "no-space-after-colon": 'auth["sk:**********"]: unknown key (is a space missing',
        "bare-secret-as-key": "unknown key (not shown: it may be a secret)",
        "unterminated-quote": "invalid YAML",
        "wrong-type": "auth.sk: input should be a valid string",
        "bad-iam-url": "iam_endpoint: must be an http:// or https:// URL",
        "unknown-key-with-secret": "auth.skk: unknown key (did you mean 'sk'?)",
        "duplicate-key": "duplicate key 'sk'",
        "control-character": "unacceptable character #x0007",
        "unset-variable": "environment variable NO_SUCH_VAR_W7 is not set",
        "bad-webhook-secret": "must be whsec_ followed by base64",
        "bad-listen": "api.listen: must be host:port",
        "credentials-in-endpoint": "sources.n.endpoint: must not hold credentials",
    }
    assert expected.keys() == BAD_CONFIGS.keys()
    for case, text in expected.items():
        assert text in texts[f"cli check {case}"], case
    assert 'auth["sk:**********"]: unknown key' in texts["cli run bad"]


# --- no secret anywhere --------------------------------------------------------------------------


async def test_no_secret_in_daemon_logs(campaign: Campaign) -> None:
    """The daemon's stdout and stderr (JSON lines at debug level, events on stdout)."""
    assert_clean(
        [("daemon stderr", campaign.texts["daemon stderr"])]
        + [(n, campaign.files[n].decode()) for n in ("daemon.out", "daemon.err")]
    )


async def test_no_secret_in_events_or_what_the_receiver_got(campaign: Campaign) -> None:
    """File sink events, webhook bodies and headers (but the HMAC signature), dead letters."""
    calls = [
        (f"hook call {c.number}", json.dumps({**c.headers, "webhook-signature": ""}) + c.path)
        for c in campaign.hook_calls
    ]
    calls += [(f"hook body {c.number}", c.body) for c in campaign.hook_calls]
    events = [(n, campaign.files[n]) for n in ("results.jsonl", "dead.jsonl")]
    assert_clean(calls + events)
    errors = [json.loads(x) for x in campaign.files["results.jsonl"].splitlines()]
    assert any(e.get("error") for e in errors)  # error events (their messages) were checked


async def test_no_secret_in_api_answers_or_metrics(campaign: Campaign) -> None:
    """/v1/status (with the sinks' last errors), listings, errors for wrong tokens, /metrics."""
    api = [(n, t) for n, t in campaign.texts.items() if n.startswith("api ")]
    assert "watcher_polls_total" in campaign.texts["api metrics"]
    assert json.loads(campaign.texts["api status"])["sinks"]["webhook"]["failed_attempts"] >= 3
    assert_clean(api)


async def test_no_secret_in_cli_output(campaign: Campaign) -> None:
    """`watcher wait`, `status`, `add` and `check` (valid and invalid): stdout and stderr."""
    assert_clean([(n, t) for n, t in campaign.texts.items() if n.startswith("cli ")])


async def test_no_secret_in_any_file_written(campaign: Campaign) -> None:
    """Every file left behind: SQLite stores (and WAL), sinks, dead letters, ready files."""
    assert any(name.startswith("watcher.db") for name in campaign.files)
    assert any(name.startswith("wait.db") for name in campaign.files)
    assert_clean(campaign.files.items())


async def test_the_search_sees_every_form() -> None:
    """The search itself: a secret is found raw, JSON-escaped, URL- or base64-encoded."""
    basic = base64.b64encode(f"{URL_USER}:{URL_PASSWORD}".encode()).decode()
    samples: list[str | bytes] = [
        json.dumps({"password": IAM_PASSWORD}),  # \u00dc...
        f"?sk={quote_plus(SK)}&x=1",
        f"Authorization: Basic {basic}",
        b"key=" + base64.b64encode(HOOK_KEY) + b"\n",
        f"key {HOOK_KEY.hex()}",
        "abbreviated: SECRET-sk-7f3a...",
    ]
    assert all(leaks(sample) for sample in samples)
    assert not leaks("sk: '**********', webhook-id: 2ccb497d, token refused")
