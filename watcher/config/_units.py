"""Human units in config: durations (``500ms``, ``30s``, ``5m``, ``6h``), rates, byte sizes.

Error messages never repeat the input: a value may have come from an environment variable
that holds a secret (a misplaced ``${WEBHOOK_SECRET}``), and errors end up in logs.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator

__all__ = [
    "MAX_DURATION",
    "ByteSize",
    "Duration",
    "Rate",
    "parse_bytes",
    "parse_duration",
    "parse_rate",
]

# Far beyond any sensible timeout, yet below what timedelta, threading and event loops accept,
# so a typo like `1e300` fails here rather than deep inside a sleep.
MAX_DURATION = 100 * 365 * 86400.0

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_DURATION_HINT = "use a number of seconds or e.g. 500ms, 30s, 5m, 6h, 1h30m"
_RATE_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 1 / 60,
    "min": 1 / 60,
    "minute": 1 / 60,
    "h": 1 / 3600,
    "hour": 1 / 3600,
}
_RATE_HINT = "use e.g. 20, 20/s, 600/min"
_BYTE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
}
_BYTES_PATTERN = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*")
_BYTES_HINT = "use e.g. 1048576, 512KiB, 1MiB"


def _number(value: object, what: str) -> float | None:
    """``value`` as a finite float >= 0 if it is a number, None if it is not a number."""
    if isinstance(value, bool):
        raise ValueError(f"expected a {what}, got a boolean")
    if not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        raise ValueError(f"{what} is too large") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{what} must be a finite number >= 0")
    return number


def _float_text(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _check_duration(seconds: float) -> float:
    if not math.isfinite(seconds) or seconds > MAX_DURATION:
        raise ValueError("duration is too large (at most 100 years)")
    return seconds


def parse_duration(value: object) -> object:
    """Seconds as a float, from a number of seconds or text like ``500ms``, ``1h30m``."""
    number = _number(value, "duration")
    if number is not None:
        return _check_duration(number)
    if not isinstance(value, str):
        return value  # let pydantic report the type error
    text = value.strip().lower()
    plain = _float_text(text)
    if plain is not None:
        return _check_duration(_number(plain, "duration") or 0.0)
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if text[pos : match.start()].strip():
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos == 0 or text[pos:].strip():
        raise ValueError(f"not a duration ({_DURATION_HINT})")
    return _check_duration(total)


def parse_rate(value: object) -> object:
    """Requests per second (above 0), from a number or text like ``20``, ``20/s``, ``600/min``."""
    number = _number(value, "rate")
    if number is None:
        if not isinstance(value, str):
            return value
        count, _, unit = value.strip().lower().partition("/")
        amount = _float_text(count)
        factor = _RATE_UNITS.get(unit.strip() or "s")
        if amount is None or factor is None:
            raise ValueError(f"not a rate ({_RATE_HINT})")
        number = _number(amount, "rate")
        assert number is not None  # a float is a number
        number *= factor
    if number <= 0:  # a rate of 0 would never poll, and the token bucket would divide by it
        raise ValueError("rate must be above 0")
    return number


def parse_bytes(value: object) -> object:
    """Bytes as an int, from a number or text like ``1MiB``, ``512kb``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value  # exact, however large: no float round trip
    number = _number(value, "size")
    if number is not None:
        return int(number)
    if not isinstance(value, str):
        return value
    match = _BYTES_PATTERN.fullmatch(value.lower())
    if not match or match.group(2) not in _BYTE_UNITS:
        raise ValueError(f"not a size ({_BYTES_HINT})")
    size = float(match.group(1)) * _BYTE_UNITS[match.group(2)]
    if not math.isfinite(size):
        raise ValueError("size is too large")
    return int(size)


Duration = Annotated[float, BeforeValidator(parse_duration)]
Rate = Annotated[float, BeforeValidator(parse_rate)]
ByteSize = Annotated[int, BeforeValidator(parse_bytes)]
