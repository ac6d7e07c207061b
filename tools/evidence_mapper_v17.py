#!/usr/bin/env python3
"""evidence.map (blueprint section 31): map RMB events to evidence bundles, exactly once.

Reads `paths.queue` through the shared tailer (consumer `evidence_mapper`) and appends one
bundle per valid event to `logs/evidence_bundle.jsonl`: ts, entity_id, signal (phase_diff,
residual_entropy), memory_key, value_ref (first 16 hex digits of value_hash), trace, and
`source` {fp, offset} naming the event's place in the log. Running it twice appends
nothing the second time; bundles are fsynced before the checkpoint moves, and a crash in
between is repaired on the next run, which skips events whose source a bundle written
since the last checkpoint already covers (every source file, not only the newest).
Bad lines are quarantined to `logs/rejects/rmb_events.jsonl` and counted.
Departure: the blueprint re-maps the whole log on every run (duplicating every bundle).
"""

import argparse

from lumen import ROOT, config
from lumen.consumer import Consumer
from lumen.jsonl import JsonlWriter
from lumen.proc import cli_main
from lumen.exactly_once import already_done, out_position, written_since

CONSUMER = "evidence_mapper"


def bundle(e, fp, offset):
    return {
        "ts": e["ts"],
        "entity_id": e["entity_id"],
        "signal": {
            "phase_diff": e["resonance_v3"]["phase_diff"],
            "residual_entropy": e["resonance_v3"]["residual_entropy"],
        },
        "memory_key": e["memory_bridge"]["key"],
        "value_ref": e["memory_bridge"]["value_hash"][:16],
        "trace": e["trace"],
        "source": {"fp": fp, "offset": offset},
    }


def run(queue, out_path, offsets_dir="logs/.offsets", rejects_dir="logs/rejects"):
    consumer = Consumer(
        queue, CONSUMER, "rmb_event_v1.json", "rmb_events", offsets_dir, rejects_dir
    )
    try:
        since = (consumer.state or {}).get("out") if consumer.state is not None else None
        done = written_since(out_path, since)
        writer = JsonlWriter(out_path, fsync=True)
        counts = {"mapped": 0, "skipped": 0}

        def on_event(e, pos):
            if already_done(done, None, pos):
                counts["skipped"] += 1  # already mapped before a crash
                return
            writer.add(bundle(e, pos.fp, pos.offset))
            counts["mapped"] += 1

        while consumer.poll(on_event):
            writer.flush()  # bundles first, durably, then the checkpoint past their events
            consumer.commit({"out": out_position(out_path)})
    finally:
        consumer.close()
    return counts["mapped"], counts["skipped"], sum(consumer.rejected.values())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs/rmb_v17.yaml"))
    ap.add_argument("--queue", help="override paths.queue")
    ap.add_argument("--out", default="logs/evidence_bundle.jsonl")
    args = ap.parse_args(argv)
    cfg = config.load(args.config, "rmb_v17", overrides={"paths.queue": args.queue})
    mapped, skipped, rejected = run(cfg["paths"]["queue"], args.out)
    print(
        f"[evidence] mapped {mapped} events to {args.out}"
        + (f" ({skipped} already mapped)" if skipped else "")
        + (f", {rejected} lines rejected" if rejected else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
