"""The read-only API's formats, caching, compression and errors, against a real API
process over a store built by the real ingest: CSV and NDJSON equal to the JSON rows,
a 50 000-row export streamed whole and in order, a client that leaves or stops reading,
ETag/304 before and after new rows, gzip, and the one JSON error shape on every path."""

import csv
import gzip
import io
import json
import os
import socket
import threading
import time

import pytest
import requests

from lumen import config, httprep
from lumen.api import app as api_app
from lumen.api.app import Api
from lumen.api import formats, lists, openapi
from conftest import ROOT, Procs, emit, free_port, run_make, wait_until

CONFIG_API = ROOT / "configs/api_v18.yaml"
API = ROOT / "api/read_only.py"
HOST = 'web,"1"'  # a host id CSV must quote
# URE entities CSV must quote (comma, quote, CR LF) or carry as UTF-8.
ENTITIES = ["lumen.ure", 'a,"b"\r\nc', "entité 日本", "lumen.core"]


def start_api(cwd, procs, timeout_s=10):
    cfg = cwd / "api.yaml"
    cfg.write_text(
        CONFIG_API.read_text().replace("request_timeout_s: 10", f"request_timeout_s: {timeout_s}")
    )
    port = free_port()
    p = procs.start(API, "--config", cfg, "--port", port, "--name", f"api{port}")
    wait_until(lambda: (cwd / f"run/api{port}.pid").exists() or p.poll() is not None, what="api")
    assert p.poll() is None, p.stderr.read().decode()
    return f"http://127.0.0.1:{port}", p


def write_ure(cwd, n, start=0):
    with open(cwd / "logs/resonance_events_v2.jsonl", "a") as f:
        for i in range(start, start + n):
            f.write(
                json.dumps(
                    {
                        "ts": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z",
                        "entity_id": ENTITIES[i % len(ENTITIES)],
                        "phase_field": {
                            "phase_diff": 0.0,
                            "residual_entropy": 0.4 + i / 1000,
                            "risk_band": "SAFE",
                        },
                        "harmony_index": 0.9,
                        "coherence_level": 0.8,
                        "auto_reg_action": "RAISE_HZ" if i % 5 == 0 else "NONE",
                        "trace": {"loop_id": "ure.v18", "iter": i, "host": "h", "ver": "v1.8"},
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )


def ingest(cwd):
    r = run_make(cwd, "db.backfill", env={"LUMEN_HOST_ID": HOST})
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture
def small(workdir, procs):
    """A live API over 300 RMB rows and 60 URE rows."""
    emit(workdir, 300, "--profile", "seed", "--seed", "3")
    write_ure(workdir, 60)
    ingest(workdir)
    base, _ = start_api(workdir, procs)
    return base, workdir


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A live API over 50 000 RMB rows, request_timeout_s 2 (a stalled reader is cut soon)."""
    cwd = tmp_path_factory.mktemp("big")
    procs = Procs(cwd)
    try:
        emit(cwd, 50_000, "--seed", "5")
        ingest(cwd)
        base, p = start_api(cwd, procs, timeout_s=2)
        yield base, cwd, p
    finally:
        procs.cleanup()


def get(base, path, headers=None, **params):
    return requests.get(base + path, params=params, headers=headers or {}, timeout=30)


def cell(v):
    """What a CSV field must hold for a JSON value (formats' documented rule)."""
    return "" if v is None else v if isinstance(v, str) else json.dumps(v)


def read_csv(data):
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def read_ndjson(data):
    assert data == b"" or data.endswith(b"\n")
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.parametrize(
    "path, params",
    [
        ("/api/rmb", {"limit": "300"}),
        ("/api/rmb", {"limit": "17", "risk": "SAFE"}),
        ("/api/ure", {"limit": "100"}),
        ("/api/ure", {"entity": 'a,"b"\r\nc'}),
        ("/api/ure", {"action": "RAISE_HZ", "since": "2026-01-01T00:00:20Z"}),
    ],
)
def test_csv_and_ndjson_are_the_json_rows(small, path, params):
    base, _ = small
    items = get(base, path, **params).json()["items"]
    assert items
    r = get(base, path, _format="csv", **params)
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert r.headers["Content-Disposition"] == f'attachment; filename="{path[5:]}.csv"'
    assert r.content.endswith(b"\r\n")
    table = read_csv(r.content)
    assert table[0] == list(items[0])
    assert table[1:] == [[cell(v) for v in item.values()] for item in items]
    r = get(base, path, _format="ndjson", **params)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/x-ndjson"
    assert read_ndjson(r.content) == items
    # _format=json is the default, byte for byte.
    assert get(base, path, _format="json", **params).content == get(base, path, **params).content


def test_csv_quotes_what_it_must(small):
    base, _ = small
    raw = get(base, "/api/ure", _format="csv", entity='a,"b"\r\nc', limit="1").content
    assert b'"a,""b""\r\nc"' in raw and b'"web,""1"""' in raw
    assert "entité 日本" in get(base, "/api/ure", _format="csv").content.decode("utf-8")


def test_stream_on_gives_every_row_and_the_pages_agree(small):
    base, _ = small
    pages, cursor = [], None
    while True:
        body = get(base, "/api/ure", limit="7", **({"cursor": cursor} if cursor else {})).json()
        pages += body["items"]
        if not (cursor := body["next_cursor"]):
            break
    assert len(pages) == 60
    for fmt in ("csv", "ndjson", "json"):
        data = get(base, "/api/ure", _format=fmt, _stream="on").content
        if fmt == "csv":
            assert read_csv(data)[1:] == [[cell(v) for v in i.values()] for i in pages]
        elif fmt == "ndjson":
            assert read_ndjson(data) == pages
        else:
            assert json.loads(data) == {
                "ok": True,
                "items": pages,
                "count": 60,
                "next_cursor": None,
            }
    # A limit still caps a stream, and its JSON says where the next page starts.
    capped = get(base, "/api/ure", _stream="on", limit="7").json()
    assert capped == get(base, "/api/ure", limit="7").json()


def test_hosts_as_csv_and_ndjson(small):
    base, _ = small
    hosts = get(base, "/api/hosts", window="30d").json()["hosts"]
    lines = read_ndjson(get(base, "/api/hosts", window="30d", _format="ndjson").content)
    table = read_csv(get(base, "/api/hosts", window="30d", _format="csv").content)
    assert [h["host"] for h in hosts] == [HOST] == [h["host"] for h in lines]
    for h in (hosts[0], lines[0]):
        h["rmb"]["newest"].pop("age_s"), h["ure"]["newest"].pop("age_s")  # the clock moves
    assert lines == hosts
    row = dict(zip(table[0], table[1]))
    assert table[0][:3] == ["host", "rmb.events", "rmb.rollbacks"] and len(table) == 2
    assert row["host"] == HOST and row["rmb.events"] == "300"
    assert row["rmb.newest.ts"] == hosts[0]["rmb"]["newest"]["ts"]
    assert row["ure.newest.ts"] == "2026-01-01T00:00:59Z"


def test_etag_304_and_a_new_etag_after_new_rows(small):
    base, cwd = small
    paths = [
        ("/api/rmb", {"limit": "5"}),
        ("/api/rmb", {"limit": "5", "_format": "csv"}),
        ("/api/rmb:last", {}),
        ("/api/ure:last", {"entity": "lumen.core"}),
    ]
    tags = {}
    for path, params in paths:
        r = get(base, path, **params)
        tag = tags[path, params.get("_format")] = r.headers["ETag"]
        assert tag.startswith('W/"') and r.headers["Cache-Control"] == "no-cache"
        again = get(base, path, {"If-None-Match": tag}, **params)
        assert again.status_code == 304 and again.content == b""
        assert again.headers["ETag"] == tag and again.headers["Cache-Control"] == "no-cache"
    for path in ("/", "/static/app.js", "/openapi.json"):
        tag = get(base, path).headers["ETag"]
        assert get(base, path, {"If-None-Match": tag}).status_code == 304
    emit(cwd, 3, "--seed", "9")
    ingest(cwd)
    for path, params in paths[:3]:
        old = tags[path, params.get("_format")]
        r = get(base, path, {"If-None-Match": old}, **params)
        assert r.status_code == 200 and r.headers["ETag"] != old and r.content


def test_gzip_decompresses_to_the_same_bytes(small):
    base, _ = small
    for path, params in [
        ("/api/rmb", {"limit": "300"}),
        ("/api/ure", {"_format": "csv"}),
        ("/api/rmb", {"_format": "ndjson", "_stream": "on"}),
        ("/openapi.json", {}),
        ("/", {}),
    ]:
        plain = get(base, path, {"Accept-Encoding": "identity"}, **params)
        assert "Content-Encoding" not in plain.headers
        r = requests.get(
            base + path, params=params, headers={"Accept-Encoding": "gzip"}, stream=True, timeout=30
        )
        raw = r.raw.read(decode_content=False)
        assert r.headers["Content-Encoding"] == "gzip" and r.headers["Vary"] == "Accept-Encoding"
        assert gzip.decompress(raw) == plain.content and len(raw) < len(plain.content), path
    tiny = get(base, "/api/rmb:last", {"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in tiny.headers and tiny.headers["Vary"] == "Accept-Encoding"


def test_a_large_export_is_streamed_whole_in_order(big):
    base, cwd, p = big
    events = [json.loads(x) for x in (cwd / "logs/rmb_events.jsonl").read_text().splitlines()]
    assert len(events) == 50_000
    peak, stop = [rss_mb(p.pid)], threading.Event()
    before = peak[0]

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb(p.pid))
            stop.wait(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    t0 = time.monotonic()
    r = requests.get(
        base + "/api/rmb",
        params={"_format": "csv", "_stream": "on"},
        headers={"Accept-Encoding": "identity"},
        stream=True,
        timeout=60,
    )
    assert r.headers["Transfer-Encoding"] == "chunked" and "Content-Length" not in r.headers
    data = b"".join(r.iter_content(1 << 16))
    took = time.monotonic() - t0
    stop.set()
    sampler.join()
    print(
        f"\n50 000-row CSV: {len(data)} bytes in {took:.2f} s; API RSS {before:.1f} MB "
        f"before, {peak[0]:.1f} MB peak, {rss_mb(p.pid):.1f} MB after"
    )
    table = read_csv(data)
    assert table[0] == list(lists.KEYS["rmb"]) and len(table) == 50_001
    newest_first = events[::-1]
    assert [row[0] for row in table[1:]] == [e["ts"] for e in newest_first]
    assert [float(row[2]) for row in table[1:]] == [
        e["resonance_v3"]["residual_entropy"] for e in newest_first
    ]
    # The same rows as the JSON pages, and NDJSON under gzip decompresses to the NDJSON.
    pages, cursor = [], None
    while True:
        body = get(base, "/api/rmb", limit="10000", **({"cursor": cursor} if cursor else {}))
        pages += body.json()["items"]
        if not (cursor := body.json()["next_cursor"]):
            break
    assert table[1:] == [[cell(v) for v in i.values()] for i in pages]
    plain = get(base, "/api/rmb", {"Accept-Encoding": "identity"}, _format="ndjson", _stream="on")
    assert read_ndjson(plain.content) == pages
    r = requests.get(
        base + "/api/rmb",
        params={"_format": "ndjson", "_stream": "on"},
        headers={"Accept-Encoding": "gzip"},
        stream=True,
        timeout=60,
    )
    assert r.headers["Content-Encoding"] == "gzip" and "Content-Length" not in r.headers
    assert gzip.decompress(r.raw.read(decode_content=False)) == plain.content


def links(pid):
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:  # closed meanwhile
            pass
    return out


def sockets(pid):
    return sum(x.startswith("socket:") for x in links(pid))


def server_end(server_port, client_port):
    """The socket the server holds for one client connection: 'socket:[inode]'."""
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        f = line.split()
        if (int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16)) == (
            server_port,
            client_port,
        ):
            return f"socket:[{f[9]}]"
    return None


def db_conns(pid):
    """Open SQLite connections: each holds one descriptor of the database file itself."""
    return sum(x.endswith("/lumen.db") for x in links(pid))


def test_clients_that_leave_or_stall_mid_export_leak_nothing(big):
    base, _, p = big
    port = int(base.rsplit(":", 1)[1])
    request = b"GET /api/rmb?_format=csv&_stream=on HTTP/1.1\r\nHost: x\r\n\r\n"

    def leave_mid_stream():
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(request)
            got = 0
            while got < 200_000:
                got += len(s.recv(65536))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # a reset

    leave_mid_stream()
    assert get(base, "/healthz").status_code == 200
    # The listening socket, the wake-up pair, and lingering ones: the count once settled.
    baseline = wait_until(lambda: sockets(p.pid) <= 4 and sockets(p.pid), what="settled")
    for _ in range(20):
        leave_mid_stream()
    # No socket kept for the streams that were abandoned, and no SQLite connection beyond
    # what the pool keeps for its 8 workers (one left lent per stream would be 20 more).
    wait_until(lambda: sockets(p.pid) <= baseline, timeout=20, what="sockets closed")
    assert db_conns(p.pid) <= api_app.WORKERS
    # A client that stops reading is closed once a piece waits over request_timeout_s
    # (2 s): the server lets go of it while the client still holds its end, and what the
    # client then reads is a cut stream (the export is ~9 MB, the socket buffers ~4 MB).
    whole = len(get(base, "/api/rmb", _format="ndjson", _stream="on").content)
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", port))
    stalled.sendall(request.replace(b"csv", b"ndjson"))
    t0 = time.monotonic()
    assert stalled.recv(100)
    held = server_end(port, stalled.getsockname()[1])
    assert held in links(p.pid)
    wait_until(lambda: held not in links(p.pid), timeout=60, what="the stalled export let go")
    print(f"\nstalled reader let go after {time.monotonic() - t0:.1f} s")
    stalled.settimeout(20)
    got = b""
    try:
        while chunk := stalled.recv(1 << 20):
            got += chunk
    except ConnectionResetError:
        pass
    stalled.close()
    assert len(got) < whole and not got.endswith(b"\r\n0\r\n\r\n")
    assert get(base, "/api/rmb:last").status_code == 200


def json_error(r, status):
    assert r.status_code == status
    assert r.headers["Content-Type"] == "application/json"
    body = r.json()
    assert set(body) == {"ok", "error", "status"}, body
    assert body["ok"] is False and body["status"] == status and body["error"]
    assert "Traceback" not in r.text and "File " not in r.text
    return body["error"]


@pytest.mark.parametrize(
    "target, status, needle",
    [
        ("/api/rmb?_format=xml", 400, "_format must be one of json, csv, ndjson"),
        ("/api/rmb?_format=csv&_format=json", 400, "_format given 2 times"),
        ("/api/rmb?_stream=maybe", 400, "_stream"),
        ("/api/summary?_format=csv", 400, "this endpoint answers an object"),
        ("/api/hosts?_stream=on", 400, "unknown parameter _stream"),
        ("/api/rmb?_format=csv&limit=0", 400, "limit"),
        ("/api/rmb?limit=%ff", 400, "not UTF-8"),
        ("/api/rmb?" + "&".join(f"p{i}=1" for i in range(101)), 400, "over 100 parameters"),
        ("/api/nothing?_format=csv", 404, "no such path"),
        ("/api/rmb?entity=" + "x" * 5000, 414, "URL longer"),
    ],
)
def test_every_error_has_the_one_json_shape(small, target, status, needle):
    base, _ = small
    assert needle in json_error(requests.get(base + target, timeout=10), status)


def test_405_503_and_500_have_the_shape_too(small, capfd):
    base, cwd = small
    r = requests.post(base + "/api/rmb?_format=csv", data=b"x", timeout=10)
    json_error(r, 405)
    assert r.headers["Allow"] == "GET, HEAD"
    # A missing store: 503 before any byte of an export is sent.
    cfg = config.load(CONFIG_API, env={"LUMEN_DB": str(cwd / "data/none.db")})
    api = Api(cfg)
    for query in ({"_format": ["csv"]}, {"_stream": ["on"]}, {"_format": ["ndjson"]}):
        status, headers, body = api.app("GET", "/api/rmb", query)
        assert status == 503 and isinstance(body, bytes)
        assert json.loads(body) == {"ok": False, "error": json.loads(body)["error"], "status": 503}
    # A bug: 500, the shape, no detail for the client, one line for the operator.
    api = Api(config.load(CONFIG_API, env={"LUMEN_DB": str(cwd / "data/lumen.db")}))
    api.handlers["/api/summary"] = lambda db, q: {}["secret"]
    status, _, body = api.app("GET", "/api/summary", {})
    assert status == 500 and json.loads(body) == {
        "ok": False,
        "error": "internal error",
        "status": 500,
    }
    err = capfd.readouterr().err
    assert "KeyError" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_an_export_that_loses_its_store_mid_way_is_cut(workdir):
    """A store gone between two batches: the stream raises, so the server cuts it (no last
    chunk) instead of ending it as if whole."""
    emit(workdir, 2500, "--seed", "2")
    assert run_make(workdir, "db.backfill").returncode == 0
    api = Api(config.load(CONFIG_API, env={"LUMEN_DB": str(workdir / "data/lumen.db")}))
    status, headers, body = api.app("GET", "/api/rmb", {"_format": ["ndjson"], "_stream": ["on"]})
    assert status == 200 and not isinstance(body, bytes)
    first = next(body)
    assert len(read_ndjson(first)) == api_app.BATCH
    (workdir / "data/lumen.db").unlink()
    with pytest.raises(FileNotFoundError):
        next(body)


def test_a_stream_closed_early_returns_its_connection():
    """Rows borrows a connection per batch: closing the stream between batches leaves none
    lent."""
    lent = []

    class Db:
        def execute(self, sql, args):
            n = args[-1]

            class R:
                def fetchall(self):
                    return [("ts", "e", 0.1, 0.2, "SAFE", "observe", "h", 1.0, i) for i in range(n)]

            return R()

    class Reader:
        def __enter__(self):
            lent.append(1)
            return Db()

        def __exit__(self, *exc):
            lent.pop()

    lq = lists.ListQuery("rmb", {}, 100, 10000)
    rows = lists.Rows(Reader, lq, None, 10)
    body = formats.rows("csv", lists.KEYS["rmb"], rows, rows)
    next(body), next(body)
    assert lent == [] and not rows.done
    body.close()
    assert lent == []


def test_openapi_documents_formats_and_caching():
    doc = openapi.document(10000)
    params = {p["name"]: p for p in doc["paths"]["/api/rmb"]["get"]["parameters"]}
    assert params["_format"]["schema"]["enum"] == list(formats.TYPES)
    assert params["_stream"]["schema"]["enum"] == ["on", "off"]
    ok = doc["paths"]["/api/rmb"]["get"]["responses"]["200"]
    assert {"application/json", "text/csv", "application/x-ndjson"} == set(ok["content"])
    assert {"ETag", "Cache-Control", "Vary", "Content-Encoding"} <= set(ok["headers"])
    summary = {p["name"]: p for p in doc["paths"]["/api/summary"]["get"]["parameters"]}
    assert summary["_format"]["schema"]["enum"] == ["json"]
    for path, ops in doc["paths"].items():
        # Whole answers may be 304; the event stream has no ETag, so it never is.
        assert ("304" in ops["get"]["responses"]) == (path != "/api/stream"), path
    assert httprep.COMPRESSIBLE.match(formats.TYPES["csv"])
