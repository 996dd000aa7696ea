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
    JsonValue,
    SecretStr,
    Tag,
    field_validator,
    model_validator,
)
from yarl import URL

from .._exceptions import InvalidTaskIdError
from .._models import Outcome
from .._taskid import validate_task_id
from ._units import ByteSize, Duration, Rate

__all__ = [
    "AkSkAuth",
    "ApiConfig",
    "BackoffConfig",
    "Config",
    "DaemonConfig",
    "ErrorBackoffConfig",
    "FileSinkConfig",
    "HttpBasicAuth",
    "HttpBearerAuth",
    "HttpProgressPaths",
    "HttpSourceConfig",
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
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


def _api_url(value: str) -> str:
    """An API base URL: http(s), and no ``user:pass@``, which aiohttp would send as Basic
    auth beside (or instead of) the configured credentials, to a gateway that refuses it."""
    value = _http_url(value)
    authority = value.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
    if "@" in authority:
        raise ValueError("must not hold credentials (user:password@); put them under auth:")
    return value


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

    _check_url = field_validator("iam_endpoint")(_api_url)


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

    _check_url = field_validator("endpoint")(_api_url)

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


# --- generic HTTP source ---------------------------------------------------------------------

TASK_ID = "{task_id}"
# RFC 3986 characters a URL may carry literally; anything else must be percent-encoded, since
# the URL is sent exactly as written.
_URL_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?#[]@!$&'()*+,;=%"
)
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)


def _json_path(value: str | None) -> str | None:
    """A dotted path into a JSON body: ``data.job.state``, ``items.0.state``."""
    if value is not None and any(not part for part in value.split(".")):
        raise ValueError("must be a dotted path such as data.job.state (no empty parts)")
    return value


class HttpBearerAuth(_Model):
    """``Authorization: Bearer <token>``."""

    type: Literal["bearer"]
    token: SecretStr


class HttpBasicAuth(_Model):
    """``Authorization: Basic base64(username:password)``."""

    type: Literal["basic"]
    username: str = Field(min_length=1)
    password: SecretStr

    @field_validator("username")
    @classmethod
    def _no_colon(cls, value: str) -> str:
        if ":" in value:
            raise ValueError("must not contain ':' (RFC 7617)")
        return value


HttpAuth = Annotated[HttpBearerAuth | HttpBasicAuth, Field(discriminator="type")]


class HttpProgressPaths(_Model):
    """Where the counts are: ``done_path`` alone, or ``success_path`` and/or ``failure_path``."""

    done_path: str | None = None
    success_path: str | None = None
    failure_path: str | None = None
    total_path: str

    _check_paths = field_validator("done_path", "success_path", "failure_path", "total_path")(
        _json_path
    )

    @model_validator(mode="after")
    def _one_way(self) -> HttpProgressPaths:
        split = self.success_path is not None or self.failure_path is not None
        if self.done_path is not None and split:
            raise ValueError("give done_path, or success_path/failure_path, not both")
        if self.done_path is None and not split:
            raise ValueError("give done_path, or success_path and/or failure_path")
        return self


class HttpSourceConfig(HttpClientConfig):
    """Any JSON task API: ``url`` with ``{task_id}``, a status at ``status_path``, outcomes."""

    type: Literal["http"]
    url: str
    method: Literal["GET", "POST"] = "GET"
    # POST only: a JSON value; every string in it has {task_id} replaced by the id.
    body: JsonValue = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    auth: HttpAuth | None = None
    rate_limit: Rate = 20.0
    burst: int | None = Field(default=None, ge=1)
    status_path: str
    progress: HttpProgressPaths | None = None
    begin_time_path: str | None = None
    end_time_path: str | None = None
    outcomes: dict[Outcome | Literal["running"], list[str]]
    progress_rule: bool = False
    not_found: Literal["error", "running"] = "error"

    _check_paths = field_validator("status_path", "begin_time_path", "end_time_path")(_json_path)

    @field_validator("url")
    @classmethod
    def _template(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        rest = value.replace(TASK_ID, "")
        if "{" in rest or "}" in rest:
            raise ValueError("the only placeholder is {task_id}")
        if any(ch not in _URL_CHARS for ch in rest):
            raise ValueError("must be percent-encoded (it is sent exactly as written)")
        if "#" in rest:
            raise ValueError("must not have a #fragment")
        if any(
            not all(c in "0123456789abcdefABCDEF" for c in after[:2]) or len(after) < 2
            for after in rest.split("%")[1:]
        ):
            raise ValueError("has a '%' that is not a %XX escape")
        scheme_end = value.index("://") + 3
        cut = [i for i in (value.find("/", scheme_end), value.find("?", scheme_end)) if i >= 0]
        authority = value[scheme_end : min(cut) if cut else len(value)]
        if not authority or authority.startswith(":"):
            raise ValueError("has no host")
        if TASK_ID in authority:
            raise ValueError("{task_id} may be in the path or query, not the host")
        if "@" in authority:
            raise ValueError("must not hold credentials; use auth: {type: basic, ...}")
        try:
            url = URL(value.replace(TASK_ID, "x"), encoded=True)
            valid = bool(url.host) and url.port is not None
        except (ValueError, TypeError):
            valid = False
        if not valid:
            raise ValueError("is not a valid URL (host or port)")
        return value

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, secret in value.items():
            if not name or any(ch not in _TOKEN_CHARS for ch in name):
                raise ValueError(f"header name {name[:40]!r} is not a valid HTTP token")
            text = secret.get_secret_value()
            if any(ch in "\r\n\0" for ch in text) or not text.isascii():
                # The value itself is never shown: it is usually a credential.
                raise ValueError(f"header {name!r}: value must be ASCII without CR, LF or NUL")
        return value

    @field_validator("outcomes", mode="before")
    @classmethod
    def _values_as_strings(cls, value: Any) -> Any:
        # YAML reads `succeeded: [0]` as an int; statuses are compared as strings. Other
        # non-strings are left for validation to refuse.
        if isinstance(value, dict):
            return {k: _ints_as_text(vs) for k, vs in value.items()}
        return value

    @field_validator("rate_limit")
    @classmethod
    def _positive_rate(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be above 0")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> HttpSourceConfig:
        seen: dict[str, str] = {}
        for outcome, values in self.outcomes.items():
            for status in values:
                if status in seen and seen[status] != str(outcome):
                    raise ValueError(
                        f"outcomes: {status[:40]!r} is listed under both {seen[status]} "
                        f"and {outcome}"
                    )
                seen[status] = str(outcome)
        if not self.progress_rule and all(o == "running" for o in self.outcomes):
            raise ValueError("outcomes: no terminal outcome is listed, so no task could finish")
        if self.body is not None and self.method != "POST":
            raise ValueError("body is only sent with method: POST")
        if TASK_ID not in self.url and not _mentions(self.body, TASK_ID):
            raise ValueError("url must contain {task_id} (or, with POST, the body)")
        if self.auth is not None and any(k.lower() == "authorization" for k in self.headers):
            raise ValueError("give the Authorization header or auth, not both")
        return self

    @property
    def status_map(self) -> dict[str, Outcome | Literal["running"]]:
        """Status value -> outcome (or "running"), as the engine's Classifier wants it."""
        return {status: outcome for outcome, values in self.outcomes.items() for status in values}


def _ints_as_text(values: Any) -> Any:
    if not isinstance(values, list):
        return values
    return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in values]


def _mentions(value: Any, text: str) -> bool:
    if isinstance(value, str):
        return text in value
    if isinstance(value, dict):
        return any(_mentions(v, text) for v in value.values())
    if isinstance(value, list):
        return any(_mentions(v, text) for v in value)
    return False


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
    | Annotated[HttpSourceConfig, Tag("http")]
    | Annotated[PluginSourceConfig, Tag("plugin")],
    Discriminator(_builtin_or_plugin({"metastudio", "http"})),
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
    # `progress_max`), but never longer than `growth` times how long the task has run so far,
    # or `growth_min` if that is longer (set it above watches / rate_limit for big batches).
    progress_max: Duration = 1800.0
    growth: float = Field(default=1.0, gt=0.0, le=100.0)
    growth_min: Duration = 120.0
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


def _sink_name(value: str | None) -> str | None:
    if value is not None and (not value or not value.isprintable()):
        raise ValueError("must be printable text")
    return value


class StdoutSinkConfig(_Model):
    type: Literal["stdout"]
    # The key of this sink's queue in the store (default: the type, then type-2, ...).
    name: str | None = Field(default=None, min_length=1, max_length=100)

    _check_name = field_validator("name")(_sink_name)


class FileSinkConfig(_Model):
    type: Literal["file"]
    name: str | None = Field(default=None, min_length=1, max_length=100)
    path: str = Field(min_length=1)
    fsync: Literal["always", "batch", "never"] = "batch"
    rotate_bytes: ByteSize | None = None
    keep: int = Field(default=5, ge=1)
    # Retries (a full disk, say) and the dead-letter file, as for webhook below.
    # None: no limit on attempts; max_age alone decides when to give up.
    max_attempts: int | None = Field(default=None, ge=1)
    max_age: Duration = 24 * 3600.0
    initial_backoff: Duration = 1.0
    max_backoff: Duration = 300.0
    dead_letter: str | None = None  # default: watcher-dead-letters.jsonl in the working dir

    _check_name = field_validator("name")(_sink_name)


# Set by the webhook sink itself; a custom header of these names would break the request or
# the signature.
_WEBHOOK_OWN_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "transfer-encoding",
        "host",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)
_HEADER_NAME_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)


class WebhookSinkConfig(_Model):
    type: Literal["webhook"]
    name: str | None = Field(default=None, min_length=1, max_length=100)
    url: str
    secret: SecretStr | None = None  # whsec_... (Standard Webhooks)
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    timeout: Duration = Field(default=10.0, gt=0)
    # None: no limit on attempts; max_age alone decides when to give up.
    max_attempts: int | None = Field(default=None, ge=1)
    max_age: Duration = 24 * 3600.0
    initial_backoff: Duration = 1.0
    max_backoff: Duration = 300.0
    dead_letter: str | None = None  # default: watcher-dead-letters.jsonl in the working dir
    verify_tls: bool = True
    ca_file: str | None = None

    _check_url = field_validator("url")(_http_url)
    _check_name = field_validator("name")(_sink_name)

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, secret in value.items():
            if not name or any(ch not in _HEADER_NAME_CHARS for ch in name):
                raise ValueError(f"header name {name[:40]!r} is not a valid HTTP token")
            if name.lower() in _WEBHOOK_OWN_HEADERS:
                raise ValueError(f"header {name!r} is set by the webhook sink itself")
            text = secret.get_secret_value()
            if any(ch in "\r\n\0" for ch in text) or not text.isascii():
                # The value itself is never shown: it is usually a credential.
                raise ValueError(f"header {name!r}: value must be ASCII without CR, LF or NUL")
        return value


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


class DaemonConfig(_Model):
    """``watcher run`` only."""

    # SIGTERM/SIGINT: in-flight polls finish and sinks drain for at most this long; whatever
    # is left stays in the store for the next start.
    grace: Duration = 30.0


class SpoolConfig(_Model):
    """``watcher run`` only: ingest files of task ids dropped into ``dir``."""

    dir: str = Field(min_length=1)
    poll_interval: Duration = Field(default=2.0, gt=0)
    source: str | None = None  # default: the first source (a .json file may name its own)
    batch_from_filename: bool = True  # a file's batch is its name without the extension


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
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    spool: SpoolConfig | None = None

    @field_validator("sources")
    @classmethod
    def _names_are_segments(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not name or "/" in name or not name.isprintable():
                raise ValueError(f"source name {name!r} must be printable and contain no '/'")
        return value

    @model_validator(mode="after")
    def _spool_source_known(self) -> Config:
        spool = self.spool
        if spool is not None and spool.source is not None and spool.source not in self.sources:
            known = ", ".join(self.sources)
            raise ValueError(f"spool.source {spool.source!r} is not a source ({known})")
        return self

    @property
    def default_source(self) -> str:
        """The first source is the default one."""
        return next(iter(self.sources))
