"""``Daemon``: the engine, the control API and the spool intake as one long-running service.

Lifecycle: open the engine (which resumes pending watches and undelivered events from the
store), bind the API, start the spool scanner, write the ready file, then wait for signals.
SIGHUP reopens file sinks (after logrotate) and lets sources that stopped probing after
repeated credential refusals try again. SIGTERM or SIGINT: the API stops first (no new
watches), then ``Watcher.shutdown(grace)`` stops claiming polls, lets those in flight finish
and drains the sinks; what is left stays in the store. A second SIGTERM/SIGINT exits at once
(130): the store is crash-safe. Only this module (and the CLI) installs signal handlers.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
from aiohttp import web

from .._exceptions import ConfigError, ConfigIssue
from .._log import get_logger
from .._watcher import Watcher
from ..config import Config
from ..config._schema import SqliteStoreConfig
from ._api import AccessLogger, ControlApi
from ._metrics import DaemonMetrics
from ._spool import SpoolIntake

__all__ = [
    "DEFAULT_STORE_PATH",
    "TOKEN_ENV",
    "Daemon",
    "DaemonError",
    "api_token",
    "daemon_config",
]

_log = get_logger("watcher.daemon")

TOKEN_ENV = "WATCHER_API_TOKEN"  # noqa: S105 - a variable name
DEFAULT_STORE_PATH = "watcher.db"
EX_UNAVAILABLE = 69
EX_INTERRUPTED = 130
_MIN_TOKEN = 16
_API_STOP = 2.0  # seconds in-flight API requests get at shutdown (out of the grace)
_READY_TIMEOUT = 2.0


class DaemonError(Exception):
    """The daemon cannot start; ``code`` is the exit status to use."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def daemon_config(config: Config) -> Config:
    """The daemon's view of ``config``: without a ``store`` key at all it uses SQLite
    (``watcher.db`` in the working directory), since a daemon must survive restarts. An
    explicit ``store: {type: memory}`` is respected."""
    if "store" in config.model_fields_set:
        return config
    store = SqliteStoreConfig(type="sqlite", path=DEFAULT_STORE_PATH)
    return config.model_copy(update={"store": store})


def api_token(config: Config, env: dict[str, str] | None = None) -> str:
    """``api.token``, else ``$WATCHER_API_TOKEN``; a ``ConfigError`` when neither is set."""
    token = config.api.token.get_secret_value().strip() if config.api.token else ""
    if not token:
        token = (os.environ if env is None else env).get(TOKEN_ENV, "").strip()
    if not token:
        message = (
            f"the daemon always requires an API token: set api.token or ${TOKEN_ENV} "
            "(clients send it as Authorization: Bearer <token>)"
        )
        raise ConfigError([ConfigIssue("api.token", message)])
    return token


def _split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _url(host: str, port: int) -> str:
    # A wildcard address is reached through loopback from this machine.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Daemon:
    """``watcher run``. ``await Daemon(config).run()`` returns the exit status (0).

    ``ready_file``: once the API listens, ``{"url", "listen", "pid"}`` is written there
    (atomically), so a supervisor or a test can use ``api.listen: 127.0.0.1:0`` and learn
    the port; it is removed at exit.
    """

    def __init__(
        self,
        config: Config,
        *,
        ready_file: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.config = daemon_config(config)
        self.token = api_token(self.config, env)
        self.ready_file = Path(ready_file).absolute() if ready_file is not None else None
        self.grace = self.config.daemon.grace
        self.url: str | None = None
        self._watcher: Watcher | None = None
        self._spool: SpoolIntake | None = None
        self._stopping = False

    async def run(self) -> int:
        signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        # Installed first: a signal during start-up is handled once the daemon is up, instead
        # of killing it half-way.
        with anyio.open_signal_receiver(*signals) as received:
            if len(self.token) < _MIN_TOKEN:
                _log.warning(
                    f"the API token is shorter than {_MIN_TOKEN} characters; use a long random one"
                )
            metrics = DaemonMetrics()
            watcher = Watcher(self.config, instrumentation=metrics)
            self._watcher = watcher
            if self.config.spool is not None:
                self._spool = SpoolIntake(self.config.spool, watcher)
                self._spool.prepare()
            # The listener for a second signal lives outside the Watcher: shutdown() exits the
            # Watcher's task group, which must happen in this task with no scope of ours open.
            async with anyio.create_task_group() as outer:
                async with watcher:
                    runner = await self._start_api(watcher, metrics)
                    try:
                        await self._serve(watcher, received)
                    finally:
                        self._stopping = True
                        with anyio.CancelScope(shield=True):
                            await runner.cleanup()
                    outer.start_soon(self._second_signal, received)
                    clean = await watcher.shutdown(self.grace)
                    self._report_shutdown(watcher, clean)
                outer.cancel_scope.cancel()
        self._remove_ready_file()
        _log.info("daemon stopped")
        return 0

    # --- start ------------------------------------------------------------------------------

    async def _start_api(self, watcher: Watcher, metrics: DaemonMetrics) -> web.AppRunner:
        api = ControlApi(
            watcher,
            token=self.token,
            max_body_bytes=self.config.api.max_body_bytes,
            metrics=metrics,
            readiness=self.problems,
            extra_status=self._extra_status,
        )
        runner = web.AppRunner(
            api.app(),
            access_log_class=AccessLogger,
            access_log=logging.getLogger("watcher.api.access"),
            handle_signals=False,
            shutdown_timeout=min(_API_STOP, self.grace),
        )
        await runner.setup()
        host, port = _split_listen(self.config.api.listen)
        site = web.TCPSite(runner, host or None, port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise DaemonError(
                f"cannot listen on {self.config.api.listen}: {exc.strerror or exc}",
                EX_UNAVAILABLE,
            ) from exc
        bound = runner.addresses[0]
        self.url = _url(host, int(bound[1]))
        if not _is_loopback(host):
            _log.warning(
                "the control API listens beyond this machine: anyone who can reach it and "
                "holds the token controls the watches; put TLS and a firewall in front",
                listen=self.config.api.listen,
            )
        return runner

    async def _serve(self, watcher: Watcher, received: Any) -> None:
        async with anyio.create_task_group() as tg:
            if self._spool is not None:
                tg.start_soon(self._spool.run)
            self._write_ready_file()
            store = self.config.store
            _log.info(
                "daemon ready",
                url=self.url,
                sources=watcher.sources,
                sinks=[r.name for r in watcher.runners],
                store=getattr(store, "type", None),
                store_path=getattr(store, "path", None),
                pending=watcher.pending,
                spool=str(self._spool.dir) if self._spool is not None else None,
            )
            async for signum in received:
                if signum == signal.SIGHUP:
                    watcher.reopen_sinks()
                    resumed = watcher.resume_sources()
                    _log.info(
                        "SIGHUP: file sinks will reopen their files",
                        resumed_sources=resumed or None,
                    )
                    continue
                _log.info(
                    "shutting down",
                    signal=signal.Signals(signum).name,
                    grace_seconds=self.grace,
                    pending=watcher.pending,
                )
                break
            tg.cancel_scope.cancel()

    # --- stop -------------------------------------------------------------------------------

    async def _second_signal(self, received: Any) -> None:
        async for signum in received:
            if signum == signal.SIGHUP:
                continue
            # The store is crash-safe: whatever is not finished resumes at the next start.
            _log.warning("second signal: exiting at once", signal=signal.Signals(signum).name)
            self._remove_ready_file()
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(EX_INTERRUPTED)

    def _report_shutdown(self, watcher: Watcher, clean: bool) -> None:
        if clean:
            _log.info("shutdown complete: polls finished and sinks drained")
            return
        # Not lost: pending watches and queued events resume at the next start.
        _log.warning(
            "grace period over before everything finished; the rest stays in the store",
            grace_seconds=self.grace,
            pending=watcher.pending,
        )

    # --- readiness and status ---------------------------------------------------------------

    async def problems(self) -> list[str]:
        """Why the daemon is not ready (empty when it is): stopping, store, schedulers."""
        watcher = self._watcher
        if watcher is None or self._stopping:
            return ["shutting down" if self._stopping else "starting"]
        found: list[str] = []
        try:
            with anyio.fail_after(_READY_TIMEOUT):
                await watcher.store.counts()
        except TimeoutError:
            found.append(f"store did not answer within {_READY_TIMEOUT:g}s")
        except Exception as exc:
            found.append(f"store unavailable: {type(exc).__name__}")
        for name in watcher.sources:
            if watcher.scheduler(name).stopped.is_set():
                found.append(f"scheduler of source {name!r} is not running")
        return found

    def _extra_status(self) -> dict[str, Any]:
        spool = self._spool
        info = {"dir": str(spool.dir), "files_ingested": spool.ingested} if spool else None
        return {"spool": info, "grace_seconds": self.grace}

    def _write_ready_file(self) -> None:
        if self.ready_file is None:
            return
        data = {"url": self.url, "listen": self.config.api.listen, "pid": os.getpid()}
        tmp = self.ready_file.with_name(f".{self.ready_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
        os.replace(tmp, self.ready_file)

    def _remove_ready_file(self) -> None:
        if self.ready_file is None:
            return
        with contextlib.suppress(OSError, ValueError):
            if json.loads(self.ready_file.read_text(encoding="utf-8")).get("pid") == os.getpid():
                self.ready_file.unlink()
