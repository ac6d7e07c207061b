"""The two Prometheus exporters: a tail thread that keeps counters, a registry that renders them.

- `RmbExporter` (blueprint section 6, `/metrics` on :9409): the RMB queue through the
  consumer `rmb_exporter` (lumen.consumer: checkpointed tailer, validation, quarantine),
  counted by lumen.stats.RmbStats; the scrape also renders the consumer's self-monitoring
  counters, the emitter's counters file (lumen.statsfile) and the config's safety gates.
- `UreExporter` (blueprint section 37.5, `/metrics_ure` on :9410): three streams, each
  through its own consumer `<name>_<stream>` and its own stats (lumen.stats): the v2 log
  (UreStats), Safety Music (SafetyStats) and the RMB queue (RmbStats as `ure_rmb_*`).

`poll_once()` is the unit of work, `run(stop)` the tail thread (lumen.proc.run_server runs
it beside the HTTP server), `app` the HTTP handler (other paths 404). The counters and
each stats' `to_state()` are checkpointed with the offset, so they cover whole logs across
restarts, and a scrape does no file I/O on the logs.

Departures from the blueprint: the RMB exporter started at the end of the file and did
not validate; the URE exporter re-read the last 4 KB of the v2 log on every scrape,
reported 0 for everything on any error, and showed whichever entity wrote last.
"""

import time

from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from . import statsfile
from .consumer import Consumer
from .httpserve import METRICS_CONTENT_TYPE
from .stats import (
    RmbStats,
    SafetyStats,
    UreStats,
    consumer_families,
    emitter_families,
    gate_families,
    scrape_duration,
)

CHECKPOINT_EVERY_S = 1.0


def _metrics_app(registry, metrics_path):
    """The HTTP handler: `metrics_path` renders the registry, anything else is 404."""

    def app(method, path, query):
        if path != metrics_path:
            return 404, [("Content-Type", "text/plain; charset=utf-8")], b"not found\n"
        return 200, [("Content-Type", METRICS_CONTENT_TYPE)], generate_latest(registry)

    return app


class RmbCollector:
    """Renders the exporter's state as metric families. The only file it reads is the
    emitter's fixed-size counters file (lumen.statsfile), never the log."""

    def __init__(self, stats, consumer, gates, emitter_stats=None):
        self.stats, self.consumer, self.gates = stats, consumer, gates
        self.emitter_stats = emitter_stats
        self._emitter = {}

    def collect(self):
        t0 = time.perf_counter()
        em = statsfile.read(self.emitter_stats) if self.emitter_stats else None
        if em is not None:
            self._emitter = em  # else: the last counters read (the file is being replaced)
        yield from self.stats.families("rmb")
        yield from consumer_families(self.consumer, "rmb")
        yield from emitter_families(self._emitter)
        yield from gate_families(self.gates)
        yield scrape_duration("rmb", t0)


class RmbExporter:
    """Tail thread + registry. `poll_once()` is the unit of work; `run()` loops it."""

    def __init__(
        self,
        queue_path,
        gates,
        offsets_dir="logs/.offsets",
        rejects_dir="logs/rejects",
        consumer="rmb_exporter",
        emitter_stats="logs/.state/rmb_emitter.stats",
    ):
        self.consumer = Consumer(
            queue_path,
            consumer,
            "rmb_event_v1.json",
            "rmb_events",
            offsets_dir,
            rejects_dir,
            typed=True,
        )
        self.stats = RmbStats(self.consumer.state)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(RmbCollector(self.stats, self.consumer, gates, emitter_stats))
        self.app = _metrics_app(self.registry, "/metrics")

    def poll_once(self):
        """Read what is new; returns the number of lines handled."""
        n = self.consumer.poll(self.stats.add)
        self.consumer.maybe_commit(self.stats.to_state, CHECKPOINT_EVERY_S)
        return n

    def commit(self):
        self.consumer.commit(self.stats.to_state())

    def run(self, stop, idle_s=0.1):
        while not stop.is_set():
            if not self.poll_once():
                self.consumer.maybe_commit(self.stats.to_state, 0)
                stop.wait(idle_s)
        self.commit()
        self.consumer.close()


class UreExporter:
    """Three streams, one registry (the exporter is its own collector)."""

    # (label, paths key, schema, quarantine stream, stats, metric prefix, typed events)
    STREAMS = (
        ("v2", "v2_log", "resonance_event_v2.json", "resonance_events_v2", UreStats, "ure", False),
        (
            "safety",
            "v1_safe",
            "safety_music_event_v1.json",
            "safety_music_events",
            SafetyStats,
            "ure_safety_music",
            False,
        ),
        ("rmb", "v1_rmb", "rmb_event_v1.json", "rmb_events", RmbStats, "ure_rmb", True),
    )

    def __init__(
        self, paths, offsets_dir="logs/.offsets", rejects_dir="logs/rejects", name="ure_exporter"
    ):
        self.streams = []
        for label, key, schema, stream, cls, prefix, typed in self.STREAMS:
            c = Consumer(
                paths[key], f"{name}_{label}", schema, stream, offsets_dir, rejects_dir, typed=typed
            )
            self.streams.append((label, c, cls(c.state), prefix))
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self.app = _metrics_app(self.registry, "/metrics_ure")

    @property
    def ure(self):
        return self.streams[0][2]

    def collect(self):
        t0 = time.perf_counter()
        for _, _, stats, prefix in self.streams:
            yield from stats.families(prefix)
        for label, consumer, _, _ in self.streams:
            yield from consumer_families(consumer, "ure_exporter", label)
        yield scrape_duration("ure", t0)

    def poll_once(self):
        n = 0
        for _, consumer, stats, _ in self.streams:
            n += consumer.poll(stats.add)
            consumer.maybe_commit(stats.to_state, CHECKPOINT_EVERY_S)
        return n

    def run(self, stop, idle_s=0.1):
        while not stop.is_set():
            if not self.poll_once():
                for _, consumer, stats, _ in self.streams:
                    consumer.maybe_commit(stats.to_state, 0)
                stop.wait(idle_s)
        for _, consumer, stats, _ in self.streams:
            consumer.commit(stats.to_state())
            consumer.close()
