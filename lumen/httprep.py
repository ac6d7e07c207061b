"""What the bytes of an HTTP answer are: validators (ETag, If-None-Match -> 304), gzip
(whole or incremental) and chunked framing. lumen.httpserve applies `negotiate` to every
answer of a server started with `negotiate=True` (the API; the exporters are not).

- A whole 200 body gets a weak ETag, W/"<sha256 of the body>", unless the app set one. It
  is weak because the same tag names the identity and the gzip bytes (as nginx does); an
  If-None-Match that matches it (weak comparison, or "*") turns the answer into a 304 with
  no body, keeping only ETag, Cache-Control and Vary.
- A compressible Content-Type (text/*, JSON, NDJSON) gets `Vary: Accept-Encoding`, and is
  gzipped when the request's Accept-Encoding takes gzip (q > 0): a whole body of at least
  MIN_GZIP bytes at once (recent results kept in a small cache by ETag, so a static file is
  compressed once), a stream piece by piece, each piece flushed (Z_SYNC_FLUSH) so a
  client can decode what has arrived.
- A stream is an iterator of byte strings; `chunked` frames it for HTTP/1.1. Anything
  else it yields (lumen.httpserve.Wait) is the server's, passed through as it is.
- Server-sent events (text/event-stream) are not gzipped: a long-lived stream of small
  events would hold a compressor's state (~270 KB) for its whole life to save little.

Reads and writes nothing but the bytes given.
"""

import hashlib
import re
import threading
import zlib
from collections import OrderedDict

MIN_GZIP = 1024  # smaller bodies are sent as they are: the gzip header and CPU are not worth it
# Level 1, as nginx: on 10 000 rows of JSON (1.9 MB) 12 ms and 6.3x smaller, where
# level 6 takes 31 ms for 7.3x; on a 100-row page 61 us against 79 us.
LEVEL = 1
CACHE_BYTES = 8 << 20  # compressed bodies kept, by ETag
COMPRESSIBLE = re.compile(
    r"(?i)^\s*(text/(?!event-stream)|application/(json|x-ndjson|javascript)\b)"
)
TAG = re.compile(r'(?:W/)?"([^"]*)"')
KEEP_ON_304 = ("etag", "cache-control", "vary", "expires")


def etag(body):
    # sha256 (hardware-assisted here): 11 us for a 19 KB page, blake2b 19 us, md5 25 us.
    return 'W/"' + hashlib.sha256(body).hexdigest()[:24] + '"'


def none_match(values, tag):
    """True when an If-None-Match (all its header lines) matches `tag`: weak comparison."""
    if not values or tag is None:
        return False
    text = ",".join(values)
    if text.strip() == "*":
        return True
    mine = TAG.fullmatch(tag)
    return mine is not None and mine.group(1) in TAG.findall(text)


def accepts_gzip(values):
    """True when an Accept-Encoding (all its header lines) takes gzip with q > 0."""
    q_gzip = q_any = None
    for item in ",".join(values or ()).split(","):
        name, _, params = item.partition(";")
        q = 1.0
        for p in params.split(";"):
            k, _, v = p.partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0  # a q we cannot read: not a yes
        name = name.strip().lower()
        if name in ("gzip", "x-gzip"):
            q_gzip = q
        elif name == "*":
            q_any = q
    q = q_gzip if q_gzip is not None else q_any
    return q is not None and q > 0  # NaN is not > 0


class _Cache:
    """The gzip of recent bodies, by ETag, at most CACHE_BYTES of them."""

    def __init__(self):
        self._lock = threading.Lock()
        self._items = OrderedDict()
        self._size = 0

    def gzip(self, tag, body):
        with self._lock:
            hit = self._items.get(tag)
            if hit is not None:
                self._items.move_to_end(tag)
                return hit
        out = gzip_whole(body)
        if len(out) <= CACHE_BYTES // 8:
            with self._lock:
                if tag not in self._items:
                    self._items[tag] = out
                    self._size += len(out)
                while self._size > CACHE_BYTES:
                    self._size -= len(self._items.popitem(last=False)[1])
        return out


_cache = _Cache()


def gzip_whole(body):
    c = zlib.compressobj(LEVEL, zlib.DEFLATED, 31)  # 31: the gzip container, mtime 0
    return c.compress(body) + c.flush()


class _Wrapped:
    """An iterator made from a stream that closes the stream when it is closed, whether it
    has begun or not (closing a generator that has not begun skips its `finally`)."""

    def __init__(self, gen, inner):
        self.gen, self.inner = gen, inner

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.gen)

    def close(self):
        try:
            self.gen.close()
        finally:
            close(self.inner)


def gzip_stream(pieces):
    """gzip of a stream, piece by piece; each piece flushed, so it can be decoded on arrival."""
    return _Wrapped(_gzip(pieces), pieces)


def _gzip(pieces):
    c = zlib.compressobj(LEVEL, zlib.DEFLATED, 31)
    for piece in pieces:
        if not isinstance(piece, bytes):  # the server's (a Wait): each piece is flushed already
            yield piece
            continue
        out = c.compress(piece) + c.flush(zlib.Z_SYNC_FLUSH)
        if out:
            yield out
    yield c.flush()


def chunked(pieces):
    """HTTP/1.1 chunked framing of a stream, the last (empty) chunk included."""
    return _Wrapped(_chunked(pieces), pieces)


def _chunked(pieces):
    for piece in pieces:
        if not isinstance(piece, bytes):  # the server's (a Wait)
            yield piece
        elif piece:
            yield b"%x\r\n%b\r\n" % (len(piece), piece)
    yield b"0\r\n\r\n"


def close(stream):
    """Close a stream (a generator's `finally` runs); anything else is left as it is."""
    closer = getattr(stream, "close", None)
    if closer is not None:
        closer()


def negotiate(status, headers, body, request):
    """(status, headers, body) as this request gets it: ETag and 304, gzip. `request`: the
    request's headers (an email.message.Message, as http.server parses them); `body`: bytes
    or an iterator of bytes (a stream)."""
    headers = list(headers)
    have = {k.lower(): v for k, v in headers}
    compressible = bool(COMPRESSIBLE.match(have.get("content-type", "")))
    if compressible and "vary" not in have:
        headers.append(("Vary", "Accept-Encoding"))
    whole = isinstance(body, (bytes, bytearray))
    tag, own = have.get("etag"), False
    if status == 200 and whole:
        if tag is None:
            tag, own = etag(body), True
            headers.append(("ETag", tag))
        if none_match(request.get_all("If-None-Match"), tag):
            return 304, [(k, v) for k, v in headers if k.lower() in KEEP_ON_304], b""
    if compressible and accepts_gzip(request.get_all("Accept-Encoding")):
        if not whole:
            headers.append(("Content-Encoding", "gzip"))
            return status, headers, gzip_stream(body)
        if len(body) >= MIN_GZIP:
            headers.append(("Content-Encoding", "gzip"))
            body = _cache.gzip(tag, body) if own else gzip_whole(body)
    return status, headers, body
