"""Read-only connections for the API, pooled, to either store: the SQLite file (the
embedded default) or PostgreSQL (`db_url`, many hosts).

`pool.reader()` lends a `Db` for one request: `execute(sql, args)` with `?` placeholders
whichever the store, `bucket` (the SQL of a time bucket number, `t / step` rounded down),
`schema_version()` and `offsets(host)`. Statements run in autocommit mode, each its own
read transaction, so a pooled connection holds no snapshot between requests and sees
every commit made before a query. A connection whose request failed is closed, never
lent again. `pool.ERRORS`: the errors that mean "store unavailable" (the API's 503).
"""

import contextlib
import os
import sqlite3
import threading
from pathlib import Path

from lumen import storage

POOL_IDLE = 32  # idle connections kept; more are opened under load and closed after


class Db:
    __slots__ = ("conn", "bucket", "_pg")

    def __init__(self, conn, pg):
        self.conn, self._pg = conn, pg
        self.bucket = "FLOOR(t / ?)::bigint" if pg else "CAST(t / ? AS INTEGER)"

    def execute(self, sql, args=()):
        if self._pg:
            return self.conn.execute(sql.replace("?", "%s"), args)
        return self.conn.execute(sql, args)

    def schema_version(self):
        if self._pg:
            from lumen import pgstore

            return pgstore.schema_version(self.conn)
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    def offsets(self, host):
        """{consumer: checkpoint JSON} of `host`'s ingester ({} before the offsets table)."""
        if self._pg:
            q = "SELECT consumer, ck FROM offsets WHERE host = %s"
            return dict(self.conn.execute(q, (host,)).fetchall())
        if not self.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'offsets'").fetchone():
            return {}
        return dict(self.conn.execute("SELECT consumer, ck FROM offsets").fetchall())


class _Pool:
    def __init__(self):
        self._lock = threading.Lock()
        self._idle = []
        self._key = None

    def _current(self):
        """What identifies the store now; a change empties the pool."""
        return None

    def _open(self):
        raise NotImplementedError

    def _idle_ok(self, conn):
        return True

    @contextlib.contextmanager
    def reader(self):
        key = self._current()
        with self._lock:
            if key != self._key:  # another store under the same name: drop the old ones
                stale, self._idle, self._key = self._idle, [], key
            else:
                stale = []
            conn = self._idle.pop() if self._idle else None
        for old in stale:
            old.close()
        conn = conn or self._open()
        try:
            yield Db(conn, self.PG)
        except BaseException:
            # Not lent again: the connection may be what failed, and a query stopped
            # part-way can leave a statement, and so an old snapshot, open on it.
            conn.close()
            raise
        with self._lock:
            if key == self._key and len(self._idle) < POOL_IDLE and self._idle_ok(conn):
                self._idle.append(conn)
                return
        conn.close()

    def close(self):
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class SqlitePool(_Pool):
    """Read-only (`mode=ro`, `query_only`) connections to the SQLite file; a file replaced
    under the API (a new inode) empties the pool."""

    PG = False
    ERRORS = (FileNotFoundError, sqlite3.Error)

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.name = str(path)

    def _current(self):
        st = os.stat(self.path)  # FileNotFoundError: the caller's 503
        return st.st_dev, st.st_ino

    def _open(self):
        db = sqlite3.connect(
            f"{self.path.as_uri()}?mode=ro", uri=True, timeout=5, check_same_thread=False
        )
        db.execute("PRAGMA query_only=1")
        return db

    def _idle_ok(self, conn):
        return not conn.in_transaction


class PgPool(_Pool):
    """Read-only sessions (`default_transaction_read_only`) to the PostgreSQL database,
    each statement bounded by the request deadline (`statement_timeout`)."""

    PG = True

    def __init__(self, url, timeout_s):
        super().__init__()
        from lumen import pgstore

        self._pgstore = pgstore
        self.url, self.name = url, pgstore.redact(url)
        self.timeout_ms = max(1, int(timeout_s * 1000))
        self.ERRORS = (pgstore.psycopg.Error,)

    def _open(self):
        # prepare_threshold=None: no server-side prepared statements, so every query is
        # planned for its own parameters. A generic plan of `entity_id = $1 ORDER BY t DESC
        # LIMIT 1` walks the time index backwards, which for an entity with no rows reads
        # the whole table (measured: /api/ure:last fell from 3 351 to 16 req/s once
        # autovacuum had analyzed the tables).
        return self._pgstore.connect(
            self.url,
            prepare_threshold=None,
            options=f"-c default_transaction_read_only=on -c statement_timeout={self.timeout_ms}",
        )

    def _idle_ok(self, conn):
        return not conn.closed and not conn.broken


def pool(cfg, timeout_s):
    """The reader pool for the config's store."""
    url = storage.db_url(cfg)
    if storage.is_postgres(url):
        return PgPool(url, timeout_s)
    return SqlitePool(Path(url).resolve())
