"""watcher: wait on remote tasks until they finish, and deliver every result reliably.

>>> from watcher import Watcher, load_config                          # doctest: +SKIP
>>> async with Watcher(load_config("config.yaml")) as w:             # doctest: +SKIP
...     await w.add(["fd1c56acbb2c4b1aa24ba37df99f3129"])
...     async for event in w.results():
...         print(event.outcome)
"""

from __future__ import annotations

from ._exceptions import (
    AuthError,
    ClosedError,
    ConfigError,
    ConfigIssue,
    ConnectError,
    InvalidTaskIdError,
    MalformedResponseError,
    PermanentError,
    PollTimeoutError,
    RateLimitedError,
    ServerError,
    SourceError,
    TransientError,
    WaitTimeoutError,
    WatcherError,
)
from ._models import BatchEvent, ErrorInfo, Outcome, ResultEvent, TaskSnapshot
from ._taskid import validate_task_id
from ._version import __version__
from ._watcher import AddResult, Watcher, wait_sync
from .classifier import Classifier, Verdict
from .config import Config, load_config
from .sources.base import BatchSource, Source

__all__ = [
    "AddResult",
    "AuthError",
    "BatchEvent",
    "BatchSource",
    "Classifier",
    "ClosedError",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "ConnectError",
    "ErrorInfo",
    "InvalidTaskIdError",
    "MalformedResponseError",
    "Outcome",
    "PermanentError",
    "PollTimeoutError",
    "RateLimitedError",
    "ResultEvent",
    "ServerError",
    "Source",
    "SourceError",
    "TaskSnapshot",
    "TransientError",
    "Verdict",
    "WaitTimeoutError",
    "Watcher",
    "WatcherError",
    "__version__",
    "load_config",
    "validate_task_id",
    "wait_sync",
]
