"""Turning a ``Config`` into the running parts: policies, sources, store, sinks, runners."""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from ._exceptions import ConfigError, ConfigIssue
from .backoff import BackoffPolicy, make_policy
from .config import Config, PollingConfig

__all__ = ["check_components", "deadline_seconds", "policy_from", "sink_names"]


def policy_from(polling: PollingConfig) -> BackoffPolicy:
    """The backoff policy that ``polling.backoff`` and ``polling.error_backoff`` describe."""
    b, e = polling.backoff, polling.error_backoff
    return make_policy(
        b.policy,
        initial=b.initial,
        multiplier=b.multiplier,
        max_delay=b.max,
        min_delay=b.min,
        jitter=b.jitter,
        error_initial=e.initial,
        error_multiplier=e.multiplier,
        error_max=e.max,
        progress_max=b.progress_max,
        growth=b.growth,
        growth_min=b.growth_min,
        tolerance=b.tolerance,
    )


def deadline_seconds(value: float | timedelta | datetime | None, now_wall: float) -> float | None:
    """A deadline given as seconds from now, a ``timedelta`` or an absolute ``datetime``."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.timestamp() - now_wall
    return float(value)


def sink_names(configs: Sequence[Any]) -> list[str]:
    """Stable names for configured sinks: their ``name``, else their type (``file``,
    ``file-2``, ...). Outbox rows are keyed by these names, so they must survive restarts."""
    seen: Counter[str] = Counter()
    names: list[str] = []
    for cfg in configs:
        explicit = getattr(cfg, "name", None)
        base = explicit or str(getattr(cfg, "type", "sink"))
        seen[base] += 1
        names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return names


async def check_components(config: Config) -> list[ConfigIssue]:
    """Problems that only building the parts reveals: unknown or broken plugin types, a bad
    webhook secret, a store path whose directory is missing. Nothing is opened or sent."""
    from .sinks import build_sink
    from .sources import build_source
    from .stores import build_store

    issues: list[ConfigIssue] = []
    built: list[Any] = []
    attempts: list[Callable[[], Any]] = [
        *(partial(build_source, name, cfg) for name, cfg in config.sources.items()),
        *(
            partial(build_sink, cfg, name=name)
            for cfg, name in zip(config.sinks, sink_names(config.sinks), strict=True)
        ),
        partial(build_store, config.store),
    ]
    for attempt in attempts:
        try:
            built.append(attempt())
        except ConfigError as exc:
            issues.extend(exc.issues)
    issues.extend(_store_path_issues(config))
    for part in built:
        close = getattr(part, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
    return issues


def _store_path_issues(config: Config) -> list[ConfigIssue]:
    path = getattr(config.store, "path", None)
    if config.store.type != "sqlite" or not path:
        return []
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(directory):
        return []
    return [ConfigIssue("store.path", f"directory {directory!r} does not exist")]
