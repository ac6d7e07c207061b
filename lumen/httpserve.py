"""The stdlib HTTP server every exporter and the API sit on.

Handlers stay thin over one function `app(method, path, query) -> (status, headers, body)`.
Threaded, daemon threads, quiet logs, a socket timeout per connection; methods other than
GET/HEAD get 405 with `Allow`, an over-long URL 414, a malformed query 400 (JSON bodies).
A busy port raises PortInUse with the port and its owner in the message.
"""
import errno
import json
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from . import ports


# Prometheus text format 0.0.4 (DESIGN.md section 5), which generate_latest() writes.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class PortInUse(Exception):
    pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


def _json_error(status, message):
    return json.dumps({"ok": False, "error": message, "status": status}).encode()


def make_handler(app, timeout=10, max_url=8192):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            self.request.settimeout(timeout)
            # Headers and body go out as separate writes; without NODELAY, Nagle's
            # algorithm and the client's delayed ACK add ~40 ms to every keep-alive request.
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _send(self, status, headers, body, send_body=True):
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def _respond(self, send_body):
            if len(self.path) > max_url:
                self.close_connection = True
                return self._send(414, [("Content-Type", "application/json")],
                                  _json_error(414, f"URL longer than {max_url} bytes"), send_body)
            if int(self.headers.get("Content-Length") or 0) > 0:
                self.close_connection = True  # a GET carries no body; we do not read one
            parts = urlsplit(self.path)
            try:
                query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False,
                                 errors="strict", max_num_fields=100)
            except (ValueError, UnicodeDecodeError):
                return self._send(400, [("Content-Type", "application/json")],
                                  _json_error(400, "malformed query string"), send_body)
            status, headers, body = app(self.command, parts.path, query)
            self._send(status, headers, body, send_body)

        def do_GET(self):
            self._respond(True)

        def do_HEAD(self):
            self._respond(False)

        def _not_allowed(self):
            self.close_connection = True  # any request body is left unread
            self._send(405, [("Allow", "GET, HEAD"), ("Content-Type", "application/json")],
                       _json_error(405, "method not allowed: use GET"))

        def __getattr__(self, name):
            # Every method other than GET/HEAD (POST, TRACE, PROPFIND, ...) is a 405, not 501.
            if name.startswith("do_"):
                return self._not_allowed
            raise AttributeError(name)

        def log_message(self, *args):
            pass

    return Handler


def serve(app, host, port, timeout=10, max_url=8192):
    """Bind and return the server (not yet serving); `server.server_port` is the real port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Server(_Server):
        address_family = family

    try:
        return Server((host, port), make_handler(app, timeout, max_url))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise PortInUse(ports.busy_message(host, port)) from None
        raise
