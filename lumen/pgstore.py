"""The PostgreSQL store (15 or later): one database for many hosts, beside the embedded
SQLite store (lumen/storage.py), with the same tables, rows and writer interface.

A row's identity is (host, src_fp, src_offset): the host that read it, the fingerprint of
its log file there and the line's offset, under a UNIQUE constraint. Each host's ingest
consumers keep their checkpoints in `offsets` keyed by (host, consumer), written in the
same transaction as the rows, so a kill -9 of any host's ingester neither loses nor
duplicates a row, and hosts never wait on each other's rows. Rows go in by COPY; a batch
that brings stored identities again (a replay) goes by COPY into a temporary table, then
one INSERT … ON CONFLICT DO NOTHING, since COPY alone cannot skip them.

The schema version is the `lumen_schema` table; `migrate` applies what is missing under
an advisory lock, so hosts starting together migrate once. A server that goes away (a
restart, a failover) is reconnected to on the next batch, which is retried whole.
"""

import contextlib
import json
import re
import time

import psycopg

from . import storage
from .checkpoint import CorruptState

ID = "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
KEY = "host TEXT NOT NULL, src_fp TEXT NOT NULL, src_offset BIGINT NOT NULL"
MIGRATIONS = [
    # 1: the SQLite store's tables at its schema v6, keyed by host
    f"""
    CREATE TABLE IF NOT EXISTS rmb ({ID},
      ts TEXT NOT NULL, entity_id TEXT NOT NULL, residual DOUBLE PRECISION NOT NULL,
      phase DOUBLE PRECISION NOT NULL, risk TEXT NOT NULL, t DOUBLE PRECISION NOT NULL,
      event_type TEXT NOT NULL, {KEY}, UNIQUE (host, src_fp, src_offset));
    CREATE TABLE IF NOT EXISTS ure ({ID},
      ts TEXT NOT NULL, residual DOUBLE PRECISION NOT NULL, harmony DOUBLE PRECISION NOT NULL,
      coherence DOUBLE PRECISION NOT NULL, action TEXT NOT NULL, entity_id TEXT NOT NULL,
      t DOUBLE PRECISION NOT NULL, hz DOUBLE PRECISION, batch_size BIGINT,
      {KEY}, UNIQUE (host, src_fp, src_offset));
    CREATE TABLE IF NOT EXISTS safety ({ID},
      ts TEXT NOT NULL, t DOUBLE PRECISION NOT NULL, final TEXT NOT NULL,
      residual_level TEXT NOT NULL, ratio_level TEXT NOT NULL,
      residual DOUBLE PRECISION, ratio DOUBLE PRECISION,
      {KEY}, UNIQUE (host, src_fp, src_offset));
    CREATE TABLE IF NOT EXISTS offsets (host TEXT NOT NULL, consumer TEXT NOT NULL,
      ck TEXT NOT NULL, PRIMARY KEY (host, consumer));
    CREATE TABLE IF NOT EXISTS hosts (host TEXT PRIMARY KEY,
      first_seen DOUBLE PRECISION NOT NULL);
    CREATE INDEX IF NOT EXISTS rmb_t ON rmb (t, id);
    CREATE INDEX IF NOT EXISTS rmb_host_t ON rmb (host, t, id);
    CREATE INDEX IF NOT EXISTS rmb_entity_t ON rmb (entity_id, t, id);
    CREATE INDEX IF NOT EXISTS rmb_risk_t ON rmb (risk, t, id);
    CREATE INDEX IF NOT EXISTS ure_t ON ure (t, id);
    CREATE INDEX IF NOT EXISTS ure_host_t ON ure (host, t, id);
    CREATE INDEX IF NOT EXISTS ure_entity_t ON ure (entity_id, t, id);
    CREATE INDEX IF NOT EXISTS ure_action_t ON ure (action, t, id);
    CREATE INDEX IF NOT EXISTS safety_t ON safety (t, id);
    CREATE INDEX IF NOT EXISTS safety_host_t ON safety (host, t, id)
    """,
    # 2: each host's newest RMB and URE row (SQLite schema v7)
    """
    ALTER TABLE hosts ADD COLUMN IF NOT EXISTS rmb_t DOUBLE PRECISION,
      ADD COLUMN IF NOT EXISTS rmb_ts TEXT, ADD COLUMN IF NOT EXISTS ure_t DOUBLE PRECISION,
      ADD COLUMN IF NOT EXISTS ure_ts TEXT;
    """
    + storage.NEWEST_BACKFILL,
    # 3: Alertmanager's alerts (SQLite schema v8), and a level's previous by (host, id)
    f"""
    CREATE TABLE IF NOT EXISTS alerts ({ID},
      ts TEXT NOT NULL, t DOUBLE PRECISION NOT NULL, status TEXT NOT NULL,
      alertname TEXT NOT NULL, severity TEXT NOT NULL, summary TEXT NOT NULL,
      fingerprint TEXT NOT NULL, starts_at TEXT NOT NULL, ends_at TEXT, labels TEXT NOT NULL,
      receiver TEXT NOT NULL, group_key TEXT NOT NULL, {KEY}, UNIQUE (host, src_fp, src_offset));
    CREATE INDEX IF NOT EXISTS alerts_t ON alerts (t, id);
    CREATE INDEX IF NOT EXISTS alerts_host_t ON alerts (host, t, id);
    CREATE INDEX IF NOT EXISTS alerts_status_t ON alerts (status, t, id);
    CREATE INDEX IF NOT EXISTS safety_host_id ON safety (host, id)
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
MIGRATE_LOCK = 0x4C554D45  # "LUME": pg_advisory_xact_lock key of `migrate`
# The tables /api/stream follows by id: their inserts take this lock (key MIGRATE_LOCK, n)
# until commit, so ids are given out in commit order and a reader that has seen id N
# never sees a smaller one commit later (identity values of concurrent transactions
# otherwise commit out of order).
STREAMED = {"rmb": 1, "safety": 2, "alerts": 3}
CONNECT_TIMEOUT_S = 10


def redact(url):
    """The URL without its password, for messages."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", str(url))


def connect(url, **kw):
    """A connection in autocommit mode: a statement outside `conn.transaction()` is its
    own transaction, so none is ever left open between batches or requests."""
    return psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True, **kw)


def migrate(conn):
    """Apply the migrations the database has not had; returns (old, new) version."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS lumen_schema (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM lumen_schema").fetchone()
        old = row[0] if row else 0
        for v in range(old, SCHEMA_VERSION):
            for stmt in MIGRATIONS[v].split(";"):
                if stmt.strip():
                    conn.execute(stmt)
        if row is None:
            conn.execute("INSERT INTO lumen_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
        else:
            conn.execute("UPDATE lumen_schema SET version = %s", (SCHEMA_VERSION,))
    return old, SCHEMA_VERSION


def init(url):
    """db.init: migrate the database at `url`; returns (old, new) version."""
    with connect(url) as conn:
        return migrate(conn)


def schema_version(conn):
    try:
        row = conn.execute("SELECT version FROM lumen_schema").fetchone()
    except psycopg.errors.UndefinedTable:
        return 0
    return row[0] if row else 0


class OffsetStore:
    """A consumer's checkpoint in `offsets`, keyed by (host, consumer); `save` runs in the
    caller's transaction (see storage.OffsetStore)."""

    def __init__(self, store, consumer):
        self.store, self.consumer = store, consumer

    def __str__(self):
        return f"{self.consumer} of host {self.store.host} in the offsets table"

    def load(self):
        row = self.store.conn.execute(
            "SELECT ck FROM offsets WHERE host = %s AND consumer = %s",
            (self.store.host, self.consumer),
        ).fetchone()
        if row is None:
            return None
        try:
            return json.loads(row[0])
        except ValueError:
            raise CorruptState(
                f"offsets table, host {self.store.host}, consumer {self.consumer}: corrupt"
            ) from None

    def save(self, ck):
        self.store.conn.execute(
            "INSERT INTO offsets (host, consumer, ck) VALUES (%s, %s, %s) "
            "ON CONFLICT (host, consumer) DO UPDATE SET ck = EXCLUDED.ck",
            (self.store.host, self.consumer, json.dumps(ck, sort_keys=True)),
        )


class PgStore(storage.Store):
    # Connection lost, server shutting down, disk full (class 53), too many connections:
    # all OperationalError. The batch stays pending and is tried again.
    RETRY = (psycopg.OperationalError,)
    FILTERS = True  # text with a NUL character is unstorable

    def __init__(self, url, host):
        self.url, self.host = url, host
        self.conn = None
        self._connect()
        cols = storage.COLUMNS
        # Binary COPY: the rows are built to their columns' types (storage), sent as they
        # are in memory; the server parses no text (about 4x less client time per row).
        binary = "FROM STDIN (FORMAT BINARY)"
        self._direct = {t: f"COPY {t} ({', '.join(c)}, host) {binary}" for t, c in cols.items()}
        self._copy = {t: f"COPY stage_{t} ({', '.join(c)}) {binary}" for t, c in cols.items()}
        self._insert = {
            t: f"INSERT INTO {t} (host, {', '.join(c)}) SELECT %s, {', '.join(c)} "
            f"FROM stage_{t} ON CONFLICT (host, src_fp, src_offset) DO NOTHING"
            for t, c in cols.items()
        }
        self._free = {t: [c.index(n) for n in storage.FREE_TEXT[t]] for t, c in cols.items()}
        self._differ = {
            t: f"SELECT s.src_fp, s.src_offset FROM stage_{t} s JOIN {t} r ON r.host = %s "
            "AND r.src_fp = s.src_fp AND r.src_offset = s.src_offset WHERE "
            f"({', '.join('r.' + n for n in c)}) IS DISTINCT FROM "
            f"({', '.join('s.' + n for n in c)})"
            for t, c in cols.items()
        }

    def __str__(self):
        return redact(self.url)

    def _connect(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        conn = connect(self.url)
        try:
            migrate(conn)
            with conn.transaction():
                conn.execute(
                    "INSERT INTO hosts (host, first_seen) VALUES (%s, %s) "
                    "ON CONFLICT (host) DO NOTHING",
                    (self.host, time.time()),
                )
                # Per-session staging tables, emptied by every commit.
                for t, c in storage.COLUMNS.items():
                    conn.execute(
                        f"CREATE TEMP TABLE IF NOT EXISTS stage_{t} ON COMMIT DELETE ROWS AS "
                        f"SELECT {', '.join(c)} FROM {t} WITH NO DATA"
                    )
            # The columns' types, for binary COPY (the staging tables' are the same).
            self._types = {}
            for t, c in storage.COLUMNS.items():
                oid = dict(
                    conn.execute(
                        "SELECT attname, atttypid FROM pg_attribute WHERE attrelid = %s::regclass "
                        "AND attnum > 0 AND NOT attisdropped",
                        (t,),
                    ).fetchall()
                )
                self._types[t] = [oid[n] for n in c]
                self._types[t + "+host"] = self._types[t] + [oid["host"]]
        except BaseException:
            conn.close()
            raise
        self.conn = conn

    @contextlib.contextmanager
    def transaction(self):
        if self.conn is None or self.conn.broken or self.conn.closed:
            self._connect()  # OperationalError: still away; the caller retries
        with self.conn.transaction():
            yield

    def insert(self, table, rows):
        if table in STREAMED:
            self.conn.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)", (MIGRATE_LOCK, STREAMED[table])
            )
        # Most batches are new lines: COPY them straight in, inside a savepoint. A batch
        # that brings identities again (a replay) fails on the UNIQUE key as a whole; it
        # goes through the staging table instead, which skips what is stored and finds, in
        # one query, the stored rows whose payload differs.
        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                with cur.copy(self._direct[table]) as copy:
                    copy.set_types(self._types[table + "+host"])
                    host = (self.host,)
                    for r in rows:
                        copy.write_row(r + host)
            return len(rows), set()
        except psycopg.errors.UniqueViolation:
            pass
        with self.conn.cursor() as cur:
            with cur.copy(self._copy[table]) as copy:
                copy.set_types(self._types[table])
                for r in rows:
                    copy.write_row(r)
            cur.execute(self._insert[table], (self.host,))
            added = cur.rowcount
            differ = set(cur.execute(self._differ[table], (self.host,)).fetchall())
        return added, differ

    def unstorable(self, table, row):
        """What PostgreSQL refuses of a row built to the columns' types: a NUL character
        in text (only the free text columns can hold one)."""
        for i in self._free[table]:
            if row[i] is not None and "\x00" in row[i]:
                return f"{storage.COLUMNS[table][i]} holds a NUL character (PostgreSQL text cannot)"
        return None

    def _execute(self, sql, args):
        self.conn.execute(sql.replace("?", "%s"), args)

    def offsets(self, consumer, legacy_json=None):
        return OffsetStore(self, consumer)

    def close(self):
        if self.conn is not None:
            self.conn.close()
