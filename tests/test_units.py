"""Durations, rates and sizes as people write them in config files."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from watcher.config import parse_bytes, parse_duration, parse_rate
from watcher.config._units import MAX_DURATION, ByteSize, Duration, Rate


class _Knobs(BaseModel):
    timeout: Duration = 1.0
    rate: Rate = 1.0
    size: ByteSize = 1


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("6h", 21600.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("2d", 172800.0),
        ("1.5h", 5400.0),
        (" 30 s ", 30.0),
        ("30S", 30.0),
        ("45", 45.0),
        ("0.25", 0.25),
        ("0", 0.0),
        (10, 10.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_duration_forms(text: object, seconds: float) -> None:
    """Units, combinations, plain numbers and numeric strings all give seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "bad",
    [
        "abc",
        "5 minutes",
        "5x",
        "h",
        "",
        "-5s",
        "-1",
        "inf",
        "nan",
        "1e400",
        "9" * 400 + "h",
        "5s garbage",
        True,
        -1,
        float("inf"),
        float("nan"),
        10**400,
        MAX_DURATION * 2,
    ],
)
def test_bad_durations_raise_value_error(bad: object) -> None:
    """Malformed, negative, infinite or absurdly large durations are a ValueError only."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("text", "per_second"),
    [
        (20, 20.0),
        (0.5, 0.5),
        ("20", 20.0),
        ("20/s", 20.0),
        ("20 / sec", 20.0),
        ("600/min", 10.0),
        ("600/m", 10.0),
        ("3600/h", 1.0),
        ("7200/hour", 2.0),
    ],
)
def test_rate_forms(text: object, per_second: float) -> None:
    """Rates are requests per second whatever unit they are written in."""
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize(
    "bad", ["0", 0, "0/s", "-1/s", "20/fortnight", "fast", "/s", "inf/s", True, -3, 10**400]
)
def test_bad_rates_raise_value_error(bad: object) -> None:
    """Zero, negative, unknown units and non-numbers are refused."""
    with pytest.raises(ValueError, match="rate"):
        parse_rate(bad)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (1024, 1024),
        ("1024", 1024),
        ("1MiB", 1024**2),
        ("512KiB", 512 * 1024),
        ("1MB", 1000**2),
        ("1 kb", 1000),
        ("1k", 1024),
        ("1.5KiB", 1536),
        ("2g", 2 * 1024**3),
        (10**30, 10**30),
    ],
)
def test_size_forms(text: object, size: int) -> None:
    """Sizes are bytes; decimal and binary units are both understood; big ints stay exact."""
    assert parse_bytes(text) == size


@pytest.mark.parametrize("bad", ["1 XB", "-1", "lots", "1.5.5MB", "9" * 400, True, -1])
def test_bad_sizes_raise_value_error(bad: object) -> None:
    """Unknown units, negatives and overflowing numbers are a ValueError only."""
    with pytest.raises(ValueError, match="size"):
        parse_bytes(bad)


def test_non_text_values_are_left_to_pydantic() -> None:
    """A list or None is passed through, so pydantic reports its type error."""
    for parse in (parse_duration, parse_rate, parse_bytes):
        assert parse(None) is None
        assert parse([1]) == [1]


def test_messages_never_repeat_the_input() -> None:
    """A value may be a secret from a misplaced ${...}: error messages must not echo it."""
    secret = "hunter2-Sup3rSecret"
    for parse in (parse_duration, parse_rate, parse_bytes):
        with pytest.raises(ValueError, match=r"^not a") as caught:
            parse(secret)
        assert secret not in str(caught.value)


def test_annotated_types_in_a_model() -> None:
    """The Annotated types parse in models and bad values become ValidationErrors."""
    knobs = _Knobs.model_validate({"timeout": "1h30m", "rate": "600/min", "size": "1MiB"})
    assert (knobs.timeout, knobs.rate, knobs.size) == (5400.0, 10.0, 1024**2)
    with pytest.raises(ValidationError) as caught:
        _Knobs.model_validate({"timeout": 10**400, "rate": 0, "size": "9" * 400})
    assert {e["loc"][0] for e in caught.value.errors()} == {"timeout", "rate", "size"}


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.floats(min_value=0, max_value=MAX_DURATION / 3600, allow_nan=False))
def test_duration_round_trip(hours: float) -> None:
    """Any number of hours, as plain seconds or with units, parses to the same seconds."""
    assert parse_duration(repr(hours * 3600)) == pytest.approx(hours * 3600)
    text = f"{hours:.3f}"
    whole, fraction = text.split(".")
    assert parse_duration(f"{text}h") == pytest.approx(float(text) * 3600)
    combined = parse_duration(f"{whole}h{int(fraction) * 3.6}s")
    assert combined == pytest.approx(float(text) * 3600)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.one_of(st.text(max_size=30), st.integers(), st.floats(), st.booleans()))
def test_parsers_raise_only_value_error(value: object) -> None:
    """Whatever the input, the parsers return a value or raise ValueError, nothing else."""
    for parse in (parse_duration, parse_rate, parse_bytes):
        try:
            result = parse(value)
        except ValueError:
            continue
        # A parse gives a finite number >= 0; anything else is handed back for pydantic.
        if isinstance(value, str) or result is not value:
            assert isinstance(result, int | float)
            assert 0 <= result < float("inf")
