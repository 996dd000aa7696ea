"""The shape of a request to watch tasks, shared by ``POST /v1/watches`` and spool files."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from ..config._units import Duration

__all__ = ["MAX_IDS_PER_REQUEST", "WatchRequest", "describe_validation"]

MAX_IDS_PER_REQUEST = 100_000
_MAX_DETAILS = 20

_Name = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=200)]
_LabelKey = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=100)]
_LabelValue = Annotated[str, StringConstraints(strict=True, max_length=1000)]
# Ids are checked one by one by the engine, so a bad one is reported, not fatal: only the type
# is enforced here.
_TaskId = Annotated[str, StringConstraints(strict=True)]


class WatchRequest(BaseModel):
    """``{"task_ids": [...], "source"?, "batch"?, "labels"?, "deadline"?}``; unknown keys are
    refused. ``deadline``: seconds or a duration such as ``"2h"``, counted from now."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_ids: list[_TaskId] = Field(min_length=1, max_length=MAX_IDS_PER_REQUEST)
    source: _Name | None = None
    batch: _Name | None = None
    labels: dict[_LabelKey, _LabelValue] = Field(default_factory=dict, max_length=64)
    deadline: Duration | None = Field(default=None, gt=0)

    @field_validator("batch", "source")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and not value.isprintable():
            raise ValueError("must be printable text")
        return value


def describe_validation(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors as ``[{"loc": "task_ids.3", "msg": ...}]``, without the input (it may
    be huge, or a secret pasted in the wrong place), at most 20 of them."""
    details: list[dict[str, Any]] = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        loc = ".".join(str(part) for part in error["loc"]) or "(body)"
        details.append({"loc": loc, "msg": error["msg"]})
        if len(details) >= _MAX_DETAILS:
            break
    return details
