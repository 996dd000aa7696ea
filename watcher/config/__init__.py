"""Configuration: one YAML file validated into frozen pydantic models."""

from __future__ import annotations

from ._schema import (
    AkSkAuth,
    ApiConfig,
    BackoffConfig,
    Config,
    ErrorBackoffConfig,
    FileSinkConfig,
    IamPasswordAuth,
    LogConfig,
    MemoryStoreConfig,
    MetaStudioSourceConfig,
    PluginSinkConfig,
    PluginSourceConfig,
    PluginStoreConfig,
    PollingConfig,
    SqliteStoreConfig,
    StdoutSinkConfig,
    TokenAuth,
    WebhookSinkConfig,
)
from ._units import parse_bytes, parse_duration, parse_rate

__all__ = [
    "AkSkAuth",
    "ApiConfig",
    "BackoffConfig",
    "Config",
    "ErrorBackoffConfig",
    "FileSinkConfig",
    "IamPasswordAuth",
    "LogConfig",
    "MemoryStoreConfig",
    "MetaStudioSourceConfig",
    "PluginSinkConfig",
    "PluginSourceConfig",
    "PluginStoreConfig",
    "PollingConfig",
    "SqliteStoreConfig",
    "StdoutSinkConfig",
    "TokenAuth",
    "WebhookSinkConfig",
    "parse_bytes",
    "parse_duration",
    "parse_rate",
]
