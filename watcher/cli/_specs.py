"""``--sink`` and ``--store`` values: short specs that stand for a config block."""

from __future__ import annotations

import os

import click
from pydantic import BaseModel, SecretStr, ValidationError

from ..config import (
    FileSinkConfig,
    MemoryStoreConfig,
    SqliteStoreConfig,
    StdoutSinkConfig,
    WebhookSinkConfig,
)

__all__ = ["parse_sink", "parse_store"]

WEBHOOK_SECRET_ENV = "WATCHER_WEBHOOK_SECRET"  # noqa: S105 - the variable's name, not a secret


def _build(model: type[BaseModel], param: str, spec: str, **values: object) -> BaseModel:
    try:
        return model(**values)
    except ValidationError as exc:
        reasons = "; ".join(str(e["msg"]) for e in exc.errors())
        raise click.BadParameter(f"{spec!r}: {reasons}", param_hint=param) from None


def parse_sink(spec: str) -> BaseModel:
    """``stdout``, ``file:PATH`` or ``webhook:URL`` (secret from $WATCHER_WEBHOOK_SECRET)."""
    kind, _, rest = spec.partition(":")
    if kind == "stdout" and not rest:
        return StdoutSinkConfig(type="stdout")
    if kind == "file" and rest:
        return _build(FileSinkConfig, "--sink", spec, type="file", path=rest)
    if kind == "webhook" and rest:
        secret = os.environ.get(WEBHOOK_SECRET_ENV)
        return _build(
            WebhookSinkConfig,
            "--sink",
            spec,
            type="webhook",
            url=rest,
            secret=SecretStr(secret) if secret else None,
        )
    raise click.BadParameter(f"{spec!r}: use stdout, file:PATH or webhook:URL", param_hint="--sink")


def parse_store(spec: str) -> BaseModel:
    """``memory`` or ``sqlite:PATH``."""
    kind, _, rest = spec.partition(":")
    if kind == "memory" and not rest:
        return MemoryStoreConfig(type="memory")
    if kind == "sqlite" and rest:
        return _build(SqliteStoreConfig, "--store", spec, type="sqlite", path=rest)
    raise click.BadParameter(f"{spec!r}: use memory or sqlite:PATH", param_hint="--store")
