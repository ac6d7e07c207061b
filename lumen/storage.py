"""The SQLite store of blueprint section 40: schema, migrations, rows from events. It is
the embedded default; lumen/pgstore.py is the PostgreSQL store for many hosts, with the
same tables, rows and writer interface (`Store`); `open_store(cfg)` picks one.

Tables keep the blueprint's columns (rmb: ts, entity_id, residual, phase, risk; ure: ts,
residual, harmony, coherence, action) and add what exactly-once ingest and the API need:
`t` (Unix seconds of ts, for range queries), entity and event type, and the row's source
identity (src_fp, src_offset) — the fingerprint of the log file and the line's offset in
it — under a UNIQUE constraint, so replaying any stretch of a log inserts nothing twice.
Each row also names the host that wrote it (`host`, the config's host_id); an SQLite
store belongs to one host, so its identity needs no host. The schema version is SQLite's
`user_version`; `migrate()` brings any older database up to date in order, and is
harmless to run again. WAL mode, checkpointed every WAL_PAGES pages by the writer. Rows go
PER_STATEMENT to an INSERT (one VALUES list each): SQLite's work per row is half that of a
statement per row, so ingest stores faster than an executemany of the same rows.
"""

import contextlib
import json
from itertools import chain
from operator import itemgetter
import re
import socket
import sqlite3
import sys
import time
from pathlib import Path

from .checkpoint import CorruptState, load_json, write_atomic
from .proc import first_line
from . import vocab

# Fill in hosts' newest rows from the tables (a one-off scan, when the columns are added).
NEWEST_BACKFILL = "".join(
    f"""
    UPDATE hosts SET {t}_t = (SELECT MAX(t) FROM {t} WHERE {t}.host = hosts.host);
    UPDATE hosts SET {t}_ts = (SELECT ts FROM {t} WHERE {t}.host = hosts.host
      AND {t}.t = hosts.{t}_t LIMIT 1);"""
    for t in ("rmb", "ure")
)
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
    # 6: the host each row came from (rows stored before this are the one host's that owns
    # the file: `migrate` fills in its id), and the hosts that have written here
    """
    ALTER TABLE rmb ADD COLUMN host TEXT NOT NULL DEFAULT '';
    ALTER TABLE ure ADD COLUMN host TEXT NOT NULL DEFAULT '';
    ALTER TABLE safety ADD COLUMN host TEXT NOT NULL DEFAULT '';
    CREATE TABLE IF NOT EXISTS hosts (host TEXT PRIMARY KEY, first_seen REAL NOT NULL);
    UPDATE rmb SET host = :host; UPDATE ure SET host = :host; UPDATE safety SET host = :host;
    """,
    # 7: each host's newest RMB and URE row, kept by ingest in the rows' transaction, so
    # /api/hosts and /healthz read one row per host whatever the tables hold
    """
    ALTER TABLE hosts ADD COLUMN rmb_t REAL;
    ALTER TABLE hosts ADD COLUMN rmb_ts TEXT;
    ALTER TABLE hosts ADD COLUMN ure_t REAL;
    ALTER TABLE hosts ADD COLUMN ure_ts TEXT;
    INSERT OR IGNORE INTO hosts (host, first_seen) SELECT host, MIN(t) FROM rmb GROUP BY host;
    """
    + NEWEST_BACKFILL,
    # 8: Alertmanager's alerts (logs/alerts.jsonl), for /api/alerts and /api/stream; the
    # stream finds new rows by id (the primary key) and a level's previous by (host, id)
    """
    CREATE TABLE IF NOT EXISTS alerts (
      id INTEGER PRIMARY KEY,
      ts TEXT NOT NULL, t REAL NOT NULL, status TEXT NOT NULL, alertname TEXT NOT NULL,
      severity TEXT NOT NULL, summary TEXT NOT NULL, fingerprint TEXT NOT NULL,
      starts_at TEXT NOT NULL, ends_at TEXT, labels TEXT NOT NULL, receiver TEXT NOT NULL,
      group_key TEXT NOT NULL, host TEXT NOT NULL DEFAULT '',
      src_fp TEXT NOT NULL, src_offset INTEGER NOT NULL,
      UNIQUE (src_fp, src_offset));
    CREATE INDEX IF NOT EXISTS alerts_t ON alerts (t, id);
    CREATE INDEX IF NOT EXISTS alerts_status_t ON alerts (status, t, id);
    CREATE INDEX IF NOT EXISTS safety_host_id ON safety (host, id);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
WAL_PAGES = 4000  # SqliteStore's wal_autocheckpoint (see there)
PER_STATEMENT = 50  # rows of one INSERT (under SQLite's 999 bound variables: 50 * 11)


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


def migrate(db, host=None):
    """Apply the migrations the database has not had yet; returns (old, new) version.
    `host`: the id rows stored before host ids belong to (default: host_id())."""
    old = db.execute("PRAGMA user_version").fetchone()[0]
    for v in range(old, SCHEMA_VERSION):
        with db:
            db.execute("BEGIN")  # the whole step or none of it (executescript would commit)
            for stmt in MIGRATIONS[v].split(";"):
                if stmt.strip():
                    args = {"host": host or host_id()} if ":host" in stmt else ()
                    db.execute(stmt, args)
            db.execute(f"PRAGMA user_version = {v + 1}")
    return old, SCHEMA_VERSION


OFFSETS_DIR = "logs/.offsets"
HOST_ID_FILE = "host_id"
HOST_ID = re.compile(r"[^\x00-\x1f]{1,200}")  # as configs/schemas/api_v18.schema.json


def host_id(cfg=None, state_dir=OFFSETS_DIR, persist=False):
    """This host's id in the store's rows: the config's `host_id` (env LUMEN_HOST_ID), else
    the id kept beside the ingest positions (`state_dir/host_id`), else the machine's host
    name. A row's identity in a shared store is (host, source, offset), so the id must
    outlive the host name: a container gets a new one each time it is created, and its
    logs would be stored again under it. `persist` (the writers: ingest, db.init) keeps
    the id used in that file, saying so when it changes."""
    path = Path(state_dir) / HOST_ID_FILE
    try:
        kept = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        kept = ""
    kept = kept if HOST_ID.fullmatch(kept) else None
    host = (cfg or {}).get("host_id") or kept or socket.gethostname()
    if persist and host != kept:
        if kept:
            print(
                f"[store] warning: host id changes from {kept!r} (kept in {path}) to {host!r}: "
                "new rows are stored under the new id",
                file=sys.stderr,
                flush=True,
            )
        try:
            write_atomic(path, host.encode() + b"\n")
        except OSError as e:  # a full disk: the next start tries again
            print(f"[store] warning: host id not kept in {path}: {first_line(e)}", file=sys.stderr)
    return host


def db_url(cfg):
    """The store a config names: `db_url` (env LUMEN_DB_URL) when set, else the `db` file."""
    return cfg.get("db_url") or cfg["db"]


def is_postgres(url):
    return str(url).startswith(("postgresql://", "postgres://"))


def open_store(cfg, state_dir=OFFSETS_DIR):
    """The writer for the config's store (`Store`): PostgreSQL for a postgresql:// URL,
    else SQLite. Migrated to the current schema; its host id kept in `state_dir`."""
    url = db_url(cfg)
    host = host_id(cfg, state_dir, persist=True)
    if is_postgres(url):
        from . import pgstore

        return pgstore.PgStore(url, host)
    return SqliteStore(url, host)


def init(cfg):
    """db.init: create or migrate the config's store, print one line; returns the exit code."""
    url = db_url(cfg)
    if is_postgres(url):
        from . import pgstore

        kind, name, errors = "postgres", pgstore.redact(url), pgstore.psycopg.Error
    else:
        kind, name, errors = "sqlite", url, (sqlite3.DatabaseError, OSError)
    try:
        if kind == "postgres":
            old, new = pgstore.init(url)
        else:
            db = connect(url)
            try:
                old, new = migrate(db, host_id(cfg, persist=True))
            finally:
                db.close()
    except errors as e:
        print(f"error: {name}: {first_line(e)}", file=sys.stderr)
        return 1
    how = "created" if old == 0 else ("migrated from v%d" % old if old < new else "up to date")
    print(f"[{kind}] init ok: {name} schema v{new} ({how})")
    return 0


def name_of(url):
    """The store's name for messages (a PostgreSQL URL without its password)."""
    if is_postgres(url):
        from . import pgstore

        return pgstore.redact(url)
    return str(url)


def unavailable_errors(cfg):
    """The errors of opening the config's store that are worth waiting out."""
    if is_postgres(db_url(cfg)):
        from . import pgstore

        return pgstore.PgStore.RETRY
    return SqliteStore.RETRY


class Store:
    """What ingest needs of a store (SqliteStore here, pgstore.PgStore):

    - `transaction()`: a context in which `insert`, `stored` and an OffsetStore's `save`
      commit together, or not at all;
    - `insert(table, rows) -> (added, differ)`: rows (COLUMNS order) whose identity is new
      are added; `differ` is the set of (src_fp, src_offset) of the others whose stored row
      is not the same (a conflict; the same row again is a harmless replay);
    - `unstorable(table, row)`: why the store cannot hold this row (None: it can); only
      asked when `FILTERS` is true (a store that can hold every row skips the call);
    - `note_newest(table, rows)`: the host's newest row in `hosts`, if these are newer;
    - `offsets(consumer, legacy_json)`: that consumer's checkpoint store;
    - `RETRY`: the errors after which the same batch is tried again later (a full disk, a
      locked database, a server that went away);
    - `close()`.
    """

    RETRY = ()
    FILTERS = False  # True: some rows are unstorable, ask `unstorable` for each
    NEWEST = ("rmb", "ure")  # tables whose newest row the hosts table keeps

    def unstorable(self, table, row):
        return None

    def note_newest(self, table, rows):
        if table not in self.NEWEST or not rows:
            return
        t, ts = COLUMNS[table].index("t"), COLUMNS[table].index("ts")
        newest = max(rows, key=itemgetter(t))
        self._execute(
            f"UPDATE hosts SET {table}_t = ?, {table}_ts = ? "
            f"WHERE host = ? AND ({table}_t IS NULL OR {table}_t < ?)",
            (newest[t], newest[ts], self.host, newest[t]),
        )


class SqliteStore(Store):
    RETRY = (sqlite3.OperationalError,)

    def __init__(self, path, host):
        self.name, self.host = str(path), host
        self.db = connect(path)
        # The WAL is copied into the database (two fsyncs) when it holds this many pages:
        # 4000 (16 MB, the default is 1000) groups the fsyncs of a backfill four times as
        # much (a third faster), and stays under 4096, one hash table of the WAL index, so
        # readers look a page up as fast as before.
        self.db.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
        try:
            migrate(self.db, host)
            with self.db:
                self.db.execute(
                    "INSERT OR IGNORE INTO hosts (host, first_seen) VALUES (?, ?)",
                    (host, time.time()),
                )
        except BaseException:
            self.db.close()
            raise
        # The host is a literal of the statements (one host per file), so a row is bound
        # as built; rows go PER_STATEMENT to a statement (one VALUES list each), which
        # halves SQLite's work per row against a statement per row.
        host = "'" + host.replace("'", "''") + "'"
        self._sql = {}
        for table, cols in COLUMNS.items():
            one = f"({', '.join('?' * len(cols))}, {host})"
            head = f"INSERT OR IGNORE INTO {table} ({', '.join(cols)}, host) VALUES "
            self._sql[table] = (head + one, head + ", ".join([one] * PER_STATEMENT))

    def __str__(self):
        return self.name

    @contextlib.contextmanager
    def transaction(self):
        with self.db:
            yield

    def insert(self, table, rows):
        before = self.db.total_changes
        one, many = self._sql[table]
        k = PER_STATEMENT
        whole = len(rows) - len(rows) % k
        if whole:
            flat = list(chain.from_iterable(rows[:whole] if whole < len(rows) else rows))
            n = k * len(COLUMNS[table])
            self.db.executemany(many, [flat[i : i + n] for i in range(0, len(flat), n)])
        if whole < len(rows):
            self.db.executemany(one, rows[whole:])
        added = self.db.total_changes - before
        differ = self._differ(table, rows) if added < len(rows) else set()
        return added, differ

    def _differ(self, table, rows):
        """The identities of `rows` stored with another payload: some identities were
        stored already (a replay) and each is compared with the stored row, one range
        query per source file."""
        cols = COLUMNS[table]
        fp, off = cols.index("src_fp"), cols.index("src_offset")
        by_fp = {}
        for r in rows:
            by_fp.setdefault(r[fp], []).append(r)
        q = f"SELECT {', '.join(cols)} FROM {table} WHERE src_fp = ? AND src_offset BETWEEN ? AND ?"
        differ = set()
        for f, mine in by_fp.items():
            offs = [r[off] for r in mine]
            have = {r[off]: r for r in self.db.execute(q, (f, min(offs), max(offs)))}
            for r in mine:
                h = have.get(r[off])
                if h is not None and h != tuple(r):
                    differ.add((f, r[off]))
        return differ

    def _execute(self, sql, args):
        self.db.execute(sql, args)

    def offsets(self, consumer, legacy_json=None):
        return OffsetStore(self.db, consumer, legacy_json)

    def close(self):
        self.db.close()


# Rows from classified events (lumen.events): `pos` is the line's own (fp, offset, t).
def rmb_row(e, pos):
    """`e`: a typed v1 event (lumen.decoders; ingest reads the RMB log on that path)."""
    r3 = e.resonance_v3
    return (
        e.ts,
        e.entity_id,
        r3.residual_entropy,
        r3.phase_diff,
        r3.risk_band,
        pos.t,
        pos.fp,
        pos.offset,
        e.event_type,
    )


def ure_row(e, pos):
    loop = e.get("loop")  # outside the v2 schema: any JSON value, or none
    if type(loop) is dict:
        hz, batch = _number(loop.get("hz"), float), _number(loop.get("batch_size"), int)
    else:
        hz = batch = None
    return (
        e["ts"],
        e["phase_field"]["residual_entropy"],
        e["harmony_index"],
        e["coherence_level"],
        e.get("auto_reg_action", NO_ACTION),
        e["entity_id"],
        pos.t,
        pos.fp,
        pos.offset,
        hz,
        batch,
    )


NO_ACTION = vocab.NO_ACTION


INT64 = 1 << 63
# The text columns a writer fills freely; the others are schema enums, checked timestamps,
# fingerprints and numbers built to their column's type (`_number`).
FREE_TEXT = {
    "rmb": ("entity_id",),
    "ure": ("entity_id",),
    "safety": (),
    "alerts": (
        "alertname",
        "severity",
        "summary",
        "fingerprint",
        "starts_at",
        "ends_at",
        "receiver",
        "group_key",
    ),
}


def _number(v, kind):
    """`loop` is outside the v2 schema (any writer may put anything there): a finite number
    of the column's kind, else NULL, so every store can hold the row."""
    if type(v) not in (int, float) or v - v != 0:  # not a number, NaN or infinite
        return None
    if kind is int:
        return int(v) if v == int(v) and -INT64 <= v < INT64 else None
    return float(v)


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


def alert_row(e, pos):
    """An alert of logs/alerts.jsonl (schemas/alert_event_v1.json); its labels as JSON
    text, keys sorted, so the same line always makes the same row."""
    return (
        e["ts"],
        pos.t,
        e["status"],
        e["alertname"],
        e["severity"],
        e["summary"],
        e["fingerprint"],
        e["starts_at"],
        e["ends_at"],
        json.dumps(e["labels"], sort_keys=True, separators=(",", ":")),
        e["receiver"],
        e["group_key"],
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
    "alerts": (
        "ts",
        "t",
        "status",
        "alertname",
        "severity",
        "summary",
        "fingerprint",
        "starts_at",
        "ends_at",
        "labels",
        "receiver",
        "group_key",
        "src_fp",
        "src_offset",
    ),
}
