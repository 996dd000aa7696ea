"""Human units in config: durations (``500ms``, ``30s``, ``5m``, ``6h``), rates, byte sizes."""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator

__all__ = ["ByteSize", "Duration", "Rate", "parse_bytes", "parse_duration", "parse_rate"]

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_RATE_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 1 / 60, "min": 1 / 60, "minute": 1 / 60,
               "h": 1 / 3600, "hour": 1 / 3600}
_BYTE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
               "kib": 1024, "mib": 1024**2, "gib": 1024**3, "k": 1024, "m": 1024**2, "g": 1024**3}


def _number(value: object, what: str) -> float | None:
    if isinstance(value, bool):
        raise ValueError(f"expected a {what}, got a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{what} must be a finite number >= 0, got {value}")
        return float(value)
    return None


def parse_duration(value: object) -> object:
    """Seconds as a float, from a number of seconds or text like ``500ms``, ``1h30m``."""
    number = _number(value, "duration")
    if number is not None:
        return number
    if not isinstance(value, str):
        return value  # let pydantic report the type error
    text = value.strip().lower()
    try:
        return _number(float(text), "duration")
    except ValueError:
        pass
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if text[pos : match.start()].strip():
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos == 0 or text[pos:].strip():
        raise ValueError(
            f"not a duration: {value!r} (use a number of seconds or e.g. 500ms, 30s, 5m, 6h, 1h30m)"
        )
    return total


def parse_rate(value: object) -> object:
    """Requests per second, from a number or text like ``20``, ``20/s``, ``600/min``."""
    number = _number(value, "rate")
    if number is not None:
        return number
    if not isinstance(value, str):
        return value
    count, sep, unit = value.strip().lower().partition("/")
    try:
        amount = float(count)
    except ValueError:
        raise ValueError(f"not a rate: {value!r} (use e.g. 20, 20/s, 600/min)") from None
    factor = _RATE_UNITS.get(unit.strip() or "s") if sep or not unit else None
    if factor is None or not math.isfinite(amount) or amount < 0:
        raise ValueError(f"not a rate: {value!r} (use e.g. 20, 20/s, 600/min)")
    return amount * factor


def parse_bytes(value: object) -> object:
    """Bytes as an int, from a number or text like ``1MiB``, ``512kb``."""
    number = _number(value, "size")
    if number is not None:
        return int(number)
    if not isinstance(value, str):
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", value.lower())
    if not match or match.group(2) not in _BYTE_UNITS:
        raise ValueError(f"not a size: {value!r} (use e.g. 1048576, 512KiB, 1MiB)")
    return int(float(match.group(1)) * _BYTE_UNITS[match.group(2)])


Duration = Annotated[float, BeforeValidator(parse_duration)]
Rate = Annotated[float, BeforeValidator(parse_rate)]
ByteSize = Annotated[int, BeforeValidator(parse_bytes)]
