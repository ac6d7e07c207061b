"""The read-only HTTP API over data/lumen.db (blueprint sections 41 and 47), on 127.0.0.1:8088;
api/read_only.py (make api.readonly) runs it.

    GET /api/rmb:last            newest RMB row: {ts, residual, phase, risk} (section 41)
    GET /api/ure:last            newest URE row: {ts, residual, harmony, coherence, action}
    GET /api/rmb, /api/ure       rows newest first: limit, since, until, entity, risk|action,
                                 cursor (next page)
    GET /api/summary?window=10m  counts, rollbacks and rollback ratio over a window
    GET /healthz                 database reachable, schema version, ingest lag
    GET /api/series              per-step buckets for charts (window, step)
    GET /api/slo                 slo.report's verdicts over the stored rows
    GET /                        the live page (static/), charts from the endpoints above
    GET /openapi.json            the OpenAPI 3 document of all of this

The database is opened read-only (`mode=ro` URI, `PRAGMA query_only=1`). Connections are
pooled (opening one costs ~220 us of schema parsing and WAL setup): each query runs in its
own read transaction, so a reused connection still sees every commit made before it starts;
a database file replaced under the API (new inode) empties the pool. Every parameter is
validated: a bad value is 400 with a JSON body {"ok": false, "error": ..., "status": 400};
unknown paths 404, other methods 405, a missing database 503; never a stack trace. The
server is lumen.httpserve (request deadline, connection cap, JSON errors); binds
`api.host` (127.0.0.1) from configs/api_v18.yaml.
"""

import contextlib
import json
import os
import sqlite3
import sys
import threading
import time
from importlib import resources
from pathlib import Path

from lumen import CONFIGS, checkpoint, config
from lumen.api import openapi, queries
from lumen.proc import run_server

JSON = [("Content-Type", "application/json")]
POOL_IDLE = 32  # idle connections kept; more are opened under load and closed after
# Threads answering requests: more than the exporters' 4, so a few slow queries (/api/slo,
# a long /api/series) do not hold up the :last rows the live page polls.
WORKERS = 8
# The live page: package data of lumen.api (pyproject.toml), read through importlib.resources.
STATIC = resources.files("lumen.api") / "static"
# The only files served besides the API: nothing outside this list is reachable.
PAGES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
    "/static/uPlot.iife.min.js": (
        "vendor/uplot-1.6.31/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
    ),
    "/static/uPlot.min.css": ("vendor/uplot-1.6.31/uPlot.min.css", "text/css; charset=utf-8"),
}


def error(status, message):
    return status, JSON, json.dumps({"ok": False, "error": message, "status": status}).encode()


class Api:
    def __init__(self, cfg, offsets_dir="logs/.offsets"):
        self.cfg = cfg
        self.db_path = Path(cfg["db"]).resolve()
        self.limits = cfg["api"]
        self.offsets_dir = Path(offsets_dir)
        self.doc = json.dumps(openapi.document(self.limits["max_limit"])).encode()
        self.pages = {
            path: ((STATIC / f).read_bytes(), ctype) for path, (f, ctype) in PAGES.items()
        }
        policy = CONFIGS / "resonance_v3.policy.yaml"
        self.policies = config.load(policy, "resonance_v3.policy")["policies"]
        self._lock = threading.Lock()
        self._idle = []  # pooled connections, all to the file identified by self._file
        self._file = None

    def connect(self):
        """A new read-only connection (any thread may use it, one at a time)."""
        if not self.db_path.exists():
            raise FileNotFoundError(self.db_path)
        db = sqlite3.connect(
            f"{self.db_path.as_uri()}?mode=ro", uri=True, timeout=5, check_same_thread=False
        )
        db.execute("PRAGMA query_only=1")
        return db

    @contextlib.contextmanager
    def reader(self):
        """A pooled read-only connection for one request. Statements run in autocommit mode
        (each its own read transaction, ended when its cursor is done), so the connection
        holds no snapshot between requests and sees every commit made before a query."""
        st = os.stat(self.db_path)  # FileNotFoundError: the caller's 503
        file = (st.st_dev, st.st_ino)
        with self._lock:
            if file != self._file:  # a new database file: the old connections read the old one
                stale, self._idle, self._file = self._idle, [], file
            else:
                stale = []
            db = self._idle.pop() if self._idle else None
        for old in stale:
            old.close()
        db = db or self.connect()
        try:
            yield db
        except BaseException:
            # Not handed out again: the connection may be what failed, and a query stopped
            # part-way can leave a statement, and so an old snapshot, open on it.
            db.close()
            raise
        with self._lock:
            if file == self._file and len(self._idle) < POOL_IDLE and not db.in_transaction:
                self._idle.append(db)
                return
        db.close()

    def health(self):
        out = {"ok": True}
        try:
            with self.reader() as db:
                out["db"] = "ok"
                out["schema_version"] = db.execute("PRAGMA user_version").fetchone()[0]
                ages = {}
                for table in ("rmb", "ure"):
                    t = db.execute(f"SELECT MAX(t) FROM {table}").fetchone()[0]
                    ages[table] = None if t is None else round(time.time() - t, 3)
                # Ingest keeps its positions in the offsets table (schema v5), committed with
                # the rows; an older database has none, and its ingester used JSON files.
                if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'offsets'").fetchone():
                    stored = dict(db.execute("SELECT consumer, ck FROM offsets").fetchall())
                else:
                    stored = {}
        except (FileNotFoundError, sqlite3.Error) as e:
            return 503, {"ok": False, "db": f"unavailable: {type(e).__name__}: {e}"}
        ingest = {}
        for table, consumer, log in (
            ("rmb", "ingest_rmb", self.cfg["ingest"]["rmb_log"]),
            ("ure", "ingest_ure", self.cfg["ingest"]["v2_log"]),
        ):
            try:
                ck = (
                    json.loads(stored[consumer])
                    if consumer in stored
                    else checkpoint.load_json(self.offsets_dir / f"{consumer}.json")
                ) or {}
            except ValueError:  # a corrupt position: report the whole log as behind
                ck = {}
            try:
                st = os.stat(log)
                same = (st.st_dev, st.st_ino) == (ck.get("dev"), ck.get("ino"))
                behind = st.st_size - ck.get("offset", 0) if same else st.st_size
            except FileNotFoundError:
                behind = 0
            ingest[table] = {"bytes_behind": max(0, behind), "newest_row_age_s": ages[table]}
        out["ingest"] = ingest
        return 200, out

    def app(self, method, path, query):
        try:
            return self._route(method, path, query)
        except queries.BadRequest as e:
            return error(400, str(e))
        except FileNotFoundError:
            return error(503, f"database {self.cfg['db']} not found (run make db.init)")
        except sqlite3.Error as e:
            return error(503, f"database unavailable: {e}")
        except Exception as e:  # a bug: say so without a stack trace, one line for us
            tb = e.__traceback__
            while tb.tb_next:
                tb = tb.tb_next
            where = f"{Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}"
            print(
                f"[api] 500 on {path[:200]}: {type(e).__name__}: {e} ({where})",
                file=sys.stderr,
                flush=True,
            )
            return error(500, "internal error")

    def _route(self, method, path, query):
        if method not in ("GET", "HEAD"):
            st, hd, body = error(405, "method not allowed: use GET")
            return st, hd + [("Allow", "GET, HEAD")], body
        if path in self.pages:
            queries.check_known(query, set())
            body, ctype = self.pages[path]
            return 200, [("Content-Type", ctype), ("Cache-Control", "no-cache")], body
        if path == "/openapi.json":
            queries.check_known(query, set())
            return 200, JSON, self.doc
        if path == "/healthz":
            queries.check_known(query, set())
            st, body = self.health()
            return st, JSON, json.dumps(body).encode()
        handlers = {
            "/api/rmb:last": lambda db: queries.rmb_last(db, query),
            "/api/ure:last": lambda db: queries.ure_last(db, query),
            "/api/rmb": lambda db: queries.list_rows(
                db, "rmb", query, self.limits["default_limit"], self.limits["max_limit"]
            ),
            "/api/ure": lambda db: queries.list_rows(
                db, "ure", query, self.limits["default_limit"], self.limits["max_limit"]
            ),
            "/api/summary": lambda db: queries.summary(db, query),
            "/api/series": lambda db: queries.series(db, query),
            "/api/slo": lambda db: queries.slo_verdicts(db, query, self.policies, 100),
        }
        handler = handlers.get(path)
        if handler is None:
            return error(404, f"no such path: {path[:200]}")
        with self.reader() as db:
            out = handler(db)
        return 200, JSON, json.dumps(out).encode()


def serve(cfg, name):
    """Serve the API on api.host:api.port until SIGTERM; returns the exit code."""
    api = Api(cfg)
    a = cfg["api"]
    host = "localhost" if a["host"] in ("127.0.0.1", "::1") else a["host"]
    return run_server(
        name,
        api.app,
        a["host"],
        a["port"],
        f"[api] http://{host}:{{port}}",
        timeout=a["request_timeout_s"],
        max_url=a["max_url_bytes"],
        workers=WORKERS,
    )
