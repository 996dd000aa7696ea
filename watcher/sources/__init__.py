"""Sources: turn a task id into a ``TaskSnapshot`` or a classified error.

Built-ins sit here; third parties register a factory ``(name, config) -> Source`` under the
``watcher.sources`` entry-point group, or name it as ``package.module:Name`` in ``type:``.
"""

from __future__ import annotations

from typing import Any

from .._exceptions import ConfigError, ConfigIssue
from .._plugins import load_factory
from ..config._schema import HttpSourceConfig, MetaStudioSourceConfig
from ._auth import AkSkProvider, AuthProvider, IamPasswordProvider, TokenProvider, make_auth
from .base import BatchSource, Source
from .http import HttpSource
from .metastudio import MetaStudioSource, SearchPage

__all__ = [
    "AkSkProvider",
    "AuthProvider",
    "BatchSource",
    "HttpSource",
    "IamPasswordProvider",
    "MetaStudioSource",
    "SearchPage",
    "Source",
    "TokenProvider",
    "build_source",
    "make_auth",
]


def _plugin_factory(name: str, kind: str) -> Any:
    return load_factory(
        "watcher.sources",
        kind,
        key=f"sources.{name}.type",
        what="source",
        builtins="metastudio, http",
    )


def build_source(name: str, config: Any) -> Source:
    """The source for one ``sources.<name>`` config block (built-in or plugin)."""
    if isinstance(config, MetaStudioSourceConfig):
        return MetaStudioSource(name, config)
    if isinstance(config, HttpSourceConfig):
        return HttpSource(name, config)
    factory = _plugin_factory(name, str(getattr(config, "type", "")))
    source = factory(name, config)
    if not isinstance(source, Source):
        issue = ConfigIssue(f"sources.{name}.type", "plugin did not return a Source")
        raise ConfigError([issue])
    return source
