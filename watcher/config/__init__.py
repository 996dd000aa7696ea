"""Configuration: one YAML file validated into frozen pydantic models."""

from __future__ import annotations

from ._loader import config_from_dict, dump_effective, load_config, load_config_text
from ._schema import (
    AkSkAuth,
    ApiConfig,
    BackoffConfig,
    Config,
    DaemonConfig,
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
    SpoolConfig,
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
    "DaemonConfig",
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
    "SpoolConfig",
    "SqliteStoreConfig",
    "StdoutSinkConfig",
    "TokenAuth",
    "WebhookSinkConfig",
    "config_from_dict",
    "dump_effective",
    "load_config",
    "load_config_text",
    "parse_bytes",
    "parse_duration",
    "parse_rate",
]
