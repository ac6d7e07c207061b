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
- self-monitoring, one family per name with a sample per stream:
  `ure_exporter_log_lines_total{stream,status}`, `ure_exporter_rejects_total{stream,reason}`,
  rotations, truncations, checkpoints, bytes behind, and `ure_scrape_duration_seconds`;
- `lumen_build_info` and prometheus_client's `process_*` and `python_*`.
A gauge is NaN until its stream has a value (no URE tick yet: no value, not 0).
Each stream is read through the shared consumer (tailer + validation + quarantine) with
its own checkpoint, so a scrape does no file I/O and counters cover whole logs across
restarts. `/` is a landing page linking to /metrics_ure; other paths get 404; other
methods 405. The exporter is
lumen/exporters.py; its metrics, lumen/stats.py.

Departure from the blueprint: it re-read the last 4 KB of the v2 log on every scrape,
reported 0 for everything on any error, and showed whichever entity wrote last.
"""

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path: this checkout's lumen if this Python has none
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import argparse

from lumen import CONFIGS, config
from lumen.exporters import UreExporter
from lumen.proc import cli_main, run_server


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(CONFIGS / "ure_v18.yaml"))
    ap.add_argument("--port", type=int, help="override exporter.port (blueprint: 9410)")
    ap.add_argument("--host", help="override exporter.host")
    ap.add_argument("--name", default="ure_exporter", help="process and consumer name")
    args = ap.parse_args(argv)
    cfg = config.load(
        args.config, "ure_v18", overrides={"exporter.port": args.port, "exporter.host": args.host}
    )
    exp = UreExporter(cfg["paths"], name=args.name)
    return run_server(
        args.name,
        exp.app,
        cfg["exporter"]["host"],
        cfg["exporter"]["port"],
        "[ure] metrics on :{port}",
        worker=exp.run,
    )


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
