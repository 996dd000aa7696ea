"""The daemon behind ``watcher run``: engine, control API, metrics, spool intake, signals."""

from __future__ import annotations

from ._api import ControlApi
from ._metrics import DaemonMetrics
from ._requests import MAX_IDS_PER_REQUEST, WatchRequest
from ._service import DEFAULT_STORE_PATH, TOKEN_ENV, Daemon, DaemonError, api_token, daemon_config
from ._spool import SpoolIntake, SpoolResult

__all__ = [
    "DEFAULT_STORE_PATH",
    "MAX_IDS_PER_REQUEST",
    "TOKEN_ENV",
    "ControlApi",
    "Daemon",
    "DaemonError",
    "DaemonMetrics",
    "SpoolIntake",
    "SpoolResult",
    "WatchRequest",
    "api_token",
    "daemon_config",
]
