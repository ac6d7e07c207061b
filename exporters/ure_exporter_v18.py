#!/usr/bin/env python3
"""URE exporter (blueprint section 37.5): `/metrics_ure` on :9410, the multi-stream exporter.

One scrape shows all three streams (section 36's "multi-stream exporter" row):
- the URE loop, from the newest loop event (trace.loop_id `ure.v18`) in the v2 log: the
  blueprint's `ure_residual_entropy_last`, `ure_harmony_index`, `ure_coherence_level`, plus
  `ure_self_regulation_score`, `ure_loop_hz`, `ure_loop_batch_size`,
  `ure_actions_total{action}` and `ure_v2_events_total{entity_id}`;
- Safety Music, from logs/safety_music_events.jsonl: `ure_safety_music_level{source}`
  (0 CALM, 1 TENSE, 2 ALERT, -1 UNDEFINED) and `ure_safety_music_level_changes_total`;
- the RMB stream's headline figures: `ure_rmb_events_total`, `ure_rmb_rollback_total`,
  `ure_rmb_residual_entropy_last` (and by type / risk band);
- self-monitoring per stream: `ure_exporter_log_lines_total{stream,status}`,
  `ure_exporter_rejects_total{stream,reason}`, rotations, truncations, checkpoints,
  bytes behind, and `ure_scrape_duration_seconds`.
Each stream is read through the shared consumer (tailer + validation + quarantine) with
its own checkpoint, so a scrape does no file I/O and counters cover whole logs across
restarts. Paths other than /metrics_ure get 404; other methods 405.

Departure from the blueprint: it re-read the last 4 KB of the v2 log on every scrape,
reported 0 for everything on any error, and showed whichever entity wrote last.
"""
import argparse
import time
from collections import Counter

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from exporters.rmb_exporter_v17 import RmbStats
from lumen import ROOT, config
from lumen.consumer import Consumer
from lumen.httpserve import METRICS_CONTENT_TYPE
from lumen.proc import cli_main, run_server
from lumen import vocab

LOOP_ID = "ure.v18"


class UreStats:
    def __init__(self, st=None):
        st = st or {}
        self.last = st.get("last")  # fields of the newest loop event
        self.actions = Counter(st.get("actions", {}))
        self.entities = Counter(st.get("entities", {}))

    def add(self, ev, pos=None):
        self.entities[ev["entity_id"]] += 1
        if ev["trace"]["loop_id"] != LOOP_ID:
            return
        for a in ev.get("actions") or [ev.get("auto_reg_action", vocab.NO_ACTION)]:
            self.actions[a] += 1
        loop = ev.get("loop") or {}
        self.last = {"residual": ev["phase_field"]["residual_entropy"],
                     "harmony": ev["harmony_index"], "coherence": ev["coherence_level"],
                     "score": ev.get("self_regulation_score"),
                     "hz": loop.get("hz"), "batch": loop.get("batch_size"), "ts": ev["ts"]}

    def to_state(self):
        return {"last": self.last, "actions": dict(self.actions), "entities": dict(self.entities)}

    def families(self):
        last = self.last or {}

        def gauge(name, doc, key):
            v = last.get(key)
            return GaugeMetricFamily(name, doc, float("nan") if v is None else v)

        yield gauge("ure_residual_entropy_last", "Observed residual of the newest URE tick.",
                    "residual")
        yield gauge("ure_harmony_index", "harmony_index of the newest URE tick.", "harmony")
        yield gauge("ure_coherence_level", "coherence_level of the newest URE tick.", "coherence")
        yield gauge("ure_self_regulation_score",
                    "Share of URE ticks in the last 10 min with the residual inside its band.",
                    "score")
        yield gauge("ure_loop_hz", "Current rate of the URE loop.", "hz")
        yield gauge("ure_loop_batch_size", "Current observation batch of the URE loop.", "batch")
        c = CounterMetricFamily("ure_actions", "URE regulation actions taken.", labels=["action"])
        for a in vocab.ACTIONS:
            c.add_metric([a], self.actions.get(a, 0))
        yield c
        c = CounterMetricFamily("ure_v2_events", "Events in the v2 log by entity.",
                                labels=["entity_id"])
        for e, n in sorted(self.entities.items()):
            c.add_metric([e], n)
        yield c


class SafetyStats:
    def __init__(self, st=None):
        st = st or {}
        self.levels = st.get("levels") or {}
        self.changes = st.get("changes", 0)
        self.events = st.get("events", 0)

    def add(self, ev, pos=None):
        self.events += 1
        self.levels = dict(ev["levels"])
        self.changes += bool(ev.get("changed"))

    def to_state(self):
        return {"levels": self.levels, "changes": self.changes, "events": self.events}

    def families(self):
        g = GaugeMetricFamily("ure_safety_music_level",
                              "Safety Music level by source: 0 CALM, 1 TENSE, 2 ALERT, -1 UNDEFINED.",
                              labels=["source"])
        for src in ("residual", "rollback_ratio", "final"):
            g.add_metric([src], vocab.SEVERITY.get(self.levels.get(src), -1))
        yield g
        yield CounterMetricFamily("ure_safety_music_level_changes_total",
                                  "Changes of the final Safety Music level.", self.changes)
        yield CounterMetricFamily("ure_safety_music_events_total", "Safety Music events.",
                                  self.events)


class UreExporter:
    def __init__(self, paths, offsets_dir="logs/.offsets", rejects_dir="logs/rejects",
                 name="ure_exporter"):
        self.streams = []
        for label, path, schema, stream, cls, typed in (
                ("v2", paths["v2_log"], "resonance_event_v2.json", "resonance_events_v2",
                 UreStats, False),
                ("safety", paths["v1_safe"], "safety_music_event_v1.json", "safety_music_events",
                 SafetyStats, False),
                ("rmb", paths["v1_rmb"], "rmb_event_v1.json", "rmb_events", RmbStats, True)):
            c = Consumer(path, f"{name}_{label}", schema, stream, offsets_dir, rejects_dir,
                         typed=typed)
            self.streams.append((label, c, cls(c.state)))
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    @property
    def ure(self):
        return self.streams[0][2]

    def collect(self):
        t0 = time.perf_counter()
        for label, consumer, stats in self.streams:
            yield from (stats.families("ure_rmb") if label == "rmb" else stats.families())
        for label, consumer, _ in self.streams:
            yield from consumer.families("ure_exporter", label)
        yield GaugeMetricFamily("ure_scrape_duration_seconds",
                                "Time this scrape took to render, in seconds.",
                                time.perf_counter() - t0)

    def poll_once(self):
        n = 0
        for _, consumer, stats in self.streams:
            n += consumer.poll(stats.add)
            consumer.maybe_commit(stats.to_state, 1.0)
        return n

    def run(self, stop, idle_s=0.1):
        while not stop.is_set():
            if not self.poll_once():
                for _, consumer, stats in self.streams:
                    consumer.maybe_commit(stats.to_state, 0)
                stop.wait(idle_s)
        for _, consumer, stats in self.streams:
            consumer.commit(stats.to_state())
            consumer.close()

    def app(self, method, path, query):
        if path != "/metrics_ure":
            return 404, [("Content-Type", "text/plain; charset=utf-8")], b"not found\n"
        return 200, [("Content-Type", METRICS_CONTENT_TYPE)], generate_latest(self.registry)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs/ure_v18.yaml"))
    ap.add_argument("--port", type=int, help="override exporter.port (blueprint: 9410)")
    ap.add_argument("--host", help="override exporter.host")
    ap.add_argument("--name", default="ure_exporter", help="process and consumer name")
    args = ap.parse_args(argv)
    cfg = config.load(args.config, "ure_v18", overrides={
        "exporter.port": args.port, "exporter.host": args.host})
    exp = UreExporter(cfg["paths"], name=args.name)
    return run_server(args.name, exp.app, cfg["exporter"]["host"], cfg["exporter"]["port"],
                      "[ure] metrics on :{port}", worker=exp.run)


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
