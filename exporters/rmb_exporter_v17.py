#!/usr/bin/env python3
"""RMB Prometheus exporter: `/metrics` on :9409 from `logs/rmb_events.jsonl` (blueprint section 6).

Reads the queue through the shared checkpointed tailer (consumer `rmb_exporter`), so the
counters cover the whole log across restarts, rotations and truncations: they are saved
with the offset in `logs/.offsets/rmb_exporter.json` and resumed from there. Every line is
parsed and validated against the v1 schema; bad lines are counted by reason and
quarantined to `logs/rejects/rmb_events.jsonl`, and the exporter keeps serving. The
exporter is lumen/exporters.py; its metrics, lumen/stats.py.

Metrics: the blueprint's `rmb_events_total`, `rmb_rollback_total`,
`rmb_residual_entropy_last`; by label `rmb_events_by_type_total{event_type}`,
`rmb_events_by_risk_band_total{risk_band}`; self-monitoring `rmb_log_lines_total{status}`,
`rmb_rejects_total{reason}`, `rmb_file_rotations_total`, `rmb_file_truncates_total`,
`rmb_checkpoints_written_total`, `rmb_checkpoint_errors_total`, `rmb_log_gap_bytes_total`,
`rmb_log_bytes_behind`, the emitter's `rmb_emitter_dropped_total`,
`rmb_emitter_write_errors_total`, `rmb_emitter_pending_events`,
`rmb_last_event_timestamp_seconds`, `rmb_scrape_duration_seconds`; the emitter's
safety-gate thresholds from the config (`rmb_safety_gate_*`), so alert rules can use them;
`lumen_build_info` and prometheus_client's `process_*` and `python_*`. The residual is NaN
until the first event (no value, not 0).

Departures from the blueprint: it starts from the checkpoint, not the end of the file;
it validates; it binds `exporter.host` (default config: 0.0.0.0, as the blueprint).
`/` is a landing page linking to /metrics; other paths get 404, methods other than
GET/HEAD 405.
"""

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path: this checkout's lumen if this Python has none
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import argparse

from lumen import CONFIGS, config
from lumen.exporters import RmbExporter
from lumen.proc import cli_main, run_server


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(CONFIGS / "rmb_v17.yaml"))
    ap.add_argument("--port", type=int, help="override exporter.port (blueprint: 9409)")
    ap.add_argument("--host", help="override exporter.host")
    ap.add_argument("--queue", help="override paths.queue")
    ap.add_argument("--name", default="rmb_exporter", help="process and consumer name")
    args = ap.parse_args(argv)
    cfg = config.load(
        args.config,
        "rmb_v17",
        overrides={
            "exporter.port": args.port,
            "exporter.host": args.host,
            "paths.queue": args.queue,
        },
    )
    exp = RmbExporter(cfg["paths"]["queue"], cfg["safety_gates"], consumer=args.name)
    rc = run_server(
        args.name,
        exp.app,
        cfg["exporter"]["host"],
        cfg["exporter"]["port"],
        "[exporter] RMB metrics on :{port}",
        worker=exp.run,
    )
    if rc == 0:
        print(f"[exporter] stopped after {exp.stats.events_total} events", flush=True)
    return rc


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
