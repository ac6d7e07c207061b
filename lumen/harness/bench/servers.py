"""The bench's stages that serve: a server started on the generated log, then requested.

- scrape: the RMB exporter's /metrics, p50 and p99 once it has read the whole log
  (goal p50 <= 5 ms);
- api: the read-only API's newest row and a filtered list of 100 rows, p50 and p99 of
  `opts.n_req` requests one after the other (goal p50 <= 5 ms);
- api_16: /api/rmb:last under 16 keep-alive clients beside its floor, a bare stdlib
  server (bare_http) answering a body as long as the API's, same client, runs
  interleaved: requests/s (goal >= 80 % of the floor's) and p99;
- api_clients: the API under 50 keep-alive clients, on :last alone and on the live page's
  polling mix (API_MIX): requests/s, p50, p99 (goal p99 <= 50 ms).
The clients are one selector loop (keepalive_load), ~20 us a request, so the figures are
the server's, not a client thread's wait for the GIL. The API serves the store its
environment names (bench.postgres points it at PostgreSQL). Each server is started by its
entry script in the log's directory (start()) and stopped by its own Popen.
"""

import contextlib
import re
import selectors
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from lumen import ROOT
from lumen.harness import free_port
from lumen.harness.bench.stages import PY, RMB_CFG, RMB_LOG, count_lines, ingest
from lumen.harness.bench.table import Opts, compare, fmt, interleaved, row

# The live page's polling mix: the two :last rows, a filtered page, the 10-minute summary.
API_MIX = (
    "/api/rmb:last",
    "/api/ure:last",
    "/api/rmb?risk=WATCH&limit=100&entity=lumen.core",
    "/api/summary?window=10m",
)
FILTERED = "/api/rmb?risk=WATCH&limit=100&entity=lumen.core"


def rmb_exporter_argv(port, name):
    return [str(ROOT / "exporters/rmb_exporter_v17.py"), "--config", str(RMB_CFG)] + [
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--name",
        name,
    ]


def api_argv(port, name):
    return [str(ROOT / "api/read_only.py"), "--port", str(port), "--name", name]


@contextlib.contextmanager
def running(d, argv):
    """`PY argv` running in `d` (its stderr kept aside), stopped by its own Popen at the
    end. Yields (Popen, check): check() raises RuntimeError, with the process's last line
    of stderr, once it has exited."""
    err = tempfile.TemporaryFile()
    p = subprocess.Popen([PY, *argv], cwd=d, stdout=subprocess.DEVNULL, stderr=err)

    def check():
        if p.poll() is not None:
            err.seek(0)
            said = err.read().decode(errors="replace").strip().splitlines()[-1:]
            raise RuntimeError(f"{argv[0]} exited with {p.returncode}: {said}")

    try:
        yield p, check
    finally:
        p.terminate()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        err.close()


@contextlib.contextmanager
def start(d, argv, port, path, ready=lambda r: r.status_code == 200, timeout=120):
    """The server `PY argv` running in `d` until `ready(GET path)`; stopped at the end.
    Yields its Popen. A server that exits or never gets ready is a RuntimeError."""
    with running(d, argv) as (p, check), requests.Session() as s:
        deadline = time.monotonic() + timeout
        while True:
            check()
            try:
                if ready(s.get(f"http://127.0.0.1:{port}{path}", timeout=5)):
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} not ready on {path} after {timeout} s")
            time.sleep(0.1)
        yield p


def latencies(port, path, n_req):
    """p50 and p99 in ms of `n_req` GETs one after the other on one keep-alive session."""
    lat = []
    with requests.Session() as s:
        for _ in range(n_req):
            t0 = time.perf_counter()
            s.get(f"http://127.0.0.1:{port}{path}", timeout=10)
            lat.append(time.perf_counter() - t0)
    lat.sort()
    return lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000


def scrape(d, n, opts):
    port = free_port()
    lines = count_lines(Path(d) / RMB_LOG)

    def ready(r):  # the exporter has read the whole log (1e+06 is how 1 000 000 is written)
        said = re.search(r"^rmb_events_total (\S+)$", r.text, re.M)
        return said is not None and float(said.group(1)) >= lines

    with start(d, rmb_exporter_argv(port, f"bench{n}"), port, "/metrics", ready, timeout=600):
        p50, p99 = latencies(port, "/metrics", opts.n_req)
    row(
        "/metrics scrape p50",
        n,
        f"{p50:.2f}",
        "ms",
        goal="<= 5 ms",
        met="yes" if p50 <= 5 else "NO",
    )
    row("/metrics scrape p99", n, f"{p99:.2f}", "ms")


def sqlite_ingested(d, n):
    """The SQLite store of the log in `d`: ingested (stages.ingest) unless it exists."""
    if not (Path(d) / "data/lumen.db").exists():
        ingest(d, n, Opts(repeats=1))


def api(d, n, opts, label="", prepare=sqlite_ingested):
    """The API on the store its environment names, once `prepare(d, n)` has filled it; each
    row's stage ends with `label`."""
    prepare(d, n)
    port = free_port()
    with start(d, api_argv(port, f"benchapi{n}"), port, "/api/rmb:last"):
        for what, path, goal in (
            ("/api/rmb:last", "/api/rmb:last", True),
            ("filtered list (100 rows)", FILTERED, False),
        ):
            p50, p99 = latencies(port, path, opts.n_req)
            met = ("yes" if p50 <= 5 else "NO") if goal else ""
            row(
                f"API {what} p50{label}",
                n,
                f"{p50:.2f}",
                "ms",
                goal="<= 5 ms" if goal else "",
                met=met,
            )
            row(f"API {what} p99{label}", n, f"{p99:.2f}", "ms")


def api_16(d, n, opts, label="", prepare=sqlite_ingested):
    """/api/rmb:last under 16 keep-alive clients beside the bare server, interleaved."""
    prepare(d, n)
    port, bare_port = free_port(), free_port()
    path = "/api/rmb:last"
    with start(d, api_argv(port, f"benchapi{n}r"), port, path):
        body = len(requests.get(f"http://127.0.0.1:{port}{path}", timeout=10).content)
        bare = ["-m", "lumen.harness.bench.bare_http", "--port", str(bare_port)]
        with start(d, bare + ["--body-bytes", str(body)], bare_port, path):
            for p in (port, bare_port):
                keepalive_load(p, [path], 16, min(1.0, opts.seconds))  # warm up
            values, fl = interleaved(
                lambda: keepalive_load(port, [path], 16, opts.seconds),
                lambda: keepalive_load(bare_port, [path], 16, opts.seconds),
                opts.repeats,
                "API 16 clients",
            )
    bad = sum(v[3] for v in values)
    compare(
        f"API {path}, 16 clients: requests/s{label}",
        n,
        [v[0] for v in values],
        [f[0] for f in fl],
        "req/s",
        ">= 80 % of floor",
        lambda v, f: not bad and v >= 0.8 * f,
    )
    stage = f"API {path}, 16 clients: p99{label}"
    compare(stage, n, [v[2] for v in values], [f[2] for f in fl], "ms", higher_is_better=False)


def keepalive_load(port, paths, clients, seconds):
    """`clients` keep-alive connections driven by one selector loop, each sending its next
    GET (cycling through `paths`) as soon as the previous answer is complete. Returns
    (req/s, p50 ms, p99 ms, answers that were not 200)."""
    sel = selectors.DefaultSelector()
    reqs = [f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode() for p in paths]
    lat, bad = [], 0

    def send(c):
        c["t0"] = time.perf_counter()
        c["sock"].sendall(reqs[c["i"] % len(reqs)])
        c["i"] += 1

    conns = []
    for k in range(clients):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = {"sock": s, "buf": b"", "i": k, "t0": 0.0}
        conns.append(c)
        sel.register(s, selectors.EVENT_READ, c)
    start_t = time.perf_counter()
    end = start_t + seconds
    for c in conns:
        send(c)
    while time.perf_counter() < end:
        for key, _ in sel.select(timeout=1):
            c = key.data
            chunk = c["sock"].recv(1 << 20)
            if not chunk:
                raise RuntimeError(f"the server on :{port} closed a keep-alive connection")
            c["buf"] += chunk
            head_end = c["buf"].find(b"\r\n\r\n")
            if head_end < 0:
                continue
            head = c["buf"][:head_end].lower()
            length = int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            if len(c["buf"]) < head_end + 4 + length:
                continue
            lat.append(time.perf_counter() - c["t0"])
            bad += not head.startswith(b"http/1.1 200")
            c["buf"] = c["buf"][head_end + 4 + length :]
            send(c)
    wall = time.perf_counter() - start_t
    for c in conns:
        c["sock"].close()
    sel.close()
    lat.sort()
    return len(lat) / wall, lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000, bad


def api_clients(d, n, opts, label="", prepare=sqlite_ingested, clients=50):
    """The API under 50 concurrent keep-alive clients, on :last alone and on the live page's
    mix: requests/s, p50, p99 (goal p99 <= 50 ms). The store and `label` as for api()."""
    prepare(d, n)
    port = free_port()
    with start(d, api_argv(port, f"benchapi{n}c"), port, "/api/rmb:last"):
        keepalive_load(port, ["/api/rmb:last"], clients, 1)  # warm up
        for what, paths in (("rmb:last", ["/api/rmb:last"]), ("live-page mix", API_MIX)):
            rps, p50, p99, bad = keepalive_load(port, paths, clients, opts.seconds)
            row(f"API {clients} clients, {what}: requests/s{label}", n, fmt(rps), "req/s")
            row(f"API {clients} clients, {what}: p50{label}", n, f"{p50:.2f}", "ms")
            met = "yes" if p99 <= 50 and not bad else "NO"
            stage = f"API {clients} clients, {what}: p99{label}"
            row(stage, n, f"{p99:.2f}", "ms", goal="<= 50 ms", met=met)
