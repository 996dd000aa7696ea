"""A faithful, deterministic MetaStudio simulator (task API, IAM tokens, API gateway).

Every later feature is tested against it: tasks progress and finish on an injectable clock,
everything about a task derives from ``(seed, task_id)``, and the gateway's rate limit, auth
and a menu of faults behave as API.md describes.

>>> from watcher.simulator import Simulator, SimulatorConfig, FaultConfig
>>> cfg = SimulatorConfig(seed=1, rate_limit=100.0, auth="aksk", credentials={"AK1": "SK1"})
>>> sim = Simulator(cfg)  # then: async with sim: ... sim.url ...
"""

from __future__ import annotations

from ._config import MALFORMED_KINDS, OUTCOMES, FaultConfig, SimulatorConfig
from ._limits import SimulatorStats
from ._simulator import Simulator
from ._tasks import TaskState

__all__ = [
    "MALFORMED_KINDS",
    "OUTCOMES",
    "FaultConfig",
    "Simulator",
    "SimulatorConfig",
    "SimulatorStats",
    "TaskState",
]
