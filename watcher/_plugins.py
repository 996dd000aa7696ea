"""Loading a plugin's factory: an entry point of the seam's group, or ``package.module:Name``."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from ._exceptions import ConfigError, ConfigIssue

__all__ = ["load_factory"]


def load_factory(group: str, kind: str, *, key: str, what: str, builtins: str) -> Any:
    """The object ``kind`` names in entry-point ``group`` or as ``module:Name``.

    Anything that goes wrong is one ``ConfigError`` at ``key``: an unknown name, or any
    exception a plugin raises while importing (its bugs are not only ImportErrors).
    """
    found = [ep for ep in entry_points(group=group) if ep.name == kind]
    try:
        if found:
            return found[0].load()
        if ":" in kind:
            module, _, attr = kind.partition(":")
            return getattr(importlib.import_module(module), attr)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise ConfigError([ConfigIssue(key, f"cannot load {what} {kind!r}: {reason}")]) from exc
    message = (
        f"unknown {what} type {kind!r} (built-in: {builtins}; or an entry point, or module:Name)"
    )
    raise ConfigError([ConfigIssue(key, message)])
