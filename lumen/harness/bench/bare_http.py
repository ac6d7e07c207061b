"""The API's floor in the bench: a bare stdlib ThreadingHTTPServer (HTTP/1.1 keep-alive, a
thread per connection, TCP_NODELAY) answering every GET with one fixed JSON body of
`--body-bytes` bytes, status line and headers written with it in one send. No routing, no
query, no store: what any Python HTTP server must do at least. Reads and writes nothing
else; stopped by SIGTERM (or SIGINT).

    python -m lumen.harness.bench.bare_http --port 8099 --body-bytes 89
"""

import argparse
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    answer = b""

    def do_GET(self):
        self.wfile.write(self.answer)

    def log_message(self, format, *args):
        pass


def answer(body_bytes):
    """The whole fixed response: a JSON object padded to `body_bytes` (at least 12)."""
    body = b'{"pad":"' + b"x" * max(0, body_bytes - 10) + b'"}'
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--body-bytes", type=int, default=89)
    a = ap.parse_args(argv)
    Handler.answer = answer(a.body_bytes)
    try:
        srv = ThreadingHTTPServer((a.host, a.port), Handler)
    except OSError as e:
        print(f"error: cannot listen on {a.host}:{a.port}: {e.strerror or e}", file=sys.stderr)
        return 1
    srv.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
