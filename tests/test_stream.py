"""/api/stream (server-sent events) and the alerts it carries, over real processes: the
ingester storing logs/*.jsonl into SQLite, the API on a free port, a raw HTTP client
reading the stream. Framing and order; the cursor (a reconnect with Last-Event-ID gets
exactly the rows it missed); the replay bound (reset); the cap on streams (503) and a
stream's maximum duration; a slow reader cut, its slot freed; host=; level changes;
alerts appended to logs/alerts.jsonl stored exactly once through kill -9, listed by
/api/alerts and pushed as `event: alert`. PostgreSQL: tests/test_postgres.py."""

import csv
import io
import json
import random
import signal
import socket
import sqlite3
import subprocess
import time

import pytest
import requests
import yaml

from conftest import PY, ROOT, emit, free_port, merged_env, wait_until

CONFIG_API = ROOT / "configs/api_v18.yaml"
INGEST = ROOT / "tools/storage/ingest_tail_v18.py"
API = ROOT / "api/read_only.py"
ENV = {"LUMEN_DB": "data/lumen.db", "LUMEN_DB_URL": None, "LUMEN_HOST_ID": "h1"}


def api_config(workdir, name="api.yaml", request_timeout_s=None, batch_lines=None, **stream):
    """A copy of configs/api_v18.yaml with these api.stream settings."""
    cfg = yaml.safe_load(CONFIG_API.read_text())
    cfg["api"]["stream"].update(stream)
    if request_timeout_s:
        cfg["api"]["request_timeout_s"] = request_timeout_s
    if batch_lines:
        cfg["ingest"]["batch_lines"] = batch_lines
    path = workdir / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def count(workdir, table="rmb"):
    path = workdir / "data/lumen.db"
    if not path.exists():
        return 0
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        db.close()


class Live:
    """The ingester (following the logs) and APIs over data/lumen.db in `workdir`."""

    def __init__(self, workdir, procs, ingest=True, **stream):
        self.workdir, self.procs = workdir, procs
        (workdir / "logs").mkdir(exist_ok=True)
        self.config = api_config(workdir, **stream)
        if ingest:
            procs.start(INGEST, "--config", self.config, env=ENV)
            wait_until(lambda: (workdir / "run/ingest.pid").exists(), timeout=30, what="ingest")
        else:
            r = subprocess.run(
                [PY, str(ROOT / "tools/storage/sqlite_init_v17_18.py"), "--config", self.config],
                cwd=workdir,
                env=merged_env(ENV),
                capture_output=True,
                timeout=60,
            )
            assert r.returncode == 0, r.stderr
        self.port = self.start_api(self.config)

    def start_api(self, config, name="api", port=None):
        port = port or free_port()
        p = self.procs.start(API, "--config", config, "--port", port, "--name", name, env=ENV)
        pid = self.workdir / f"run/{name}.pid"
        wait_until(lambda: pid.exists() or p.poll() is not None, timeout=30, what="the API")
        assert p.poll() is None, p.stderr.read().decode(errors="replace")
        return port

    def get(self, path, port=None, **params):
        return requests.get(
            f"http://127.0.0.1:{port or self.port}{path}", params=params, timeout=10
        )

    def stored(self, n, table="rmb"):
        wait_until(lambda: count(self.workdir, table) >= n, timeout=60, what=f"{n} {table} rows")
        assert count(self.workdir, table) == n


class SSE:
    """A raw HTTP/1.1 client reading a text/event-stream answer, message by message."""

    def __init__(self, port, path="/api/stream", headers=(), rcvbuf=None):
        self.s = socket.socket()
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(30)
        self.s.connect(("127.0.0.1", port))
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers)
        self.s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
        self.raw, self.text = b"", b""
        self.complete = self.ended = False
        head = self._until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        self.status = int(head[0].split()[1])
        self.headers = {k.lower(): v.strip() for k, v in (x.split(":", 1) for x in head[1:])}
        if "content-length" in self.headers:
            self.body = self._exactly(int(self.headers["content-length"]))

    def _recv(self):
        data = self.s.recv(65536)
        if not data:
            raise EOFError
        self.raw += data

    def _until(self, sep):
        while sep not in self.raw:
            self._recv()
        out, self.raw = self.raw.split(sep, 1)
        return out

    def _exactly(self, n):
        while len(self.raw) < n:
            self._recv()
        out, self.raw = self.raw[:n], self.raw[n:]
        return out

    def _chunk(self):
        """The next chunk of the body into self.text; False once the body has ended."""
        if self.ended:
            return False
        try:
            size = int(self._until(b"\r\n"), 16)
            data = self._exactly(size)
            assert self._exactly(2) == b"\r\n"
        except (EOFError, ConnectionResetError):
            self.ended = True  # closed without the last chunk: cut
            return False
        if not size:
            self.ended = self.complete = True
            return False
        self.text += data
        return True

    def message(self, deadline=30):
        """The next message: {"event", "id", "data" (parsed), "retry", "comments"}; None
        when the stream has ended."""
        end = time.monotonic() + deadline
        while b"\n\n" not in self.text:
            assert time.monotonic() < end, "no message in time"
            if not self._chunk():
                return None
        block, self.text = self.text.split(b"\n\n", 1)
        msg = {"event": None, "id": None, "data": None, "retry": None, "comments": []}
        for line in block.decode().split("\n"):
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "":
                msg["comments"].append(value)
            elif field == "data":
                msg["data"] = json.loads(value)
            else:
                msg[field] = value
        return msg

    def events(self, name, n, deadline=60):
        """The next `n` events called `name` (others in between are skipped, pings too)."""
        out, end = [], time.monotonic() + deadline
        while len(out) < n:
            m = self.message(max(0.1, end - time.monotonic()))
            assert m is not None, f"the stream ended after {len(out)} {name} events"
            if m["event"] == name:
                out.append(m)
        return out

    def close(self):
        self.s.close()


def status_of(port):
    """The status a new stream gets (the connection closed after)."""
    sse = SSE(port)
    sse.close()
    return sse.status


def rmb_part(event_id):
    return int(event_id.split(".")[0])


def log_ts(workdir, start=0, end=None):
    lines = (workdir / "logs/rmb_events.jsonl").read_text().splitlines()
    return [json.loads(x)["ts"] for x in lines[start:end]]


def test_events_in_order_and_a_reconnect_gets_exactly_what_it_missed(workdir, procs):
    live = Live(workdir, procs)
    sse = SSE(live.port)
    assert sse.status == 200
    assert sse.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert sse.headers["transfer-encoding"] == "chunked" and "content-encoding" not in sse.headers
    hello = sse.message()
    assert hello["event"] == "hello" and hello["retry"] == "3000"
    assert hello["data"]["resumed"] is False and hello["id"] == hello["data"]["cursor"]
    slo = sse.message()
    assert slo["event"] == "slo" and slo["id"] and {"result", "verdicts"} <= set(slo["data"])

    emit(workdir, 30)
    got = sse.events("rmb", 30)
    # The rows as /api/rmb lists them, in the order they were stored, each with its id.
    items = live.get("/api/rmb", limit=30).json()["items"][::-1]
    assert [m["data"] for m in got] == items
    assert [m["data"]["ts"] for m in got] == log_ts(workdir)
    ids = [rmb_part(m["id"]) for m in got]
    assert ids == sorted(set(ids)) and ids[0] > rmb_part(hello["id"])
    last = got[-1]["id"]
    sse.close()

    emit(workdir, 25)  # missed while away
    live.stored(55)
    again = SSE(live.port, headers=[("Last-Event-ID", last)])
    hello = again.message()
    assert hello["data"]["resumed"] is True and hello["id"] == last
    missed = again.events("rmb", 25)
    assert [m["data"]["ts"] for m in missed] == log_ts(workdir, 30, 55)
    emit(workdir, 5)  # what comes next is new rows only: nothing of the 25 twice
    assert [m["data"]["ts"] for m in again.events("rmb", 5)] == log_ts(workdir, 55, 60)
    again.close()
    live.stored(60)

    # ?last_event_id= does the same for clients that cannot send the header ...
    q = SSE(live.port, f"/api/stream?last_event_id={last}")
    replayed = q.events("rmb", 30)
    assert [m["data"]["ts"] for m in replayed] == log_ts(workdir, 30, 60)
    q.close()
    # ... and the header wins over it (EventSource reconnects with the URL it was given).
    newest = replayed[-1]["id"]
    h = SSE(live.port, f"/api/stream?last_event_id={last}", [("Last-Event-ID", newest)])
    assert h.message()["data"]["cursor"] == newest
    emit(workdir, 2)
    assert [m["data"]["ts"] for m in h.events("rmb", 2)] == log_ts(workdir, 60, 62)
    h.close()
    for bad in ("abc", "1.2", "-1.0.0", "1.2.3.4"):
        r = live.get("/api/stream", last_event_id=bad)
        assert r.status_code == 400 and "last_event_id" in r.json()["error"], bad
    r = live.get("/api/stream", colour="red")
    assert r.status_code == 400 and r.json()["status"] == 400


def test_a_reconnect_beyond_replay_max_gets_reset(workdir, procs):
    live = Live(workdir, procs, replay_max=10)
    sse = SSE(live.port)
    start = sse.message()["id"]
    sse.close()
    emit(workdir, 50)
    live.stored(50)
    again = SSE(live.port, headers=[("Last-Event-ID", start)])
    assert again.message()["event"] == "hello"
    reset = again.message()
    assert reset["event"] == "reset" and "more than 10 rows" in reset["data"]["reason"]
    assert reset["id"] == reset["data"]["cursor"] and rmb_part(reset["id"]) == 50
    emit(workdir, 3)  # then the stream goes on from the reset's cursor: no replay
    got = again.events("rmb", 3)
    assert [m["data"]["ts"] for m in got] == log_ts(workdir, 50, 53)
    again.close()
    # Within the bound: replayed, no reset.
    ok = SSE(live.port, headers=[("Last-Event-ID", reset["id"])])
    assert ok.message()["data"]["resumed"] is True
    assert [ok.message()["event"] for _ in range(4)] == ["slo", "rmb", "rmb", "rmb"]
    ok.close()
    # An id ahead of the store (a replaced database): reset to the newest rows.
    ahead = SSE(live.port, headers=[("Last-Event-ID", "999999.0.0")])
    ahead.message()
    m = ahead.message()
    assert m["event"] == "reset" and "ahead" in m["data"]["reason"]
    assert m["data"]["cursor"].startswith("53.")
    ahead.close()


def test_the_cap_on_streams_and_their_maximum_duration(workdir, procs):
    live = Live(workdir, procs, max_streams=2)
    first, second = SSE(live.port), SSE(live.port)
    assert first.message()["event"] == second.message()["event"] == "hello"
    third = SSE(live.port)
    assert third.status == 503 and third.headers["retry-after"] == "3"
    body = json.loads(third.body)
    assert body == {"ok": False, "error": body["error"], "status": 503}
    assert "too many open streams (2)" in body["error"]
    assert live.get("/api/rmb:last").status_code == 200  # the rest of the API still answers
    first.close()  # its slot is freed once the server sees the hang-up
    wait_until(lambda: status_of(live.port) == 200, timeout=30, what="a freed slot")

    # A stream that reaches max_duration_s ends cleanly (its last chunk), and the
    # connection serves the next request.
    port = live.start_api(api_config(workdir, "short.yaml", max_duration_s=1), "api_short")
    short = SSE(port)
    msgs = []
    while (m := short.message(deadline=30)) is not None:
        msgs.append(m["event"])
    assert short.complete and msgs[:2] == ["hello", "slo"]
    short.s.sendall(b"GET /api/rmb:last HTTP/1.1\r\nHost: x\r\n\r\n")
    assert short._until(b"\r\n").startswith(b"HTTP/1.1 200")
    short.close()


def test_a_slow_reader_is_cut_and_frees_its_slot(workdir, procs):
    live = Live(workdir, procs, max_streams=1, replay_max=100000)
    emit(workdir, 20000)
    live.stored(20000)
    port = live.start_api(
        api_config(workdir, "slow.yaml", request_timeout_s=1, max_streams=1, replay_max=100000),
        "api_slow",
    )
    # Replays 20 000 rows (about 5 MB) to a client that reads nothing.
    slow = SSE(port, "/api/stream?last_event_id=0.0.0", rcvbuf=4096)
    assert slow.status == 200
    assert status_of(port) == 503  # the one slot is taken
    wait_until(lambda: status_of(port) == 200, timeout=60, what="the slow reader cut")
    with pytest.raises((EOFError, ConnectionResetError, AssertionError)):
        while True:  # what was sent, then the end: never the last chunk
            slow._recv()
    slow.close()


def test_host_filter_and_silent_rows_in_the_cursor(workdir, procs):
    from lumen import storage, timefmt

    live = Live(workdir, procs, ingest=False, heartbeat_s=0.3)
    path = workdir / "data/lumen.db"
    stores = {h: storage.SqliteStore(str(path), h) for h in ("alpha", "beta")}
    offsets = iter(range(10**6))

    def add(name, n):
        rows = [
            (timefmt.format(time.time()), f"{name}.core", 0.2, 0.1, "SAFE", time.time())
            + (f"fp-{name}", next(offsets), "observe")
            for _ in range(n)
        ]
        with stores[name].transaction():
            stores[name].insert("rmb", rows)

    try:
        beta = SSE(live.port, "/api/stream?host=beta")
        assert beta.message()["data"]["host"] == "beta"
        for name in ("alpha", "beta", "alpha", "beta", "beta"):
            add(name, 2)
        got = beta.events("rmb", 6)
        assert {m["data"]["host"] for m in got} == {"beta"}
        assert [rmb_part(m["id"]) for m in got] == [3, 4, 7, 8, 9, 10]
        add("alpha", 5)  # rows beta does not get: a ping carries the cursor past them
        ping = wait_until(lambda: (m := beta.message()) and m["comments"] and m["id"] and m)
        assert ping["comments"] == ["ping"] and rmb_part(ping["id"]) == 15
        beta.close()
        again = SSE(live.port, "/api/stream?host=beta", [("Last-Event-ID", ping["id"])])
        assert again.message()["data"]["resumed"] is True
        add("alpha", 1)
        add("beta", 1)
        m = again.events("rmb", 1)[0]
        assert m["data"]["host"] == "beta" and rmb_part(m["id"]) == 17
        again.close()
        both = SSE(live.port, f"/api/stream?last_event_id={ping['id']}")
        assert [x["data"]["host"] for x in both.events("rmb", 2)] == ["alpha", "beta"]
        both.close()
    finally:
        for s in stores.values():
            s.close()
    assert live.get("/api/stream", host="x" * 201).status_code == 400


def safety_line(ts, final):
    return json.dumps(
        {
            "ts": ts,
            "loop": "safety.music.v17",
            "levels": {"residual": final, "rollback_ratio": final, "final": final},
        }
    )


def alert(i, status="firing", **extra):
    """A schema-valid line of logs/alerts.jsonl (schemas/alert_event_v1.json)."""
    from lumen import timefmt

    line = {
        "ts": timefmt.format(time.time()),
        "status": status,
        "alertname": f"LumenAlert{i}",
        "severity": "page" if i % 2 else "warning",
        "summary": f"alert number {i}, with a comma",
        "fingerprint": f"{i:016x}",
        "starts_at": "2026-01-01T00:00:00Z",
        "ends_at": None if status == "firing" else "2026-01-01T00:05:00Z",
        "labels": {"alertname": f"LumenAlert{i}", "team": "lumen", "i": str(i)},
        "receiver": "lumen-live",
        "group_key": '{}:{alertname="LumenAlert"}',
    }
    line.update(extra)
    return json.dumps(line)


def append(path, lines):
    with open(path, "a") as f:
        f.write("".join(x + "\n" for x in lines))


def test_levels_and_alerts_are_pushed_and_listed(workdir, procs):
    live = Live(workdir, procs, heartbeat_s=0.3)
    sse = SSE(live.port)
    assert sse.message()["event"] == "hello"
    now = time.time()
    from lumen import timefmt

    levels = ["CALM", "CALM", "TENSE", "TENSE", "ALERT", "CALM", "CALM", "CALM"]
    append(
        workdir / "logs/safety_music_events.jsonl",
        [safety_line(timefmt.format(now - 6 + i), lv) for i, lv in enumerate(levels)],
    )
    got = [m["data"] for m in sse.events("level", 4)]
    assert [(d["previous"], d["level"]) for d in got] == [
        (None, "CALM"),
        ("CALM", "TENSE"),
        ("TENSE", "ALERT"),
        ("ALERT", "CALM"),
    ]
    assert all(d["host"] == "h1" for d in got)
    # The unchanged levels after the last change send nothing; a ping carries them.
    ping = wait_until(lambda: (m := sse.message()) and m["comments"] and m["id"] and m)
    assert ping["id"].split(".")[1] == "8"

    lines = [alert(1), alert(2), alert(1, "resolved"), '{"ts": "not a time"}', alert(3)]
    append(workdir / "logs/alerts.jsonl", lines)
    pushed = sse.events("alert", 4)
    sent = [json.loads(x) for x in lines if "not a time" not in x]
    for m, line in zip(pushed, sent):
        d = m["data"]
        assert {k: d[k] for k in line} == line and d["host"] == "h1" and isinstance(d["id"], int)
        assert int(m["id"].split(".")[2]) == d["id"]
    assert [m["data"]["status"] for m in pushed] == ["firing", "firing", "resolved", "firing"]
    live.stored(4, "alerts")
    rejects = (workdir / "logs/rejects/alerts.jsonl").read_text().splitlines()
    assert len(rejects) == 1 and json.loads(rejects[0])["reason"] == "schema"
    sse.close()

    # /api/alerts: newest first, status=, host=, and the list formats.
    body = live.get("/api/alerts").json()
    assert [i["alertname"] for i in body["items"]] == [
        "LumenAlert3",
        "LumenAlert1",
        "LumenAlert2",
        "LumenAlert1",
    ]
    assert body["items"] == [m["data"] for m in pushed][::-1]
    resolved = live.get("/api/alerts", status="resolved").json()["items"]
    assert [(i["alertname"], i["ends_at"]) for i in resolved] == [
        ("LumenAlert1", "2026-01-01T00:05:00Z")
    ]
    assert live.get("/api/alerts", host="h2").json()["count"] == 0
    page = live.get("/api/alerts", limit=2).json()
    rest = live.get("/api/alerts", limit=2, cursor=page["next_cursor"]).json()
    assert page["items"] + rest["items"] == body["items"] and rest["next_cursor"] is None
    assert live.get("/api/alerts", status="pending").status_code == 400
    assert live.get("/api/alerts", entity="x").status_code == 400
    nd = live.get("/api/alerts", _format="ndjson")
    assert [json.loads(x) for x in nd.text.splitlines()] == body["items"]
    table = list(csv.DictReader(io.StringIO(live.get("/api/alerts", _format="csv").text)))
    assert [json.loads(r["labels"]) for r in table] == [i["labels"] for i in body["items"]]
    assert table[0]["summary"] == "alert number 3, with a comma" and table[0]["ends_at"] == ""
    streamed = live.get("/api/alerts", _stream="on").json()
    assert streamed["items"] == body["items"]


def test_alerts_are_stored_exactly_once_through_kill_9(workdir, procs):
    """Alert lines appended while ingesters are killed at random points: each valid line is
    one row, the bad ones quarantined, nothing lost or stored twice."""
    rng = random.Random(17)
    config = api_config(workdir, batch_lines=50)
    log = workdir / "logs/alerts.jsonl"
    (workdir / "logs").mkdir()
    written = 0
    for k in range(6):
        before = count(workdir, "alerts")
        append(log, [alert(written + i) for i in range(800)] + ["{not json"])
        written += 800
        ing = procs.start(INGEST, "--config", config, "--name", f"ingest{k}", env=ENV)
        goal = before + rng.randint(1, 700)  # killed somewhere in the middle of the new lines
        wait_until(lambda: count(workdir, "alerts") >= goal or ing.poll() is not None, timeout=60)  # noqa: B023
        ing.send_signal(signal.SIGKILL)
        ing.wait(timeout=10)
    r = subprocess.run(
        [PY, str(INGEST), "--config", str(config), "--once"],
        cwd=workdir,
        env=merged_env(ENV),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    db = sqlite3.connect(workdir / "data/lumen.db")
    n, offsets, names = db.execute(
        "SELECT COUNT(*), COUNT(DISTINCT src_offset), COUNT(DISTINCT alertname) FROM alerts"
    ).fetchone()
    assert n == offsets == names == written
    bad = [json.loads(x) for x in (workdir / "logs/rejects/alerts.jsonl").read_text().splitlines()]
    assert {(b["reason"], b["offset"]) for b in bad} == {
        ("json", off) for off in line_offsets(log) if log.read_bytes()[off : off + 2] == b"{n"
    }


def line_offsets(path):
    out, off = [], 0
    for line in path.read_bytes().splitlines(keepends=True):
        out.append(off)
        off += len(line)
    return out


def test_the_poller_is_idle_without_streams(workdir):
    """No stream open, no query: the hub does nothing at its ticks."""
    from lumen import config
    from lumen.api.app import Api

    subprocess.run(
        [PY, str(ROOT / "tools/storage/sqlite_init_v17_18.py")],
        cwd=workdir,
        env=merged_env(ENV),
        check=True,
        capture_output=True,
    )
    api = Api(config.load(CONFIG_API, env={"LUMEN_DB": str(workdir / "data/lumen.db")}))
    for _ in range(5):
        api.hub.tick()
    assert api.hub.polls == 0
    st, hd, body = api.app("GET", "/api/stream", {})
    assert st == 200 and api.hub.open_count() == 1
    assert next(body).startswith(b"retry: 3000\nevent: hello\n")
    api.hub.tick()
    assert api.hub.polls == 1
    body.close()
    assert api.hub.open_count() == 0
    api.hub.tick()
    assert api.hub.polls == 1
    # HEAD (the server closes the body unread) frees the slot too.
    st, hd, body = api.app("HEAD", "/api/stream", {})
    body.close()
    assert api.hub.open_count() == 0


def frames(body):
    """[(event, id, data)] a stream (lumen.api.stream.Stream) has to send now."""
    from lumen import httpserve

    out = []
    while not isinstance(piece := next(body), httpserve.Wait):
        for block in piece.decode().split("\n\n"):
            f = dict(x.split(": ", 1) for x in block.split("\n") if ": " in x)
            if "event" in f:
                out.append((f["event"], f["id"], json.loads(f["data"])))
    return out


def test_a_stream_behind_the_hub_replays_from_the_store_or_resets(workdir):
    """The hub keeps RING events: a stream that has not taken them (a slow reader) reads
    the rest from the store, each row once, in order; a backlog over replay_max (a bulk
    backfill) is skipped, and the streams are told to reset."""
    from lumen import config, storage, timefmt
    from lumen.api import hub
    from lumen.api.app import Api

    store = storage.SqliteStore(str(workdir / "data/lumen.db"), "h1")
    offsets = iter(range(10**7))

    def add(n):
        t = time.time()
        rows = [
            (timefmt.format(t), "e", 0.2, 0.1, "SAFE", t, "fp", next(offsets), "observe")
            for _ in range(n)
        ]
        with store.transaction():
            store.insert("rmb", rows)

    def api(replay_max):
        cfg = config.load(
            CONFIG_API,
            env={"LUMEN_DB": str(workdir / "data/lumen.db")},
            overrides={"api.stream.replay_max": replay_max},
        )
        return Api(cfg)

    try:
        slow = api(10000)
        st, _, body = slow.app("GET", "/api/stream", {})
        frames(body)
        add(hub.RING + 904)  # two ticks' worth: the second pushes the first 904 out
        slow.hub.tick()
        slow.hub.tick()
        assert slow.hub.floor[0] == 904 and len(slow.hub.ring) == hub.RING
        got = frames(body)
        assert [int(i.split(".")[0]) for _, i, _ in got] == list(range(1, hub.RING + 905))
        body.close()

        fast = api(100)
        st, _, body = fast.app("GET", "/api/stream", {})
        frames(body)
        add(5000)  # more than a ring and than replay_max in one look: skipped
        fast.hub.tick()
        got = frames(body)
        assert [(e, d["reason"]) for e, _, d in got] == [("reset", "more than 100 rows missed")]
        assert got[0][1] == f"{hub.RING + 5904}.0.0"
        add(3)
        fast.hub.tick()
        assert [i for _, i, _ in frames(body)] == [f"{hub.RING + 5904 + k}.0.0" for k in (1, 2, 3)]
        body.close()
    finally:
        store.close()
