"""Pydantic's validation errors, retold as ``ConfigIssue``\\ s that name the key path and line.

Pydantic locations include union tags (``('sources', 'm', 'metastudio', 'auth', 'aksk',
'sk')``); they are dropped by walking the data itself: an element that is not a key or index
of the node reached so far is a tag. Inputs are never printed: they may be secrets. Nor are
keys that may be one: ``{ak: A, sk:abc}`` (no space after the colon) makes ``sk:abc`` a key.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Iterable
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr, Tag, ValidationError
from pydantic_core import ErrorDetails

from .._exceptions import ConfigIssue
from ._schema import Config
from ._yaml import KeyPath, Positions, format_path

__all__ = ["is_secret_key", "issues_from_validation", "model_at", "secret_strings", "union_tags"]

_PREFIXES = ("Value error, ", "Assertion failed, ")
_MAPPING_TYPES = {"model_type", "model_attributes_type", "dict_type", "dataclass_type"}
_CHOICE_TYPES = {"enum", "literal_error"}
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'")
# Secret-looking key names (as words of the key), for scrubbing messages and masking plugins.
SECRET_WORDS = frozenset(
    {"sk", "secret", "token", "password", "passwd", "pwd", "apikey", "credential", "credentials"}
    | {"key", "authorization", "cookie", "signature", "security"}
)
_WORD = re.compile(r"[^a-z0-9]+")
_MIN_SCRUB = 6  # shorter strings would mangle ordinary words in messages
_MASK = "**********"


def is_secret_key(key: object) -> bool:
    """Whether a key's name says its value is a credential (``sk``, ``api_key``, ...)."""
    return isinstance(key, str) and bool(SECRET_WORDS.intersection(_WORD.split(key.lower())))


# --- the schema, walked by location ---------------------------------------------------------


def _members(tp: Any) -> list[Any]:
    return list(get_args(tp)) if get_origin(tp) in (Union, types.UnionType) else []


def _strip(tp: Any) -> tuple[Any, list[Any]]:
    metadata: list[Any] = []
    while get_origin(tp) is Annotated:
        tp, *extra = get_args(tp)
        metadata.extend(extra)
    return tp, metadata


def _tags(member: Any) -> tuple[Any, list[str]]:
    """A union member and the tags that select it (a ``Tag`` or its ``type`` literal)."""
    inner, metadata = _strip(member)
    found = [m.tag for m in metadata if isinstance(m, Tag)]
    if not found and isinstance(inner, type) and issubclass(inner, BaseModel):
        kind = inner.model_fields.get("type")
        if kind is not None and get_origin(kind.annotation) is Literal:
            found = [str(v) for v in get_args(kind.annotation)]
    return inner, found


def _step(tp: Any, elem: str | int) -> Any:
    """The type found at ``elem`` inside a value of type ``tp`` (None: unknown)."""
    for _ in range(8):  # unions unwrap a few levels at most
        tp, _meta = _strip(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(elem) if isinstance(elem, str) else None
            return None if field is None else field.annotation
        if get_origin(tp) in (dict, list):
            return get_args(tp)[-1]
        members = _members(tp)
        tagged = [inner for inner, tags in map(_tags, members) if elem in tags]
        real = [m for m in members if m is not type(None)]
        if tagged or len(real) != 1:
            return tagged[0] if tagged else None
        tp = real[0]  # X | None: the location goes on inside X
    return None


def _walk_schema(loc: Iterable[str | int]) -> Any:
    tp: Any = Config
    for elem in loc:
        tp = _step(tp, elem)
        if tp is None:
            return None
    return tp


def model_at(loc: Iterable[str | int]) -> type[BaseModel] | None:
    """The model that validates the mapping at pydantic location ``loc`` (tags included)."""
    tp, _meta = _strip(_walk_schema(loc))
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def union_tags(loc: Iterable[str | int]) -> list[str]:
    """The tags a discriminated union at ``loc`` accepts, in declaration order."""
    tp, _meta = _strip(_walk_schema(loc))
    return [tag for member in _members(tp) for tag in _tags(member)[1]]


# --- locations and messages -----------------------------------------------------------------


def _data_path(data: Any, loc: tuple[str | int, ...], kind: str) -> KeyPath:
    path: list[str | int] = []
    node = data
    for index, elem in enumerate(loc):
        last = index == len(loc) - 1
        if isinstance(node, dict):
            if elem in node:
                path.append(elem)
                node = node[elem]
            elif last and kind == "missing":
                path.append(elem)
            elif elem == "[key]":
                break
            continue  # a tag
        if isinstance(node, list | tuple) and isinstance(elem, int) and 0 <= elem < len(node):
            path.append(elem)
            node = node[elem]
    return tuple(path)


def _choices(expected: str) -> str:
    items = _QUOTED.findall(expected)
    return ", ".join(items) if items else expected


def _message(error: ErrorDetails) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "missing":
        return "field required"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind in _MAPPING_TYPES:
        return "must be a mapping"
    if kind == "list_type":
        return "must be a list"
    if kind in _CHOICE_TYPES and "expected" in ctx:
        return f"must be one of {_choices(str(ctx['expected']))}"
    message = error["msg"]
    for prefix in _PREFIXES:
        message = message.removeprefix(prefix)
    if error["loc"] and error["loc"][-1] == "[key]":
        message = f"invalid key: {message[:1].lower()}{message[1:]}"
    return message[:1].lower() + message[1:]


def _suggest(key: object, loc: tuple[str | int, ...]) -> str:
    model = model_at(loc[:-1])
    if model is None or not isinstance(key, str):
        return ""
    close = difflib.get_close_matches(key, list(model.model_fields), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _holds_secret(tp: Any) -> bool:
    tp, _meta = _strip(tp)
    return tp is SecretStr or any(_holds_secret(arg) for arg in get_args(tp))


def _hidden(key: object, loc: tuple[str | int, ...]) -> bool:
    """An unknown key, in a block with secret fields, that is no near miss of a field name:
    maybe a secret standing alone (``{type: token, deadbeef01}``), which can look like any
    word, so only a likely typo of a real field is shown."""
    if not isinstance(key, str) or _suggest(key, loc):
        return False
    model = model_at(loc[:-1])
    return model is not None and any(
        _holds_secret(f.annotation) for f in model.model_fields.values()
    )


def _unknown_key_hint(key: object, loc: tuple[str | int, ...]) -> str:
    if isinstance(key, str) and ":" in key:
        return " (is a space missing after ':'?)"
    return " (not shown: it may be a secret)" if _hidden(key, loc) else ""


def _shown(path: KeyPath, loc: tuple[str | int, ...], kind: str) -> KeyPath:
    """``path`` as printed: what follows a ':' inside a key is masked (``sk:abc`` is
    ``sk: abc`` without its space), and so is an unknown key that may be a secret."""
    shown = [
        f"{part.partition(':')[0]}:{_MASK}"
        if isinstance(part, str) and part.partition(":")[2].strip()
        else part
        for part in path
    ]
    key = path[-1] if path else None
    if kind == "extra_forbidden" and loc and ":" not in str(key) and _hidden(key, loc):
        shown[-1] = _MASK
    return tuple(shown)


def _combine(messages: list[str]) -> str:
    """One message for the branches of a plain union (``Outcome | Literal['running']``)."""
    prefix = "must be one of "
    if all(m.startswith(prefix) for m in messages):
        return prefix + ", ".join(m[len(prefix) :] for m in messages)
    return " or ".join(dict.fromkeys(messages))


def secret_strings(data: Any, inherited: bool = False) -> set[str]:
    """String values under secret-looking keys, to scrub from messages (defence in depth)."""
    found: set[str] = set()
    if isinstance(data, dict):
        for key, value in data.items():
            hidden = inherited or is_secret_key(key) or key == "headers"
            found |= secret_strings(value, hidden)
    elif isinstance(data, list | tuple):
        for value in data:
            found |= secret_strings(value, inherited)
    elif inherited and isinstance(data, str) and len(data) >= _MIN_SCRUB:
        found.add(data)
    return found


def issues_from_validation(
    exc: ValidationError,
    data: Any,
    positions: Positions | None = None,
    filename: str | None = None,
) -> list[ConfigIssue]:
    """Every error in ``exc`` as an issue; union branches failing at one key become one."""
    # path -> (raw locations seen, messages, line), in the order pydantic reported them
    grouped: dict[KeyPath, tuple[set[tuple[str | int, ...]], list[str], int | None]] = {}
    shown: dict[KeyPath, KeyPath] = {}  # each path as printed
    for error in exc.errors(include_input=False, include_url=False):
        loc, kind = tuple(error["loc"]), error["type"]
        path = _data_path(data, loc, kind)
        message = _message(error)
        if kind == "extra_forbidden" and loc:
            message += _suggest(loc[-1], loc) or _unknown_key_hint(loc[-1], loc)
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            ctx = error.get("ctx") or {}
            choices = ", ".join(map(repr, union_tags(loc))) or str(ctx.get("expected_tags"))
            path = (*path, "type")
            if kind == "union_tag_not_found":
                kind, message = "missing", f"field required (one of {choices})"
            else:
                message = f"must be one of {choices}"
        line = None
        if positions is not None:
            line = positions.line(path[:-1] if kind == "missing" else path)
        shown.setdefault(path, _shown(path, loc, kind))
        locs, messages, _ = grouped.setdefault(path, (set(), [], line))
        if loc in locs or not locs:
            messages.append(message)
        elif message not in messages:  # another branch of the same union
            messages[-1] = _combine([messages[-1], message])
        locs.add(loc)
    secrets = sorted(secret_strings(data), key=len, reverse=True)
    return [
        ConfigIssue(format_path(shown[path]), _scrub(message, secrets), filename, line)
        for path, (_, messages, line) in grouped.items()
        for message in dict.fromkeys(messages)
    ]


def _scrub(message: str, secrets: list[str]) -> str:
    for secret in secrets:
        message = message.replace(secret, "**********")
    return message
