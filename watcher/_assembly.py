"""Turning a ``Config`` into the running parts: policies, sources, store, sinks, runners."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from .backoff import BackoffPolicy, make_policy
from .config import PollingConfig

__all__ = ["deadline_seconds", "policy_from", "sink_names"]


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
