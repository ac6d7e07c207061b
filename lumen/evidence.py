"""Evidence bundles (blueprint section 31): RMB events to logs/evidence_bundle.jsonl, once.

One bundle per valid event: ts, entity_id, signal (phase_diff, residual_entropy), memory_key,
value_ref (first 16 hex digits of value_hash), trace, and `source` {fp, offset} naming the
event's place in the log. Bundles are fsynced before the checkpoint moves; after a crash in
between, events whose source a bundle written since the last checkpoint already covers are
skipped (lumen.exactly_once). Bad lines are quarantined and counted by the consumer.
"""

from .consumer import Consumer
from .exactly_once import already_done, out_position, written_since
from .jsonl import JsonlWriter

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
