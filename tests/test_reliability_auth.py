"""Issue 7, item 6: a skewed gateway clock and a revoked token pause the source, loudly, once.

The real engine (MetaStudioSource over loopback HTTP, scheduler, limiter, backoff) and the
simulator share one ``FakeClock`` in autojump mode, so an hour of refused credentials passes
in milliseconds. The promises: one error log record that names the cause and holds no
secret; a paused source, not a retry storm (probes after 1, 5 and 21 minutes, then none until
the source is resumed: at most 4 refusals in a row, so the gateway's rule, which locks an AK
after more than 5 in a row, can never fire); no task ends because of it; and once the
credentials work again a resumed source (SIGHUP in the daemon) carries on.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import pytest
import structlog

from watcher._clock import FakeClock
from watcher._models import Outcome, ResultEvent
from watcher._watcher import Watcher
from watcher.config import Config, MetaStudioSourceConfig
from watcher.simulator import FaultConfig, Simulator, SimulatorConfig
from watcher.sources import MetaStudioSource

pytestmark = pytest.mark.anyio

AK, SK = "AKRELIABILITYAUTH001", "reliability-auth-secret-key"
HOUR = 3600.0
SKEW = 16 * 60.0  # the gateway's clock is 16 minutes ahead: past its 15-minute window

EXPECTED = {
    "succeeded": Outcome.SUCCEEDED,
    "partial": Outcome.PARTIAL,
    "failed": Outcome.FAILED,
    "cancelled": Outcome.CANCELLED,
}


@contextmanager
def captured_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every watcher log record at every level, whatever setup an earlier test left."""
    wrapper = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(wrapper_class=wrapper)


def levels(logs: list[MutableMapping[str, Any]], level: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["log_level"] == level]


def source_config(url: str, auth: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "metastudio",
        "endpoint": url,
        "project_id": "sim-project",
        "auth": auth,
        "rate_limit": 20,
        "status_map": {"2": "cancelled"},
    }


def metastudio(config: Config, name: str) -> MetaStudioSourceConfig:
    source = config.sources[name]
    assert isinstance(source, MetaStudioSourceConfig)
    return source


def sim_config(clock: FakeClock, **extra: Any) -> SimulatorConfig:
    values: dict[str, Any] = {
        "seed": 21,
        "auth": "any",
        "credentials": {AK: SK},
        "clock": clock.now,
        "monotonic": clock.now,
        "duration_median": 120.0,
        "duration_sigma": 0.5,
        **extra,
    }
    return SimulatorConfig(**values)


def assert_true(sim: Simulator, events: list[ResultEvent], ids: list[str]) -> None:
    """One event per id, each with the outcome and final body the simulator holds."""
    assert Counter(e.task_id for e in events) == Counter(ids)
    for event in events:
        truth = sim.task_state(event.task_id)
        assert truth.finished
        assert event.outcome is EXPECTED[truth.outcome]
        assert event.snapshot is not None and dict(event.snapshot.raw) == truth.body


@pytest.mark.parametrize("onset", ["at-start", "mid-run"])
async def test_clock_skew_pauses_with_one_clear_error_and_resumes(onset: str) -> None:
    """Gateway clock 16 min off: one clear error, a paused source, <= 4 refusals in an hour.

    At start, with ten ids (fewer than the burst, so all are due at once), the credentials are
    tried with one request, not ten. Mid-run, the skew begins while polls flow. Either way,
    after 21 minutes the source stops probing and an hour later the AK has been refused at
    most four times; once the clock is right again and the source is resumed, its one probe
    is accepted and every task ends with its true outcome.
    """
    clock = FakeClock(float(int(time.time())))
    skewed = FaultConfig(clock_skew=SKEW)
    at_start = onset == "at-start"
    ids = [f"skew-{onset}-{i:02d}" for i in range(10 if at_start else 60)]
    with captured_logs() as logs:
        async with (
            clock.autojump(),
            Simulator(sim_config(clock, faults=skewed if at_start else FaultConfig())) as sim,
        ):
            config = Config.model_validate(
                {"sources": {"ms": source_config(sim.url, {"type": "aksk", "ak": AK, "sk": SK})}}
            )
            source = MetaStudioSource("ms", metastudio(config, "ms"), clock=clock.now)
            async with Watcher(config, sources={"ms": source}, sinks=[], clock=clock) as w:
                await w.add(ids)
                if not at_start:
                    await clock.sleep_until(clock.now() + 90)
                    assert w.finished_events()  # polls were being answered
                    sim.set_faults(skewed)
                onset_at = clock.now()
                ended_before = len(w.finished_events())
                await clock.sleep_until(onset_at + 30)
                refused_at_once = sim.stats().auth_failures
                await clock.sleep_until(onset_at + HOUR)
                hour = sim.stats()
                limiter = w.scheduler("ms").limiter
                paused, reason = limiter.paused, limiter.paused_reason
                halted = w.scheduler("ms").auth_halted
                assert len(w.finished_events()) == ended_before  # refusals end no task
                assert w.pending == len(ids) - ended_before
                sim.set_faults(FaultConfig())
                await clock.sleep_until(clock.now() + HOUR)  # halted: no probe by itself
                assert sim.stats().auth_failures == hour.auth_failures
                assert sim.stats().requests == hour.requests
                assert w.resume_sources() == ["ms"]
                assert w.resume_sources() == []  # once
                events = [e async for e in w.results()]
            final = sim.stats()
        assert_true(sim, events, ids)
    # One request learnt it (plus at most one already in flight), not a burst of them.
    assert 1 <= refused_at_once <= 2
    assert paused and reason == "auth: APIGW.0305" and halted
    # A handful, then no more, so the lockout (more than 5 in a row) cannot have fired; and
    # a locked AK would have refused the first correctly dated probe too: none was refused.
    assert 3 <= hour.auth_failures <= 4 < sim.config.lockout_failures
    assert final.auth_failures == hour.auth_failures
    errors = levels(logs, "error")
    assert len(errors) == 1
    error = errors[0]
    assert error["event"] == "credentials refused; pausing the source"
    assert (error["source"], error["status"], error["error_code"]) == ("ms", 401, "APIGW.0305")
    assert "signature expired" in error["error_msg"]
    assert "15 minutes from server time" in error["error_msg"]
    assert error["request_id"]
    # Failed probes are quieter: a warning each, with the longer pause that follows.
    probes = [e for e in levels(logs, "warning") if e["event"].startswith("credentials still")]
    assert len(probes) == hour.auth_failures - refused_at_once
    assert [p["pause_seconds"] for p in probes] == sorted(p["pause_seconds"] for p in probes)
    stopped = [e for e in logs if e["event"].startswith("credentials refused too many times")]
    assert len(stopped) == 1 and stopped[0]["log_level"] == "warning"
    assert "SIGHUP" in stopped[0]["event"]
    resumed = [e for e in logs if e["event"] == "credentials accepted again; source resumed"]
    assert len(resumed) == 1
    assert SK not in repr(logs)


async def test_revoked_token_pauses_its_source_and_spares_the_other() -> None:
    """A token revoked mid-run: one error, that source paused; the AK/SK source finishes."""
    clock = FakeClock(float(int(time.time())))
    tok_ids = [f"tok-{i:02d}" for i in range(40)]
    ak_ids = [f"ak-{i:02d}" for i in range(40)]
    with captured_logs() as logs:
        async with clock.autojump(), Simulator(sim_config(clock)) as sim:
            token = sim.issue_token()
            config = Config.model_validate(
                {
                    "sources": {
                        "tok": source_config(sim.url, {"type": "token", "token": token}),
                        "ak": source_config(sim.url, {"type": "aksk", "ak": AK, "sk": SK}),
                    }
                }
            )
            sources = {
                name: MetaStudioSource(name, metastudio(config, name), clock=clock.now)
                for name in ("tok", "ak")
            }
            async with Watcher(config, sources=dict(sources), sinks=[], clock=clock) as w:
                await w.add(tok_ids, source="tok")
                await w.add(ak_ids, source="ak")
                await clock.sleep_until(clock.now() + 60)
                tok_before = {e.task_id for e in w.finished_events() if e.source == "tok"}
                assert len(tok_before) < len(tok_ids)
                sim.revoke_token(token)
                await clock.sleep_until(clock.now() + HOUR)
                stats = sim.stats()
                events = w.finished_events()
                tok = w.scheduler("tok")
                ak = w.scheduler("ak")
                paused, reason = tok.limiter.paused, tok.limiter.paused_reason
                ak_paused = ak.limiter.paused
                tok_pending = sum(w.is_pending(i, source="tok") for i in tok_ids)
        assert_true(sim, [e for e in events if e.source == "ak"], ak_ids)
    # The token's source: paused, nothing ended after the revocation, a handful of refusals.
    assert {e.task_id for e in events if e.source == "tok"} == tok_before
    assert tok_pending == len(tok_ids) - len(tok_before)
    assert paused and reason == "auth: APIGW.0307" and tok.auth_halted
    assert 2 <= stats.auth_failures <= 4
    assert tok.stats.errors_by_kind == {"auth": stats.auth_failures}
    # The other source never saw a refusal and was never paused.
    assert "auth" not in ak.stats.errors_by_kind and not ak_paused
    errors = levels(logs, "error")
    assert len(errors) == 1
    assert (errors[0]["source"], errors[0]["error_code"]) == ("tok", "APIGW.0307")
    assert "revoked" in errors[0]["error_msg"]
    assert token not in repr(logs)


async def test_probes_that_get_no_answer_do_not_reopen_the_source() -> None:
    """Wrong credentials while half the connections drop: a dropped probe says nothing about
    the credentials, so the source stays paused (it is probed again, alone) instead of
    resuming at full rate, and refusals in a row stay at four, short of the lock."""
    clock = FakeClock(float(int(time.time())))
    faults = FaultConfig(drop_rate=0.5, before_auth=True, seed=9)
    async with clock.autojump(), Simulator(sim_config(clock, faults=faults)) as sim:
        config = Config.model_validate(
            {"sources": {"ms": source_config(sim.url, {"type": "aksk", "ak": AK, "sk": "wrong"})}}
        )
        source = MetaStudioSource("ms", metastudio(config, "ms"), clock=clock.now)
        async with Watcher(config, sources={"ms": source}, sinks=[], clock=clock) as w:
            await w.add([f"drop-{i:02d}" for i in range(30)])
            await clock.sleep_until(clock.now() + 2 * HOUR)
            stats = sim.stats()
            halted = w.scheduler("ms").auth_halted
            kinds = dict(w.scheduler("ms").stats.errors_by_kind)
    assert halted
    assert stats.dropped > 0 and kinds.get("connect", 0) == stats.dropped
    assert stats.auth_failures == 4 < sim.config.lockout_failures
    # Every request was a lone probe: no burst at full rate after a dropped one.
    assert stats.requests == stats.auth_failures + stats.dropped
