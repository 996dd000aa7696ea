"""Loading config files: YAML, ${ENV} expansion, validation, and errors that name key and line."""

from __future__ import annotations

import copy
import re
import string
import textwrap
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from watcher._exceptions import ConfigError
from watcher.config import (
    AkSkAuth,
    Config,
    FileSinkConfig,
    MetaStudioSourceConfig,
    PluginSourceConfig,
    WebhookSinkConfig,
    config_from_dict,
    dump_effective,
    load_config,
    load_config_text,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.yaml"
SECRET = "Zq9-very-distinctive-secret-8841"

BASE = """\
sources:
  main:
    type: metastudio
    endpoint: https://metastudio.example.test
    project_id: proj1
    auth:
      type: aksk
      ak: AK1
      sk: SK1
"""


def load(text: str, env: Mapping[str, str] | None = None) -> Config:
    return load_config_text(textwrap.dedent(text), "config.yaml", env=env or {})


def problems(text: str, env: Mapping[str, str] | None = None) -> list[str]:
    """The issues of a config that must fail, as printed."""
    with pytest.raises(ConfigError) as caught:
        load(text, env)
    return [str(issue) for issue in caught.value.issues]


def source(config: Config) -> MetaStudioSourceConfig:
    found = config.sources["main"]
    assert isinstance(found, MetaStudioSourceConfig)
    return found


# --- the happy path -------------------------------------------------------------------------


def test_minimal_config_fills_defaults() -> None:
    """A source alone is a whole config: everything else takes its documented default."""
    config = load(BASE)
    main = source(config)
    assert isinstance(main.auth, AkSkAuth)
    assert main.auth.sk.get_secret_value() == "SK1"
    assert main.rate_limit == 20.0
    assert config.polling.deadline == 6 * 3600.0
    assert [s.type for s in config.sinks] == ["stdout"]
    assert config.store.type == "memory"
    assert config.default_source == "main"


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    """load_config reads the file and names it in issues."""
    path = tmp_path / "watcher.yaml"
    path.write_text(BASE + "polling: {deadline: 5m}\n", encoding="utf-8")
    assert load_config(path, env={}).polling.deadline == 300.0
    path.write_text(BASE + "polling: {deadlin: 5m}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), env={})
    assert str(caught.value) == f"{path}:10 polling.deadlin: unknown key (did you mean 'deadline'?)"


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    """A missing file, a directory and non-UTF-8 bytes are ConfigErrors with a clear message."""
    with pytest.raises(ConfigError, match="cannot read the config file: No such file"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path)
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"sources:\n  caf\xe9: {}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    assert caught.value.issues[0].line == 2
    assert "not UTF-8" in caught.value.issues[0].message


def test_units_in_config() -> None:
    """Durations, rates and sizes are written the human way and stored as numbers."""
    config = load(
        BASE
        + """\
    rate_limit: 600/min
    read_timeout: 1h30m
    max_body_bytes: 2MiB
polling:
  deadline: 500ms
  backoff: {initial: 30s, max: 5m, min: 0}
sinks:
  - {type: file, path: out.jsonl, rotate_bytes: 1GiB}
"""
    )
    main = source(config)
    assert (main.rate_limit, main.read_timeout, main.max_body_bytes) == (10.0, 5400.0, 2 * 1024**2)
    assert config.polling.deadline == 0.5
    assert (config.polling.backoff.initial, config.polling.backoff.max) == (30.0, 300.0)
    sink = config.sinks[0]
    assert isinstance(sink, FileSinkConfig)
    assert sink.rotate_bytes == 1024**3


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5 minutes", "not a duration"),
        ("-5s", "not a duration"),
        ("true", "expected a duration, got a boolean"),
        ("1e400", "finite"),
        ("[1]", "input should be a valid number"),
    ],
)
def test_bad_durations_name_the_key(value: str, message: str) -> None:
    """A bad duration is reported at its key and line."""
    found = problems(BASE + f"polling:\n  deadline: {value}\n")
    assert len(found) == 1
    assert found[0].startswith("config.yaml:11 polling.deadline: ")
    assert message in found[0]


def test_status_map_keys_are_kept_as_written() -> None:
    """`0:` and `on:` in a status map are the API's strings "0" and "on", not YAML's int/bool."""
    config = load(BASE + "    status_map: {0: running, 2: cancelled, on: succeeded, 1.0: failed}\n")
    assert list(source(config).status_map) == ["0", "2", "on", "1.0"]


def test_merge_keys_and_anchors() -> None:
    """YAML anchors and `<<` merges share settings between sources; explicit keys win."""
    config = load(
        """\
        sources:
          a: &a
            type: metastudio
            endpoint: https://metastudio.example.test
            project_id: p1
            rate_limit: 5
            auth: {type: token, token: T}
          b:
            <<: *a
            project_id: p2
            rate_limit: 7
        """
    )
    a, b = config.sources["a"], config.sources["b"]
    assert isinstance(a, MetaStudioSourceConfig)
    assert isinstance(b, MetaStudioSourceConfig)
    assert (a.project_id, a.rate_limit) == ("p1", 5.0)
    assert (b.project_id, b.rate_limit, b.endpoint) == ("p2", 7.0, a.endpoint)


def test_plugin_source_keeps_its_own_keys() -> None:
    """A non-built-in type is a plugin; its extra keys are kept for the plugin."""
    config = load("sources:\n  jobs: {type: 'my.mod:Source', region: eu, rate_limit: 2/s}\n")
    jobs = config.sources["jobs"]
    assert isinstance(jobs, PluginSourceConfig)
    assert jobs.rate_limit == 2.0
    assert jobs.model_extra == {"region": "eu"}


# --- ${ENV} ---------------------------------------------------------------------------------


def test_env_interpolation_forms() -> None:
    """${X}, ${X:-d}, ${X-d}, and $${ expand as in a POSIX shell; other $ are literal."""
    config = load(
        BASE.replace("ak: AK1", "ak: ${AK}")
        .replace("sk: SK1", "sk: pa$$word-${SK:-dflt}")
        .replace("project_id: proj1", "project_id: ${UNSET-unset-default}")
        + "    ca_file: $${NOT_EXPANDED}/ca.pem\n"
        + "    status_map: {'${KEY}': running}\n",
        env={"AK": "from-env"},
    )
    main = source(config)
    assert isinstance(main.auth, AkSkAuth)
    assert main.auth.ak == "from-env"
    assert main.auth.sk.get_secret_value() == "pa$$word-dflt"
    assert main.project_id == "unset-default"
    assert main.ca_file == "${NOT_EXPANDED}/ca.pem"
    assert list(main.status_map) == ["${KEY}"]  # keys are never expanded


def test_colon_dash_default_applies_to_empty_values() -> None:
    """${X:-d} uses the default for an empty variable; ${X-d} keeps the empty value."""
    config = load(
        BASE.replace("sk: SK1", "sk: ${E:-fallback}") + "    ca_file: x${E-fallback}y\n",
        env={"E": ""},
    )
    main = source(config)
    assert isinstance(main.auth, AkSkAuth)
    assert main.auth.sk.get_secret_value() == "fallback"
    assert main.ca_file == "xy"


def test_design_flow_mapping_with_references_parses() -> None:
    """The DESIGN.md form `auth: {type: aksk, ak: ${HW_AK}, sk: ${HW_SK}}` is valid config."""
    config = load(
        """\
        sources:
          metastudio:
            type: metastudio
            endpoint: https://metastudio.example.test
            project_id: ${HW_PROJECT_ID}
            auth: {type: aksk, ak: ${HW_AK}, sk: ${HW_SK:-a, b}}
        sinks: [{type: webhook, url: "https://example.test/hook", secret: ${WEBHOOK_SECRET}}]
        """,
        env={"HW_PROJECT_ID": "p", "HW_AK": "ak", "WEBHOOK_SECRET": "whsec_x"},
    )
    main = config.sources["metastudio"]
    assert isinstance(main, MetaStudioSourceConfig)
    auth = main.auth
    assert isinstance(auth, AkSkAuth)
    assert (auth.ak, auth.sk.get_secret_value()) == ("ak", "a, b")
    sink = config.sinks[0]
    assert isinstance(sink, WebhookSinkConfig)
    assert sink.secret is not None
    assert sink.secret.get_secret_value() == "whsec_x"


def test_expanded_values_are_coerced_but_not_reparsed() -> None:
    """An expanded "20" becomes a rate and "false" a bool, but is never parsed as YAML."""
    config = load(
        BASE.replace("ak: AK1", "ak: ${AK}")
        + "    rate_limit: ${RATE}\n    verify_tls: ${TLS:-false}\n    burst: ${BURST:-5}\n",
        env={"RATE": "20", "AK": "{a: 1} ${OTHER} !!python/object:os.system"},
    )
    main = source(config)
    assert (main.rate_limit, main.verify_tls, main.burst) == (20.0, False, 5)
    assert isinstance(main.auth, AkSkAuth)
    assert main.auth.ak == "{a: 1} ${OTHER} !!python/object:os.system"


def test_missing_variable_names_key_path_and_line() -> None:
    """An unset ${X} without default is an error naming the variable, key path and line."""
    found = problems(BASE.replace("sk: SK1", "sk: ${HW_SK}"))
    assert found == ["config.yaml:9 sources.main.auth.sk: environment variable HW_SK is not set"]


def test_required_variable_with_hint() -> None:
    """${X:?hint} fails with the hint when X is unset or empty."""
    text = BASE.replace("sk: SK1", "sk: ${HW_SK:?export your secret key}")
    assert problems(text, {"HW_SK": ""}) == [
        "config.yaml:9 sources.main.auth.sk: environment variable HW_SK is empty: "
        "export your secret key"
    ]
    assert "is not set" in problems(text)[0]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("'${HW_SK'", "unterminated ${"),
        ("'${1BAD}'", "invalid ${...} reference"),
        ("'${A:-${B}}'", "nested ${...}"),
        ("'${}'", "invalid ${...} reference"),
    ],
)
def test_malformed_references(value: str, message: str) -> None:
    """Malformed ${...} is an error that says how to write it."""
    found = problems(BASE.replace("sk: SK1", f"sk: {value}"))
    assert len(found) == 1
    assert found[0].startswith("config.yaml:9 sources.main.auth.sk: ")
    assert message in found[0]


def test_missing_variables_and_validation_errors_are_reported_together() -> None:
    """A failed ${...} does not hide the other problems, nor add follow-ups at its key."""
    found = problems(
        BASE.replace("sk: SK1", "sk: ${HW_SK}")
        + "    rate_limt: 3\n"
        + "api: {listen: ${LISTEN}}\n"
    )
    assert found == [
        "config.yaml:9 sources.main.auth.sk: environment variable HW_SK is not set",
        "config.yaml:10 sources.main.rate_limt: unknown key (did you mean 'rate_limit'?)",
        "config.yaml:11 api.listen: environment variable LISTEN is not set",
    ]


# --- YAML-level problems ------------------------------------------------------------------


def test_duplicate_keys_are_errors() -> None:
    """A key given twice is an error naming it and both lines, wherever it is."""
    found = problems(BASE + "    rate_limit: 1\n    rate_limit: 2\npolling: {}\npolling: {}\n")
    assert found == [
        "config.yaml:11 sources.main.rate_limit: "
        "duplicate key 'rate_limit' (first defined on line 10)",
        "config.yaml:13 polling: duplicate key 'polling' (first defined on line 12)",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the config file is empty"),
        ("# only a comment\n", "the config file is empty"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("just text\n", "top level must be a mapping"),
        ("a: 1\n---\nb: 2\n", "invalid YAML: expected a single document"),
        ("sources: [\n", "invalid YAML"),
        ("sources:\n\t- x\n", "invalid YAML"),
    ],
)
def test_yaml_level_errors(text: str, message: str) -> None:
    """Empty files, non-mapping documents and syntax errors are clear ConfigErrors."""
    found = problems(text)
    assert len(found) == 1
    assert message in found[0]


def test_syntax_error_names_the_line_without_quoting_it() -> None:
    """A syntax error gives its line but never echoes the source text (it may be a secret)."""
    found = problems(BASE.replace("sk: SK1", f"sk: {SECRET}: oops"))
    assert found[0].startswith("config.yaml:9: ")
    assert SECRET not in "\n".join(found)


@pytest.mark.parametrize(
    "value",
    [
        "!!python/object/apply:os.system ['echo pwned']",
        "!!python/name:os.system",
        "!!binary aGVsbG8=",
        "!!set {a, b}",
        "!custom x",
    ],
)
def test_only_safe_yaml(value: str) -> None:
    """Python tags and other non-plain tags are refused, never constructed."""
    found = problems(BASE + f"    ca_file: {value}\n")
    assert len(found) == 1
    assert "config.yaml:10 sources.main.ca_file: unsupported tag" in found[0]


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ("!!int abc", "integer"),
        ("!!int", "integer"),
        ("!!float", "number"),
        ("!!bool x", "boolean"),
    ],
)
def test_bad_explicit_scalar_tag(value: str, what: str) -> None:
    """`!!int abc` or an empty `!!int` is a ConfigError at its key, not a crash."""
    assert problems(BASE + f"    burst: {value}\n") == [
        f"config.yaml:10 sources.main.burst: not a valid {what}"
    ]


def test_recursive_alias_is_refused() -> None:
    """An alias to its own container is an error, not infinite recursion."""
    found = problems(BASE + "    status_map: &m {a: *m}\n")
    assert any("refers to the mapping or list that contains it" in f for f in found)


def test_alias_bomb_is_refused_quickly() -> None:
    """Exponential alias expansion ("billion laughs") is cut off with a ConfigError."""
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    text = BASE + "    status_map:\n" + "".join(f"      {line}\n" for line in levels)
    assert any("too many values" in f for f in problems(text))


def test_deep_nesting_is_refused() -> None:
    """Thousands of nested brackets are a ConfigError, not a RecursionError."""
    for depth in (100, 1000):
        found = problems(BASE + "    extra: " + "[" * depth + "]" * depth + "\n")
        assert any("nested" in f for f in found)


# --- validation messages ------------------------------------------------------------------


def test_typo_key_gets_a_suggestion_and_its_own_line() -> None:
    """An unknown key is named with its path and line, with the closest allowed key."""
    found = problems(BASE + "    rate_limt: 20\n")
    assert found == [
        "config.yaml:10 sources.main.rate_limt: unknown key (did you mean 'rate_limit'?)"
    ]


def test_unknown_keys_at_every_level() -> None:
    """Suggestions come from the model at that place; without a close match, none."""
    found = problems(
        BASE
        + """\
      security_tokn: x
polling:
  backof: {}
  error_backoff: {multiplyer: 2}
sinks:
  - {type: webhook, url: "https://x.test", timout: 5}
zebra: 1
"""
    )
    assert found == [
        "config.yaml:10 sources.main.auth.security_tokn: "
        "unknown key (did you mean 'security_token'?)",
        "config.yaml:12 polling.backof: unknown key (did you mean 'backoff'?)",
        "config.yaml:13 polling.error_backoff.multiplyer: unknown key (did you mean 'multiplier'?)",
        "config.yaml:15 sinks[0].timout: unknown key (did you mean 'timeout'?)",
        "config.yaml:16 zebra: unknown key",
    ]


def test_missing_field_points_at_the_parent_key() -> None:
    """A missing field is reported on the line of the mapping that lacks it."""
    found = problems(BASE.replace("      sk: SK1\n", "") + "sinks:\n  - type: file\n")
    assert found == [
        "config.yaml:6 sources.main.auth.sk: field required",
        "config.yaml:10 sinks[0].path: field required",
    ]
    assert problems("polling: {}\n") == ["config.yaml:1 sources: field required"]


def test_wrong_auth_type_is_one_readable_message() -> None:
    """A bad `type:` of a discriminated union is one message listing the choices."""
    assert problems(BASE.replace("type: aksk", "type: ak-sk")) == [
        "config.yaml:7 sources.main.auth.type: must be one of 'token', 'aksk', 'iam_password'"
    ]
    assert problems(BASE.replace("      type: aksk\n", "")) == [
        "config.yaml:6 sources.main.auth.type: field required "
        "(one of 'token', 'aksk', 'iam_password')"
    ]


def test_union_branches_are_merged_into_one_message() -> None:
    """A status-map value that is neither an outcome nor "running" gets one message."""
    assert problems(BASE + "    status_map:\n      3: finished\n") == [
        "config.yaml:11 sources.main.status_map.3: must be one of 'succeeded', 'partial', "
        "'failed', 'cancelled', 'error', 'timed_out', 'running'"
    ]


def test_paths_have_no_union_tags() -> None:
    """Pydantic's discriminator tags (metastudio, aksk, plugin) never show in key paths."""
    found = problems(
        BASE.replace("ak: AK1", "ak: ''")
        + "sinks: [{type: file, path: ''}, 3, {type: 5}]\nstore: {type: sqlite, path: 7}\n"
    )
    assert found == [
        "config.yaml:8 sources.main.auth.ak: string should have at least 1 character",
        "config.yaml:10 sinks[0].path: string should have at least 1 character",
        "config.yaml:10 sinks[1]: must be a mapping",
        "config.yaml:10 sinks[2].type: input should be a valid string",
        "config.yaml:11 store.path: input should be a valid string",
    ]


def test_every_error_is_reported_in_line_order() -> None:
    """All problems of a file come at once, sorted by line."""
    found = problems(
        """\
        sources:
          main:
            type: metastudio
            endpoint: ftp://nope
            project_id: '..'
            auth: {type: token}
            rate_limit: 0
        polling:
          workers: 0
          backoff: {policy: random, min: 10, max: 1}
        sinks: {type: stdout}
        store: {type: sqlite, path: ''}
        api: {listen: localhost}
        log: {level: loud, format: xml}
        """
    )
    lines = [int(re.match(r"config.yaml:(\d+) ", f).group(1)) for f in found]  # type: ignore[union-attr]
    assert lines == sorted(lines)
    keys = [f.split(" ")[1].rstrip(":") for f in found]
    assert keys == [
        "sources.main.endpoint",
        "sources.main.project_id",
        "sources.main.auth.token",
        "sources.main.rate_limit",
        "polling.workers",
        "polling.backoff.policy",
        "sinks",
        "store.path",
        "api.listen",
        "log.level",
        "log.format",
    ]


def test_config_from_dict_reports_without_lines() -> None:
    """Plain data gets the same messages, without file and line."""
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"sources": {"m": {"type": "metastudio", "endpoint": "https://x"}}})
    assert [str(i) for i in caught.value.issues] == [
        "sources.m.project_id: field required",
        "sources.m.auth: field required",
    ]
    with pytest.raises(ConfigError, match=r"^must be a mapping$"):
        config_from_dict([1, 2])
    with pytest.raises(ConfigError, match=r"invalid key: input should be a valid string"):
        config_from_dict({"sources": {1: {"type": "x"}}})


# --- secrets ------------------------------------------------------------------------------


def _secret_everywhere() -> str:
    return f"""\
sources:
  main:
    type: metastudio
    endpoint: https://metastudio.example.test
    project_id: p
    auth: {{type: aksk, ak: AK, sk: {SECRET}, security_token: {SECRET}}}
  other:
    type: metastudio
    endpoint: https://metastudio.example.test
    project_id: p
    auth: {{type: iam_password, iam_endpoint: "https://iam.test", user: u, password: {SECRET},
            domain: d}}
  plugin:
    type: my.mod:Source
    api_key: {SECRET}
    nested: {{credentials: {{password: {SECRET}}}, region: eu}}
sinks:
  - {{type: webhook, url: "https://x.test", secret: {SECRET}, headers: {{Authorization: {SECRET}}}}}
api: {{token: {SECRET}}}
"""


def test_dump_effective_masks_every_secret() -> None:
    """The effective config shows defaults but masks secrets, also a plugin's secret-named keys."""
    dumped = dump_effective(load(_secret_everywhere()))
    assert SECRET not in dumped
    data = yaml.safe_load(dumped)
    assert data["sources"]["main"]["auth"]["sk"] == "**********"
    assert data["sources"]["plugin"]["api_key"] == "**********"
    assert data["sources"]["plugin"]["nested"] == {
        "credentials": {"password": "**********"},
        "region": "eu",
    }
    assert data["sinks"][0]["headers"] == {"Authorization": "**********"}
    assert data["api"]["token"] == "**********"
    assert data["polling"]["backoff"]["max"] == 60.0  # defaults are filled in
    assert list(data)[:6] == ["sources", "polling", "sinks", "store", "api", "log"]
    assert next(iter(data["sources"]["main"])) == "type"


def test_dump_effective_reloads_to_the_same_config() -> None:
    """The dump is itself a valid config with the same values (secrets aside)."""
    config = load(BASE + "    status_map: {0: running}\npolling: {deadline: null}\n")
    again = load(dump_effective(config))
    assert again.model_dump(exclude={"sources"}) == config.model_dump(exclude={"sources"})
    assert source(again).status_map == source(config).status_map
    assert again.polling.deadline is None


def test_secrets_never_appear_in_error_messages() -> None:
    """A secret beside errors, as a bad value, under a typo'd key or from ${ENV} is never shown."""
    beside_errors = (
        _secret_everywhere()
        .replace("project_id: p\n    auth: {type: aksk", "project_id: '..'\n    auth: {type: aksk")
        .replace("api: {token:", "api: {tokn:")
        + f"polling: {{deadline: {SECRET}, workers: {SECRET}, backoff: {{policy: {SECRET}}}}}\n"
        + f"log: {{level: {SECRET}}}\n"
    )
    cases = [
        (beside_errors, {}, 6),
        (beside_errors.replace("security_token:", "security_tokn:"), {}, 7),
        (BASE.replace("sk: SK1", f"sk: {{value: {SECRET}}}"), {}, 1),
        (BASE.replace("sk: SK1", f"sk: [{SECRET}]"), {}, 1),
        (BASE + "    burst: ${SECRET_BURST}\n", {"SECRET_BURST": SECRET}, 1),
        (BASE + "    rate_limit: ${SECRET_BURST}\n", {"SECRET_BURST": SECRET}, 1),
    ]
    for text, env, count in cases:
        found = problems(text, env)
        assert len(found) == count, found
        assert not [f for f in found if SECRET in f]
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"sources": {"m": {"type": "metastudio", "auth": SECRET}}})
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "alone", ["deadbeefcafe0123456789abcdef0123", "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "hunter2"]
)
def test_a_secret_standing_alone_as_a_key_is_not_shown(alone: str) -> None:
    """A value without its key (``{type: token, VALUE}``) becomes a key; even when it looks
    like a field name it is masked, with the line kept so the user can find it."""
    text = BASE.replace("      sk: SK1\n", f"      sk: SK1\n      {alone}:\n")
    found = problems(text)
    assert len(found) == 1
    assert alone not in found[0]
    assert "not shown: it may be a secret" in found[0] and ":10 " in found[0]


def test_a_typo_of_a_field_is_still_shown() -> None:
    """Masking does not hide what a user mistyped: a near miss names itself and the field."""
    found = problems(BASE.replace("      sk: SK1", "      sk: SK1\n      securty_token: x"))
    assert len(found) == 1 and "securty_token" in found[0] and "security_token" in found[0]


# --- config.example.yaml --------------------------------------------------------------------


def _models(tp: Any, seen: set[type[BaseModel]]) -> None:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        if tp not in seen:
            seen.add(tp)
            for field in tp.model_fields.values():
                _models(field.annotation, seen)
        return
    if get_origin(tp) in (Union, types.UnionType, dict, list) or get_args(tp):
        for arg in get_args(tp):
            _models(arg, seen)


def _all_models() -> set[type[BaseModel]]:
    """Every model reachable from Config's fields: sources, auths, sinks, stores, ..."""
    seen: set[type[BaseModel]] = set()
    _models(Config, seen)
    return seen


def test_example_documents_every_key() -> None:
    """Every field of every config model appears as a key in config.example.yaml."""
    text = EXAMPLE.read_text(encoding="utf-8")
    seen = _all_models()
    assert {m.__name__ for m in seen} >= {"Config", "TokenAuth", "IamPasswordAuth", "LogConfig"}
    missing = sorted(
        f"{model.__name__}.{name}"
        for model in seen
        for name in model.model_fields
        if not re.search(rf"(^|[\s{{,-]){re.escape(name)}:", text, re.MULTILINE)
    )
    assert missing == []


def test_example_loads_in_an_empty_environment() -> None:
    """The example is valid as shipped: every ${...} has a default."""
    config = load_config(EXAMPLE, env={})
    assert config.default_source == "metastudio"
    assert [s.type for s in config.sinks] == ["stdout", "file", "webhook"]
    assert config.store.type == "sqlite"


# --- robustness -------------------------------------------------------------------------------


_FIELDS = sorted(
    {name for model in _all_models() for name in model.model_fields}
    | {"metastudio", "aksk", "token", "webhook", "file", "stdout", "sqlite", "memory", "<<"}
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.just(10**400),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["5m", "20/s", "1MiB", "https://x.test", "${X}", "${X:-1}", "0", "-"]),
)
_KEYS = st.one_of(st.sampled_from(_FIELDS), st.text(max_size=8))
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=5)),
    max_leaves=30,
)
_YAMLISH = st.text(
    alphabet=string.ascii_letters[:6] + string.digits[:3] + " \t\n:-,[]{}&*!|>'\"%@`#?<$\\.~",
    max_size=120,
)
_TOKENS = [
    "",
    "&a",
    "*a",
    "<<: *a",
    "${X}",
    "$${",
    "${X:-[}",
    "[",
    "]",
    "{",
    "}",
    "- ",
    "|",
    "!!int",
]
_TOKENS += ["!!python/name:os.system", "~", "1", "5m", "'q'", '"d"', "on", "{a: *a}", "[*a, *a]"]
# Lines shaped like config: indented keys with values, anchors, aliases and merges.
_YAML_LINES = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.sampled_from([*_FIELDS, "sources", "a", "- type", "<<"]),
        st.lists(st.sampled_from(_TOKENS), max_size=3),
    ),
    max_size=12,
).map(lambda lines: "".join(f"{'  ' * n}{k}: {' '.join(v)}\n" for n, k, v in lines))


def _outcome(function: Callable[..., Config], *args: Any, **kwargs: Any) -> Config | ConfigError:
    """The Config made, or the ConfigError raised; any other exception fails the test."""
    try:
        return function(*args, **kwargs)
    except ConfigError as exc:
        return exc


@settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.dictionaries(_KEYS, _VALUES, max_size=6))
def test_random_data_only_raises_config_error(data: dict[str, Any]) -> None:
    """Arbitrary nested data, from Python or dumped as YAML, yields a Config or a ConfigError."""
    for outcome in (_outcome(config_from_dict, data), _outcome(load, yaml.safe_dump(data))):
        if isinstance(outcome, ConfigError):
            assert outcome.issues
            assert all(isinstance(i.message, str) and i.message for i in outcome.issues)
        else:
            assert isinstance(yaml.safe_load(dump_effective(outcome)), dict)


@settings(max_examples=600, derandomize=True, deadline=None)
@given(st.one_of(_YAMLISH, _YAML_LINES, st.text(max_size=80)))
def test_random_text_only_raises_config_error(text: str) -> None:
    """Random YAML-ish text yields a Config or a ConfigError, never another exception."""
    for candidate in (text, BASE + "    " + text.replace("\n", "\n    ")):
        outcome = _outcome(load_config_text, candidate, "fuzz.yaml", env={"X": "1"})
        assert isinstance(outcome, Config) or outcome.issues


def _containers(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(data, dict):
        items: list[tuple[Any, Any]] = list(data.items())
    elif isinstance(data, list):
        items = list(enumerate(data))
    else:
        return []
    return [path] + [p for key, value in items for p in _containers(value, (*path, key))]


def _at(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        in_dict = isinstance(data, dict) and part in data
        if not in_dict and not (isinstance(data, list) and isinstance(part, int)):
            return None
        if not in_dict and part >= len(data):
            return None
        data = data[part]
    return data


_EXAMPLE_DATA = load_config(EXAMPLE, env={}).model_dump(mode="json")
_EXAMPLE_DATA["sources"]["plugin"] = {"type": "my.mod:Source", "region": "eu"}
_EXAMPLE_DATA["sources"]["metastudio"]["auth"]["sk"] = SECRET


@st.composite
def _mutation(draw: st.DrawFn) -> tuple[tuple[Any, ...], Any, Any]:
    """A container of the example, a key in it (mostly an existing one), and a new value."""
    path = draw(st.sampled_from(_containers(_EXAMPLE_DATA)))
    node = _at(_EXAMPLE_DATA, path)
    key: Any
    if isinstance(node, list) and node:
        key = draw(st.integers(0, len(node) - 1))
    elif isinstance(node, dict) and node:
        existing = draw(st.integers(0, 4)) > 0  # mostly: reach the validators of real keys
        key = draw(st.sampled_from(sorted(node)) if existing else _KEYS)
    else:
        key = draw(_KEYS)
    return path, key, draw(_VALUES)


@settings(max_examples=400, derandomize=True, deadline=None)
@given(st.lists(_mutation(), min_size=1, max_size=4))
def test_mutated_example_only_raises_config_error(mutations: list[Any]) -> None:
    """The full example with random values put in random places: a Config or a ConfigError."""
    data = copy.deepcopy(_EXAMPLE_DATA)
    for path, key, value in mutations:
        node = _at(data, path)
        if isinstance(node, dict) or (
            isinstance(node, list) and isinstance(key, int) and key < len(node)
        ):
            node[key] = value
    outcome = _outcome(config_from_dict, data)
    if isinstance(outcome, ConfigError):
        assert outcome.issues
        assert all(SECRET not in str(i) for i in outcome.issues)
    else:
        assert SECRET not in dump_effective(outcome)
