"""The SQLite store of blueprint section 40: schema, migrations, rows from events.

Tables keep the blueprint's columns (rmb: ts, entity_id, residual, phase, risk; ure: ts,
residual, harmony, coherence, action) and add what exactly-once ingest and the API need:
`t` (Unix seconds of ts, for range queries), entity and event type, and the row's source
identity (src_fp, src_offset) — the fingerprint of the log file and the line's offset in
it — under a UNIQUE constraint, so replaying any stretch of a log inserts nothing twice.
The schema version is SQLite's `user_version`; `migrate()` brings any older database up
to date in order, and is harmless to run again. WAL mode.
"""

import json
import sqlite3
from pathlib import Path

from .checkpoint import CorruptState, load_json
from . import vocab

MIGRATIONS = [
    # 1: the tables of section 40 with source identity and time
    """
    CREATE TABLE IF NOT EXISTS rmb (
      id INTEGER PRIMARY KEY,
      ts TEXT NOT NULL, entity_id TEXT NOT NULL, residual REAL NOT NULL, phase REAL NOT NULL,
      risk TEXT NOT NULL, t REAL NOT NULL,
      src_fp TEXT NOT NULL, src_offset INTEGER NOT NULL,
      UNIQUE (src_fp, src_offset));
    CREATE TABLE IF NOT EXISTS ure (
      id INTEGER PRIMARY KEY,
      ts TEXT NOT NULL, residual REAL NOT NULL, harmony REAL NOT NULL, coherence REAL NOT NULL,
      action TEXT NOT NULL, entity_id TEXT NOT NULL, t REAL NOT NULL,
      src_fp TEXT NOT NULL, src_offset INTEGER NOT NULL,
      UNIQUE (src_fp, src_offset));
    CREATE INDEX IF NOT EXISTS rmb_t ON rmb (t, id);
    CREATE INDEX IF NOT EXISTS rmb_entity_t ON rmb (entity_id, t, id);
    CREATE INDEX IF NOT EXISTS ure_t ON ure (t, id);
    CREATE INDEX IF NOT EXISTS ure_entity_t ON ure (entity_id, t, id);
    """,
    # 2: event type, for rollback ratios over a window (/api/summary)
    """
    ALTER TABLE rmb ADD COLUMN event_type TEXT NOT NULL DEFAULT 'observe';
    """,
    # 3: the API's other filters, newest first (a rare risk band or action is not a scan)
    """
    CREATE INDEX IF NOT EXISTS rmb_risk_t ON rmb (risk, t, id);
    CREATE INDEX IF NOT EXISTS ure_action_t ON ure (action, t, id);
    """,
    # 4: Safety Music levels, and the URE loop's rate and batch, for the live page
    """
    CREATE TABLE IF NOT EXISTS safety (
      id INTEGER PRIMARY KEY,
      ts TEXT NOT NULL, t REAL NOT NULL, final TEXT NOT NULL, residual_level TEXT NOT NULL,
      ratio_level TEXT NOT NULL, residual REAL, ratio REAL,
      src_fp TEXT NOT NULL, src_offset INTEGER NOT NULL,
      UNIQUE (src_fp, src_offset));
    CREATE INDEX IF NOT EXISTS safety_t ON safety (t, id);
    ALTER TABLE ure ADD COLUMN hz REAL;
    ALTER TABLE ure ADD COLUMN batch_size INTEGER;
    """,
    # 5: the ingest consumers' checkpoints, committed in the same transaction as the rows
    """
    CREATE TABLE IF NOT EXISTS offsets (consumer TEXT PRIMARY KEY, ck TEXT NOT NULL);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class OffsetStore:
    """A tailer checkpoint kept in the `offsets` table. `save` runs inside the caller's
    transaction, so the rows and the position past them commit (or vanish) together; a
    checkpoint file from before this table existed is read once as the starting point."""

    def __init__(self, db, consumer, legacy_json=None):
        self.db, self.consumer, self.legacy = db, consumer, legacy_json

    def __str__(self):
        return f"{self.consumer} in the offsets table"

    def load(self):
        row = self.db.execute(
            "SELECT ck FROM offsets WHERE consumer = ?", (self.consumer,)
        ).fetchone()
        if row is not None:
            try:
                return json.loads(row[0])
            except ValueError:
                raise CorruptState(
                    f"offsets table, consumer {self.consumer}: corrupt checkpoint"
                ) from None
        return load_json(self.legacy) if self.legacy else None

    def save(self, ck):
        self.db.execute(
            "INSERT OR REPLACE INTO offsets (consumer, ck) VALUES (?, ?)",
            (self.consumer, json.dumps(ck, sort_keys=True)),
        )


def connect(path):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    # NORMAL with WAL: a power loss may undo the newest transactions, but each one whole,
    # rows and the offsets row together, so ingest resumes exactly where the rows end.
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def migrate(db):
    """Apply the migrations the database has not had yet; returns (old, new) version."""
    old = db.execute("PRAGMA user_version").fetchone()[0]
    for v in range(old, SCHEMA_VERSION):
        with db:
            db.executescript(MIGRATIONS[v])
            db.execute(f"PRAGMA user_version = {v + 1}")
    return old, SCHEMA_VERSION


# Rows from classified events (lumen.events): `pos` is the line's own (fp, offset, t).
def rmb_row(e, pos):
    r3 = e["resonance_v3"]
    return (
        e["ts"],
        e["entity_id"],
        r3["residual_entropy"],
        r3["phase_diff"],
        r3["risk_band"],
        pos.t,
        pos.fp,
        pos.offset,
        e["event_type"],
    )


def ure_row(e, pos):
    loop = e.get("loop") or {}
    return (
        e["ts"],
        e["phase_field"]["residual_entropy"],
        e["harmony_index"],
        e["coherence_level"],
        e.get("auto_reg_action", vocab.NO_ACTION),
        e["entity_id"],
        pos.t,
        pos.fp,
        pos.offset,
        loop.get("hz"),
        loop.get("batch_size"),
    )


def safety_row(e, pos):
    lv, inp = e["levels"], e.get("inputs") or {}
    return (
        e["ts"],
        pos.t,
        lv["final"],
        lv["residual"],
        lv["rollback_ratio"],
        inp.get("residual_entropy"),
        inp.get("rollback_ratio"),
        pos.fp,
        pos.offset,
    )


# The columns that make a row's identity, and those compared when a replayed identity is
# already stored (equal: the same line again, nothing to do; different: a conflict).
KEY = ("src_fp", "src_offset")
COLUMNS = {
    "rmb": (
        "ts",
        "entity_id",
        "residual",
        "phase",
        "risk",
        "t",
        "src_fp",
        "src_offset",
        "event_type",
    ),
    "ure": (
        "ts",
        "residual",
        "harmony",
        "coherence",
        "action",
        "entity_id",
        "t",
        "src_fp",
        "src_offset",
        "hz",
        "batch_size",
    ),
    "safety": (
        "ts",
        "t",
        "final",
        "residual_level",
        "ratio_level",
        "residual",
        "ratio",
        "src_fp",
        "src_offset",
    ),
}


INSERT_RMB = (
    "INSERT OR IGNORE INTO rmb (ts, entity_id, residual, phase, risk, t, src_fp, "
    "src_offset, event_type) VALUES (?,?,?,?,?,?,?,?,?)"
)
INSERT_URE = (
    "INSERT OR IGNORE INTO ure (ts, residual, harmony, coherence, action, entity_id, "
    "t, src_fp, src_offset, hz, batch_size) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
)
INSERT_SAFETY = (
    "INSERT OR IGNORE INTO safety (ts, t, final, residual_level, ratio_level, "
    "residual, ratio, src_fp, src_offset) VALUES (?,?,?,?,?,?,?,?,?)"
)
