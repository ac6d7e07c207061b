"""The memory bridge: applies the `memory_bridge` ops of committed v1 events to a KV store.

Listed in blueprint section 1 but never written there; milestone M3 (section 34) names
SQLite as the store. Reads `paths.queue` through the shared consumer (lumen.consumer,
consumer name `rmb_bridge`, checkpoint `logs/.offsets/rmb_bridge.json`) and keeps
`memory_bridge.store` (default `data/rmb_bridge.db`, WAL mode):

    kv(key PRIMARY KEY, slot_id, value_hash, ts, iter)

Only events whose `event_type` is `commit` change the store: UPSERT writes the key, DELETE
removes it. observe/decide events propose nothing and rollbacks (including events the
safety gates turned into rollbacks) are never applied. Ops are applied in log order, so
replaying a stretch of the log again leaves the same state (the checkpoint is moved only
after the SQLite transaction commits).

`rebuild_from` drops the store and the checkpoint so the next run replays the log from its
oldest rotated file (<queue>.N ... <queue>.1, then the live file); `get` and `slot_keys`
read the store. Bad lines are quarantined to `logs/rejects/rmb_events.jsonl` and counted,
as every consumer does. The bridge never writes the queue. The CLI is rmb/bridge_v17.py.
"""

import argparse
import sqlite3
from pathlib import Path

from . import CONFIGS, vocab
from .consumer import Consumer
from .tail import MAX_ROTATED

CONSUMER = "rmb_bridge"
DEFAULT_STORE = "data/rmb_bridge.db"
KV_COLUMNS = ("key", "slot_id", "value_hash", "ts", "iter")

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
  key TEXT PRIMARY KEY, slot_id TEXT NOT NULL, value_hash TEXT NOT NULL,
  ts TEXT NOT NULL, iter INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS kv_slot ON kv(slot_id, key);
"""


def build_parser(description=None):
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--config", default=str(CONFIGS / "rmb_v17.yaml"))
    ap.add_argument("--store", help="override memory_bridge.store (default data/rmb_bridge.db)")
    ap.add_argument("--queue", help="override paths.queue")
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("apply", help="apply new committed ops from the log")
    a.add_argument("--follow", action="store_true", help="keep following the log")
    sub.add_parser("rebuild", help="drop the store and replay the whole log")
    g = sub.add_parser("get", help="print the stored value of KEY")
    g.add_argument("key")
    s = sub.add_parser("slot", help="print the keys held in SLOT_ID")
    s.add_argument("slot_id")
    return ap


def open_store(path):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA)
    return db


def apply_events(db, evts):
    """Apply committed ops in order; returns (upserts, deletes)."""
    ups = dels = 0
    for e in evts:
        if e["event_type"] != vocab.COMMIT:
            continue
        mb = e["memory_bridge"]
        if mb["op"] == vocab.UPSERT:
            db.execute(
                "INSERT OR REPLACE INTO kv(key, slot_id, value_hash, ts, iter) VALUES (?,?,?,?,?)",
                (mb["key"], mb["slot_id"], mb["value_hash"], e["ts"], e["trace"]["iter"]),
            )
            ups += 1
        else:
            db.execute("DELETE FROM kv WHERE key = ?", (mb["key"],))
            dels += 1
    return ups, dels


def get(db, key):
    """The stored row of `key` as a dict, or None when absent."""
    row = db.execute(
        "SELECT key, slot_id, value_hash, ts, iter FROM kv WHERE key = ?", (key,)
    ).fetchone()
    return None if row is None else dict(zip(KV_COLUMNS, row))


def slot_keys(db, slot_id):
    """[(key, value_hash)] held in `slot_id`, by key."""
    return db.execute(
        "SELECT key, value_hash FROM kv WHERE slot_id = ? ORDER BY key", (slot_id,)
    ).fetchall()


def size(db):
    return db.execute("SELECT COUNT(*) FROM kv").fetchone()[0]


class Bridge:
    def __init__(self, queue, store, offsets_dir="logs/.offsets", rejects_dir="logs/rejects"):
        self.db = open_store(store)
        self.consumer = Consumer(
            queue, CONSUMER, "rmb_event_v1.json", "rmb_events", offsets_dir, rejects_dir
        )
        self.upserts = self.deletes = 0

    def step(self):
        """Apply one batch of new lines in one transaction; returns how many lines it read."""
        good = []
        n = self.consumer.poll(lambda ev, pos: good.append(ev))
        if not n:
            return 0
        with self.db:
            u, d = apply_events(self.db, good)
        self.upserts += u
        self.deletes += d
        self.consumer.commit()  # only after the transaction is durable
        return n

    def run(self, stop=None, follow=False, idle_s=0.2):
        while stop is None or not stop.is_set():
            if not self.step():
                if not follow:
                    break
                stop.wait(idle_s)
        self.consumer.close()


def reset(offsets_dir="logs/.offsets"):
    """Forget the bridge's checkpoint: a tailer without one starts at the oldest rotated file."""
    (Path(offsets_dir) / f"{CONSUMER}.json").unlink(missing_ok=True)


def rebuild_from(store, queue, offsets_dir="logs/.offsets"):
    """Drop the store (and its WAL) and the checkpoint; returns the file the replay starts at."""
    for suffix in ("", "-wal", "-shm"):
        Path(store + suffix).unlink(missing_ok=True)
    reset(offsets_dir)
    return next(
        (f"{queue}.{i}" for i in range(MAX_ROTATED, 0, -1) if Path(f"{queue}.{i}").exists()), queue
    )
