"""Simulator configuration: what the fake MetaStudio looks like and how it misbehaves."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

__all__ = [
    "AUTH_MODES",
    "MALFORMED_KINDS",
    "OUTCOMES",
    "FaultConfig",
    "SimulatorConfig",
]

AuthMode = Literal["none", "token", "aksk", "any"]
FieldForms = Literal["documented", "mixed"]

AUTH_MODES: tuple[str, ...] = ("none", "token", "aksk", "any")
OUTCOMES: tuple[str, ...] = ("succeeded", "partial", "failed", "cancelled")
# Each kind is a distinct way a body can be unusable; clients must treat all as transient.
MALFORMED_KINDS: tuple[str, ...] = ("garbage", "truncated", "wrong_types", "array", "html")

_DEFAULT_WEIGHTS: Mapping[str, float] = {
    "succeeded": 0.85,
    "partial": 0.08,
    "failed": 0.05,
    "cancelled": 0.02,
}


def _check_rate(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}")


def _check_seconds(name: str, value: float, *, allow_negative: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
    if value < 0 and not allow_negative:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Faults injected into MetaStudio API answers (``/v2/...``); IAM and ``/_sim`` are spared.

    Every random choice comes from one RNG seeded by ``seed`` (default: derived from the
    simulator's seed), re-seeded whenever faults are set, so a given request order always
    meets the same faults.

    >>> FaultConfig(error_rate=0.3, latency=(0.01, 0.05)).enabled
    True
    """

    error_rate: float = 0.0  # 500/502/503, JSON MSS.000000002 or a plain/HTML body
    latency: float | tuple[float, float] = 0.0  # seconds added before answering, or (min, max)
    malformed_rate: float = 0.0  # 200 with an unusable body, see MALFORMED_KINDS
    malformed_kinds: tuple[str, ...] = MALFORMED_KINDS
    drop_rate: float = 0.0  # close the connection without any response
    outage: bool = False  # every API request answers 503
    oversize_body: int = 0  # > 0: answer 200 with a (valid JSON) body of this many bytes
    # With oversize_body: send it chunked, without Content-Length, so a client learns how
    # large it is only by reading it.
    oversize_chunked: bool = False
    clock_skew: float = 0.0  # added to the simulator's clock when checking X-Sdk-Date
    # Faults strike before the gateway checks credentials and rate limits (a network or a
    # proxy in front of it), so refused requests can be dropped or delayed too.
    before_auth: bool = False
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("error_rate", "malformed_rate", "drop_rate"):
            _check_rate(name, getattr(self, name))
        if isinstance(self.latency, tuple | list):
            if len(self.latency) != 2:
                raise ValueError(f"latency must be seconds or (min, max), got {self.latency!r}")
            low, high = self.latency
            _check_seconds("latency", low)
            _check_seconds("latency", high)
            if high < low:
                raise ValueError(f"latency (min, max) has max < min: {self.latency!r}")
            object.__setattr__(self, "latency", (float(low), float(high)))
        else:
            _check_seconds("latency", self.latency)
        unknown = set(self.malformed_kinds) - set(MALFORMED_KINDS)
        if unknown or not self.malformed_kinds:
            raise ValueError(
                f"malformed_kinds must be a non-empty subset of {MALFORMED_KINDS}, "
                f"got {self.malformed_kinds!r}"
            )
        object.__setattr__(self, "malformed_kinds", tuple(self.malformed_kinds))
        if isinstance(self.oversize_body, bool) or not isinstance(self.oversize_body, int):
            raise ValueError(f"oversize_body must be an integer, got {self.oversize_body!r}")
        if self.oversize_body < 0:
            raise ValueError(f"oversize_body must be >= 0, got {self.oversize_body}")
        for flag in ("oversize_chunked", "before_auth"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} must be a boolean, got {getattr(self, flag)!r}")
        _check_seconds("clock_skew", self.clock_skew, allow_negative=True)

    @property
    def enabled(self) -> bool:
        """True when any fault changes answers (``clock_skew`` only moves the clock)."""
        return bool(
            self.error_rate
            or self.malformed_rate
            or self.drop_rate
            or self.outage
            or self.oversize_body
            or self.latency != 0.0
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> FaultConfig:
        """Build from JSON-ish data (``POST /_sim/faults``); unknown keys are a ``ValueError``."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(unknown)}")
        values = dict(data)
        if isinstance(values.get("latency"), list):
            values["latency"] = tuple(values["latency"])
        if isinstance(values.get("malformed_kinds"), list):
            values["malformed_kinds"] = tuple(values["malformed_kinds"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if isinstance(self.latency, tuple):
            out["latency"] = list(self.latency)
        out["malformed_kinds"] = list(self.malformed_kinds)
        return out


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """Everything about one simulator; every field has a default.

    Task ids: ``auto_create`` (default: on unless ``task_ids`` is given) creates any unknown
    id at its first request. With ``task_ids`` and auto-creation off, unknown ids answer
    404 ``MSS.000000003``. Ids starting with ``invalid_prefix`` answer 400 ``MSS.000000003``.

    Time: ``clock`` (wall seconds) drives task life, token expiry and ``X-Sdk-Date`` checks;
    ``monotonic`` drives the rate-limit and stats windows and AK lockouts. ``time_scale``
    speeds task life up: with 10, a task of 10 s life finishes 1 s after it was created (its
    reported ``end_time`` is that real finish time).

    >>> cfg = SimulatorConfig(seed=1, rate_limit=20.0, auth="aksk", credentials={"AK": "SK"})
    >>> cfg.auto_create_effective
    True
    """

    seed: int = 0
    host: str = "127.0.0.1"
    port: int = 0
    project_id: str = "sim-project"
    # tasks
    auto_create: bool | None = None
    task_ids: Sequence[str] | None = None
    invalid_prefix: str = "invalid-"
    duration_median: float = 10.0
    duration_sigma: float = 0.5
    duration_min: float = 0.0
    duration_max: float | None = None
    total_range: tuple[int, int] = (1, 100)
    outcome_weights: Mapping[str, float] = field(default_factory=lambda: dict(_DEFAULT_WEIGHTS))
    resources: tuple[str, ...] = ("knowledge-intent-question-create", "asset-import")
    field_forms: FieldForms = "documented"
    status_running: int = 1
    status_finished: int = 0
    status_cancelled: int = 2
    status_failed: int | None = None  # None: failed tasks report status_finished too
    page_cap: int = 100
    # time
    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    time_scale: float = 1.0
    # flow control
    rate_limit: float | None = None
    retry_after: bool = True
    # auth
    auth: AuthMode = "none"
    tokens: Collection[str] = frozenset()
    credentials: Mapping[str, str] = field(default_factory=dict)
    iam_users: Mapping[tuple[str, str], str] = field(default_factory=dict)
    token_ttl: float = 86400.0
    signature_max_age: float = 900.0
    lockout_failures: int = 5  # the AK locks when consecutive failures exceed this
    lockout_seconds: float = 300.0
    # faults and bookkeeping
    faults: FaultConfig = field(default_factory=FaultConfig)
    paths_limit: int = 100_000

    def __post_init__(self) -> None:
        if self.auth not in AUTH_MODES:
            raise ValueError(f"auth must be one of {AUTH_MODES}, got {self.auth!r}")
        if self.field_forms not in ("documented", "mixed"):
            raise ValueError(
                f"field_forms must be 'documented' or 'mixed', not {self.field_forms!r}"
            )
        if self.duration_median <= 0 or self.duration_sigma < 0 or self.duration_min < 0:
            raise ValueError("duration_median must be > 0, duration_sigma and duration_min >= 0")
        if self.duration_max is not None and self.duration_max < self.duration_min:
            raise ValueError("duration_max must be >= duration_min")
        low, high = self.total_range
        if not 0 <= low <= high:
            raise ValueError(f"total_range must be (min, max) with 0 <= min <= max: {low, high}")
        unknown = set(self.outcome_weights) - set(OUTCOMES)
        if unknown:
            raise ValueError(f"outcome_weights: unknown outcomes {sorted(unknown)}")
        if any(w < 0 for w in self.outcome_weights.values()) or not any(
            w > 0 for w in self.outcome_weights.values()
        ):
            raise ValueError("outcome_weights must be >= 0 with at least one > 0")
        if not self.resources:
            raise ValueError("resources must not be empty")
        self._check_service()

    def _check_service(self) -> None:
        if self.time_scale <= 0 or not math.isfinite(self.time_scale):
            raise ValueError(f"time_scale must be > 0, got {self.time_scale}")
        if self.rate_limit is not None and not self.rate_limit > 0:
            raise ValueError(f"rate_limit must be > 0 or None, got {self.rate_limit}")
        if self.page_cap < 1:
            raise ValueError(f"page_cap must be >= 1, got {self.page_cap}")
        if self.token_ttl <= 0:
            raise ValueError(f"token_ttl must be > 0, got {self.token_ttl}")
        if self.task_ids is not None:
            object.__setattr__(self, "task_ids", tuple(self.task_ids))

    @property
    def auto_create_effective(self) -> bool:
        """Whether unknown ids are created on first sight."""
        if self.auto_create is None:
            return self.task_ids is None
        return self.auto_create

    def __repr__(self) -> str:
        # Secrets (secret keys, passwords, tokens) never appear in a repr.
        return (
            f"SimulatorConfig(seed={self.seed}, host={self.host!r}, port={self.port}, "
            f"project_id={self.project_id!r}, auth={self.auth!r}, rate_limit={self.rate_limit}, "
            f"credentials=<{len(self.credentials)} keys>, iam_users=<{len(self.iam_users)}>, "
            f"tokens=<{len(self.tokens)}>, faults={self.faults!r})"
        )
