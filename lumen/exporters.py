"""The two Prometheus exporters: a tail thread that keeps counters, a registry that renders them.

- `RmbExporter` (blueprint section 6, `/metrics` on :9409): the RMB queue through the
  consumer `rmb_exporter` (lumen.consumer: checkpointed tailer, validation, quarantine),
  counted by lumen.stats.RmbStats; the scrape also renders the consumer's self-monitoring
  counters, the emitter's counters file (lumen.statsfile) and the config's safety gates.
- `UreExporter` (blueprint section 37.5, `/metrics_ure` on :9410): three streams, each
  through its own consumer `<name>_<stream>` and its own stats (lumen.stats): the v2 log
  (UreStats), Safety Music (SafetyStats) and the RMB queue (RmbStats as `ure_rmb_*`).

`poll_once()` is the unit of work, `run(stop)` the tail thread (lumen.proc.run_server runs
it beside the HTTP server), `app` the HTTP handler: the metrics path, a landing page at `/`
(the exporter's name, Lumen's version, a link to the metrics; as node_exporter's), other
paths 404. The counters and each stats' `to_state()` are checkpointed with the offset, so
they cover whole logs across restarts, and a scrape does no file I/O on the logs.

Each exporter has its own registry (never prometheus_client's global one): its collector,
`lumen_build_info`, and prometheus_client's standard `process_*` (ProcessCollector: reads
/proc/self, a few small files whatever the log size) and `python_*` (PlatformCollector,
GCCollector) families. Every exposition passes `promtool check metrics`.

Departures from the blueprint: the RMB exporter started at the end of the file and did
not validate; the URE exporter re-read the last 4 KB of the v2 log on every scrape,
reported 0 for everything on any error, and showed whichever entity wrote last.
"""

import functools
import html
import platform
import time
from importlib import metadata

from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
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


@functools.cache
def version():
    """Lumen's version, from the installed package's metadata ("unknown" when not installed);
    read once per process."""
    try:
        return metadata.version("lumen")
    except metadata.PackageNotFoundError:
        return "unknown"


class BuildInfo:
    """`lumen_build_info{version,python_version} 1`: which Lumen and which Python serve this
    (the convention of node_exporter's and Prometheus' own `*_build_info`); the labels do
    not change while a process runs, so the family is built once."""

    def __init__(self, prefix="lumen"):
        self.family = GaugeMetricFamily(
            f"{prefix}_build_info",
            "Always 1; the labels say which Lumen and which Python run this exporter.",
            labels=["version", "python_version"],
        )
        self.family.add_metric([version(), platform.python_version()], 1)

    def collect(self):
        yield self.family


def registry(collector):
    """A registry of its own for one exporter: `collector`, lumen_build_info, and the
    standard process_* and python_* collectors of prometheus_client."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    reg.register(BuildInfo())
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    GCCollector(registry=reg)
    return reg


def landing_page(title, name, metrics_path):
    """The HTML at `/`: which exporter (title, process name), which version, where its
    metrics are (a relative link, so it works behind a proxy's path prefix too)."""
    t, n, m = (html.escape(x) for x in (title, name, metrics_path))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
        f"<title>{t}</title></head>\n<body>\n<h1>{t}</h1>\n"
        f"<p>Lumen {html.escape(version())}, process {n}: Prometheus metrics of Lumen's "
        "JSONL streams.</p>\n"
        f'<p><a href="{html.escape(metrics_path.lstrip("/"))}">Metrics</a> ({m})</p>\n'
        "</body>\n</html>\n"
    ).encode()


def _metrics_app(reg, metrics_path, title, name):
    """The HTTP handler: `metrics_path` renders the registry, `/` is the landing page,
    anything else is 404."""
    page = landing_page(title, name, metrics_path)

    def app(method, path, query):
        if path == metrics_path:
            return 200, [("Content-Type", METRICS_CONTENT_TYPE)], generate_latest(reg)
        if path == "/":
            return 200, [("Content-Type", "text/html; charset=utf-8")], page
        return 404, [("Content-Type", "text/plain; charset=utf-8")], b"not found\n"

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
        title="Lumen RMB exporter",
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
        self.registry = registry(RmbCollector(self.stats, self.consumer, gates, emitter_stats))
        self.app = _metrics_app(self.registry, "/metrics", title, consumer)

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
        self.registry = registry(self)
        self.app = _metrics_app(self.registry, "/metrics_ure", "Lumen URE exporter", name)

    @property
    def ure(self):
        return self.streams[0][2]

    def collect(self):
        t0 = time.perf_counter()
        for _, _, stats, prefix in self.streams:
            yield from stats.families(prefix)
        yield from consumer_families({s[0]: s[1] for s in self.streams}, "ure_exporter")
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
