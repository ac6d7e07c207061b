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
`rmb_checkpoints_written_total`, `rmb_log_bytes_behind`,
`rmb_last_event_timestamp_seconds`, `rmb_scrape_duration_seconds`; and the emitter's
safety-gate thresholds from the config (`rmb_safety_gate_*`), so alert rules can use them.

Departures from the blueprint: it starts from the checkpoint, not the end of the file;
it validates; it binds `exporter.host` (default config: 0.0.0.0, as the blueprint).
Paths other than /metrics get 404, methods other than GET/HEAD 405.
"""
import argparse
import sys
import threading
import time
from collections import Counter
from datetime import datetime

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from lumen import config, events
from lumen.httpserve import METRICS_CONTENT_TYPE, serve
from lumen.proc import Lifecycle, cli_main
from lumen.rejects import Rejects
from lumen.tail import Tailer

EVENT_TYPES = ("observe", "decide", "commit", "rollback")
RISK_BANDS = ("SAFE", "WATCH", "RISK")
CHECKPOINT_EVERY_S = 1.0


class RmbStats:
    """Counters over the whole stream; `to_state`/`from_state` carry them across restarts."""

    def __init__(self):
        self.by_type = Counter()
        self.by_risk = Counter()
        self.rejects = Counter()
        self.residual_last = 0.0
        self.last_ts = None
        self.rotations = self.truncates = self.checkpoints = 0

    @property
    def events_total(self):
        return sum(self.by_type.values())

    def to_state(self):
        return {"by_type": dict(self.by_type), "by_risk": dict(self.by_risk),
                "rejects": dict(self.rejects), "residual_last": self.residual_last,
                "last_ts": self.last_ts, "rotations": self.rotations,
                "truncates": self.truncates, "checkpoints": self.checkpoints}

    @classmethod
    def from_state(cls, st):
        s = cls()
        if st:
            s.by_type.update(st.get("by_type", {}))
            s.by_risk.update(st.get("by_risk", {}))
            s.rejects.update(st.get("rejects", {}))
            s.residual_last = st.get("residual_last", 0.0)
            s.last_ts = st.get("last_ts")
            s.rotations = st.get("rotations", 0)
            s.truncates = st.get("truncates", 0)
            s.checkpoints = st.get("checkpoints", 0)
        return s

    def consume(self, lines, validator, rejects, source):
        """Count a batch of (offset, raw) lines; bad ones go to `rejects`."""
        loads, is_valid, maxb = orjson.loads, validator.is_valid, events.MAX_LINE_BYTES
        by_type, by_risk = self.by_type, self.by_risk
        last = None
        for off, raw in lines:
            if len(raw) <= maxb:
                try:
                    ev = loads(raw)
                except orjson.JSONDecodeError:
                    ev = None
                if type(ev) is dict and is_valid(ev):
                    by_type[ev["event_type"]] += 1
                    by_risk[ev["resonance_v3"]["risk_band"]] += 1
                    last = ev
                    continue
            if not raw.strip():
                continue  # a blank line is not an event and not an error
            _, (reason, detail) = events.parse(raw, validator)
            self.rejects[reason] += 1
            rejects.add(reason, detail, source, off, raw)
        if last is not None:
            self.residual_last = float(last["resonance_v3"]["residual_entropy"])
            self.last_ts = last["ts"]


def _ts_seconds(ts):
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except (AttributeError, ValueError):
        return 0.0


class RmbCollector:
    """Renders RmbStats as metric families; reads nothing from disk."""

    def __init__(self, stats, gates, behind):
        self.stats, self.gates, self.behind = stats, gates, behind

    def collect(self):
        t0 = time.perf_counter()
        s = self.stats
        by_type = dict(s.by_type)
        total = sum(by_type.values())
        yield CounterMetricFamily("rmb_events_total", "Valid v1 events in the log.", total)
        yield CounterMetricFamily("rmb_rollback_total", "Events of type rollback.",
                                  by_type.get("rollback", 0))
        yield GaugeMetricFamily("rmb_residual_entropy_last",
                                "resonance_v3.residual_entropy of the newest event.",
                                s.residual_last)
        c = CounterMetricFamily("rmb_events_by_type", "Valid events by event_type.",
                                labels=["event_type"])
        for t in EVENT_TYPES:
            c.add_metric([t], by_type.get(t, 0))
        yield c
        c = CounterMetricFamily("rmb_events_by_risk_band", "Valid events by risk_band.",
                                labels=["risk_band"])
        for b in RISK_BANDS:
            c.add_metric([b], s.by_risk.get(b, 0))
        yield c
        rejected = sum(s.rejects.values())
        c = CounterMetricFamily("rmb_log_lines", "Lines read from the log, by status.",
                                labels=["status"])
        c.add_metric(["valid"], total)
        c.add_metric(["rejected"], rejected)
        yield c
        c = CounterMetricFamily("rmb_rejects", "Lines quarantined, by reason.", labels=["reason"])
        for r in events.REASONS:
            c.add_metric([r], s.rejects.get(r, 0))
        yield c
        yield CounterMetricFamily("rmb_file_rotations_total",
                                  "Rename rotations of the log followed.", s.rotations)
        yield CounterMetricFamily("rmb_file_truncates_total",
                                  "Truncations (copytruncate) of the log detected.", s.truncates)
        yield CounterMetricFamily("rmb_checkpoints_written_total",
                                  "Checkpoints of offset and counters written.", s.checkpoints)
        yield GaugeMetricFamily("rmb_log_bytes_behind",
                                "Bytes of the log not yet read by the exporter.", self.behind())
        yield GaugeMetricFamily("rmb_last_event_timestamp_seconds",
                                "ts of the newest valid event, as Unix time.",
                                _ts_seconds(s.last_ts) if s.last_ts else 0.0)
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
        for b in RISK_BANDS:
            c.add_metric([b], 1.0 if b in g["risk_band_block"] else 0.0)
        yield c
        yield GaugeMetricFamily("rmb_scrape_duration_seconds",
                                "Time this scrape took to render, in seconds.",
                                time.perf_counter() - t0)


class RmbExporter:
    """Tail thread + registry. `poll_once()` is the unit of work; `run()` loops it."""

    def __init__(self, queue_path, gates, offsets_dir="logs/.offsets",
                 rejects_dir="logs/rejects", consumer="rmb_exporter"):
        self.tailer = Tailer(queue_path, consumer, offsets_dir)
        self.stats = RmbStats.from_state(self.tailer.state)
        self.validator = events.Validator.named("rmb_event_v1.json")
        self.rejects = Rejects("rmb_events", consumer, rejects_dir)
        self.registry = CollectorRegistry(auto_describe=False)
        self._behind = 0
        self.registry.register(RmbCollector(self.stats, gates, lambda: self._behind))
        self._base = (self.stats.rotations, self.stats.truncates, self.stats.checkpoints)
        self._dirty = False
        self._last_commit = time.monotonic()

    def _sync_tail_counters(self):
        r, t, c = self._base
        self.stats.rotations = r + self.tailer.rotations
        self.stats.truncates = t + self.tailer.truncations
        self.stats.checkpoints = c + self.tailer.checkpoints

    def poll_once(self):
        """Read what is new; returns the number of lines handled."""
        lines = self.tailer.poll()
        if lines:
            self.stats.consume(lines, self.validator, self.rejects, self.tailer.source)
            self._dirty = True
        self._sync_tail_counters()
        self._behind = self.tailer.bytes_behind()
        if self._dirty and time.monotonic() - self._last_commit >= CHECKPOINT_EVERY_S:
            self.commit()
        return len(lines)

    def commit(self):
        self.rejects.flush()  # quarantine first, then move the checkpoint past those lines
        self.stats.checkpoints += 1  # count the checkpoint being written in its own state
        self.tailer.commit(self.stats.to_state())
        self._sync_tail_counters()
        self._dirty = False
        self._last_commit = time.monotonic()

    def run(self, stop, idle_s=0.1):
        while not stop.is_set():
            if not self.poll_once():
                if self._dirty:
                    self.commit()
                stop.wait(idle_s)
        self.commit()
        self.tailer.close()

    def app(self, method, path, query):
        if path != "/metrics":
            return 404, [("Content-Type", "text/plain; charset=utf-8")], b"not found\n"
        return 200, [("Content-Type", METRICS_CONTENT_TYPE)], generate_latest(self.registry)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/rmb_v17.yaml")
    ap.add_argument("--port", type=int, help="override exporter.port (blueprint: 9409)")
    ap.add_argument("--host", help="override exporter.host")
    ap.add_argument("--queue", help="override paths.queue")
    ap.add_argument("--name", default="rmb_exporter", help="process and consumer name")
    args = ap.parse_args(argv)
    cfg = config.load(args.config, "rmb_v17", overrides={
        "exporter.port": args.port, "exporter.host": args.host, "paths.queue": args.queue})
    exp = RmbExporter(cfg["paths"]["queue"], cfg["safety_gates"], consumer=args.name)
    server = serve(exp.app, cfg["exporter"]["host"], cfg["exporter"]["port"])
    port = server.server_address[1]
    with Lifecycle(args.name) as life:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        tail = threading.Thread(target=exp.run, args=(life.stop,))
        tail.start()
        life.ready()
        print(f"[exporter] RMB metrics on :{port}", flush=True)
        while tail.is_alive() and not life.stop.is_set():
            life.stop.wait(0.5)
        crashed = not life.stop.is_set()  # the tail thread ended on its own: an error
        life.stop.set()
        tail.join(timeout=30)
        server.shutdown()
        server.server_close()
    if crashed:
        print(f"error: the tail thread of {args.name} stopped unexpectedly (see above)",
              file=sys.stderr)
        return 1
    print(f"[exporter] stopped after {exp.stats.events_total} events", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
