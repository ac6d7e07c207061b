#!/usr/bin/env python3
"""evidence.map (blueprint section 31): map RMB events to evidence bundles, exactly once.

Reads `paths.queue` through the shared tailer (consumer `evidence_mapper`) and appends one
bundle per valid event to `logs/evidence_bundle.jsonl`: ts, entity_id, signal (phase_diff,
residual_entropy), memory_key, value_ref (first 16 hex digits of value_hash), trace, and
`source` {fp, offset} naming the event's place in the log. Running it twice appends
nothing the second time; a crash between writing bundles and the checkpoint is repaired
on the next run, which skips events whose source the newest bundle already covers.
Bad lines are quarantined to `logs/rejects/rmb_events.jsonl` and counted.
Departure: the blueprint re-maps the whole log on every run (duplicating every bundle).
"""
import argparse

import orjson

from lumen import ROOT, config, events
from lumen.backscan import reverse_lines
from lumen.jsonl import JsonlWriter
from lumen.proc import cli_main
from lumen.rejects import Rejects
from lumen.tail import Tailer

CONSUMER = "evidence_mapper"


def bundle(e, fp, offset):
    return {
        "ts": e["ts"], "entity_id": e["entity_id"],
        "signal": {"phase_diff": e["resonance_v3"]["phase_diff"],
                   "residual_entropy": e["resonance_v3"]["residual_entropy"]},
        "memory_key": e["memory_bridge"]["key"],
        "value_ref": e["memory_bridge"]["value_hash"][:16],
        "trace": e["trace"],
        "source": {"fp": fp, "offset": offset},
    }


def newest_source(out_path):
    """(fp, offset) of the newest bundle already written, or None."""
    for raw in reverse_lines(out_path):
        try:
            src = orjson.loads(raw)["source"]
            return src["fp"], src["offset"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue  # not a bundle of ours: keep looking back
    return None


def run(queue, out_path, offsets_dir="logs/.offsets", rejects_dir="logs/rejects"):
    done = newest_source(out_path)
    tailer = Tailer(queue, CONSUMER, offsets_dir)
    writer = JsonlWriter(out_path)
    rejects = Rejects("rmb_events", CONSUMER, rejects_dir)
    validator = events.Validator.named("rmb_event_v1.json")
    mapped = skipped = 0
    while True:
        lines = tailer.poll()
        if not lines:
            break
        fp = tailer.source
        for off, raw in lines:
            if done and fp == done[0] and off <= done[1]:
                skipped += 1  # already mapped before a crash
                continue
            if not raw.strip():
                continue
            e, err = events.parse(raw, validator)
            if err:
                rejects.add(err[0], err[1], fp, off, raw)
                continue
            writer.add(bundle(e, fp, off))
            mapped += 1
        writer.flush()
        rejects.flush()
        tailer.commit()
    tailer.close()
    return mapped, skipped, rejects.total


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs/rmb_v17.yaml"))
    ap.add_argument("--queue", help="override paths.queue")
    ap.add_argument("--out", default="logs/evidence_bundle.jsonl")
    args = ap.parse_args(argv)
    cfg = config.load(args.config, "rmb_v17", overrides={"paths.queue": args.queue})
    mapped, skipped, rejected = run(cfg["paths"]["queue"], args.out)
    print(f"[evidence] mapped {mapped} events to {args.out}"
          + (f" ({skipped} already mapped)" if skipped else "")
          + (f", {rejected} lines rejected" if rejected else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
