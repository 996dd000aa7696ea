"""The config file's shape: pydantic models, unknown keys forbidden, secrets as ``SecretStr``.

The keys shown in DESIGN.md are a stable contract; new keys may be added freely.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    field_validator,
    model_validator,
)

from .._exceptions import InvalidTaskIdError
from .._models import Outcome
from .._taskid import validate_task_id
from ._units import ByteSize, Duration, Rate

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
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


# --- auth -----------------------------------------------------------------------------------


class TokenAuth(_Model):
    """A static IAM token sent as ``X-Auth-Token``."""

    type: Literal["token"]
    token: SecretStr


class AkSkAuth(_Model):
    """Access key / secret key signing (``SDK-HMAC-SHA256``)."""

    type: Literal["aksk"]
    ak: str = Field(min_length=1)
    sk: SecretStr
    security_token: SecretStr | None = None  # for temporary credentials


class IamPasswordAuth(_Model):
    """A token fetched from IAM with a password, cached and refreshed ahead of expiry."""

    type: Literal["iam_password"]
    iam_endpoint: str
    user: str = Field(min_length=1)
    password: SecretStr
    domain: str = Field(min_length=1)
    project: str | None = None  # scope: project name (the region, e.g. cn-north-4)
    refresh_ahead: Duration = 3600.0

    _check_url = field_validator("iam_endpoint")(_http_url)


Auth = Annotated[TokenAuth | AkSkAuth | IamPasswordAuth, Field(discriminator="type")]


# --- sources --------------------------------------------------------------------------------


class HttpClientConfig(_Model):
    """Transport knobs shared by HTTP sources."""

    connect_timeout: Duration = 5.0
    read_timeout: Duration = 30.0
    max_connections: int = Field(default=64, ge=1, le=10_000)
    max_body_bytes: ByteSize = Field(default=1024 * 1024, ge=1024)
    verify_tls: bool = True
    ca_file: str | None = None


class MetaStudioSourceConfig(HttpClientConfig):
    """Huawei Cloud MetaStudio import/export tasks: ``GET /v2/{project_id}/ies/task/{id}``."""

    type: Literal["metastudio"]
    endpoint: str
    project_id: str
    auth: Auth
    rate_limit: Rate = 20.0
    burst: int | None = Field(default=None, ge=1)  # default: one second's worth of rate_limit
    # task_status has no documented meaning: map observed values to outcomes here
    # ("running" marks a value as known and not terminal).
    status_map: dict[str, Outcome | Literal["running"]] = Field(default_factory=dict)
    progress_rule: bool = True

    _check_url = field_validator("endpoint")(_http_url)

    @field_validator("project_id")
    @classmethod
    def _project_is_segment(cls, value: str) -> str:
        try:
            validate_task_id(value)  # same rules: one path segment that cannot alter the path
        except InvalidTaskIdError as exc:
            raise ValueError(f"not usable in a URL path: it {exc.reason}") from None
        return value

    @field_validator("status_map", mode="before")
    @classmethod
    def _keys_as_strings(cls, value: Any) -> Any:
        # YAML reads `0: succeeded` with an int key; statuses are compared as strings.
        if isinstance(value, dict):
            return {str(k): v for k, v in value.items()}
        return value

    @field_validator("rate_limit")
    @classmethod
    def _positive_rate(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be above 0")
        return value


class PluginSourceConfig(BaseModel):
    """A source from a plugin: ``type`` is an entry-point name or ``package.module:Name``."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str
    rate_limit: Rate = 20.0
    burst: int | None = Field(default=None, ge=1)


def _builtin_or_plugin(builtins: set[str]) -> Any:
    def pick(value: Any) -> str:
        kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
        # A non-string `type` (a list, say) must not reach the set lookup: it may be unhashable.
        return kind if isinstance(kind, str) and kind in builtins else "plugin"

    return pick


SourceConfig = Annotated[
    Annotated[MetaStudioSourceConfig, Tag("metastudio")]
    | Annotated[PluginSourceConfig, Tag("plugin")],
    Discriminator(_builtin_or_plugin({"metastudio"})),
]


# --- polling --------------------------------------------------------------------------------


class BackoffConfig(_Model):
    """How long to wait between polls of a running task."""

    policy: Literal["progress", "exponential", "decorrelated", "fixed"] = "progress"
    initial: Duration = 2.0
    multiplier: float = Field(default=1.5, ge=1.0, le=100.0)
    max: Duration = 60.0
    min: Duration = 1.0
    jitter: bool = True
    # policy "progress": a sleep planned from progress counts may be longer than `max` (up to
    # `progress_max`), but never longer than `growth` times how long the task has run so far.
    progress_max: Duration = 1800.0
    growth: float = Field(default=1.0, gt=0.0, le=100.0)
    tolerance: float = Field(default=0.05, ge=0.0, lt=1.0)  # relative noise in the counts

    @model_validator(mode="after")
    def _bounds(self) -> BackoffConfig:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}s) is above max ({self.max}s)")
        if self.min > self.progress_max:
            raise ValueError(f"min ({self.min}s) is above progress_max ({self.progress_max}s)")
        return self


class ErrorBackoffConfig(_Model):
    """How long to wait after a failed poll (its own curve: errors never count as results)."""

    initial: Duration = 1.0
    multiplier: float = Field(default=2.0, ge=1.0, le=100.0)
    max: Duration = 300.0


class PollingConfig(_Model):
    deadline: Duration | None = 6 * 3600.0
    max_polls: int | None = Field(default=None, ge=1)
    workers: int = Field(default=32, ge=1, le=10_000)
    # An add larger than the source's burst has its first polls spread over this window, or
    # over the time the rate limit needs for them if longer, so it never stampedes the API.
    spread: Duration = 1.0
    backoff: BackoffConfig = Field(default_factory=BackoffConfig)
    error_backoff: ErrorBackoffConfig = Field(default_factory=ErrorBackoffConfig)


# --- sinks ----------------------------------------------------------------------------------


class StdoutSinkConfig(_Model):
    type: Literal["stdout"]


class FileSinkConfig(_Model):
    type: Literal["file"]
    path: str = Field(min_length=1)
    fsync: Literal["always", "batch", "never"] = "batch"
    rotate_bytes: ByteSize | None = None
    keep: int = Field(default=5, ge=1)


class WebhookSinkConfig(_Model):
    type: Literal["webhook"]
    url: str
    secret: SecretStr | None = None  # whsec_... (Standard Webhooks)
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    timeout: Duration = 10.0
    max_attempts: int = Field(default=12, ge=1)
    max_age: Duration = 24 * 3600.0
    initial_backoff: Duration = 1.0
    max_backoff: Duration = 300.0
    dead_letter: str | None = None
    verify_tls: bool = True

    _check_url = field_validator("url")(_http_url)


class PluginSinkConfig(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    type: str


SinkConfig = Annotated[
    Annotated[StdoutSinkConfig, Tag("stdout")]
    | Annotated[FileSinkConfig, Tag("file")]
    | Annotated[WebhookSinkConfig, Tag("webhook")]
    | Annotated[PluginSinkConfig, Tag("plugin")],
    Discriminator(_builtin_or_plugin({"stdout", "file", "webhook"})),
]


# --- store, api, logs -----------------------------------------------------------------------


class MemoryStoreConfig(_Model):
    type: Literal["memory"]


class SqliteStoreConfig(_Model):
    type: Literal["sqlite"]
    path: str = Field(default="watcher.db", min_length=1)


class PluginStoreConfig(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    type: str


StoreConfig = Annotated[
    Annotated[MemoryStoreConfig, Tag("memory")]
    | Annotated[SqliteStoreConfig, Tag("sqlite")]
    | Annotated[PluginStoreConfig, Tag("plugin")],
    Discriminator(_builtin_or_plugin({"memory", "sqlite"})),
]


class ApiConfig(_Model):
    listen: str = "127.0.0.1:8787"
    token: SecretStr | None = None
    max_body_bytes: ByteSize = Field(default=4 * 1024 * 1024, ge=1024)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        # Checked here so a typo fails `watcher check`, not the daemon at bind time.
        host, sep, port = value.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]  # [::1]:8787
        if not sep or not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
            raise ValueError("must be host:port, e.g. 127.0.0.1:8787 or [::1]:8787")
        return value


class LogConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


def _default_sinks() -> list[SinkConfig]:
    return [StdoutSinkConfig(type="stdout")]


class Config(_Model):
    """The whole config file."""

    sources: dict[str, SourceConfig] = Field(min_length=1)
    polling: PollingConfig = Field(default_factory=PollingConfig)
    sinks: list[SinkConfig] = Field(default_factory=_default_sinks)
    store: StoreConfig = Field(default_factory=lambda: MemoryStoreConfig(type="memory"))
    api: ApiConfig = Field(default_factory=ApiConfig)
    log: LogConfig = Field(default_factory=LogConfig)

    @field_validator("sources")
    @classmethod
    def _names_are_segments(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not name or "/" in name or not name.isprintable():
                raise ValueError(f"source name {name!r} must be printable and contain no '/'")
        return value

    @property
    def default_source(self) -> str:
        """The first source is the default one."""
        return next(iter(self.sources))
