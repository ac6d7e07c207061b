#!/usr/bin/env python3
"""RMB Prometheus exporter: `/metrics` on :9409 from `logs/rmb_events.jsonl` (blueprint section 6).

Reads the queue through the shared checkpointed tailer (consumer `rmb_exporter`), so the
counters cover the whole log across restarts, rotations and truncations: they are saved
with the offset in `logs/.offsets/rmb_exporter.json` and resumed from there. Every line is
parsed and validated against the v1 schema; bad lines are counted by reason and
quarantined to `logs/rejects/rmb_events.jsonl`, and the exporter keeps serving.

A scrape does no file I/O: it renders the counters the tail thread keeps current.
Metrics: the blueprint's `rmb_events_total`, `rmb_rollback_total`,
`rmb_residual_entropy_last`; by label `rmb_events_by_type_total{event_type}`,
`rmb_events_by_risk_band_total{risk_band}`; self-monitoring `rmb_log_lines_total{status}`,
`rmb_rejects_total{reason}`, `rmb_file_rotations_total`, `rmb_file_truncates_total`,
`rmb_checkpoints_written_total`, `rmb_checkpoint_errors_total`, `rmb_log_gap_bytes_total`,
`rmb_log_bytes_behind`, the emitter's `rmb_emitter_dropped_total`,
`rmb_emitter_write_errors_total`, `rmb_emitter_pending_events`,
`rmb_last_event_timestamp_seconds`, `rmb_scrape_duration_seconds`; and the emitter's
safety-gate thresholds from the config (`rmb_safety_gate_*`), so alert rules can use them.

Departures from the blueprint: it starts from the checkpoint, not the end of the file;
it validates; it binds `exporter.host` (default config: 0.0.0.0, as the blueprint).
Paths other than /metrics get 404, methods other than GET/HEAD 405.
"""
import argparse
import time
from collections import Counter

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from lumen import ROOT, config, statsfile, timefmt
from lumen.consumer import Consumer
from lumen.httpserve import METRICS_CONTENT_TYPE
from lumen.proc import cli_main, run_server
from lumen import vocab

CHECKPOINT_EVERY_S = 1.0


class RmbStats:
    """What the exporter knows about the stream; `to_state`/`from_state` carry it across restarts.

    Fed typed v1 events (lumen.v1_decoder) by a typed Consumer."""

    def __init__(self, st=None):
        st = st or {}
        self.by_type = Counter(st.get("by_type", {}))
        self.by_risk = Counter(st.get("by_risk", {}))
        self.residual_last = st.get("residual_last", 0.0)
        self.last_ts = st.get("last_ts")  # RFC 3339 text of the newest event
        self.last_t = st.get("last_t") or ts_seconds(self.last_ts)

    @property
    def events_total(self):
        return sum(self.by_type.values())

    def add(self, ev, pos):
        r3 = ev.resonance_v3
        self.by_type[ev.event_type] += 1
        self.by_risk[r3.risk_band] += 1
        self.residual_last = r3.residual_entropy
        self.last_ts, self.last_t = ev.ts, pos.t

    def to_state(self):
        return {"by_type": dict(self.by_type), "by_risk": dict(self.by_risk),
                "residual_last": float(self.residual_last), "last_ts": self.last_ts,
                "last_t": self.last_t}

    def families(self, prefix="rmb"):
        """The blueprint's three metrics and the per-label counters, named `<prefix>_...`."""
        by_type = dict(self.by_type)
        yield CounterMetricFamily(f"{prefix}_events_total", "Valid v1 events in the log.",
                                  sum(by_type.values()))
        yield CounterMetricFamily(f"{prefix}_rollback_total", "Events of type rollback.",
                                  by_type.get(vocab.ROLLBACK, 0))
        yield GaugeMetricFamily(f"{prefix}_residual_entropy_last",
                                "resonance_v3.residual_entropy of the newest event.",
                                self.residual_last)
        c = CounterMetricFamily(f"{prefix}_events_by_type", "Valid events by event_type.",
                                labels=["event_type"])
        for t in vocab.EVENT_TYPES:
            c.add_metric([t], by_type.get(t, 0))
        yield c
        c = CounterMetricFamily(f"{prefix}_events_by_risk_band", "Valid events by risk_band.",
                                labels=["risk_band"])
        for b in vocab.RISK_BANDS:
            c.add_metric([b], self.by_risk.get(b, 0))
        yield c
        yield GaugeMetricFamily(f"{prefix}_last_event_timestamp_seconds",
                                "ts of the newest valid event, as Unix time.",
                                self.last_t or 0.0)


def ts_seconds(ts):
    return timefmt.parse(ts) or 0.0


class RmbCollector:
    """Renders the exporter's state as metric families. The only file it reads is the
    emitter's fixed-size counters file (lumen.statsfile), never the log."""

    def __init__(self, stats, consumer, gates, emitter_stats=None):
        self.stats, self.consumer, self.gates = stats, consumer, gates
        self.emitter_stats = emitter_stats
        self._emitter = {}

    def _emitter_families(self):
        em = statsfile.read(self.emitter_stats) if self.emitter_stats else None
        if em is not None:
            self._emitter = em
        em = self._emitter
        yield CounterMetricFamily("rmb_emitter_dropped_total",
                                  "Events the emitter dropped because the queue could not be "
                                  "written and its memory bound was reached.",
                                  em.get("dropped", 0))
        yield CounterMetricFamily("rmb_emitter_write_errors_total",
                                  "Failed appends to the queue (disk full, I/O error), retried.",
                                  em.get("write_errors", 0))
        yield GaugeMetricFamily("rmb_emitter_pending_events",
                                "Events the emitter holds in memory, waiting to be written.",
                                em.get("pending", 0))

    def collect(self):
        t0 = time.perf_counter()
        yield from self.stats.families("rmb")
        yield from self.consumer.families("rmb")
        yield from self._emitter_families()
        g = self.gates
        yield GaugeMetricFamily("rmb_safety_gate_residual_entropy_max",
                                "Emitter gate: residual entropy above this becomes rollback.",
                                g["residual_entropy_max"])
        yield GaugeMetricFamily("rmb_safety_gate_phase_diff_abs_max",
                                "Emitter gate: |phase_diff| above this becomes rollback.",
                                g["phase_diff_abs_max"])
        c = GaugeMetricFamily("rmb_safety_gate_risk_band_blocked",
                              "Emitter gate: 1 when events of this risk_band become rollback.",
                              labels=["risk_band"])
        for b in vocab.RISK_BANDS:
            c.add_metric([b], 1.0 if b in g["risk_band_block"] else 0.0)
        yield c
        yield GaugeMetricFamily("rmb_scrape_duration_seconds",
                                "Time this scrape took to render, in seconds.",
                                time.perf_counter() - t0)


class RmbExporter:
    """Tail thread + registry. `poll_once()` is the unit of work; `run()` loops it."""

    def __init__(self, queue_path, gates, offsets_dir="logs/.offsets",
                 rejects_dir="logs/rejects", consumer="rmb_exporter",
                 emitter_stats="logs/.state/rmb_emitter.stats"):
        self.consumer = Consumer(queue_path, consumer, "rmb_event_v1.json", "rmb_events",
                                 offsets_dir, rejects_dir, typed=True)
        self.stats = RmbStats(self.consumer.state)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(RmbCollector(self.stats, self.consumer, gates, emitter_stats))

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

    def app(self, method, path, query):
        if path != "/metrics":
            return 404, [("Content-Type", "text/plain; charset=utf-8")], b"not found\n"
        return 200, [("Content-Type", METRICS_CONTENT_TYPE)], generate_latest(self.registry)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs/rmb_v17.yaml"))
    ap.add_argument("--port", type=int, help="override exporter.port (blueprint: 9409)")
    ap.add_argument("--host", help="override exporter.host")
    ap.add_argument("--queue", help="override paths.queue")
    ap.add_argument("--name", default="rmb_exporter", help="process and consumer name")
    args = ap.parse_args(argv)
    cfg = config.load(args.config, "rmb_v17", overrides={
        "exporter.port": args.port, "exporter.host": args.host, "paths.queue": args.queue})
    exp = RmbExporter(cfg["paths"]["queue"], cfg["safety_gates"], consumer=args.name)
    rc = run_server(args.name, exp.app, cfg["exporter"]["host"], cfg["exporter"]["port"],
                    "[exporter] RMB metrics on :{port}", worker=exp.run)
    if rc == 0:
        print(f"[exporter] stopped after {exp.stats.events_total} events", flush=True)
    return rc


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
