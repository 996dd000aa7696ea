"""Spool-directory intake: files of task ids dropped into a folder are watched, once.

Only complete files count, so producers write elsewhere (or as a dotfile, ``*.tmp``,
``*.part``) and rename the file into the folder. Each file is ingested, then moved to
``done/`` (or ``failed/`` with ``<name>.reason``). Ingest-then-move makes a crash between the
two harmless: the file is read again at the next scan, and ``Watcher.add`` reports its ids as
duplicates, so nothing is watched twice and nothing is lost.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from pydantic import ValidationError

from .._exceptions import ConfigError, ConfigIssue, WatcherError
from .._log import get_logger
from .._watcher import AddResult, Watcher
from ..config._schema import SpoolConfig
from ._requests import WatchRequest, describe_validation

__all__ = ["SpoolIntake", "SpoolResult"]

_log = get_logger("watcher.spool")

MAX_FILE_BYTES = 64 * 1024 * 1024
_CHUNK = 10_000  # ids per Watcher.add call: bounds one store transaction
_SKIP_SUFFIXES = (".tmp", ".part", ".reason")


@dataclass(slots=True)
class SpoolResult:
    """What happened to one file."""

    name: str
    moved_to: Path
    accepted: int = 0
    duplicates: int = 0
    invalid: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None


class _Refused(Exception):
    """The file cannot be used; the message is the reason written next to it."""


class SpoolIntake:
    """Scan ``config.dir`` every ``poll_interval`` and ingest what was renamed into it."""

    def __init__(self, config: SpoolConfig, watcher: Watcher) -> None:
        self.config = config
        self.dir = Path(config.dir).absolute()
        self.done = self.dir / "done"
        self.failed = self.dir / "failed"
        self._watcher = watcher
        self.ingested = 0  # files, for status

    def prepare(self) -> None:
        """Check the directory exists (a typo must not create one) and make done/ failed/."""
        if not self.dir.is_dir():
            issue = ConfigIssue("spool.dir", f"{self.dir}: directory does not exist; create it")
            raise ConfigError([issue])
        try:
            self.done.mkdir(exist_ok=True)
            self.failed.mkdir(exist_ok=True)
        except OSError as exc:
            issue = ConfigIssue("spool.dir", f"{self.dir}: {exc.strerror or exc}")
            raise ConfigError([issue]) from exc

    async def run(self) -> None:
        """Scan until cancelled; a failing scan is logged and retried at the next interval."""
        while True:
            try:
                await self.scan()
            except WatcherError as exc:  # the Watcher is closing: the next start resumes
                _log.info("spool scan stopped", reason=str(exc))
                return
            except Exception:
                _log.exception("spool scan failed", dir=str(self.dir))
            await anyio.sleep(self.config.poll_interval)

    async def scan(self) -> list[SpoolResult]:
        """Ingest every complete file there now, oldest first."""
        names = await anyio.to_thread.run_sync(self._candidates)
        return [await self.ingest(name) for name in names]

    def _candidates(self) -> list[str]:
        found: list[tuple[float, str]] = []
        with os.scandir(self.dir) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith(".") or name.endswith(_SKIP_SUFFIXES):
                    continue
                with contextlib.suppress(OSError):  # gone meanwhile, or unreadable: next scan
                    if entry.is_file(follow_symlinks=False):
                        found.append((entry.stat(follow_symlinks=False).st_mtime, name))
        return [name for _, name in sorted(found)]

    async def ingest(self, name: str) -> SpoolResult:
        path = self.dir / name
        try:
            request = await anyio.to_thread.run_sync(self._parse, path)
            result = await self._add(request)
        except _Refused as exc:
            target = await anyio.to_thread.run_sync(self._move, path, self.failed, str(exc))
            _log.warning("spool file refused", file=name, reason=str(exc), moved_to=str(target))
            return SpoolResult(name, target, error=str(exc))
        note = None
        if result.invalid:
            lines = [f"{task_id!r}: {reason}" for task_id, reason in result.invalid]
            note = f"{len(lines)} invalid id(s) not watched:\n" + "\n".join(lines)
        target = await anyio.to_thread.run_sync(self._move, path, self.done, note)
        self.ingested += 1
        _log.info(
            "spool file ingested",
            file=name,
            source=request.source,
            batch=request.batch,
            accepted=len(result.accepted),
            duplicates=len(result.duplicates),
            invalid=len(result.invalid),
        )
        return SpoolResult(
            name, target, len(result.accepted), len(result.duplicates), list(result.invalid)
        )

    def _parse(self, path: Path) -> WatchRequest:
        """The file as a ``WatchRequest`` (in a worker thread: it reads the file)."""
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise _Refused(f"cannot read: {exc.strerror or exc}") from exc
        if len(data) > MAX_FILE_BYTES:
            raise _Refused(f"larger than {MAX_FILE_BYTES} bytes")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise _Refused(f"not UTF-8 text (byte {exc.start})") from exc
        stem = path.name.rsplit(".", 1)[0] if "." in path.name[1:] else path.name
        values: dict[str, Any]
        if path.suffix.lower() == ".json":
            try:
                parsed = json.loads(text)
            except (ValueError, RecursionError) as exc:  # nested thousands deep: recursion
                raise _Refused(f"malformed JSON: {exc}") from exc
            if not isinstance(parsed, dict):
                raise _Refused('a .json file must hold an object: {"task_ids": [...]}')
            values = dict(parsed)
        else:
            ids = [line.strip() for line in text.splitlines()]
            values = {"task_ids": [i for i in ids if i and not i.startswith("#")]}
        if values.get("task_ids", []) == []:
            raise _Refused("no task ids in the file")
        if self.config.batch_from_filename and values.get("batch") is None:
            values["batch"] = stem
        if values.get("source") is None:
            values["source"] = self.config.source or self._watcher.sources[0]
        try:
            request = WatchRequest.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(f"{d['loc']}: {d['msg']}" for d in describe_validation(exc))
            raise _Refused(f"invalid: {problems}") from exc
        if request.source not in self._watcher.sources:
            known = ", ".join(self._watcher.sources)
            raise _Refused(f"unknown source {request.source!r}; known: {known}")
        return request

    async def _add(self, request: WatchRequest) -> AddResult:
        total = AddResult()
        ids = request.task_ids
        for start in range(0, len(ids), _CHUNK):
            part = await self._watcher.add(
                ids[start : start + _CHUNK],
                source=request.source,
                batch=request.batch,
                labels=request.labels or None,
                deadline=request.deadline,
            )
            total.accepted.extend(part.accepted)
            total.duplicates.extend(part.duplicates)
            total.invalid.extend(part.invalid)
        if not total.accepted and not total.duplicates:
            reasons = "; ".join(f"{i!r}: {why}" for i, why in total.invalid[:20])
            raise _Refused(f"no valid task ids ({reasons})")
        return total

    @staticmethod
    def _move(path: Path, folder: Path, reason: str | None) -> Path:
        """Move ``path`` into ``folder`` under a name not taken yet; write the reason first,
        so a ``<name>`` there always has its ``<name>.reason`` when it needs one."""
        target = folder / path.name
        number = 1
        while target.exists() or target.with_name(target.name + ".reason").exists():
            target = folder / f"{path.name}.{number}"
            number += 1
        if reason is not None:
            target.with_name(target.name + ".reason").write_text(reason + "\n", encoding="utf-8")
        os.replace(path, target)
        return target
