"""The bench's PostgreSQL rows, beside SQLite's (bench --only): the same stages
(stages.ingest_store, servers.api, servers.api_16, servers.api_clients) with LUMEN_DB_URL
naming a database of a private cluster (lumen.harness.pgserver.PgServer) and
LUMEN_HOST_ID the host the rows are written as.

- ingest: one backfill of both logs into PostgreSQL (no floor: a store holds each row once);
- api, api_16, api_clients: the read-only API on PostgreSQL (its database ingested first).
Rows are labelled "... (PostgreSQL)". The cluster is started by the first of these stages
of a run and stopped by close() (the runner's `finally`); each generated log gets its own
database. Without PostgreSQL binaries (pgserver.Unavailable) one line says so and the
stages add no rows.
"""

import contextlib
import functools
import os
import sys

from lumen.harness import pgserver
from lumen.harness.bench import servers, stages

LABEL = " (PostgreSQL)"
HOST = "bench"
_cluster = []  # [the run's PgServer], or [None] once it was found unavailable
_dbs = {}  # log directory -> [its database's URL, ingested]


def _server():
    if not _cluster:
        try:
            _cluster.append(pgserver.PgServer().__enter__())
        except pgserver.Unavailable as e:
            print(f"[bench] PostgreSQL rows skipped: {e}", file=sys.stderr, flush=True)
            _cluster.append(None)
    return _cluster[0]


def close():
    """Stop the run's cluster (and remove its data), if one was started."""
    if _cluster and _cluster[0] is not None:
        _cluster[0].stop()
    _cluster.clear()
    _dbs.clear()


@contextlib.contextmanager
def _environment(url):
    saved = {k: os.environ.get(k) for k in ("LUMEN_DB_URL", "LUMEN_HOST_ID")}
    os.environ.update(LUMEN_DB_URL=url, LUMEN_HOST_ID=HOST)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _on_postgres(stage):
    """`stage(d, n, ...)` run with the environment naming the database of the log in `d`
    (created on first use); nothing when PostgreSQL is unavailable."""

    @functools.wraps(stage)
    def run(d, n, *args, **kw):
        pg = _server()
        if pg is None:
            return None
        if d not in _dbs:
            _dbs[d] = [pg.create_db(f"lumen{len(_dbs)}"), False]
        with _environment(_dbs[d][0]):
            return stage(d, n, *args, **kw)

    return run


@_on_postgres
def ingest(d, n, opts=None):
    stages.ingest_store(d, n, LABEL, name="benchingestpg")
    _dbs[d][1] = True


def _ingested(d, n):
    if not _dbs[d][1]:
        ingest(d, n)


@_on_postgres
def api(d, n, opts):
    servers.api(d, n, opts, LABEL, prepare=_ingested)


@_on_postgres
def api_16(d, n, opts):
    servers.api_16(d, n, opts, LABEL, prepare=_ingested)


@_on_postgres
def api_clients(d, n, opts):
    servers.api_clients(d, n, opts, LABEL, prepare=_ingested)
