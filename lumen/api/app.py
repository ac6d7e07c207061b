"""The read-only HTTP API over the store (blueprint sections 41 and 47), on 127.0.0.1:8088;
api/read_only.py (make api.readonly) runs it. The store is data/lumen.db (SQLite), or the
PostgreSQL database many hosts share (`db_url`, LUMEN_DB_URL); every list and summary
takes `host=ID` for one host's rows.

    GET /api/rmb:last            newest RMB row: {ts, residual, phase, risk} (section 41)
    GET /api/ure:last            newest URE row: {ts, residual, harmony, coherence, action}
    GET /api/rmb, /api/ure       rows newest first: limit, since, until, entity, risk|action,
                                 cursor (next page)
    GET /api/alerts              Alertmanager's alerts newest first: limit, since, until,
                                 status, cursor
    GET /api/stream              server-sent events: new rows, level changes, SLO verdicts,
                                 alerts (lumen/api/stream.py, one poller: lumen/api/hub.py)
    GET /api/summary?window=10m  counts, rollbacks and rollback ratio over a window
    GET /api/hosts?window=10m    per host: counts and ratio over a window, newest rows
    GET /healthz                 database reachable, schema version, ingest lag
    GET /api/series              per-step buckets for charts (window, step)
    GET /api/slo                 slo.report's verdicts over the stored rows
    GET /api/sound               the Safety Music sound map the live page plays (api.sound_map)
    GET /                        the live page (static/), charts from the endpoints above
    GET /openapi.json            the OpenAPI 3 document of all of this

Formats (lumen/api/formats.py): `_format=json` (the default), `csv` or `ndjson` on the
lists (/api/rmb, /api/ure, /api/alerts, /api/hosts); `_stream=on` on the row lists for every
matching row instead of one page. A list of more rows than one batch (BATCH) is streamed:
each batch read by its own query and written to the socket before the next is read, the
answer chunked (no Content-Length), so an export of any size holds one batch in memory.

Caching and compression (lumen/httprep.py, applied by lumen.httpserve): every answer says
`Cache-Control: no-cache` (a client may keep it but asks again, with If-None-Match); a
whole 200 body has a weak ETag of its bytes, and a matching If-None-Match is a 304 with no
body; gzip when the client takes it, for whole bodies and streams.

Connections are read-only and pooled (lumen/api/readers.py; opening an SQLite one costs
~220 us of schema parsing and WAL setup): each query runs in its own read transaction, so
a reused connection still sees every commit made before it starts. Every parameter is
validated: a bad value is 400 with a JSON body {"ok": false, "error": ..., "status": 400};
unknown paths 404, other methods 405, a missing or unreachable store 503; never a stack
trace. The
server is lumen.httpserve (request deadline, connection cap, JSON errors); binds
`api.host` (127.0.0.1) from configs/api_v18.yaml.
"""

import json
import os
import sys
import time
from importlib import resources
from pathlib import Path

from lumen import CONFIGS, checkpoint, config, httpserve, storage
from lumen.api import formats, hub, lists, openapi, queries, readers
from lumen.api import stream as sse
from lumen.safety import sound
from lumen.proc import first_line, run_server

JSON = [("Content-Type", "application/json")]
FRESH = ("Cache-Control", "no-cache")  # on every answer: clients revalidate (ETag) each time
BATCH = 1000  # rows read, rendered and sent at a time by a streamed list
# Threads answering requests: more than the exporters' 4, so a few slow queries (/api/slo,
# a long /api/series) do not hold up the :last rows the live page polls.
WORKERS = 8
SOUND_MAP = "configs/midi_map_v18.json"  # api.sound_map's default, the loop's map
# The live page: package data of lumen.api (pyproject.toml), read through importlib.resources.
STATIC = resources.files("lumen.api") / "static"
# The only files served besides the API: nothing outside this list is reachable.
PAGES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/sound.js": ("sound.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
    "/static/uPlot.iife.min.js": (
        "vendor/uplot-1.6.31/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
    ),
    "/static/uPlot.min.css": ("vendor/uplot-1.6.31/uPlot.min.css", "text/css; charset=utf-8"),
}


def error(status, message):
    body = json.dumps({"ok": False, "error": message, "status": status}).encode()
    return status, JSON + [FRESH], body


class Api:
    def __init__(self, cfg, offsets_dir=storage.OFFSETS_DIR):
        self.cfg = cfg
        self.limits = cfg["api"]
        self.offsets_dir = Path(offsets_dir)
        self.host = storage.host_id(cfg, offsets_dir)
        self.pool = readers.pool(cfg, self.limits["request_timeout_s"])
        doc = json.dumps(openapi.document(self.limits["max_limit"])).encode()
        self.pages = {
            path: ((STATIC / f).read_bytes(), ctype) for path, (f, ctype) in PAGES.items()
        }
        # The Safety Music map, read and checked once: a bad one stops the API (exit 2).
        smap = sound.load_map(config.shipped(self.limits.get("sound_map", SOUND_MAP)))
        # The answers that never change while the API runs.
        self.fixed = {"/openapi.json": doc, "/api/sound": json.dumps(sound.for_page(smap)).encode()}
        policy = CONFIGS / "resonance_v3.policy.yaml"
        self.policies = config.load(policy, "resonance_v3.policy")["policies"]
        self.stream_limits = sse.limits(self.limits)
        self.hub = hub.Hub(self.reader, self.pool.ERRORS, self._slo, self.stream_limits)
        lim = (self.limits["default_limit"], self.limits["max_limit"])
        self.handlers = {  # path -> handler(db, query) of the JSON answer
            "/api/rmb:last": queries.rmb_last,
            "/api/ure:last": queries.ure_last,
            "/api/rmb": lambda db, q: lists.list_rows(db, "rmb", q, *lim),
            "/api/ure": lambda db, q: lists.list_rows(db, "ure", q, *lim),
            "/api/alerts": lambda db, q: lists.list_rows(db, "alerts", q, *lim),
            "/api/summary": queries.summary,
            "/api/hosts": queries.hosts,
            "/api/series": queries.series,
            "/api/slo": lambda db, q: queries.slo_verdicts(db, q, self.policies, 100),
        }

    def reader(self):
        return self.pool.reader()

    def _slo(self, db, host):
        """The /api/slo answer for one host (None: all of them), for the stream's hub."""
        return queries.slo_verdicts(db, {"host": [host]} if host else {}, self.policies, 100)

    def health(self):
        out = {"ok": True, "host": self.host}
        try:
            with self.reader() as db:
                out["db"] = "ok"
                out["schema_version"] = db.schema_version()
                # this host's newest rows, kept in `hosts` by ingest (one row, any size)
                row = db.execute(
                    "SELECT rmb_t, ure_t FROM hosts WHERE host = ?", (self.host,)
                ).fetchone() or (None, None)
                ages = {
                    table: None if t is None else round(time.time() - t, 3)
                    for table, t in zip(("rmb", "ure"), row)
                }
                # Ingest keeps its positions in the offsets table, committed with the rows;
                # an older SQLite database has none, and its ingester used JSON files.
                stored = db.offsets(self.host)
        except self.pool.ERRORS as e:
            return 503, {"ok": False, "db": f"unavailable: {type(e).__name__}: {first_line(e)}"}
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

    def app(self, method, path, query, headers=None):
        try:
            return self._route(method, path, dict(query), headers)
        except queries.BadRequest as e:
            return error(400, str(e))
        except sse.Busy as e:
            st, hd, body = error(503, str(e))
            return st, hd + [("Retry-After", str(e.retry_after))], body
        except FileNotFoundError:
            return error(503, f"database {self.pool.name} not found (run make db.init)")
        except self.pool.ERRORS as e:
            return error(503, f"database unavailable: {first_line(e)}")
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

    def _route(self, method, path, query, headers):
        if method not in ("GET", "HEAD"):
            st, hd, body = error(405, "method not allowed: use GET")
            return st, hd + [("Allow", "GET, HEAD")], body
        if path in self.pages:
            queries.check_known(query, set())
            body, ctype = self.pages[path]
            return 200, [("Content-Type", ctype), FRESH], body
        if path in self.fixed:
            queries.check_known(query, set())
            return 200, JSON + [FRESH], self.fixed[path]
        if path == "/healthz":
            queries.check_known(query, set())
            st, body = self.health()
            return st, JSON + [FRESH], json.dumps(body).encode()
        if path == "/api/stream":
            return sse.open_stream(self.hub, query, headers, self.stream_limits)
        handler = self.handlers.get(path)
        if handler is None:
            return error(404, f"no such path: {path[:200]}")
        fmt, stream = formats.take(query, formats.KINDS.get(path, formats.OBJECT))
        if fmt != "json" or stream:
            if path == "/api/hosts":
                return self._hosts(query, fmt)
            return self._export(path[5:], query, fmt, stream)
        with self.reader() as db:
            out = handler(db, query)
        return 200, JSON + [FRESH], json.dumps(out).encode()

    def _export(self, table, query, fmt, stream):
        """A row list as CSV, NDJSON or streamed JSON: whole when one batch holds every row
        (so it has a Content-Length and an ETag), else streamed batch by batch."""
        lq = lists.ListQuery(table, query, self.limits["default_limit"], self.limits["max_limit"])
        cap = None if stream and "limit" not in query else lq.limit
        rows = lists.Rows(self.reader, lq, cap, BATCH)
        item = (lambda r: lists.item(table, r)) if table in lists.NESTED else None
        body = formats.rows(fmt, lists.KEYS[table], rows, rows, item)
        if rows.done:
            body = b"".join(body)
        return 200, formats.headers(fmt, table) + [FRESH], body

    def _hosts(self, query, fmt):
        """/api/hosts as CSV or NDJSON: one row per host (whole: a few rows)."""
        with self.reader() as db:
            hosts = queries.hosts(db, query)["hosts"]
        columns = list(formats.flatten(queries.HOST_TEMPLATE))
        body = formats.objects(fmt, columns, hosts)
        return 200, formats.headers(fmt, "hosts") + [FRESH], body


def serve(cfg, name):
    """Serve the API on api.host:api.port until SIGTERM; returns the exit code."""
    api = Api(cfg)
    a = cfg["api"]
    longest = api.stream_limits["max_duration_s"] + 60  # an event stream ends itself before
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
        negotiate=True,
        worker=api.hub.run,
        stream_timeout=max(httpserve.STREAM_TIMEOUT_S, longest),
        request_headers=True,
    )
