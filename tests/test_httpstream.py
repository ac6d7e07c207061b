"""lumen.httpserve's streamed answers and lumen.httprep's negotiation, over real sockets:
chunked framing, one piece in memory at a time, a reader that stops or leaves, a stream
that fails or outlasts its deadline, HTTP/1.0 and HEAD; ETag and 304, gzip of whole
bodies and of streams. Waiting streams (httpserve.Wait, for server-sent events): parked
without a thread, woken from another thread, no wake lost, closed when the client leaves,
cut at stream_timeout."""

import gzip
import json
import select
import socket
import threading
import zlib
from collections import deque
from email.message import Message

import pytest

from lumen import httprep, httpserve
from conftest import wait_until

PIECE = b"0123456789abcdef" * 4096  # 64 KiB
BODY = json.dumps([{"ts": "2026-01-01T00:00:00Z", "risk": "SAFE", "i": i} for i in range(500)])
BODY = BODY.encode()  # ~25 KB, compressible


class Source:
    """A stream of `n` numbered pieces that records how far it was read and whether it
    was closed (its `finally` ran)."""

    def __init__(self, n, fail_at=None):
        self.n, self.fail_at = n, fail_at
        self.made = 0
        self.closed = threading.Event()

    def __iter__(self):
        try:
            for i in range(self.n):
                if i == self.fail_at:
                    raise RuntimeError("store went away")
                self.made += 1
                yield b"%08d" % i + PIECE
        finally:
            self.closed.set()


class Waiter:
    """A stream that waits for items pushed from another thread (None ends it). With
    `echo`, each arm pushes the next item itself, before the server has parked it."""

    def __init__(self, echo=0):
        self.items, self.lock, self.wake = deque(), threading.Lock(), None
        self.closed = threading.Event()
        self.echo = echo

    def __iter__(self):
        try:
            yield b"start\n"
            while True:
                with self.lock:
                    item = self.items.popleft() if self.items else False
                if item is None:
                    return
                yield httpserve.Wait(self._arm) if item is False else item
        finally:
            self.closed.set()

    def _arm(self, wake):
        with self.lock:
            self.wake, pending = wake, bool(self.items)
        if self.echo:  # a wake before the park: it must not be lost
            self.echo -= 1
            self.push(b"echo %d\n" % self.echo)
        elif pending:
            wake()

    def push(self, item):
        with self.lock:
            self.items.append(item)
            wake = self.wake
        if wake:
            wake()


sources = {}


def app(method, path, query):
    if path == "/stream":
        n = int(query.get("n", ["10"])[0])
        fail = int(query["fail"][0]) if "fail" in query else None
        src = sources[query.get("id", ["x"])[0]] = Source(n, fail)
        return 200, [("Content-Type", "text/csv; charset=utf-8")], iter(src)
    if path == "/wait":
        src = sources[query["id"][0]] = Waiter(int(query.get("echo", ["0"])[0]))
        return 200, [("Content-Type", "application/x-ndjson")], iter(src)
    if path == "/json":
        return 200, [("Content-Type", "application/json")], BODY
    if path == "/tiny":
        return 200, [("Content-Type", "application/json")], b'{"ok": true}'
    if path == "/png":
        return 200, [("Content-Type", "image/png")], BODY
    return 404, [("Content-Type", "application/json")], b'{"ok": false}'


@pytest.fixture
def start():
    servers = []

    def _start(**kw):
        srv = httpserve.serve(app, "127.0.0.1", 0, negotiate=True, **kw)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv

    sources.clear()
    yield _start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def connect(srv, rcvbuf=None):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(20)
    s.connect(("127.0.0.1", srv.server_port))
    return s


class Reader:
    """An HTTP/1.1 client on a raw socket: answers by Content-Length or chunked (read in
    linear time: a big body is not copied at each recv)."""

    def __init__(self, sock):
        self.s, self.buf, self.pos = sock, bytearray(), 0

    def _fill(self):
        data = self.s.recv(1 << 20)
        if not data:
            raise EOFError("closed")
        if self.pos > 1 << 20:
            del self.buf[: self.pos]
            self.pos = 0
        self.buf += data

    def _take(self, sep):
        while (i := self.buf.find(sep, self.pos)) < 0:
            self._fill()
        out, self.pos = bytes(self.buf[self.pos : i]), i + len(sep)
        return out

    def _exactly(self, n):
        while len(self.buf) - self.pos < n:
            self._fill()
        out, self.pos = bytes(self.buf[self.pos : self.pos + n]), self.pos + n
        return out

    def rest(self):
        out, self.buf, self.pos = bytes(self.buf[self.pos :]), bytearray(), 0
        return out

    def response(self, head_only=False):
        """(status, headers, body, complete): complete is False when a chunked body
        ended (the connection closed) before its last chunk."""
        lines = self._take(b"\r\n\r\n").decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
        status = int(lines[0].split()[1])
        if head_only or status == 304:
            return status, headers, b"", True
        if "content-length" in headers:
            return status, headers, self._exactly(int(headers["content-length"])), True
        body = []
        try:
            if headers.get("transfer-encoding") == "chunked":
                while size := int(self._take(b"\r\n"), 16):
                    body.append(self._exactly(size))
                    assert self._exactly(2) == b"\r\n"
                assert self._take(b"\r\n") == b""
                return status, headers, b"".join(body), True
            while True:  # no framing: the body ends when the connection closes
                self._fill()
        except (EOFError, ConnectionResetError):
            return status, headers, b"".join(body) + self.rest(), False


def get(srv, path, headers=(), version="HTTP/1.1"):
    with connect(srv) as s:
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers)
        s.sendall(f"GET {path} {version}\r\nHost: x\r\n{extra}\r\n".encode())
        return Reader(s).response()


def expected(n):
    return b"".join(b"%08d" % i + PIECE for i in range(n))


def test_a_stream_is_chunked_whole_and_keeps_the_connection(start):
    srv = start()
    with connect(srv) as s:
        r = Reader(s)
        s.sendall(b"GET /stream?n=40&id=a HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body, complete = r.response()
        assert status == 200 and complete
        assert headers["transfer-encoding"] == "chunked" and "content-length" not in headers
        assert body == expected(40)
        assert sources["a"].closed.is_set()
        # The same connection serves the next request (keep-alive after the last chunk).
        s.sendall(b"GET /tiny HTTP/1.1\r\nHost: x\r\n\r\n")
        assert r.response()[2] == b'{"ok": true}'


def test_a_stream_is_made_as_the_client_reads_not_ahead(start):
    """A client that reads nothing gets only what the socket buffers hold: the stream is
    not read to its end into memory (600 pieces of 64 KiB)."""
    srv = start(timeout=30)
    with connect(srv, rcvbuf=65536) as s:
        s.sendall(b"GET /stream?n=600&id=b HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: sources.get("b") and sources["b"].made > 0, what="the stream begun")
        made = []

        def settled():  # the count stops moving once the buffers are full
            made.append(sources["b"].made)
            return len(made) > 20 and made[-1] == made[-20]

        wait_until(settled, timeout=20, interval=0.05, what="the stream to stop growing")
        assert made[-1] < 300, f"{made[-1]} pieces made for a client that reads nothing"
        # Read it all: the rest is made as it is read, and arrives whole.
        s.settimeout(60)
        status, headers, body, complete = Reader(s).response()
        assert complete and body == expected(600)


def test_a_reader_that_stops_is_cut_at_the_deadline(start):
    srv = start(timeout=1)
    s = connect(srv, rcvbuf=4096)
    s.sendall(b"GET /stream?n=100000&id=c HTTP/1.1\r\nHost: x\r\n\r\n")
    s.recv(10)  # one read, then nothing: the server must not wait forever
    wait_until(lambda: srv.timed_out >= 1, timeout=20, what="the stalled stream abandoned")
    wait_until(sources["c"].closed.is_set, what="the stream closed")
    assert sources["c"].made < 1000
    s.close()
    wait_until(lambda: srv.open == 0, what="the connection released")


def test_a_client_that_leaves_mid_stream_closes_it_quietly(start, capfd):
    srv = start()
    s = connect(srv)
    s.sendall(b"GET /stream?n=100000&id=d HTTP/1.1\r\nHost: x\r\n\r\n")
    got = 0
    while got < 1_000_000:
        got += len(s.recv(1 << 16))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    s.close()  # a reset
    wait_until(sources["d"].closed.is_set, timeout=20, what="the stream closed")
    wait_until(lambda: srv.open == 0, what="the connection released")
    assert srv.dropped >= 1
    assert "Traceback" not in capfd.readouterr().err
    assert get(srv, "/tiny")[0] == 200


def test_a_stream_that_fails_is_cut_not_passed_off_as_whole(start, capfd):
    srv = start()
    status, headers, body, complete = get(srv, "/stream?n=50&fail=5&id=e")
    assert status == 200 and not complete  # no last chunk: the client knows
    assert body == expected(5)
    assert srv.streams_cut == 1 and sources["e"].closed.is_set()
    err = capfd.readouterr().err
    assert "store went away" in err and "Traceback" not in err


def test_a_stream_over_stream_timeout_is_cut(start, capfd):
    srv = start(timeout=5, stream_timeout=0.5)
    s = connect(srv, rcvbuf=4096)
    s.sendall(b"GET /stream?n=100000&id=f HTTP/1.1\r\nHost: x\r\n\r\n")
    r = Reader(s)
    # Reading slowly but steadily: each piece is taken within `timeout`, the whole stream
    # is not done within stream_timeout.
    with pytest.raises((EOFError, ConnectionResetError)):
        while True:
            r._fill()
            r.rest()
            select.select([], [], [], 0.01)
    assert srv.streams_cut == 1 and sources["f"].closed.is_set()
    assert "stream_timeout" in capfd.readouterr().err
    s.close()


def test_http10_stream_ends_with_the_close_and_head_sends_no_body(start):
    srv = start()
    status, headers, body, complete = get(srv, "/stream?n=7&id=g", version="HTTP/1.0")
    assert status == 200 and "transfer-encoding" not in headers and headers["connection"] == "close"
    assert body == expected(7)
    with connect(srv) as s:
        s.sendall(b"HEAD /stream?n=7&id=h HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _, _ = Reader(s).response(head_only=True)
        assert status == 200 and headers["transfer-encoding"] == "chunked"
        assert sources["h"].made == 0
        s.sendall(b"GET /tiny HTTP/1.1\r\nHost: x\r\n\r\n")  # nothing of the stream in the way
        assert Reader(s).response()[2] == b'{"ok": true}'


def test_etag_and_304(start):
    srv = start()
    status, headers, body, _ = get(srv, "/json")
    tag = headers["etag"]
    assert status == 200 and tag.startswith('W/"') and body == BODY
    for inm in (tag, f'"other", {tag}', tag[2:], "*"):
        status, h304, body, _ = get(srv, "/json", [("If-None-Match", inm)])
        assert status == 304 and body == b"", inm
        assert h304["etag"] == tag and "content-length" not in h304
        assert h304["vary"] == "Accept-Encoding" and "content-type" not in h304
    assert get(srv, "/json", [("If-None-Match", 'W/"other"')])[0] == 200
    # Errors and streams carry no ETag, and If-None-Match does not touch them.
    assert "etag" not in get(srv, "/nothing")[1]
    status, headers, _, _ = get(srv, "/stream?n=2&id=i", [("If-None-Match", "*")])
    assert status == 200 and "etag" not in headers


def test_gzip_whole_and_streamed(start):
    srv = start()
    status, headers, body, _ = get(srv, "/json", [("Accept-Encoding", "br, gzip;q=0.5")])
    assert headers["content-encoding"] == "gzip" and headers["vary"] == "Accept-Encoding"
    assert gzip.decompress(body) == BODY and len(body) < len(BODY) // 3
    plain = get(srv, "/json")[1]
    assert "content-encoding" not in plain and plain["etag"] == headers["etag"]
    for refused in ("gzip;q=0", "identity", "br", "*;q=0", "gzip;q=x"):
        h = get(srv, "/json", [("Accept-Encoding", refused)])[1]
        assert "content-encoding" not in h, refused
    assert "content-encoding" not in get(srv, "/tiny", [("Accept-Encoding", "gzip")])[1]
    h = get(srv, "/png", [("Accept-Encoding", "*")])[1]  # not a compressible type
    assert "content-encoding" not in h and "vary" not in h
    status, headers, body, complete = get(srv, "/stream?n=30&id=j", [("Accept-Encoding", "gzip")])
    assert complete and headers["content-encoding"] == "gzip"
    assert headers["transfer-encoding"] == "chunked"
    assert gzip.decompress(body) == expected(30)


def test_a_gzip_stream_decodes_as_it_arrives():
    """Each piece is flushed: what has arrived decodes to whole pieces, not a held-back tail."""
    pieces = [b"%08d" % i + PIECE for i in range(3)]
    d = zlib.decompressobj(31)
    out = []
    for part in httprep.gzip_stream(iter(pieces)):
        out.append(d.decompress(part))
    assert out[:3] == pieces


def test_negotiation_helpers():
    assert httprep.accepts_gzip(["deflate, GZIP ; q=0.1"]) is True
    assert httprep.accepts_gzip(["*;q=1, gzip;q=0"]) is False
    assert httprep.accepts_gzip([]) is False
    assert httprep.none_match(['"a", W/"b"'], '"b"') and not httprep.none_match(['"a"'], '"b"')
    req = Message()
    req["If-None-Match"] = "*"
    assert httprep.negotiate(404, [], b"x", req) == (404, [], b"x")


def chunks(r):
    """The head of a chunked answer on Reader `r`, then its chunks as they come (b"" last)."""
    head = r._take(b"\r\n\r\n").decode("latin-1")
    assert "transfer-encoding: chunked" in head.lower(), head
    while True:
        data = r._exactly(int(r._take(b"\r\n"), 16))
        assert r._exactly(2) == b"\r\n"
        yield data
        if not data:
            return


def test_waiting_streams_hold_no_thread_and_wake_from_another(start):
    srv = start(workers=1)
    socks = [connect(srv) for _ in range(3)]
    readers = [Reader(s) for s in socks]  # one per connection: a reader may hold what follows
    streams = []
    for i, s in enumerate(socks):
        s.sendall(b"GET /wait?id=w%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
        streams.append(chunks(readers[i]))
        assert next(streams[-1]) == b"start\n"
    # Three streams wait; the one worker still answers.
    assert get(srv, "/tiny")[2] == b'{"ok": true}'
    for i in (2, 0, 1):
        sources[f"w{i}"].push(b"item %d\n" % i)
        assert next(streams[i]) == b"item %d\n" % i
    # A request pipelined behind a waiting stream is answered once the stream ends.
    socks[0].sendall(b"GET /tiny HTTP/1.1\r\nHost: x\r\n\r\n")
    sources["w0"].push(b"last\n")
    sources["w0"].push(None)
    assert list(streams[0]) == [b"last\n", b""]
    assert readers[0].response()[2] == b'{"ok": true}'
    assert sources["w0"].closed.is_set()
    for s in socks:
        s.close()
    wait_until(lambda: all(src.closed.is_set() for src in sources.values()), what="streams closed")
    wait_until(lambda: srv.open == 0, what="connections released")
    assert srv.streams_cut == 0


def test_a_wake_before_the_park_is_not_lost(start):
    """Each arm wakes at once (the app has something before the server parked it): every
    item arrives, none waits for a later wake."""
    srv = start()
    with connect(srv) as s:
        s.sendall(b"GET /wait?id=e&echo=200 HTTP/1.1\r\nHost: x\r\n\r\n")
        got, it = [], chunks(Reader(s))
        assert next(it) == b"start\n"
        while len(got) < 200:
            got += next(it).splitlines()
        assert got == [b"echo %d" % i for i in reversed(range(200))]


def test_a_client_that_leaves_a_waiting_stream_closes_it(start):
    srv = start()
    s = connect(srv)
    s.sendall(b"GET /wait?id=l HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
    it = chunks(Reader(s))
    d = zlib.decompressobj(31)
    assert d.decompress(next(it)) == b"start\n"  # gzip passes the Wait through, each piece flushed
    sources["l"].push(b"more\n")
    assert d.decompress(next(it)) == b"more\n"
    s.close()
    wait_until(sources["l"].closed.is_set, what="the stream closed")
    wait_until(lambda: srv.open == 0, what="the connection released")


def test_a_waiting_stream_is_cut_at_stream_timeout(start, capfd):
    srv = start(stream_timeout=0.5)
    with connect(srv) as s:
        s.sendall(b"GET /wait?id=t HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body, complete = Reader(s).response()
        assert status == 200 and body == b"start\n" and not complete
    wait_until(sources["t"].closed.is_set, what="the stream closed")
    assert srv.streams_cut == 1
    assert "stream_timeout" in capfd.readouterr().err
