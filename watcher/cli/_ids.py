"""Reading task ids from arguments, a file or stdin."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from .._exceptions import InvalidTaskIdError
from .._taskid import validate_task_id

__all__ = ["collect_ids"]


def _lines(ids_file: str) -> Iterable[str]:
    if ids_file == "-":
        yield from sys.stdin
        return
    # utf-8-sig: a byte-order mark (Windows editors add one) must not become part of an id.
    with open(ids_file, encoding="utf-8-sig") as handle:
        yield from handle


def collect_ids(
    args: Iterable[str], ids_file: str | None
) -> tuple[list[str], list[tuple[str, str]]]:
    """Valid ids in first-seen order without duplicates, and (id, reason) for invalid ones.

    In a file, blank lines and ``#`` comments are skipped and surrounding whitespace is
    stripped (an id with inner spaces is kept whole).
    """
    seen: dict[str, None] = {}
    invalid: list[tuple[str, str]] = []
    candidates = list(args)
    if ids_file is not None:
        for line in _lines(ids_file):
            text = line.strip()
            if text and not text.startswith("#"):
                candidates.append(text)
    for candidate in candidates:
        if candidate in seen:
            continue
        try:
            validate_task_id(candidate)
        except InvalidTaskIdError as exc:
            invalid.append((candidate, exc.reason))
            continue
        seen[candidate] = None
    return list(seen), invalid
