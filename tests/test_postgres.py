"""The PostgreSQL store, against a real private server (lumen/harness/pgserver.py): db.init
on many hosts at once, the API's answers equal to SQLite's, exactly-once ingest through a
crash inside the transaction and a server that goes away, rows PostgreSQL cannot hold
quarantined; the event stream (/api/stream) the same from either store, and every row of
hosts ingesting at once seen once. Many hosts with one Prometheus: tests/test_hosts.py."""

import json
import os
import signal
import subprocess
import threading
import time

import pytest

from conftest import PY, ROOT, emit, wait_until, unavailable
from lumen import config, httpserve, pgstore, timefmt
from lumen.harness import pgserver

INGEST = ROOT / "tools/storage/ingest_tail_v18.py"
DB_INIT = ROOT / "tools/storage/sqlite_init_v17_18.py"
CONFIG_API = ROOT / "configs/api_v18.yaml"


def require_pg():
    try:
        pgserver.bindir()
    except pgserver.Unavailable as e:
        unavailable(f"PostgreSQL is required: {e}")


@pytest.fixture(scope="module")
def pg():
    require_pg()
    with pgserver.PgServer() as server:
        yield server


@pytest.fixture
def db_url(pg, request):
    """A fresh database on the module's server, for one test."""
    return pg.create_db(f"t_{request.node.name[:40].lower()}_{os.getpid()}")


def env(url=None, host="h1", **extra):
    e = {k: v for k, v in os.environ.items() if k not in ("LUMEN_DB", "LUMEN_DB_URL")}
    e.update({"LUMEN_HOST_ID": host, **{k: str(v) for k, v in extra.items()}})
    if url:
        e["LUMEN_DB_URL"] = url
    return e


def run(cwd, script, *args, url=None, host="h1", timeout=120, **extra):
    return subprocess.run(
        [PY, str(script), *map(str, args)],
        cwd=cwd,
        env=env(url, host, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def rows(url, host=None, table="rmb"):
    """[(src_fp, src_offset, ts, entity_id)] stored, in identity order."""
    import psycopg

    where = "WHERE host = %s" if host else ""
    with psycopg.connect(url) as c:
        try:
            return c.execute(
                f"SELECT src_fp, src_offset, ts, entity_id FROM {table} {where} "
                "ORDER BY src_fp, src_offset",
                (host,) if host else (),
            ).fetchall()
        except psycopg.errors.UndefinedTable:  # the ingester has not created it yet
            return []


def log_lines(path):
    """[(offset, ts, entity_id)] of every line of a log the emitter wrote (all valid)."""
    out, off = [], 0
    with open(path, "rb") as f:
        for line in f:
            e = json.loads(line)
            out.append((off, e["ts"], e["entity_id"]))
            off += len(line)
    return out


def assert_exactly_once(url, host, log):
    stored = rows(url, host)
    want = log_lines(log)
    assert len({fp for fp, *_ in stored}) == 1, "one log file, one fingerprint"
    assert [(o, ts, ent) for _, o, ts, ent in stored] == want  # none lost, none twice


def test_db_init_on_three_hosts_at_once_migrates_once(db_url, workdir):
    procs = [
        subprocess.Popen(
            [PY, str(DB_INIT)],
            cwd=workdir,
            env=env(db_url, f"h{i}"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    version = f"schema v{pgstore.SCHEMA_VERSION}"
    assert all(o.startswith("[postgres] init ok:") and version in o for o, _ in outs), outs
    assert sum("(created)" in o for o, _ in outs) == 1, outs  # one migrated, two found it done
    again = run(workdir, DB_INIT, url=db_url)
    assert again.returncode == 0 and "(up to date)" in again.stdout
    # A password in the URL is never printed.
    secret = db_url.replace("postgresql://lumen@", "postgresql://lumen:s3cret@")
    r = run(workdir, DB_INIT, url=secret)
    assert r.returncode == 0 and "s3cret" not in r.stdout + r.stderr and ":***@" in r.stdout
    # An unreachable server: one line, non-zero exit.
    gone = db_url.split("?")[0] + "?host=/nonexistent"
    r = run(workdir, DB_INIT, url=gone)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr
    r = run(workdir, INGEST, "--once", url=gone, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: postgresql://lumen@/")


def test_api_answers_the_same_from_either_store(db_url, workdir):
    """The same log ingested into SQLite and into PostgreSQL: every endpoint's answer is
    the same; with a second host in PostgreSQL, host= selects the first one's rows."""
    from lumen.api.app import Api

    start = timefmt.format(time.time() - 1200)
    emit(workdir, 2000, "--sim-start", start, "--hz", 2, "--seed", 3)
    assert run(workdir, INGEST, "--once", LUMEN_DB=workdir / "lite.db").returncode == 0
    r = run(workdir, INGEST, "--once", url=db_url)
    assert r.returncode == 0 and "stored 2000 new rows" in r.stdout, r.stdout + r.stderr
    other = workdir / "other"
    other.mkdir()
    emit(other, 500, "--sim-start", start, "--hz", 2, "--seed", 4)
    assert run(other, INGEST, "--once", url=db_url, host="h2").returncode == 0

    lite = Api(config.load(CONFIG_API, env={"LUMEN_DB": str(workdir / "lite.db")}))
    pgapi = Api(config.load(CONFIG_API, env={"LUMEN_DB_URL": db_url}))
    first = json.loads(lite.app("GET", "/api/rmb", {"limit": ["50"]})[2])
    paths = [
        ("/api/rmb:last", {}),
        ("/api/rmb", {"limit": ["50"]}),
        ("/api/rmb", {"limit": ["50"], "cursor": [first["next_cursor"]]}),
        ("/api/rmb", {"risk": ["WATCH"], "limit": ["20"]}),
        ("/api/rmb", {"entity": ["lumen.core"], "since": [start], "limit": ["7"]}),
        ("/api/ure:last", {}),
        ("/api/summary", {"window": ["2h"]}),
        ("/api/series", {"window": ["2h"], "step": ["60s"]}),
        ("/api/slo", {}),
    ]
    now = time.time()
    for path, q in paths:
        st_l, _, body_l = lite.app("GET", path, q)
        st_p, _, body_p = pgapi.app("GET", path, dict(q, host=["h1"]))
        a, b = json.loads(body_l), json.loads(body_p)
        for d in (a, b):
            d.pop("now", None), d.pop("host", None)
        assert (st_l, st_p) == (200, 200), (path, body_l, body_p)
        if path == "/api/summary":
            assert a["rmb"]["events"] == 2000
        assert a == b, path
    # Exports read the same rows from either store: streams of 2000 rows go in two batches,
    # each a keyset query from the last row's position.
    for q in (
        {"_format": ["csv"], "_stream": ["on"]},
        {"_format": ["ndjson"], "_stream": ["on"], "entity": ["lumen.core"]},
        {"_stream": ["on"], "limit": ["1500"]},
        {"_format": ["csv"], "risk": ["SAFE"], "limit": ["700"]},
    ):
        out = []
        for api in (lite, pgapi):
            st, _, body = api.app("GET", "/api/rmb", dict(q, host=["h1"]))
            out.append((st, body if isinstance(body, bytes) else b"".join(body)))
        assert out[0] == out[1] and out[0][0] == 200 and len(out[0][1]) > 20000, q
    # Without host=, PostgreSQL has both hosts' rows; /api/hosts lists each.
    both = json.loads(pgapi.app("GET", "/api/summary", {"window": ["2h"]})[2])
    assert both["rmb"]["events"] == 2500
    hosts = json.loads(pgapi.app("GET", "/api/hosts", {"window": ["2h"]})[2])["hosts"]
    assert [(h["host"], h["rmb"]["events"]) for h in hosts] == [("h1", 2000), ("h2", 500)]
    newest = {h["host"]: h["rmb"]["newest"]["ts"] for h in hosts}
    assert newest["h1"] == json.loads(pgapi.app("GET", "/api/rmb:last", {"host": ["h1"]})[2])["ts"]
    assert all(0 < h["rmb"]["newest"]["age_s"] < now - time.time() + 1300 for h in hosts)
    assert json.loads(pgapi.app("GET", "/api/rmb", {"host": ["nope"]})[2])["count"] == 0
    st, _, body = pgapi.app("GET", "/api/rmb", {"host": ["x" * 201]})
    assert st == 400 and "host" in json.loads(body)["error"]
    status, health = pgapi.health()
    assert (
        status == 200
        and health["db"] == "ok"
        and health["schema_version"] == pgstore.SCHEMA_VERSION
    )
    # Every query planned for its own parameters: no generic plans are cached (a generic
    # plan of ure:last's entity filter reads the whole table once the tables are analyzed).
    for _ in range(8):
        pgapi.app("GET", "/api/ure:last", {"entity": ["no-such-entity"]})
    with pgapi.reader() as db:
        assert db.execute("SELECT COUNT(*) FROM pg_prepared_statements").fetchone()[0] == 0
    # The API's sessions cannot write.
    with pgapi.reader() as db:
        import psycopg

        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            db.execute("DELETE FROM rmb")
    # The event stream: a reconnect after h1's 1980th row replays its last 20 rows (h2's
    # stored after them are not h1's), the same from either store.
    replays = []
    for api in (lite, pgapi):
        q = {"host": ["h1"], "last_event_id": ["1980.0.0"]}
        st, _, body = api.app("GET", "/api/stream", q)
        assert st == 200
        replays.append([d for name, d in drain(body) if name == "rmb"])
        body.close()
    last20 = json.loads(lite.app("GET", "/api/rmb", {"limit": ["20"]})[2])["items"][::-1]
    assert replays[0] == replays[1] == last20


def drain(body):
    """[(event name, data)] a stream (lumen.api.stream.Stream) has to send now."""
    out = []
    while not isinstance(piece := next(body), httpserve.Wait):
        for block in piece.decode().split("\n\n"):
            fields = dict(x.split(": ", 1) for x in block.split("\n") if ": " in x)
            if "event" in fields:
                out.append((fields["event"], json.loads(fields["data"])))
    return out


def test_the_stream_sees_each_row_of_hosts_ingesting_at_once(db_url, workdir):
    """Three hosts' ingesters commit at once (batches of 300); the stream follows the rmb
    table by id as they go and gets each row once: ids are given out in commit order
    (lumen/pgstore.py STREAMED), so no smaller id commits after a larger one was read."""
    from lumen.api.app import Api

    assert run(workdir, DB_INIT, url=db_url).returncode == 0
    cfg = workdir / "api.yaml"
    cfg.write_text(CONFIG_API.read_text().replace("batch_lines: 5000", "batch_lines: 300"))
    hosts = ("h1", "h2", "h3")
    for h in hosts:
        (workdir / h).mkdir()
        emit(workdir / h, 2000)
    api = Api(config.load(cfg, env={"LUMEN_DB_URL": db_url}))
    st, _, body = api.app("GET", "/api/stream", {})
    assert st == 200
    seen, done = [], threading.Event()

    def follow():  # the hub's polls, as fast as they go, while the ingesters write
        while not done.is_set():
            api.hub.tick()
            seen.extend((d["host"], d["ts"]) for name, d in drain(body) if name == "rmb")

    t = threading.Thread(target=follow)
    t.start()
    try:
        procs = [
            subprocess.Popen(
                [PY, str(INGEST), "--config", str(cfg), "--once"],
                cwd=workdir / h,
                env=env(db_url, h),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for h in hosts
        ]
        assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
        wait_until(lambda: len(seen) >= 6000, timeout=60, what="every row in the stream")
    finally:
        done.set()
        t.join(timeout=30)
        body.close()
    assert len(seen) == len(set(seen)) == 6000
    for h in hosts:
        ts = [e[1] for e in log_lines(workdir / h / "logs/rmb_events.jsonl")]
        assert [x for host, x in seen if host == h] == ts, h


CRASH_IN_TRANSACTION = """
import os, signal, sys
from lumen import config, pgstore
from lumen.ingest import Ingester
orig = pgstore.OffsetStore.save
def save(self, ck):
    orig(self, ck)           # the offsets row is written, inside the open transaction
    os.kill(os.getpid(), signal.SIGKILL)   # ... and the process dies before COMMIT
pgstore.OffsetStore.save = save
ing = Ingester(config.load(sys.argv[1], "api_v18"))
while ing.step():
    pass
"""


def test_kill_inside_the_transaction_loses_and_repeats_nothing(db_url, workdir):
    emit(workdir, 3000)
    cfg = workdir / "api.yaml"
    cfg.write_text(CONFIG_API.read_text().replace("batch_lines: 5000", "batch_lines: 700"))
    r = subprocess.run(
        [PY, "-c", CRASH_IN_TRANSACTION, str(cfg)],
        cwd=workdir,
        env=env(db_url),
        capture_output=True,
        timeout=60,
    )
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert rows(db_url) == []  # the batch and its offsets: neither committed
    emit(workdir, 500)
    r = run(workdir, INGEST, "--once", "--config", cfg, url=db_url)
    assert r.returncode == 0, r.stderr
    assert_exactly_once(db_url, "h1", workdir / "logs/rmb_events.jsonl")
    # The offsets row lost (a restore from an old backup): the replay adds nothing.
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute("DELETE FROM offsets")
    r = run(workdir, INGEST, "--once", url=db_url)
    assert r.returncode == 0 and "stored 0 new rows" in r.stdout, r.stdout
    assert_exactly_once(db_url, "h1", workdir / "logs/rmb_events.jsonl")


def test_ingest_waits_out_a_server_that_goes_away(pg, db_url, workdir, procs):
    emit(workdir, 1000)
    ing = procs.start(INGEST, env=env(db_url))
    wait_until(lambda: len(rows(db_url)) == 1000, timeout=60, what="first 1000 rows")
    pg.pause()
    try:
        emit(workdir, 1500)
        time.sleep(0.5)  # the ingester tries and fails at least once (not a timing assertion)
        assert ing.poll() is None, "the ingester must not exit when the server goes away"
    finally:
        pg.resume()
    wait_until(lambda: len(rows(db_url)) == 2500, timeout=90, what="rows after the restart")
    ing.send_signal(signal.SIGTERM)
    out, err = ing.communicate(timeout=30)
    assert ing.returncode == 0, err
    assert_exactly_once(db_url, "h1", workdir / "logs/rmb_events.jsonl")


def test_a_row_postgres_cannot_hold_is_quarantined_not_stuck(db_url, workdir):
    emit(workdir, 20)
    log = workdir / "logs/rmb_events.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    bad = json.loads(lines[5])
    bad["entity_id"] = "evil\u0000name"  # valid JSON and schema-valid; PostgreSQL text: no
    lines[5] = json.dumps(bad).encode() + b"\n"
    log.write_bytes(b"".join(lines))
    r = run(workdir, INGEST, "--once", url=db_url)
    assert r.returncode == 0, r.stderr
    stored = rows(db_url)
    assert len(stored) == 19 and not any("\x00" in e for *_, e in stored)
    rejects = [
        json.loads(x) for x in (workdir / "logs/rejects/rmb_events.jsonl").read_text().splitlines()
    ]
    assert [(x["reason"], x["offset"]) for x in rejects] == [
        ("unstorable", sum(map(len, lines[:5])))
    ]
    # Run again: nothing new stored, nothing quarantined twice.
    r = run(workdir, INGEST, "--once", url=db_url)
    assert r.returncode == 0 and len(rows(db_url)) == 19
    assert len((workdir / "logs/rejects/rmb_events.jsonl").read_text().splitlines()) == 1


def test_a_new_host_name_does_not_store_the_logs_again(db_url, workdir, monkeypatch):
    """A container gets a new host name each time it is created; its logs (a volume) keep
    the host id they were first stored under, so nothing is stored twice."""
    import socket

    from lumen import storage
    from lumen.ingest import Ingester

    emit(workdir, 300)
    cfg = config.load(CONFIG_API, env={"LUMEN_DB_URL": db_url, "LUMEN_HOST_ID": None})
    for name in ("pod-1", "pod-2"):
        monkeypatch.setattr(socket, "gethostname", lambda name=name: name)
        ing = Ingester(cfg)
        try:
            while ing.step():
                pass
        finally:
            ing.close()
        emit(workdir, 100)
    assert (workdir / "logs/.offsets/host_id").read_text() == "pod-1\n"
    assert rows(db_url, "pod-2") == []
    ing = Ingester(cfg)  # the 100 lines written after the second run
    try:
        while ing.step():
            pass
    finally:
        ing.close()
    assert_exactly_once(db_url, "pod-1", workdir / "logs/rmb_events.jsonl")
    # A configured id wins, and is kept from then on (with a warning on the change).
    cfg = config.load(CONFIG_API, env={"LUMEN_DB_URL": db_url, "LUMEN_HOST_ID": "web-1"})
    assert storage.host_id(cfg, persist=True) == "web-1"
    assert storage.host_id({}) == "web-1"
