"""Task ids are opaque strings from users; they must never be able to change a request path."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

from ._exceptions import InvalidTaskIdError

__all__ = ["MAX_TASK_ID_LENGTH", "quote_segment", "validate_task_id"]

MAX_TASK_ID_LENGTH = 128
# The characters quote() never encodes (with safe="-_.~"); ASCII only, as in urllib.
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*", re.ASCII)


def validate_task_id(task_id: object) -> str:
    """Return ``task_id`` if watcher will send it, else raise ``InvalidTaskIdError`` with why.

    Allowed: 1-128 characters, no control characters, not ``.`` or ``..`` (URL normalisation
    would turn those into a different path). Everything else is sent, percent-encoded as one
    path segment, so ``/``, ``?``, ``#`` and ``%2F`` stay inside the id.
    """
    if not isinstance(task_id, str):
        raise InvalidTaskIdError(repr(task_id), f"must be a string, not {type(task_id).__name__}")
    if not task_id:
        raise InvalidTaskIdError(task_id, "is empty")
    if len(task_id) > MAX_TASK_ID_LENGTH:
        raise InvalidTaskIdError(
            task_id, f"is {len(task_id)} characters long; at most {MAX_TASK_ID_LENGTH} allowed"
        )
    # Printable ASCII has no control characters (nor surrogates): skip the per-character
    # scan for the usual ids, which runs on every add and every poll.
    if not (task_id.isascii() and task_id.isprintable()):
        for index, char in enumerate(task_id):
            if unicodedata.category(char) in ("Cc", "Cs"):
                raise InvalidTaskIdError(
                    task_id, f"contains control character U+{ord(char):04X} at position {index}"
                )
    if task_id in (".", ".."):
        raise InvalidTaskIdError(task_id, "is a dot-segment, which would change the path")
    return task_id


def quote_segment(segment: str) -> str:
    """Percent-encode ``segment`` as exactly one path segment (only ``-_.~`` and alnum kept).

    This is the encoding the MetaStudio signer uses for canonical URIs, so the path sent and
    the path signed agree byte for byte.
    """
    if _UNRESERVED.fullmatch(segment):
        return segment  # what quote() would return, in a fifth of the time (every poll)
    return quote(segment, safe="-_.~")
