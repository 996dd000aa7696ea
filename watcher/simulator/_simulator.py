"""``Simulator``: the fake MetaStudio (plus its IAM endpoint) on a loopback port."""

from __future__ import annotations

import enum
import ssl
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from aiohttp import web

from .._exceptions import ClosedError
from ._app import SimulatorApp
from ._auth import Authenticator
from ._config import FaultConfig, SimulatorConfig
from ._faults import FaultInjector
from ._limits import SimulatorStats, StatsRecorder
from ._tasks import SimTask, TaskBook, TaskState, derive_task

__all__ = ["Simulator"]


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


class Simulator:
    """MetaStudio's task API, IAM token endpoint and API gateway, simulated faithfully.

    >>> async def demo() -> None:  # doctest: +SKIP
    ...     async with Simulator(SimulatorConfig(seed=1)) as sim:
    ...         url = f"{sim.url}/v2/sim-project/ies/task/abc"  # GET it until it finishes
    ...         sim.set_faults(FaultConfig(error_rate=0.3))

    Control plane (no auth, not in stats): ``GET /_sim/stats``; ``POST /_sim/reset``
    (``?tasks=1`` also forgets every task, ``?limits=1`` empties rate windows and lockouts);
    ``GET|POST /_sim/faults`` (POST replaces the whole ``FaultConfig``; omitted fields take
    their defaults); ``GET /_sim/tasks/{id}``; ``POST /_sim/tokens`` (a token without IAM).
    """

    def __init__(
        self, config: SimulatorConfig | None = None, *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.config = config = config or SimulatorConfig()
        # Serve HTTPS with this context (tests of certificate checks); plain HTTP without.
        self._ssl = ssl_context
        self.recorder = StatsRecorder(config.paths_limit)
        self.book = TaskBook(config)
        self.authenticator = Authenticator(config)
        self.injector = FaultInjector(config.faults, config.seed)
        self.body_overrides: dict[str, bytes | Mapping[str, Any]] = {}
        self._app = SimulatorApp(self)
        self._state = _State.NEW
        self._runner: web.ServerRunner | None = None
        self._port: int | None = None
        if config.task_ids:
            now = config.clock()
            for task_id in config.task_ids:
                self.create_task(task_id, created=now)

    def __repr__(self) -> str:
        return f"<Simulator {self._state.value} url={self.url if self._port else None}>"

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and serve; a simulator starts once."""
        if self._state is not _State.NEW:
            raise ClosedError(f"simulator is {self._state.value}; it can only be started once")
        # access_log=None: no per-request logging on the hot path.
        server = web.Server(self._app.handle, access_log=None)
        runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.host, self.config.port, ssl_context=self._ssl)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        self._state = _State.RUNNING

    async def aclose(self) -> None:
        """Stop serving; idempotent."""
        self._state = _State.CLOSED
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def port(self) -> int:
        if self._port is None:
            raise ClosedError("simulator has not been started")
        return self._port

    @property
    def url(self) -> str:
        """``http(s)://host:port``: the endpoint for sources and the IAM endpoint alike."""
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if self._ssl is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    # -- stats and faults -------------------------------------------------------------------

    def stats(self) -> SimulatorStats:
        return self.recorder.snapshot(len(self.book))

    def reset_stats(self) -> None:
        """Zero every counter and window; tasks, tokens, limits and lockouts are kept."""
        self.recorder.reset()

    def reset_tasks(self) -> None:
        """Forget every task (and deletion); the configured ``task_ids`` are created anew."""
        self.book.clear()
        if self.config.task_ids:
            now = self.config.clock()
            for task_id in self.config.task_ids:
                self.create_task(task_id, created=now)

    def reset_limits(self) -> None:
        """Empty the rate-limit windows and clear AK lockouts."""
        self._app.clear_limits()
        self.authenticator.clear_lockouts()

    @property
    def faults(self) -> FaultConfig:
        return self.injector.config

    def set_faults(self, faults: FaultConfig) -> None:
        """Replace the faults (and re-seed their RNG); applies from the next request."""
        self.injector.set(faults)

    def override_body(self, task_id: str, body: bytes | Mapping[str, Any] | None) -> None:
        """Answer ``task_id``'s successful GETs with a hostile body; None: the truth again.

        ``bytes`` are sent as they are (say, JSON nested 100,000 deep); a mapping replaces
        (or adds) fields of the true body at every poll, so the rest still progresses. Each
        such answer counts in ``faults_injected``; auth, rate limits and faults come first.
        """
        if body is None:
            self.body_overrides.pop(task_id, None)
        else:
            self.body_overrides[task_id] = body if isinstance(body, bytes) else dict(body)

    # -- tokens -----------------------------------------------------------------------------

    def issue_token(self, ttl: float | None = None) -> str:
        """A token the gateway accepts, as if issued by IAM (counted in ``tokens_issued``)."""
        self.recorder.tokens_issued += 1
        return self.authenticator.issue_token(ttl).token

    def revoke_token(self, token: str) -> None:
        """From now on ``token`` answers 401 ``APIGW.0307``."""
        self.authenticator.revoke_token(token)

    # -- tasks ------------------------------------------------------------------------------

    def create_task(self, task_id: str, *, created: float | None = None) -> SimTask:
        """Create ``task_id`` as auto-creation would (at ``created``, default now)."""
        when = self.config.clock() if created is None else created
        return self.book.add(derive_task(self.config, task_id, when))

    def add_task(
        self,
        task_id: str,
        *,
        life: float | None = None,
        total: int | None = None,
        outcome: str | None = None,
        resource: str | None = None,
        created: float | None = None,
    ) -> TaskState:
        """Create (or replace) a task, pinning whatever a test needs; the rest is seeded.

        ``life`` is in task-time seconds (divided by ``time_scale`` on the wall clock).
        """
        when = self.config.clock() if created is None else created
        task = derive_task(
            self.config, task_id, when, life=life, total=total, outcome=outcome, resource=resource
        )
        self.book.add(task)
        return task.state(self.config.clock(), self.config)

    def delete_task(self, task_id: str) -> bool:
        """Delete as ``DELETE`` does: the id answers 404 afterwards. True if it existed."""
        return self.book.delete(task_id)

    def task_state(self, task_id: str) -> TaskState:
        """The current truth about a task; ``KeyError`` when it does not exist (yet)."""
        task = self.book.get(task_id)
        if task is None:
            raise KeyError(task_id)
        return task.state(self.config.clock(), self.config)

    def task_ids(self) -> tuple[str, ...]:
        """Ids of every task that exists now, in creation order."""
        return tuple(task.task_id for task in self.book)
