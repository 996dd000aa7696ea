"""Safe YAML to plain Python data, remembering the line of every key so errors can name it.

PyYAML composes the node graph (``yaml.compose`` with the safe resolver); the data is built
here rather than by PyYAML's constructor, which would lose the marks, silently keep the last
of two duplicate keys, and expand aliases without bound.

``${...}`` references are shielded before parsing: in a flow mapping such as
``auth: {type: aksk, sk: ${HW_SK}}`` (the form DESIGN.md shows) YAML would read their braces
as syntax. Each reference becomes a placeholder without special characters and is put back,
unexpanded, into the string it ends up in; expansion happens later, on the parsed data.
So a reference is one unit whatever surrounds it (``${X:-a, b}`` in a flow list is one value),
and its text is taken literally: YAML quoting escapes do not apply inside ``${...}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .._exceptions import ConfigError, ConfigIssue

__all__ = ["MAX_DEPTH", "MAX_NODES", "KeyPath", "Positions", "format_path", "parse_yaml"]

KeyPath = tuple[str | int, ...]

# Config files are small; these bounds stop a hostile or broken file ("billion laughs" aliases,
# thousands of nested brackets) from eating memory or the stack.
MAX_NODES = 100_000
MAX_DEPTH = 64

_STD = "tag:yaml.org,2002:"
_MAP, _SEQ, _MERGE = _STD + "map", _STD + "seq", _STD + "merge"
_STR, _NULL, _BOOL, _INT, _FLOAT = (_STD + t for t in ("str", "null", "bool", "int", "float"))
_TIMESTAMP = _STD + "timestamp"
_KEY_TAGS = frozenset({_STR, _NULL, _BOOL, _INT, _FLOAT, _TIMESTAMP})
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
_REFERENCE = re.compile(r"\$?\$\{[^}\n]*\}|\$\$\{")
# Private-use characters: printable to YAML, allowed in plain scalars, absent from real configs.
_OPEN, _CLOSE = "\ue000", "\ue001"
_PLACEHOLDER = re.compile(f"{_OPEN}(\\d+){_CLOSE}")


def _shield(text: str) -> tuple[str, list[str]]:
    if _OPEN in text or _CLOSE in text or "${" not in text:
        return text, []
    references: list[str] = []

    def placeholder(match: re.Match[str]) -> str:
        references.append(match.group(0))
        return f"{_OPEN}{len(references) - 1}{_CLOSE}"

    return _REFERENCE.sub(placeholder, text), references


@dataclass(slots=True)
class Positions:
    """1-based lines: ``keys`` of each mapping key / sequence item, ``values`` of its value."""

    keys: dict[KeyPath, int] = field(default_factory=dict)
    values: dict[KeyPath, int] = field(default_factory=dict)
    root: int | None = None  # where the top-level mapping starts

    def line(self, path: KeyPath) -> int | None:
        """The line of ``path``'s key, or of its nearest ancestor that has one."""
        for end in range(len(path), 0, -1):
            found = self.keys.get(path[:end])
            if found is not None:
                return found
        return self.root


def format_path(path: KeyPath) -> str:
    """``sources.main.auth.sk``, ``sinks[1].url``; odd keys quoted: ``sources["a.b"]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            # Escape control characters: paths are printed to terminals.
            out += f"[{json.dumps(part, ensure_ascii=not part.isprintable())}]"
    return out


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_STD) :] if tag.startswith(_STD) else tag


class _TooLarge(Exception):
    pass


class _Builder:
    def __init__(self, filename: str | None, references: list[str]) -> None:
        self.filename = filename
        self._references = references
        self.positions = Positions()
        self.issues: list[ConfigIssue] = []
        self._nodes = 0
        self._active: set[int] = set()  # collections being built: an alias to one is a cycle
        self._constructor = SafeConstructor()

    def issue(self, path: KeyPath, message: str, node: Node | None) -> None:
        line = node.start_mark.line + 1 if node is not None else None
        self.issues.append(ConfigIssue(format_path(path), message, self.filename, line))

    def build(self, node: Node, path: KeyPath, depth: int) -> Any:
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _TooLarge
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if depth >= MAX_DEPTH:
            self.issue(path, f"nested more than {MAX_DEPTH} levels deep", node)
            return None
        if id(node) in self._active:
            self.issue(path, "an alias refers to the mapping or list that contains it", node)
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, SequenceNode) and node.tag == _SEQ:
                return self._sequence(node, path, depth)
            if isinstance(node, MappingNode) and node.tag == _MAP:
                return {
                    key: self._child(key_node, value_node, (*path, key), depth)
                    for key, key_node, value_node in self._entries(node, path, report=True)
                }
        finally:
            self._active.discard(id(node))
        self.issue(path, f"unsupported tag {_short_tag(node.tag)}", node)
        return None

    def _child(self, key_node: Node, value_node: Node, path: KeyPath, depth: int) -> Any:
        self.positions.keys[path] = key_node.start_mark.line + 1
        self.positions.values[path] = value_node.start_mark.line + 1
        return self.build(value_node, path, depth + 1)

    def _sequence(self, node: SequenceNode, path: KeyPath, depth: int) -> list[Any]:
        return [self._child(item, item, (*path, i), depth) for i, item in enumerate(node.value)]

    def _entries(
        self, node: MappingNode, path: KeyPath, *, report: bool
    ) -> list[tuple[str, Node, Node]]:
        """Key/value pairs in order; ``<<`` merges add keys the mapping does not set itself."""
        first_line: dict[str, int] = {}
        parts: list[tuple[str, Node, Node] | list[tuple[str, Node, Node]]] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                parts.append(self._merged(value_node, path))
                continue
            key = self._key(key_node, path, report=report)
            if key is None:
                continue
            line = key_node.start_mark.line + 1
            if key in first_line:
                if report:
                    self.issue(
                        (*path, key),
                        f"duplicate key {key!r} (first defined on line {first_line[key]})",
                        key_node,
                    )
                continue
            first_line[key] = line
            parts.append((key, key_node, value_node))
        seen = set(first_line)
        entries: list[tuple[str, Node, Node]] = []
        for part in parts:
            if isinstance(part, tuple):
                entries.append(part)
                continue
            for entry in part:  # an earlier merge source wins over a later one
                if entry[0] not in seen:
                    seen.add(entry[0])
                    entries.append(entry)
        return entries

    def _merged(self, value: Node, path: KeyPath) -> list[tuple[str, Node, Node]]:
        sources = value.value if isinstance(value, SequenceNode) else [value]
        entries: list[tuple[str, Node, Node]] = []
        for source in sources:
            if not isinstance(source, MappingNode) or source.tag != _MAP:
                self.issue(path, "'<<' (merge) needs a mapping or a list of mappings", value)
            elif id(source) in self._active:
                self.issue(path, "'<<' merges a mapping into itself", value)
            else:
                self._active.add(id(source))
                try:
                    entries.extend(self._entries(source, path, report=False))
                finally:
                    self._active.discard(id(source))
        return entries

    def _key(self, node: Node, path: KeyPath, *, report: bool) -> str | None:
        # Keys are kept as written: `0:` and `on:` in a status map mean the API's "0" and "on",
        # not YAML's integer and boolean.
        if isinstance(node, ScalarNode) and node.tag in _KEY_TAGS:
            return self._unshield(str(node.value))
        if report:
            what = "a mapping or list" if not isinstance(node, ScalarNode) else "a tagged value"
            self.issue(path, f"a key must be a plain value, not {what}", node)
        return None

    def _unshield(self, value: str) -> str:
        if not self._references or _OPEN not in value:
            return value
        return _PLACEHOLDER.sub(lambda m: self._references[int(m.group(1))], value)

    def _scalar(self, node: ScalarNode, path: KeyPath) -> Any:
        tag = node.tag
        if tag in (_STR, _TIMESTAMP):  # dates stay text: no config field is a date
            return self._unshield(node.value)
        if tag == _NULL:
            return None
        kinds = {
            _BOOL: ("boolean", self._constructor.construct_yaml_bool),
            _INT: ("integer", self._constructor.construct_yaml_int),
            _FLOAT: ("number", self._constructor.construct_yaml_float),
        }
        if tag not in kinds:
            self.issue(path, f"unsupported tag {_short_tag(tag)} (only plain YAML values)", node)
            return None
        what, construct = kinds[tag]
        try:
            return construct(node)
        except (ValueError, KeyError, IndexError, OverflowError):  # `!!int abc`, `!!int` alone
            self.issue(path, f"not a valid {what}", node)
            return None


def _yaml_issue(exc: yaml.YAMLError, text: str, filename: str | None) -> ConfigIssue:
    # Never str(exc): PyYAML quotes the offending source line, which may hold a secret.
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, max(exc.position, 0)) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character[:1] or " ")
        return ConfigIssue("", f"invalid YAML: unacceptable character #x{code:04x}", filename, line)
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or exc.context or "syntax error"
        if exc.context and exc.problem:
            # PyYAML splits one sentence: "while parsing a flow mapping" / "expected ','".
            context = exc.context
            before = exc.context_mark
            if before is not None and mark is not None and before.line != mark.line:
                context += f" (line {before.line + 1})"
            sep = ", " if exc.problem.startswith("but ") else ": "
            message = f"{context}{sep}{exc.problem}"
        return ConfigIssue(
            "", f"invalid YAML: {message}", filename, mark.line + 1 if mark else None
        )
    return ConfigIssue("", "invalid YAML", filename)


def parse_yaml(text: str, filename: str | None = None) -> tuple[dict[str, Any], Positions]:
    """Parse one YAML document whose top level is a mapping; raise ``ConfigError`` if not."""
    shielded, references = _shield(text)
    try:
        root = yaml.compose(shielded, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_issue(exc, text, filename)]) from None
    except RecursionError:
        raise ConfigError([ConfigIssue("", "invalid YAML: nested too deeply", filename)]) from None
    if root is None:
        raise ConfigError([ConfigIssue("", "the config file is empty", filename)])
    if not isinstance(root, MappingNode) or root.tag != _MAP:
        raise ConfigError(
            [
                ConfigIssue(
                    "",
                    "the top level must be a mapping of sections (sources:, polling:, ...)",
                    filename,
                    root.start_mark.line + 1,
                )
            ]
        )
    builder = _Builder(filename, references)
    builder.positions.root = root.start_mark.line + 1
    try:
        data = builder.build(root, (), 0)
    except _TooLarge:
        message = f"too many values (over {MAX_NODES}, counting alias expansions)"
        raise ConfigError([*builder.issues, ConfigIssue("", message, filename)]) from None
    if builder.issues:
        raise ConfigError(sorted(builder.issues, key=lambda i: i.line or 0))
    assert isinstance(data, dict)
    return data, builder.positions
