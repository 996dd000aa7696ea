"""Prometheus metrics of the daemon, in a registry of its own (never the global one).

Two kinds of metric: what the engine reports as it happens (polls, their latency, finished
watches, detection latency) comes in through the ``Instrumentation`` hooks; what the engine
already counts (429s, rate-limiter waits, current rates, sink deliveries, queue depths) is read
from its stats when ``/metrics`` is scraped, so nothing is counted twice.

No label ever holds a task id (unbounded cardinality) or anything secret: labels are source
names, sink names, poll results and outcomes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .._version import __version__
from .._watcher import Watcher

__all__ = ["CONTENT_TYPE", "DaemonMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_POLL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# From a task's own end_time to the poll that saw it: seconds to an hour.
_DETECTION_BUCKETS = (
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)


@dataclass(frozen=True, slots=True)
class _SourceSample:
    name: str
    throttled: int
    waited_seconds: float
    rate: float
    current_rate: float
    in_flight: int
    queued: int
    paused: bool


@dataclass(frozen=True, slots=True)
class _SinkSample:
    name: str
    delivered: int
    failed_attempts: int
    dead_lettered: int
    queue_depth: int


@dataclass(frozen=True, slots=True)
class _Sample:
    """Engine state read (asynchronously) just before a scrape is rendered."""

    watches: dict[str, int] = field(default_factory=dict)
    sources: list[_SourceSample] = field(default_factory=list)
    sinks: list[_SinkSample] = field(default_factory=list)
    outbox: int = 0


async def _read(watcher: Watcher) -> _Sample:
    store = watcher.store
    sources = []
    for name in watcher.sources:
        scheduler = watcher.scheduler(name)
        limiter = scheduler.limiter
        sources.append(
            _SourceSample(
                name=name,
                throttled=scheduler.stats.throttled,
                waited_seconds=limiter.stats.waited_seconds,
                rate=limiter.rate,
                current_rate=limiter.current_rate,
                in_flight=scheduler.in_flight,
                queued=scheduler.queued,
                paused=limiter.paused,
            )
        )
    sinks = []
    for runner in watcher.runners:
        stats = runner.stats
        sinks.append(
            _SinkSample(
                name=stats.sink,
                delivered=stats.delivered,
                failed_attempts=stats.failed_attempts,
                dead_lettered=stats.dead_lettered,
                queue_depth=await store.outbox_size(stats.sink),
            )
        )
    counts = dict(await store.counts())
    return _Sample(watches=counts, sources=sources, sinks=sinks, outbox=await store.outbox_size())


class _EngineCollector(Collector):
    """Turns the last ``_Sample`` into metric families at collect time."""

    def __init__(self, started: float) -> None:
        self.sample = _Sample()
        self._started = started

    def collect(self) -> Iterable[Metric]:
        s = self.sample
        info = GaugeMetricFamily("watcher_info", "Always 1; the version label.", labels=["version"])
        info.add_metric([__version__], 1.0)
        yield info
        yield GaugeMetricFamily(
            "watcher_start_time_seconds", "When the daemon started (epoch).", value=self._started
        )
        watches = GaugeMetricFamily("watcher_watches", "Watched tasks by state.", labels=["state"])
        for state in ("pending", "done"):
            watches.add_metric([state], float(s.watches.get(state, 0)))
        yield watches
        yield from self._sources(s.sources)
        yield from self._sinks(s.sinks)
        yield GaugeMetricFamily(
            "watcher_outbox_size", "Undelivered events, all sinks together.", value=s.outbox
        )

    @staticmethod
    def _sources(sources: list[_SourceSample]) -> Iterable[Metric]:
        labels = ["source"]
        throttled = CounterMetricFamily(
            "watcher_throttled", "429 answers received from the source.", labels=labels
        )
        waited = CounterMetricFamily(
            "watcher_rate_limiter_wait_seconds",
            "Seconds polls waited for a token of the source's rate limiter.",
            labels=labels,
        )
        rate = GaugeMetricFamily(
            "watcher_rate_limit", "Configured requests/second of the source.", labels=labels
        )
        current = GaugeMetricFamily(
            "watcher_rate_current",
            "Requests/second the limiter allows now (lower after 429s).",
            labels=labels,
        )
        in_flight = GaugeMetricFamily("watcher_polls_in_flight", "Polls sent.", labels=labels)
        queued = GaugeMetricFamily(
            "watcher_scheduled", "Entries in the source's due-time heap.", labels=labels
        )
        paused = GaugeMetricFamily(
            "watcher_source_paused", "1 while the source is paused (auth).", labels=labels
        )
        for src in sources:
            throttled.add_metric([src.name], float(src.throttled))
            waited.add_metric([src.name], src.waited_seconds)
            rate.add_metric([src.name], src.rate)
            current.add_metric([src.name], src.current_rate)
            in_flight.add_metric([src.name], float(src.in_flight))
            queued.add_metric([src.name], float(src.queued))
            paused.add_metric([src.name], 1.0 if src.paused else 0.0)
        yield from (throttled, waited, rate, current, in_flight, queued, paused)

    @staticmethod
    def _sinks(sinks: list[_SinkSample]) -> Iterable[Metric]:
        labels = ["sink"]
        delivered = CounterMetricFamily(
            "watcher_sink_deliveries", "Events delivered by the sink.", labels=labels
        )
        failures = CounterMetricFamily(
            "watcher_sink_failures", "Failed delivery attempts (retried).", labels=labels
        )
        dead = CounterMetricFamily(
            "watcher_sink_dead_letters", "Events the sink gave up on.", labels=labels
        )
        depth = GaugeMetricFamily(
            "watcher_sink_queue_depth", "Events queued for the sink.", labels=labels
        )
        for sink in sinks:
            delivered.add_metric([sink.name], float(sink.delivered))
            failures.add_metric([sink.name], float(sink.failed_attempts))
            dead.add_metric([sink.name], float(sink.dead_lettered))
            depth.add_metric([sink.name], float(sink.queue_depth))
        yield from (delivered, failures, dead, depth)


class DaemonMetrics:
    """The engine's ``Instrumentation`` and the ``/metrics`` renderer, over one registry.

    >>> metrics = DaemonMetrics()                                      # doctest: +SKIP
    >>> Watcher(config, instrumentation=metrics)                       # doctest: +SKIP
    >>> body = await metrics.render(watcher)                           # doctest: +SKIP
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._polls = Counter(
            "watcher_polls",
            "Requests sent to a source, by result (ok or the error kind).",
            ["source", "result"],
            registry=self.registry,
        )
        self._poll_seconds = Histogram(
            "watcher_poll_duration_seconds",
            "How long one poll request took.",
            ["source"],
            buckets=_POLL_BUCKETS,
            registry=self.registry,
        )
        self._finished = Counter(
            "watcher_finished",
            "Watches ended, by outcome.",
            ["source", "outcome"],
            registry=self.registry,
        )
        self._detection = Histogram(
            "watcher_detection_latency_seconds",
            "From a task's own end time to the poll that saw it.",
            ["source"],
            buckets=_DETECTION_BUCKETS,
            registry=self.registry,
        )
        self._engine = _EngineCollector(time.time())
        self.registry.register(self._engine)

    # --- Instrumentation --------------------------------------------------------------------

    def on_poll(self, source: str, result: str, seconds: float) -> None:
        self._polls.labels(source, result).inc()
        self._poll_seconds.labels(source).observe(max(seconds, 0.0))

    def on_finish(self, source: str, outcome: str, detection_latency: float | None) -> None:
        self._finished.labels(source, outcome).inc()
        if detection_latency is not None:
            self._detection.labels(source).observe(detection_latency)

    # --- exposition -------------------------------------------------------------------------

    async def render(self, watcher: Watcher) -> bytes:
        """The Prometheus text format, with engine stats read now."""
        sample = await _read(watcher)
        # No await between setting the sample and rendering it: concurrent scrapes cannot mix.
        self._engine.sample = sample
        return generate_latest(self.registry)
