"""``${NAME}`` references to environment variables in config strings.

Forms (as in POSIX shells and Docker Compose):
``${NAME}`` the value, an error if unset; ``${NAME:-default}`` the default if unset or empty;
``${NAME-default}`` the default only if unset; ``${NAME:?hint}`` / ``${NAME?hint}`` an error
carrying the hint if unset (or empty). ``$${`` is a literal ``${``; any other ``$`` is literal,
so a password such as ``pa$$word`` survives. Only string values are expanded, never keys, and
the result is not expanded again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .._exceptions import ConfigIssue
from ._yaml import KeyPath, Positions, format_path

__all__ = ["interpolate"]

_TOKEN = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_BODY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])(.*))?", re.DOTALL)
_SYNTAX = "use ${NAME}, ${NAME:-default}, or $${ for a literal ${"


class _Expander:
    def __init__(self, env: Mapping[str, str], positions: Positions | None, filename: str | None):
        self.env = env
        self.positions = positions
        self.filename = filename
        self.issues: list[ConfigIssue] = []

    def issue(self, path: KeyPath, message: str) -> None:
        line = self.positions.line(path) if self.positions is not None else None
        self.issues.append(ConfigIssue(format_path(path), message, self.filename, line))

    def walk(self, value: Any, path: KeyPath) -> Any:
        if isinstance(value, str):
            return self.expand(value, path) if "${" in value else value
        if isinstance(value, dict):
            return {k: self.walk(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.walk(v, (*path, i)) for i, v in enumerate(value)]
        return value

    def expand(self, text: str, path: KeyPath) -> str:
        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            body = match.group(1)
            if body is None:
                self.issue(path, f"unterminated ${{ ({_SYNTAX})")
                return ""
            return self.resolve(body, path)

        return _TOKEN.sub(replace, text)

    def resolve(self, body: str, path: KeyPath) -> str:
        """The text for ``${body}``; "" after recording an issue."""
        # Messages name variables, never values or defaults: either may be a secret.
        parsed = _BODY.fullmatch(body)
        if parsed is None:
            self.issue(path, f"invalid ${{...}} reference ({_SYNTAX})")
            return ""
        name, op, arg = parsed.group(1), parsed.group(2) or "", parsed.group(3) or ""
        if "${" in arg:
            self.issue(path, f"nested ${{...}} in the default of {name} is not supported")
            return ""
        value = self.env.get(name)
        if value is not None and (value != "" or not op.startswith(":")):
            return value
        if op in (":-", "-"):
            return arg
        state = "is empty" if value == "" else "is not set"
        self.issue(path, f"environment variable {name} {state}" + (f": {arg}" if arg else ""))
        return ""


def interpolate(
    data: Any,
    env: Mapping[str, str],
    positions: Positions | None = None,
    filename: str | None = None,
) -> tuple[Any, list[ConfigIssue]]:
    """``data`` with every ``${...}`` in its string values expanded, and the problems found."""
    expander = _Expander(env, positions, filename)
    return expander.walk(data, ()), expander.issues
