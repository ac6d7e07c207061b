"""The stdlib HTTP server every exporter and the API sit on.

Handlers stay thin over one function `app(method, path, query) -> (status, headers, body)`.
Threaded, daemon threads, quiet logs; methods other than GET/HEAD get 405 with `Allow`.
A busy port raises PortInUse with the port and its owner in the message.
"""
import errno
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


def make_handler(app, timeout=10):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            self.request.settimeout(timeout)

        def _respond(self, send_body):
            parts = urlsplit(self.path)
            query = parse_qs(parts.query, keep_blank_values=True)
            status, headers, body = app(self.command, parts.path, query)
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def do_GET(self):
            self._respond(True)

        def do_HEAD(self):
            self._respond(False)

        def _not_allowed(self):
            body = b"method not allowed\n"
            self.send_response(405)
            self.send_header("Allow", "GET, HEAD")
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

        def log_message(self, *args):
            pass

    return Handler


def serve(app, host, port, timeout=10):
    """Bind and return the server (not yet serving); `server.server_port` is the real port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Server(_Server):
        address_family = family

    try:
        return Server((host, port), make_handler(app, timeout))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise PortInUse(ports.busy_message(host, port)) from None
        raise
