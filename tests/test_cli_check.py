"""``watcher check``: the effective config on stdout, every problem on stderr, exit 78."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from watcher.cli._check import check
from watcher.cli._exit import EX_CONFIG, EX_USAGE

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.yaml"
SECRET = "Zq9-very-distinctive-secret-8841"

GOOD = f"""\
sources:
  main:
    type: metastudio
    endpoint: https://metastudio.example.test
    project_id: proj1
    auth: {{type: aksk, ak: AK1, sk: {SECRET}}}
api: {{token: {SECRET}}}
"""


def _watcher(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command in a fresh interpreter, in an empty environment unless told."""
    return subprocess.run(
        [sys.executable, "-m", "watcher", *args],
        capture_output=True,
        text=True,
        env=env or {},
        timeout=60,
        check=False,
    )


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_valid_config_prints_effective_config(tmp_path: Path) -> None:
    """Exit 0, the effective config (a valid YAML mapping) on stdout, `ok: FILE` on stderr."""
    path = _write(tmp_path, GOOD)
    result = CliRunner().invoke(check, ["-c", path], env={})
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(result.stdout)
    assert data["sources"]["main"]["auth"]["sk"] == "**********"
    assert data["polling"]["deadline"] == 21600.0
    assert result.stderr.strip().splitlines()[-1] == f"ok: {path}"
    assert SECRET not in result.stdout + result.stderr


def test_every_problem_on_stderr_and_exit_78(tmp_path: Path) -> None:
    """Each issue is one `FILE:LINE key.path: message` line; nothing on stdout."""
    path = _write(
        tmp_path,
        GOOD.replace("project_id: proj1", "project_id: proj1\n    rate_limt: 20")
        + "polling: {deadline: soon}\nlog: {level: loud}\n",
    )
    result = CliRunner().invoke(check, ["-c", path], env={})
    assert result.exit_code == EX_CONFIG
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[:3] == [
        f"{path}:6 sources.main.rate_limt: unknown key (did you mean 'rate_limit'?)",
        f"{path}:9 polling.deadline: not a duration (use a number of seconds or e.g. "
        "500ms, 30s, 5m, 6h, 1h30m)",
        f"{path}:10 log.level: must be one of 'debug', 'info', 'warning', 'error'",
    ]
    assert lines[3] == f"invalid: {path} (3 problems)"
    assert SECRET not in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read the config file: No such file or directory"),
        ("", "the config file is empty"),
        ("sources: [\n", "invalid YAML"),
    ],
)
def test_file_level_problems_exit_78(tmp_path: Path, content: str | None, message: str) -> None:
    """A missing, empty or unparsable file is a config error (78), not a traceback."""
    path = str(tmp_path / "absent.yaml") if content is None else _write(tmp_path, content)
    result = CliRunner().invoke(check, ["-c", path], env={})
    assert result.exit_code == EX_CONFIG
    assert result.stderr.startswith(path)
    assert message in result.stderr
    assert "<root>" not in result.stderr


def test_reads_standard_input() -> None:
    """`-c -` reads the config from standard input."""
    result = CliRunner().invoke(check, ["-c", "-"], input=GOOD, env={})
    assert result.exit_code == 0, result.output
    assert "ok: <stdin>" in result.stderr


def test_config_from_environment_variable(tmp_path: Path) -> None:
    """WATCHER_CONFIG stands in for -c."""
    path = _write(tmp_path, GOOD)
    result = CliRunner().invoke(check, [], env={"WATCHER_CONFIG": path})
    assert result.exit_code == 0, result.output


def test_unknown_plugin_type_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    """A type neither built in nor installed: the line, a suggestion, and exit 78."""
    path = _write(tmp_path, GOOD + "sinks: [{type: webhok, url: 'https://x.test'}]\n")
    result = CliRunner().invoke(check, ["-c", path], env={})
    assert result.exit_code == EX_CONFIG, result.output
    assert "sinks.webhok.type: unknown sink type 'webhok'" in result.stderr
    assert (
        f"warning: {path}:8 sinks[0].type: 'webhok' is not a built-in type and no installed "
        "plugin ('watcher.sinks' entry point) provides it (did you mean 'webhook'?)"
    ) in result.stderr.splitlines()


def test_subprocess_typo_names_key_and_line(tmp_path: Path) -> None:
    """The installed command exits 78 and names the typo'd key and its line."""
    path = _write(tmp_path, GOOD + "polling:\n  backoff:\n    multipler: 2\n")
    result = _watcher("check", "-c", path)
    assert result.returncode == EX_CONFIG, result.stderr
    assert f"{path}:10 polling.backoff.multipler: unknown key (did you mean 'multiplier'?)" in (
        result.stderr.splitlines()
    )
    assert result.stdout == ""


def test_subprocess_usage_error_is_64() -> None:
    """Without -c (and no WATCHER_CONFIG) it is a usage error: 64, not click's 2."""
    result = _watcher("check")
    assert result.returncode == EX_USAGE
    assert "--config" in result.stderr


def test_example_config_checks_clean_in_an_empty_environment() -> None:
    """config.example.yaml passes as shipped, and none of its placeholder secrets leak."""
    result = _watcher("check", "-c", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == f"ok: {EXAMPLE}"
    data = yaml.safe_load(result.stdout)
    assert data["sources"]["metastudio"]["auth"]["type"] == "aksk"
    text = EXAMPLE.read_text(encoding="utf-8")
    placeholders = [
        default
        for name, default in re.findall(r"\$\{([A-Z_]+):-([^}]*)\}", text)
        if re.search(r"SK|SECRET|TOKEN|PASSWORD|AUTHORIZATION", name)
    ]
    assert len(placeholders) >= 4
    for default in placeholders:
        assert default not in result.stdout
        assert default.split()[-1] not in result.stdout  # "Bearer <token>": not even the token


def test_credentials_inside_urls_are_masked(tmp_path: Path) -> None:
    """A password in a URL's userinfo or a query value never shows in the effective config."""
    text = GOOD + (
        "sinks:\n  - type: webhook\n    url: http://svc:URLPASS@127.0.0.1:9/hook?key=QUERYSECRET\n"
    )
    path = _write(tmp_path, text)
    result = CliRunner().invoke(check, ["-c", path], env={})
    assert result.exit_code == 0, result.output
    assert "URLPASS" not in result.output and "QUERYSECRET" not in result.output
    assert "svc:**********@127.0.0.1:9" in result.stdout


@pytest.mark.parametrize("key", ["endpoint", "iam_endpoint"])
def test_credentials_in_an_api_url_are_refused(tmp_path: Path, key: str) -> None:
    """userinfo in a source's API URL is refused by key and line, never echoed: aiohttp
    would send it as Basic auth next to the configured credentials."""
    if key == "endpoint":
        text = GOOD.replace(
            "https://metastudio.example.test", "https://svc:URLPASS@metastudio.example.test"
        )
    else:
        text = GOOD.replace(
            f"auth: {{type: aksk, ak: AK1, sk: {SECRET}}}",
            "auth: {type: iam_password, iam_endpoint: 'https://u:URLPASS@iam.example.test', "
            "user: u, password: pw, domain: d}",
        )
    path = _write(tmp_path, text)
    result = CliRunner().invoke(check, ["-c", path], env={})
    assert result.exit_code == 78, result.output
    assert "URLPASS" not in result.output
    assert f"{key}: must not hold credentials" in result.output
    assert "config.yaml:" in result.output
