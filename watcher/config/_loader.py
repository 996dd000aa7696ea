"""Load a config: read, parse YAML, expand ``${ENV}``, validate, report every problem at once."""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ValidationError

from .._exceptions import ConfigError, ConfigIssue
from ._interpolate import interpolate
from ._issues import is_secret_key, issues_from_validation, union_tags
from ._schema import Config, PluginSinkConfig, PluginSourceConfig, PluginStoreConfig
from ._yaml import KeyPath, Positions, format_path, parse_yaml

__all__ = [
    "MAX_FILE_BYTES",
    "Loaded",
    "config_from_dict",
    "dump_effective",
    "load",
    "load_config",
    "load_config_text",
    "plugin_warnings",
]

MAX_FILE_BYTES = 4 * 1024 * 1024  # a config file is a few kilobytes; refuse something else
MASK = "**********"  # what pydantic prints for a SecretStr


@dataclass(frozen=True, slots=True)
class Loaded:
    """A validated config with the lines its keys came from (for later warnings)."""

    config: Config
    filename: str | None
    positions: Positions | None


def _by_line(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    return sorted(issues, key=lambda i: i.line if i.line is not None else float("inf"))


def _validate(
    data: Any,
    positions: Positions | None,
    filename: str | None,
    earlier: list[ConfigIssue] | None = None,
) -> Config:
    """Validate, raising one ``ConfigError`` with ``earlier`` issues and pydantic's, by line."""
    issues = list(earlier or [])
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        # A key whose ${...} failed already has its issue; its follow-ups would only confuse.
        failed = {i.path for i in issues}
        issues += [
            i
            for i in issues_from_validation(exc, data, positions, filename)
            if not any(i.path == f or i.path.startswith((f + ".", f + "[")) for f in failed)
        ]
    if issues:
        raise ConfigError(_by_line(issues))
    return config


def load(text: str, filename: str | None = None, env: Mapping[str, str] | None = None) -> Loaded:
    """Parse, interpolate and validate ``text``; ``filename`` only labels the issues."""
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError([ConfigIssue("", "the config file is too large", filename)])
    data, positions = parse_yaml(text, filename)
    data, issues = interpolate(data, os.environ if env is None else env, positions, filename)
    return Loaded(_validate(data, positions, filename, issues), filename, positions)


def read_text(path: str | os.PathLike[str]) -> tuple[str, str]:
    """The file's text and the name to show for it; ``-`` is standard input."""
    name = os.fspath(path)
    try:
        if name == "-":
            raw = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
            name = "<stdin>"
        else:
            with open(name, "rb") as file:
                raw = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            [ConfigIssue("", f"cannot read the config file: {reason}", name)]
        ) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError([ConfigIssue("", "the config file is too large", name)])
    try:
        return raw.decode("utf-8-sig"), name
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError([ConfigIssue("", "the file is not UTF-8 text", name, line)]) from None


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> Config:
    """Load and validate the YAML config at ``path`` (``-``: standard input).

    >>> config = load_config("config.example.yaml")  # doctest: +SKIP
    >>> config.default_source                          # doctest: +SKIP
    'metastudio'

    Raises ``ConfigError`` listing every problem, each as ``file:line key.path: message``.
    ``env`` replaces ``os.environ`` for ``${...}`` expansion.
    """
    text, name = read_text(path)
    return load(text, name, env).config


def load_config_text(
    text: str, filename: str = "<string>", *, env: Mapping[str, str] | None = None
) -> Config:
    """Like ``load_config`` for YAML already in memory; ``filename`` labels the issues."""
    return load(text, filename, env).config


def config_from_dict(data: Any) -> Config:
    """Validate plain data (no YAML, no ``${...}`` expansion) with the same error reporting."""
    return _validate(data, None, None)


# --- effective config -----------------------------------------------------------------------

_PLUGINS = (PluginSourceConfig, PluginSinkConfig, PluginStoreConfig)


def _mask(value: Any, hidden: bool = False) -> Any:
    if isinstance(value, dict):
        return {k: _mask(v, hidden or is_secret_key(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, hidden) for v in value]
    return MASK if hidden and value is not None else value


def _mask_plugin(model: BaseModel, dumped: Any) -> Any:
    # Plugins' extra keys are untyped, so secrets among them are guessed from their names.
    if not isinstance(model, _PLUGINS) or not isinstance(dumped, dict):
        return dumped
    extra = model.model_extra or {}
    return {k: _mask(v, is_secret_key(k)) if k in extra else v for k, v in dumped.items()}


def _type_first(value: Any) -> Any:
    # Inherited transport fields would otherwise come before a source's `type`.
    if isinstance(value, dict):
        ordered = {"type": value["type"]} if "type" in value else {}
        ordered.update((k, _type_first(v)) for k, v in value.items() if k != "type")
        return ordered
    if isinstance(value, list):
        return [_type_first(v) for v in value]
    return value


def dump_effective(config: Config) -> str:
    """The config as YAML with every default filled in and secrets shown as ``**********``.

    Durations are in seconds, rates in requests per second, sizes in bytes.
    """
    data = config.model_dump(mode="json")
    data["sources"] = {
        name: _mask_plugin(source, data["sources"][name]) for name, source in config.sources.items()
    }
    data["sinks"] = [_mask_plugin(sink, data["sinks"][i]) for i, sink in enumerate(config.sinks)]
    data["store"] = _mask_plugin(config.store, data["store"])
    data = _mask_urls(data)
    header = "# effective config: durations in seconds, rates per second, sizes in bytes\n"
    body = yaml.safe_dump(_type_first(data), sort_keys=False, allow_unicode=True, width=100)
    return header + body


_MASK = "**********"


def _mask_url(url: str) -> str:
    """Hide what a URL may carry as a credential: a userinfo password and query values."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:{_MASK}@{host}" if ":" in userinfo else f"{_MASK}@{host}"
    query = "&".join(
        f"{pair.partition('=')[0]}={_MASK}"
        if "=" in pair and pair.partition("=")[2] != "{task_id}"
        else pair
        for pair in parts.query.split("&")
        if pair
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _mask_urls(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _mask_url(v)
            if isinstance(v, str) and k in ("url", "endpoint", "iam_endpoint")
            else _mask_urls(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_mask_urls(v) for v in value]
    return value


# --- plugin types ---------------------------------------------------------------------------

_GROUPS = {"sources": "watcher.sources", "sinks": "watcher.sinks", "store": "watcher.stores"}
_UNIONS: dict[str, tuple[str | int, ...]] = {
    "sources": ("sources", "_"),
    "sinks": ("sinks", 0),
    "store": ("store",),
}


def _builtin_types(section: str) -> list[str]:
    return [t for t in union_tags(_UNIONS[section]) if t != "plugin"]


def plugin_warnings(loaded: Loaded) -> list[ConfigIssue]:
    """Plugin ``type:`` names that are neither built in nor an installed entry point.

    Warnings, not errors: a plugin may be registered in ways this check cannot see.
    """
    config = loaded.config
    found: list[tuple[str, KeyPath, str]] = []
    for name, source in config.sources.items():
        if isinstance(source, PluginSourceConfig):
            found.append(("sources", ("sources", name, "type"), source.type))
    for index, sink in enumerate(config.sinks):
        if isinstance(sink, PluginSinkConfig):
            found.append(("sinks", ("sinks", index, "type"), sink.type))
    if isinstance(config.store, PluginStoreConfig):
        found.append(("store", ("store", "type"), config.store.type))
    warnings = []
    for section, path, kind in found:
        if ":" in kind:  # package.module:Name is imported when the config is used
            continue
        group = _GROUPS[section]
        installed = sorted(ep.name for ep in entry_points(group=group))
        if kind in installed:
            continue
        known = _builtin_types(section) + installed
        close = difflib.get_close_matches(kind, known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (built in: {', '.join(known)})"
        line = loaded.positions.line(path) if loaded.positions is not None else None
        message = (
            f"{kind!r} is not a built-in type and no installed plugin ({group!r} entry point) "
            f"provides it{hint}"
        )
        warnings.append(ConfigIssue(format_path(path), message, loaded.filename, line))
    return warnings
