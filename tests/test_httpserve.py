"""lumen.httpserve under hostile and broken clients, over real sockets: the whole-request
deadline, the connection cap, JSON for every error, framing checks, quiet client resets,
bounded threads; and the API's pooled read-only connections stay fresh."""

import json
import select
import socket
import sqlite3
import struct
import threading
import time

import pytest

from lumen.api.app import Api
from lumen import config, httpserve, storage
from conftest import ROOT, wait_until

BIG = b"x" * 8_000_000  # larger than any socket buffer: the write blocks on the client
app_started, app_done = threading.Event(), threading.Event()
gate_entered, gate = threading.Event(), threading.Event()


def app(method, path, query):
    if path == "/boom":
        raise RuntimeError("secret detail")
    if path == "/slow-big":
        app_started.set()
        time.sleep(0.3)
        app_done.set()
        return 200, [("Content-Type", "application/octet-stream")], BIG
    if path == "/gate":  # held by a worker until the test opens the gate
        gate_entered.set()
        gate.wait(60)
        return 200, [("Content-Type", "application/json")], b'{"gate": true}'
    if path == "/big":
        return 200, [("Content-Type", "application/octet-stream")], BIG
    return 200, [("Content-Type", "application/json")], b'{"ok": true}'


@pytest.fixture
def start():
    """start(**serve_kw) -> a server on a free port, serving in a thread until the test ends."""
    servers = []

    def _start(**kw):
        srv = httpserve.serve(app, "127.0.0.1", 0, **kw)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv

    yield _start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def connect(srv):
    s = socket.create_connection(("127.0.0.1", srv.server_port), timeout=10)
    return s


def read_response(s, head_only=False):
    """(status, headers with lower-case names, body) of one answer, body by Content-Length."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise EOFError(f"connection closed after {buf[:200]!r}")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
    n = 0 if head_only else int(headers.get("content-length", 0))
    while len(body) < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body[:n]


def request(srv, raw):
    with connect(srv) as s:
        s.sendall(raw)
        return read_response(s)


def assert_json_error(status, headers, body, expected):
    assert status == expected
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"ok": False, "error": json.loads(body)["error"], "status": expected}


def closed_by_peer(s):
    """True once the server has closed the connection (EOF or reset)."""
    if not select.select([s], [], [], 0)[0]:
        return False
    try:
        while True:
            chunk = s.recv(65536, socket.MSG_DONTWAIT)
            if not chunk:
                return True
    except BlockingIOError:  # data, but no EOF yet
        return False
    except ConnectionResetError:
        return True


def test_slowloris_is_cut_off_at_the_deadline(start):
    deadline = 1.0
    srv = start(timeout=deadline)
    s = connect(srv)
    s.sendall(b"GET /")
    received = b""
    t0 = time.monotonic()
    # One byte every 0.1 s: each recv is quick, only a deadline for the whole head stops it.
    while time.monotonic() - t0 < 10 * deadline:
        if select.select([s], [], [], 0.1)[0]:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
            continue
        try:
            s.send(b"a")
        except (BrokenPipeError, ConnectionResetError):
            break
    else:
        pytest.fail(f"a client sending a byte every 0.1 s was not cut off in {10 * deadline} s")
    s.close()
    if received:  # cut off mid-request: told why, in JSON
        status, headers, body = read_response_from(received)
        assert_json_error(status, headers, body, 408)
    # An idle keep-alive connection is closed too.
    idle = connect(srv)
    idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(idle)[0] == 200
    wait_until(lambda: closed_by_peer(idle), timeout=10 * deadline, what="idle connection closed")
    idle.close()


def read_response_from(data):
    a, b = socket.socketpair()
    with a, b:
        a.sendall(data)
        a.shutdown(socket.SHUT_WR)
        return read_response(b)


def test_connections_over_the_cap_get_503_json(start):
    srv = start(max_conns=3)
    held = []
    for _ in range(3):  # each answered once, then idle on keep-alive
        s = connect(srv)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s)[0] == 200
        held.append(s)
    extra = connect(srv)
    extra.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = read_response(extra)
    assert_json_error(status, headers, body, 503)
    assert headers["connection"] == "close"
    wait_until(lambda: closed_by_peer(extra), what="the refused connection closed")
    extra.close()
    held.pop().close()  # a slot frees: new connections are served again

    def served():
        try:
            return request(srv, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200
        except (EOFError, ConnectionError):
            return False

    wait_until(served, what="a connection served after one closed")
    for s in held:
        s.close()


@pytest.mark.parametrize("value", [b"abc", b"-1", b"1e3", b"5\r\nContent-Length: 6"])
def test_bad_content_length_is_400_json(start, capfd, value):
    srv = start()
    status, headers, body = request(
        srv, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: " + value + b"\r\n\r\n"
    )
    assert_json_error(status, headers, body, 400)
    assert "Content-Length" in json.loads(body)["error"]
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize(
    "raw, status",
    [
        (b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 70_000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(120)) + b"\r\n", 431),
        (b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", 505),
        (b"GET\x00 / HTTP/1.1 x\r\n\r\n", 400),
    ],
)
def test_errors_before_the_app_are_json_too(start, raw, status):
    srv = start()
    st, headers, body = request(srv, raw)
    assert_json_error(st, headers, body, status)
    assert b"<html" not in body.lower()


def test_client_reset_prints_no_traceback(start, capfd):
    srv = start()
    app_started.clear()
    app_done.clear()
    # A reset while the server writes a big answer ...
    s = connect(srv)
    s.sendall(b"GET /slow-big HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_until(app_started.is_set, what="the request to reach the app")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # SO_LINGER 0: the close is a reset
    # ... and one in the middle of a request head.
    s = connect(srv)
    s.sendall(b"GET / HTTP/1.1\r\nHo")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    err = ""

    def both_seen():
        nonlocal err
        err += capfd.readouterr().err
        return "Error" in err or getattr(srv, "dropped", 0) >= 2

    wait_until(both_seen, what="the server to notice both resets")
    assert "Traceback" not in err and "Error" not in err, err
    assert app_done.is_set() and srv.dropped == 2
    assert request(srv, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200  # still serving


def test_thread_count_stays_bounded_with_many_slow_clients(start):
    srv = start(max_conns=20, timeout=5)
    before = threading.active_count()
    peak = before
    slow = []
    for _ in range(100):
        s = connect(srv)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        slow.append(s)
        peak = max(peak, threading.active_count())
    refused = set()

    def all_answered():
        nonlocal peak
        peak = max(peak, threading.active_count())
        for s in slow:
            if s not in refused and select.select([s], [], [], 0)[0]:
                refused.add(s)
        return len(refused) >= 80

    wait_until(all_answered, timeout=20, what="80 connections over the cap answered")
    for s in list(refused)[:5]:
        status, headers, body = read_response(s)
        assert_json_error(status, headers, body, 503)
    assert peak - before <= 20, f"{peak - before} threads for 100 slow clients"
    for s in slow:
        s.close()


def test_a_client_not_reading_its_answer_holds_no_worker(start):
    srv = start(workers=1, timeout=30)
    stuck = connect(srv)
    stuck.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
    # The only worker is free for the next client: answered long before stuck's 30 s are up
    # (connect() gives up after 10 s).
    assert request(srv, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200
    stuck.close()
    # An answer not read within the deadline is abandoned and the connection closed.
    srv = start(timeout=1)
    stuck = connect(srv)
    stuck.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_until(lambda: srv.timed_out >= 1, timeout=10, what="the unread answer abandoned")
    got = 0
    try:
        while chunk := stuck.recv(1 << 20):
            got += len(chunk)
    except ConnectionResetError:
        pass
    assert got < len(BIG)
    stuck.close()


def test_app_exception_is_500_json_without_a_stack_trace(start, capfd):
    srv = start()
    status, headers, body = request(srv, b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_json_error(status, headers, body, 500)
    assert b"Traceback" not in body and b"secret detail" not in body
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if "RuntimeError" in line] == [err.strip()]


def test_keepalive_head_405_and_a_get_body_dropped(start):
    srv = start()
    with connect(srv) as s:
        # A GET with a small body: the body is read and dropped, the connection stays usable.
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        assert read_response(s)[:1] == (200,)
        s.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = read_response(s, head_only=True)
        assert status == 200 and body == b"" and headers["content-length"] == "12"
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        status, headers, body = read_response(s)
        assert_json_error(status, headers, body, 405)
        assert "GET" in headers["allow"]
        s.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s)[0] == 200
    status, headers, body = request(
        srv, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n"
    )
    assert_json_error(status, headers, body, 413)


def test_api_reuses_read_only_connections_and_sees_new_rows(workdir):
    db_path = workdir / "data/lumen.db"
    w = storage.connect(db_path)
    storage.migrate(w)
    api = Api(config.load(ROOT / "configs/api_v18.yaml", env={"LUMEN_DB": str(db_path)}))

    def last_ts():
        status, _, body = api.app("GET", "/api/rmb:last", {})
        assert status == 200
        return json.loads(body).get("ts")

    def insert(i):
        w.execute(
            "INSERT INTO rmb (ts, entity_id, residual, phase, risk, t, src_fp, "
            "src_offset) VALUES (?, 'e', 0.1, 0.2, 'SAFE', ?, 'fp', ?)",
            (f"2026-01-01T00:00:{i:02d}Z", 1767225600 + i, i),
        )
        w.commit()

    assert last_ts() is None
    with api.reader() as first:
        pass
    for i in range(3):
        insert(i)
        assert last_ts() == f"2026-01-01T00:00:{i:02d}Z"  # each query sees the last commit
    with api.reader() as again:
        assert again.conn is first.conn  # one connection, reused
        with pytest.raises(sqlite3.OperationalError):
            again.execute("DELETE FROM rmb")
    w.close()
    # A database file replaced under the API: the pooled connections to the old one go.
    db_path.unlink()
    for extra in ("-wal", "-shm"):
        (workdir / f"data/lumen.db{extra}").unlink(missing_ok=True)
    w = storage.connect(db_path)
    storage.migrate(w)
    assert last_ts() is None
    insert(7)
    assert last_ts() == "2026-01-01T00:00:07Z"
    w.close()


def test_post_bodies_only_where_a_handler_takes_them(start):
    """A server given `post` gets whole bodies up to max_body (the alert receiver); the
    HTTP layer's own error answers are told to on_error; other servers still say 405."""
    got, told = [], []

    def post(path, query, body):
        got.append((path, body))
        return 200, [("Content-Type", "application/json")], b'{"ok": true}'

    srv = httpserve.serve(
        app, "127.0.0.1", 0, post=post, max_body=200_000, on_error=told.append, timeout=5
    )
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        big = b"x" * 150_000  # over the 64 KB a GET server reads and drops
        head = b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % len(big)
        assert request(srv, head + b"\r\n" + big)[0] == 200
        with connect(srv) as s:  # Expect: 100-continue: the 100 first, then the body
            s.sendall(head + b"Expect: 100-continue\r\n\r\n")
            assert s.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
            s.sendall(big)
            assert read_response(s)[0] == 200
        assert got == [("/in", big), ("/in", big)]
        status, headers, body = request(
            srv, b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 200001\r\n\r\n"
        )
        assert_json_error(status, headers, body, 413)
        status, headers, body = request(
            srv, b"POST /in HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        assert_json_error(status, headers, body, 411)
        status, headers, body = request(srv, b"PUT /in HTTP/1.1\r\nHost: x\r\n\r\n")
        assert_json_error(status, headers, body, 405)
        assert headers["allow"] == "GET, HEAD, POST"
        assert len(got) == 2 and told == [413, 411]
    finally:
        srv.shutdown()
        srv.server_close()
    plain = start()  # no post handler: POST is 405, a body over 64 KB is 413, as before
    status, headers, body = request(plain, head + b"\r\n" + big)
    assert_json_error(status, headers, body, 413)
    status, headers, body = request(
        plain, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    )
    assert_json_error(status, headers, body, 405)
    assert headers["allow"] == "GET, HEAD"


@pytest.fixture
def gated():
    gate_entered.clear()
    gate.clear()
    yield
    gate.set()


def test_input_that_comes_while_a_worker_answers_waits_its_turn(start, gated):
    """The connection stays registered while a worker has it: a request pipelined behind
    one the app is still answering is answered after it, in order, on the same connection,
    and the connection keeps serving."""
    srv = start(workers=2)
    with connect(srv) as s:
        s.sendall(b"GET /gate HTTP/1.1\r\nHost: x\r\n\r\n")
        assert gate_entered.wait(30)
        s.sendall(b"GET /tiny HTTP/1.1\r\nHost: x\r\n\r\n")
        gate.set()
        both = b""
        while not both.endswith(b'{"ok": true}'):  # the second answer's body ends it
            chunk = s.recv(65536)
            assert chunk, f"closed after {both!r}"
            both += chunk
        assert both.index(b'{"gate": true}') < both.index(b'{"ok": true}')
        for _ in range(3):
            s.sendall(b"GET /tiny HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(s)[2] == b'{"ok": true}'
    wait_until(lambda: srv.open == 0, what="the connection released")


def test_a_hang_up_while_a_worker_answers_releases_the_connection(start, gated):
    srv = start(workers=2)
    s = connect(srv)
    s.sendall(b"GET /gate HTTP/1.1\r\nHost: x\r\n\r\n")
    assert gate_entered.wait(30)
    s.close()
    gate.set()
    wait_until(lambda: srv.open == 0, what="the connection released")
    assert request(srv, b"GET /tiny HTTP/1.1\r\nHost: x\r\n\r\n")[2] == b'{"ok": true}'


def test_keep_alive_connections_a_worker_gave_back_still_expire(start):
    """Back-to-back keep-alive requests (given back by the worker itself, not the selector
    thread) are all answered, the thread count stays 1 + workers, and each connection
    left idle is still closed at its deadline."""
    srv = start(workers=3, timeout=1)
    socks = [connect(srv) for _ in range(6)]
    counts = []
    for _ in range(200):
        for s in socks:
            s.sendall(b"GET /tiny HTTP/1.1\r\nHost: x\r\n\r\n")
        for s in socks:
            status, headers, body = read_response(s)
            assert (status, body) == (200, b'{"ok": true}')
        counts.append(threading.active_count())  # the server's threads all run by now
    assert len(set(counts)) == 1, set(counts)
    for s in socks:
        wait_until(lambda s=s: closed_by_peer(s), timeout=30, what="an idle connection closed")
        s.close()
    wait_until(lambda: srv.open == 0, what="connections released")
    assert srv.timed_out == 6
