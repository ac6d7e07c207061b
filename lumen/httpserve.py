"""The stdlib HTTP server every exporter and the API sit on.

Handlers stay thin over one function `app(method, path, query) -> (status, headers, body)`.
One selector thread owns every connection while its request arrives and while the rest of
a big answer leaves; a complete request (head, and a body of up to 64 KB) goes to one of a
few worker threads, which answer it with a BaseHTTPRequestHandler and hand the connection
back. A worker never waits on a client. What that guarantees:

- A deadline for the whole request: `timeout` seconds from the accept (or from the end of
  the previous answer on a keep-alive connection) to its last byte. It is checked against
  the clock, not per recv, so trickling bytes does not extend it. An idle connection is
  then closed; one cut off mid-request gets 408 first. An answer the client does not read
  within `timeout` is abandoned and the connection closed.
- At most `max_conns` open connections; the next one gets 503 at once and is closed. Slow
  or idle clients hold no thread: the thread count is 1 + `workers`, whatever the load.
- Every error is JSON, {"ok": false, "error": ..., "status": N} with Content-Type
  application/json, the stdlib's own too (400 malformed request line, 414 a request line
  over 64 KB, 431 a head over 64 KB or over 100 headers): never its HTML page. Other
  methods than GET/HEAD (and POST, below) get 405 with `Allow`; an app that raises gets 500
  with no stack trace in the body and one line on stderr. `on_error(status)`, if given, is
  called for each of these answers the server gives itself (the app's own are its own).
- Request framing is checked: a bad Content-Length (not a number, negative, or given twice
  with different values) is 400; a body of up to 64 KB (a GET should carry none) is read
  and dropped, a larger one is 413; a chunked body closes the connection after the answer.
  An answer that closes the connection reads and drops input for LINGER_S first, so unread
  input does not turn the close into a reset that destroys the answer.
- POST only for a server given a `post` handler (the alert receiver): the body, up to
  `max_body` bytes, is collected by the selector within the same deadline and handed to
  `post(path, query, body)`; a larger one is 413, a chunked one 411. A client that sends
  `Expect: 100-continue` gets its 100 from the selector.
- A client that resets, hangs up or stops reading is counted in `server.dropped`, never
  printed as a traceback.
- TCP_NODELAY, HEAD, keep-alive (HTTP/1.1). A busy port raises PortInUse with the port and
  its owner in the message.

Streams. An app may answer with an iterator of byte strings instead of bytes: it goes out
chunked (HTTP/1.1; to an HTTP/1.0 client unframed, then the connection closes), one piece
of up to PIECE bytes at a time. A worker makes a piece (pulling from the iterator) and
sends what the socket takes at once; the selector thread sends the rest, and only once it
has all left is the next piece made, by whichever worker is free. So a stream holds at
most one piece in memory, no thread while the client reads, and a slow reader only slows
its own stream. Bounds: each piece must be taken by the client within `timeout` (else the
connection is closed, as for any unread answer), and the whole stream must end within
`stream_timeout` (else it is cut). A stream that is cut (the deadline, or the iterator
raised: one line on stderr) ends without its last chunk, so the client sees an incomplete
body, never a short one taken for whole. The iterator is closed (a generator's `finally`
runs) however the stream ends: done, cut, client gone, server closed.

Waiting streams (server-sent events). Instead of bytes the iterator may yield a `Wait`:
nothing to send now. What the piece holds goes out, then the connection is parked: no
piece is made and no thread is held until the app calls the wake function the Wait was
armed with (from any thread), or the client hangs up (noticed by the selector, which
closes the stream), or `stream_timeout` passes (cut). A wake that comes before the park
is kept, so none is lost; one more than needed only makes a piece that yields Wait again.

With `negotiate=True` (the API) every answer goes through lumen.httprep.negotiate: a weak
ETag on whole 200 bodies and 304 on a matching If-None-Match, gzip when the client takes
it (whole bodies and streams), `Vary: Accept-Encoding`.
"""

import errno
import functools
import json
import queue
import re
import selectors
import socket
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlsplit

from . import httprep, ports
from .ports import PortInUse


# Prometheus text format 0.0.4, which generate_latest() writes.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
JSON_TYPE = "application/json"
MAX_HEAD = 64 * 1024  # request line and headers together
MAX_DISCARD = 64 * 1024  # the largest request body read (and dropped) to keep a connection
LINGER_S = 2.0  # after an answer that closes, input is read and dropped this long
PIECE = 128 * 1024  # a stream's bytes made and sent at a time
STREAM_TIMEOUT_S = 600.0  # the longest a streamed answer may take, by default
TICK_S = 0.25  # how often deadlines are checked
HEAD_END = re.compile(rb"\r?\n\r?\n")
CONTENT_LENGTH = re.compile(rb"(?im)^content-length[ \t]*:([^\r\n]*)")
CHUNKED = re.compile(rb"(?im)^transfer-encoding[ \t]*:")
EXPECT = re.compile(rb"(?im)^expect[ \t]*:")
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
DIGITS = re.compile(r"\d{1,18}")
LISTEN, WAKE = object(), object()  # selector keys' data besides connections


class Wait:
    """Yielded by a stream's iterator instead of bytes: nothing to send until woken. The
    server calls `arm(wake)` once with the connection's wake function, which any thread
    may call, any number of times, to have the next piece made."""

    __slots__ = ("arm",)

    def __init__(self, arm):
        self.arm = arm


def _json_error(status, message):
    return json.dumps({"ok": False, "error": message, "status": status}).encode()


def _error_bytes(status, message):
    """A whole JSON error answer, for the selector thread (no handler there)."""
    body = _json_error(status, message)
    reason = BaseHTTPRequestHandler.responses.get(status, ("Error",))[0]
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {JSON_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def _body_length(head, limit=None):
    """Body bytes to collect before a worker gets the request: the declared length when it
    is one number up to `limit` (None: MAX_DISCARD, and a body behind `Expect:` is not
    waited for), else 0 (the handler answers 400 or 413, or closes after answering)."""
    if CHUNKED.search(head) or (limit is None and EXPECT.search(head)):
        return 0
    limit = MAX_DISCARD if limit is None else limit
    values = {v.strip() for v in CONTENT_LENGTH.findall(head)}
    if len(values) == 1:
        v = values.pop()
        if v.isdigit() and int(v) <= limit:
            return int(v)
    return 0


class _Conn:
    __slots__ = tuple(
        "sock addr buf scanned need deadline lingering out keep stream stream_end "
        "waiting woken parked wake".split()
    )

    def __init__(self, sock, addr, deadline):
        self.sock, self.addr, self.deadline = sock, addr, deadline
        self.buf = bytearray()
        self.scanned = self.need = 0
        self.lingering = self.keep = False
        self.out = None  # the unsent rest of an answer, a memoryview
        self.stream = None  # the rest of a streamed answer: an iterator of framed bytes
        self.stream_end = 0.0  # when the stream is cut if not done (monotonic)
        self.waiting = False  # the stream's last piece ended with a Wait
        self.woken = False  # woken while not parked: make the next piece at once
        self.parked = False  # waiting in the selector for a wake (no thread)
        self.wake = None  # the Wait's wake function, made once


class _Input:
    """rfile of one request: the bytes the selector collected (the whole head and any small
    body), consumed from the front. It never waits on the socket."""

    def __init__(self, buf):
        self.buf = buf

    def readline(self, limit=-1):
        stop = len(self.buf) if limit < 0 else min(limit, len(self.buf))
        return self.read(self.buf.find(b"\n", 0, stop) + 1 or stop)

    def read(self, n=-1):
        n = len(self.buf) if n < 0 else min(n, len(self.buf))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def close(self):
        pass


class _Output:
    """wfile of one request: the answer goes out in one send when flushed. What the socket
    does not take at once (a big answer, a client not reading) is left in `conn.out` for
    the selector thread to send: a worker never waits on a client."""

    def __init__(self, conn):
        self.conn, self.parts = conn, []

    def write(self, data):
        self.parts.append(data)
        return len(data)

    def flush(self):
        if not self.parts:
            return
        data = b"".join(self.parts)
        self.parts.clear()
        if self.conn.out is not None:  # behind earlier output still unsent: keep the order
            self.conn.out = memoryview(bytes(self.conn.out) + data)
            return
        try:
            sent = self.conn.sock.send(data)
        except BlockingIOError:  # the send buffer is full
            sent = 0
        if sent < len(data):
            self.conn.out = memoryview(data)[sent:]

    def close(self):
        pass


class _Server(HTTPServer):
    allow_reuse_address = True
    request_queue_size = 1024  # a burst of connects waits in the backlog, not in SYN retries

    def __init__(
        self,
        address,
        handler,
        timeout,
        max_conns,
        workers,
        stream_timeout,
        max_body=None,
        on_error=None,
    ):
        self.timeout_s, self.max_conns, self.workers = timeout, max_conns, workers
        self.stream_timeout_s = stream_timeout
        self.max_body = max_body  # None: no POST (bodies up to MAX_DISCARD, dropped)
        self.on_error = on_error
        self.dropped = 0  # connections the client reset, hung up mid-request or stopped reading
        self.refused = 0  # connections answered 503 because max_conns were open
        self.timed_out = 0  # connections closed at their deadline
        self.streams_cut = 0  # streamed answers ended early: stream_timeout, or the app raised
        self.open = 0  # open connections (waiting, in a worker, or lingering)
        self._sel = selectors.DefaultSelector()
        self._jobs = queue.SimpleQueue()  # complete requests, for the workers
        self._back = deque()  # (conn, keep open) from the workers
        self._resumes = deque()  # parked streams woken by the app (any thread)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._lock = threading.Lock()
        self._stop = False
        self._stopped = threading.Event()
        self._stopped.set()
        self._accept_paused_until = None
        super().__init__(address, handler)  # on failure it calls server_close(), below
        self.socket.setblocking(False)

    # ------------------------------------------------------------ selector thread
    def serve_forever(self, poll_interval=TICK_S):
        self._stop = False
        self._stopped.clear()
        self._sel.register(self.socket, selectors.EVENT_READ, LISTEN)
        self._sel.register(self._wake_r, selectors.EVENT_READ, WAKE)
        workers = [
            threading.Thread(target=self._work, daemon=True, name=f"http-worker-{i}")
            for i in range(self.workers)
        ]
        for t in workers:
            t.start()
        next_tick = 0.0
        try:
            while not self._stop:
                for key, events in self._sel.select(min(poll_interval, TICK_S)):
                    if key.data is LISTEN:
                        self._accept()
                    elif key.data is WAKE:
                        self._drain_wake()
                    elif events & selectors.EVENT_WRITE:
                        self._write(key.data)
                    else:
                        self._read(key.data)
                while self._back:
                    self._returned(*self._back.popleft())
                while self._resumes:
                    self._resumed(self._resumes.popleft())
                now = time.monotonic()
                if now >= next_tick:
                    self._expire(now)
                    next_tick = now + TICK_S
        finally:
            for _ in workers:
                self._jobs.put(None)
            stop_by = time.monotonic() + self.timeout_s  # a request under way may finish
            for t in workers:
                t.join(max(0.0, stop_by - time.monotonic()))
            for s in (self.socket, self._wake_r):
                if s in self._sel.get_map():
                    self._sel.unregister(s)
            self._stopped.set()

    def _accept(self):
        for _ in range(64):
            try:
                sock, addr = self.socket.accept()
            except BlockingIOError:  # no more pending connections
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: stop accepting for a moment rather than spin.
                    self._sel.unregister(self.socket)
                    self._accept_paused_until = time.monotonic() + TICK_S
                return  # ECONNABORTED and the like: the client gave up before the accept
            if self.open >= self.max_conns:
                self._count("refused")
                self.told(503)
                self._send_now(sock, 503, "too many open connections; retry shortly")
                self._drain(sock)
                self.shutdown_request(sock)
                continue
            self.open += 1
            sock.setblocking(False)
            # Without NODELAY, Nagle's algorithm and the client's delayed ACK can add
            # ~40 ms to a keep-alive request.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(sock, addr, time.monotonic() + self.timeout_s)
            self._sel.register(sock, selectors.EVENT_READ, conn)

    def _drain_wake(self):
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:  # emptied
            pass

    def _read(self, conn):
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:  # a spurious wake-up
            return
        except OSError:  # reset by the client
            data = None
        if conn.lingering:
            if not data:
                self._close(conn)
            return  # input after an answer that closes: dropped
        if conn.parked:  # a waiting stream: a hang-up ends it; a next request waits its turn
            if data is None:
                self._count("dropped")
            if not data or len(conn.buf) + len(data) > MAX_HEAD:
                self._close(conn)
            else:
                conn.buf += data
            return
        if not data:
            if data is None or conn.buf:  # a reset, or a hang-up mid-request
                self._count("dropped")
            self._close(conn)
            return
        conn.buf += data
        self._check(conn)

    def _check(self, conn):
        """Hand the connection to a worker once its request is complete."""
        buf = conn.buf
        if not conn.need:
            m = HEAD_END.search(buf, max(0, conn.scanned - 3))
            if m is None:
                conn.scanned = len(buf)
                if len(buf) > MAX_HEAD:
                    if buf.find(b"\n", 0, MAX_HEAD) < 0:
                        self._reject(conn, 414, "request line over 64 KB")
                    else:
                        self._reject(conn, 431, "request head over 64 KB")
                return
            head = bytes(buf[: m.end()])
            conn.need = m.end() + _body_length(head, self.max_body)
            if conn.need > len(buf) and self.max_body is not None and EXPECT.search(head):
                self._send_raw(conn.sock, CONTINUE)  # the client waits for it to send the body
        if len(buf) >= conn.need:
            self._sel.unregister(conn.sock)
            self._jobs.put(conn)

    def _write(self, conn):
        try:
            sent = conn.sock.send(conn.out)
        except BlockingIOError:  # a spurious wake-up
            return
        except OSError:  # reset by the client
            self._count("dropped")
            return self._close(conn)
        conn.out = conn.out[sent:]
        if not conn.out:
            conn.out = None
            self._sel.unregister(conn.sock)
            self._returned(conn, conn.keep)

    def _returned(self, conn, keep):
        if conn.out is not None:  # the answer's rest first, within the deadline
            conn.keep = keep
            conn.deadline = time.monotonic() + self.timeout_s
            self._sel.register(conn.sock, selectors.EVENT_WRITE, conn)
            return
        if conn.stream is not None:  # all sent: a worker makes the stream's next piece
            conn.keep = keep
            if conn.waiting and not conn.woken:  # ... once woken: parked until then
                conn.parked = True
                conn.deadline = conn.stream_end
                self._sel.register(conn.sock, selectors.EVENT_READ, conn)
                return
            conn.waiting = conn.woken = False
            self._jobs.put(conn)
            return
        if not keep:
            return self._linger(conn)
        conn.deadline = time.monotonic() + self.timeout_s
        conn.scanned = conn.need = 0
        self._sel.register(conn.sock, selectors.EVENT_READ, conn)
        if conn.buf:  # a pipelined request may be complete already
            self._check(conn)

    def _resumed(self, conn):
        """A wake of the app (see Wait), in the selector thread."""
        if conn.parked:
            conn.parked = conn.waiting = False
            self._sel.unregister(conn.sock)
            self._jobs.put(conn)
        elif conn.stream is not None:  # in a worker or sending: no park for the next Wait
            conn.woken = True

    def _expire(self, now):
        if self._accept_paused_until is not None and now >= self._accept_paused_until:
            self._accept_paused_until = None
            self._sel.register(self.socket, selectors.EVENT_READ, LISTEN)
        for key in list(self._sel.get_map().values()):
            conn = key.data
            if isinstance(conn, _Conn) and conn.deadline <= now:
                if conn.parked:  # a waiting stream at stream_timeout: cut
                    self._count("streams_cut")
                    print(
                        f"[http] stream to {conn.addr[0]} cut: waiting past stream_timeout "
                        f"({self.stream_timeout_s} s)",
                        file=sys.stderr,
                        flush=True,
                    )
                    self._close(conn)
                    continue
                if not conn.lingering:
                    self._count("timed_out")
                if conn.lingering or conn.out is not None:  # nothing more to say: close
                    self._close(conn)
                    continue
                if conn.buf:
                    self._reject(conn, 408, f"request not complete within {self.timeout_s} s")
                else:
                    self._close(conn)

    def _reject(self, conn, status, message):
        self.told(status)
        self._send_now(conn.sock, status, message)
        self._linger(conn)

    def _linger(self, conn):
        """Close our side, then read and drop the client's input until it closes too (or
        LINGER_S passes), so that unread input does not make the close a reset."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:  # the client is gone already
            return self._close(conn)
        conn.lingering = True
        conn.buf.clear()
        conn.deadline = time.monotonic() + LINGER_S
        if conn.sock not in self._sel.get_map():
            self._sel.register(conn.sock, selectors.EVENT_READ, conn)

    def _close(self, conn):
        if conn.sock in self._sel.get_map():
            self._sel.unregister(conn.sock)
        conn.parked = False
        self._end_stream(conn)
        conn.sock.close()
        self.open -= 1

    @staticmethod
    def _end_stream(conn):
        stream, conn.stream = conn.stream, None
        if stream is not None:
            try:
                httprep.close(stream)
            except Exception as e:  # the app's cleanup failed: say so, the connection goes anyway
                print(f"[http] closing a stream: {type(e).__name__}: {e}", file=sys.stderr)

    @staticmethod
    def _send_now(sock, status, message):
        _Server._send_raw(sock, _error_bytes(status, message))

    @staticmethod
    def _send_raw(sock, data):
        try:
            sock.send(data, socket.MSG_DONTWAIT)
        except OSError:  # the client is gone or not reading: nothing more to tell it
            pass

    @staticmethod
    def _drain(sock):
        """Read, without waiting, what the client already sent: closing with unread input
        sends a reset, which can destroy the answer before the client reads it."""
        try:
            for _ in range(16):
                if not sock.recv(65536, socket.MSG_DONTWAIT):
                    return
        except OSError:  # nothing more to read (EAGAIN), or the client is gone
            pass

    # ------------------------------------------------------------ worker threads
    def _work(self):
        while (conn := self._jobs.get()) is not None:
            keep = False
            try:
                if conn.stream is not None:  # the next piece of a streamed answer
                    keep = self._pump(conn)
                else:
                    keep = not self.RequestHandlerClass(conn, conn.addr, self).close_connection
                    if conn.stream is not None and conn.out is None:
                        keep = self._pump(conn, keep)
            except Exception:  # as socketserver does: handle_error tells a bug from a hang-up
                self._end_stream(conn)
                self.handle_error(conn.sock, conn.addr)
            self._back.append((conn, keep))
            try:
                self._wake_w.send(b"\0")
            except OSError:  # wake-ups pending already (EAGAIN), or the server is closed
                pass

    def _pump(self, conn, keep=None):
        """Make the stream's next piece and send what the socket takes now (the rest is
        conn.out, for the selector). Returns whether the connection stays open after."""
        keep = conn.keep if keep is None else keep
        out, n = _Output(conn), 0
        try:
            if time.monotonic() > conn.stream_end:
                raise TimeoutError(f"not done within stream_timeout ({self.stream_timeout_s} s)")
            while n < PIECE:
                piece = next(conn.stream, None)
                if piece is None:  # done: the last chunk is out with this piece
                    self._end_stream(conn)
                    break
                if isinstance(piece, Wait):  # nothing more now: park once this is sent
                    conn.waiting = True
                    if conn.wake is None:
                        conn.wake = functools.partial(self._resume, conn)
                    piece.arm(conn.wake)
                    break
                n += out.write(piece)
        except Exception as e:  # cut: what is out stays out, the last chunk never comes
            self._count("streams_cut")
            print(
                f"[http] stream to {conn.addr[0]} cut: {type(e).__name__}: {e}",
                file=sys.stderr,
                flush=True,
            )
            self._end_stream(conn)
            keep = False
        out.flush()
        return keep

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        # The client reset, hung up or stopped reading: normal on a network, not a bug.
        if isinstance(exc, (ConnectionError, TimeoutError)):
            self._count("dropped")
            return
        print(
            f"[http] error on a connection from {client_address[0]}: {type(exc).__name__}: {exc}",
            file=sys.stderr,
            flush=True,
        )

    # ------------------------------------------------------------ any thread
    def told(self, status):
        """An error answer the server gave itself: tell `on_error`, which must not fail."""
        if self.on_error is not None:
            try:
                self.on_error(status)
            except Exception as e:  # noqa: BLE001 - a counter's bug must not stop the server
                print(f"[http] on_error({status}) failed: {e!r}", file=sys.stderr, flush=True)

    def _resume(self, conn):
        """The wake function of a waiting stream (see Wait)."""
        self._resumes.append(conn)
        try:
            self._wake_w.send(b"\0")
        except OSError:  # wake-ups pending already (EAGAIN), or the server is closed
            pass

    def _count(self, name):
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def shutdown(self):
        """Stop serve_forever and wait for it (it must be running in another thread)."""
        self._stop = True
        try:
            self._wake_w.send(b"\0")
        except OSError:  # full (the selector is awake anyway) or already closed
            pass
        self._stopped.wait()

    def server_close(self):
        super().server_close()
        for key in list(self._sel.get_map().values()):
            if isinstance(key.data, _Conn):
                self._close(key.data)
        while self._back:
            conn = self._back.popleft()[0]
            self._end_stream(conn)
            conn.sock.close()
        while True:  # requests and stream pieces no worker took before stopping
            try:
                conn = self._jobs.get_nowait()
            except queue.Empty:
                break
            if conn is not None:
                self._end_stream(conn)
                conn.sock.close()
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()


def make_handler(
    app, max_url=8192, negotiate=False, post=None, max_body=None, request_headers=False
):
    """`post(path, query, body) -> (status, headers, body)` answers POST (else 405);
    `request_headers`: GET/HEAD call app(method, path, query, headers)."""
    allow = "GET, HEAD, POST" if post else "GET, HEAD"

    class Handler(BaseHTTPRequestHandler):
        """One request, complete in `self.request.buf`; answered in one send, or a stream's
        head and first piece (the server's _pump makes the rest)."""

        protocol_version = "HTTP/1.1"

        def setup(self):
            self.connection = self.request.sock
            self.rfile = _Input(self.request.buf)
            self.wfile = _Output(self.request)

        def handle(self):
            self.close_connection = True
            self.handle_one_request()

        def finish(self):
            self.wfile.flush()

        def handle_expect_100(self):
            return True  # no "100 Continue": no body is wanted, it is dropped unread

        def send_error(self, code, message=None, explain=None):
            """Every error answer, the stdlib's (400, 414, 431, 505) included, is JSON and
            closes the connection: after a framing error the stream cannot be trusted."""
            if message is None:
                message = self.responses.get(code, ("error",))[0]
            if self.request_version == "HTTP/0.9":  # a garbled request line: answer in 1.1
                self.request_version = "HTTP/1.1"
            self.close_connection = True
            self.server.told(code)
            self._send(
                code,
                [("Content-Type", JSON_TYPE), ("Connection", "close")],
                _json_error(code, message),
                self.command != "HEAD",
            )

        def _send(self, status, headers, body, send_body=True):
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            if not isinstance(body, (bytes, bytearray)):
                return self._stream(body, send_body)
            if status != 304:  # a 304's length would be the 200's: none is said
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def _stream(self, body, send_body):
            """The head of a streamed answer; its pieces are the server's (_pump) to send."""
            if self.request_version == "HTTP/1.0":  # no chunked framing: the close ends it
                self.close_connection = True
                self.send_header("Connection", "close")
            else:
                self.send_header("Transfer-Encoding", "chunked")
                body = httprep.chunked(body)
            self.end_headers()
            if not send_body:  # HEAD
                return httprep.close(body)
            self.request.stream = body
            self.request.stream_end = time.monotonic() + self.server.stream_timeout_s

        def _read_body(self, limit=MAX_DISCARD):
            """Read the request's body (so the connection can carry the next request): the
            bytes, or None when the request is answered already (400, 413)."""
            lengths = self.headers.get_all("Content-Length") or []
            if self.headers.get("Transfer-Encoding"):
                self.close_connection = True  # a chunked body is not read: nothing can follow
                return b""
            if not lengths:
                return b""
            if len(set(lengths)) != 1 or not DIGITS.fullmatch(lengths[0].strip()):
                self.send_error(400, "bad Content-Length: expected one non-negative integer")
                return None
            n = int(lengths[0])
            if n > limit:
                self.send_error(413, f"request body over {limit} bytes")
                return None
            body = self.rfile.read(n)
            if len(body) < n:
                self.close_connection = True  # not all here (Expect: 100-continue): answer, close
            return body

        def _respond(self, send_body, handler=None):
            body = self._read_body(max_body if handler else MAX_DISCARD)
            if body is None:
                return
            if len(self.path) > max_url:
                return self.send_error(414, f"URL longer than {max_url} bytes")
            parts = urlsplit(self.path)
            try:
                query = parse_qs(
                    parts.query,
                    keep_blank_values=True,
                    strict_parsing=False,
                    errors="strict",
                    max_num_fields=100,
                )
            except UnicodeDecodeError:
                return self._send(
                    400,
                    [("Content-Type", JSON_TYPE)],
                    _json_error(400, "malformed query string: not UTF-8 once percent-decoded"),
                    send_body,
                )
            except ValueError:  # over max_num_fields
                return self._send(
                    400,
                    [("Content-Type", JSON_TYPE)],
                    _json_error(400, "malformed query string: over 100 parameters"),
                    send_body,
                )
            try:
                if handler is not None:
                    status, headers, body = handler(parts.path, query, body)
                elif request_headers:  # the app also reads headers (Last-Event-ID, say)
                    status, headers, body = app(self.command, parts.path, query, self.headers)
                else:
                    status, headers, body = app(self.command, parts.path, query)
                if negotiate:
                    status, headers, body = httprep.negotiate(status, headers, body, self.headers)
            except Exception as e:  # a bug in the app: 500 for the client, one line for us
                print(
                    f"[http] 500 on {self.command} {parts.path[:200]}: {type(e).__name__}: {e}",
                    file=sys.stderr,
                    flush=True,
                )
                return self.send_error(500, "internal error")
            self._send(status, headers, body, send_body)

        def do_GET(self):
            self._respond(True)

        def do_HEAD(self):
            self._respond(False)

        def do_POST(self):
            if post is None:
                return self._not_allowed()
            if self.headers.get("Transfer-Encoding"):  # the selector collected no body
                return self.send_error(411, "a POST needs a Content-Length (no chunked body)")
            self._respond(True, post)

        def _not_allowed(self):
            if self._read_body() is not None:
                self._send(
                    405,
                    [("Allow", allow), ("Content-Type", JSON_TYPE)],
                    _json_error(405, f"method not allowed: use {allow.replace(', HEAD', '')}"),
                )

        def __getattr__(self, name):
            # Every method other than GET/HEAD (POST, TRACE, PROPFIND, ...) is a 405, not 501.
            if name.startswith("do_"):
                return self._not_allowed
            raise AttributeError(name)

        def log_message(self, *args):
            pass

    return Handler


def serve(
    app,
    host,
    port,
    timeout=10,
    max_url=8192,
    max_conns=256,
    workers=4,
    negotiate=False,
    stream_timeout=STREAM_TIMEOUT_S,
    post=None,
    max_body=None,
    on_error=None,
    request_headers=False,
):
    """Bind and return the server (not yet serving); `server.server_port` is the real port.
    `timeout`: seconds for a whole request (and for an idle keep-alive connection, and for
    a client to take each piece of an answer); `max_conns`: open connections at most, more
    get 503; `workers`: threads answering; `negotiate`: ETag, 304 and gzip
    (lumen.httprep); `stream_timeout`: seconds a streamed answer may take in all;
    `post(path, query, body)`: answers POST, whose body may be up to `max_body` bytes
    (default 64 KB); without it POST is 405; `on_error(status)`: told of each error answer
    the server gives itself (408, 413, ...), say to count them; `request_headers`: the app
    is called app(method, path, query, headers), `headers` the request's (an
    email.message.Message)."""
    max_body = None if post is None else max_body or MAX_DISCARD
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Server(_Server):
        address_family = family

    try:
        handler = make_handler(app, max_url, negotiate, post, max_body, request_headers)
        return Server(
            (host, port), handler, timeout, max_conns, workers, stream_timeout, max_body, on_error
        )
    except OSError as e:  # binding: a busy port, an address not of this host, a port < 1024
        if e.errno == errno.EADDRINUSE:
            raise PortInUse(ports.busy_message(host, port)) from None
        raise PortInUse(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
