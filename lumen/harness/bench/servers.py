"""The bench's stages that serve: a server started on the generated log, then requested.

- scrape: the RMB exporter's /metrics, p50 and p99 once it has read the whole log
  (target p50 <= 5 ms);
- api: the read-only API's newest row and a filtered list of 100 rows, p50 and p99, and
  requests/s from 16 client threads;
- api_clients: the API under 50 concurrent keep-alive connections driven by one selector
  loop (_keepalive_load), on :last alone and on the live page's polling mix (API_MIX):
  requests/s, p50, p99 (target p99 <= 50 ms at 1 M rows).
Both serve the store their environment names (bench.postgres points them at PostgreSQL).
Each server is started by its entry script in the log's directory and stopped by its own
Popen.
"""

import socket
import subprocess
import threading
import time
from pathlib import Path

import requests

from lumen import ROOT
from lumen.harness import free_port
from lumen.harness.bench.stages import PY, RMB_CFG, ingest
from lumen.harness.bench.table import fmt, row


def _serve_and_hammer(d, args, port, path, ready, n_req, clients=1):
    p = subprocess.Popen([PY, *args], cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        s = requests.Session()
        while time.monotonic() < deadline:
            try:
                if ready(s.get(f"http://127.0.0.1:{port}{path}", timeout=2)):
                    break
            except requests.RequestException:
                pass
            time.sleep(0.1)
        lat = []
        lock = threading.Lock()

        def client(k):
            ss = requests.Session()
            mine = []
            for _ in range(k):
                t0 = time.perf_counter()
                ss.get(f"http://127.0.0.1:{port}{path}", timeout=10)
                mine.append(time.perf_counter() - t0)
            with lock:
                lat.extend(mine)

        t0 = time.perf_counter()
        ts = [threading.Thread(target=client, args=(n_req // clients,)) for _ in range(clients)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        wall = time.perf_counter() - t0
        lat.sort()
        return lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000, len(lat) / wall
    finally:
        p.terminate()
        p.wait(timeout=30)


def scrape(d, n, n_req):
    port = free_port()

    def ready(r):
        return f"rmb_events_total {float(n)}" in r.text

    p50, p99, _ = _serve_and_hammer(
        d,
        [
            str(ROOT / "exporters/rmb_exporter_v17.py"),
            "--config",
            str(RMB_CFG),
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--name",
            f"bench{n}",
        ],
        port,
        "/metrics",
        ready,
        n_req,
    )
    row("/metrics scrape p50", n, f"{p50:.2f}", "ms", "<= 5 ms", "yes" if p50 <= 5 else "NO")
    row("/metrics scrape p99", n, f"{p99:.2f}", "ms")


def sqlite_ingested(d, n):
    """The SQLite store of the log in `d`: ingested (stages.ingest) unless it exists."""
    if not (Path(d) / "data/lumen.db").exists():
        ingest(d, n)


def api(d, n, n_req=500, label="", prepare=sqlite_ingested):
    """The API on the store its environment names, once `prepare(d, n)` has filled it; each
    row's stage ends with `label`."""
    prepare(d, n)
    port = free_port()
    args = [str(ROOT / "api/read_only.py"), "--port", str(port), "--name", f"benchapi{n}"]
    ok = lambda r: r.status_code == 200  # noqa: E731
    p50, p99, _ = _serve_and_hammer(d, args, port, "/api/rmb:last", ok, n_req)
    met = "yes" if p50 <= 5 else "NO"
    row(f"API /api/rmb:last p50{label}", n, f"{p50:.2f}", "ms", "<= 5 ms", met)
    row(f"API /api/rmb:last p99{label}", n, f"{p99:.2f}", "ms")
    q = "/api/rmb?risk=WATCH&limit=100&entity=lumen.core"
    p50, p99, _ = _serve_and_hammer(d, args, port, q, ok, n_req)
    row(f"API filtered list (100 rows) p50{label}", n, f"{p50:.2f}", "ms")
    row(f"API filtered list (100 rows) p99{label}", n, f"{p99:.2f}", "ms")
    _, _, rps = _serve_and_hammer(d, args, port, "/api/rmb:last", ok, n_req * 4, clients=16)
    row(f"API requests/s, 16 clients (rmb:last){label}", n, fmt(rps), "req/s")


# The live page's polling mix: the two :last rows, a filtered page, the 10-minute summary.
API_MIX = (
    "/api/rmb:last",
    "/api/ure:last",
    "/api/rmb?risk=WATCH&limit=100&entity=lumen.core",
    "/api/summary?window=10m",
)


def _keepalive_load(port, paths, clients, seconds):
    """`clients` keep-alive connections driven by one selector loop, each sending its next
    GET (cycling through `paths`) as soon as the previous answer is complete. The loop costs
    ~20 us a request, so the latencies are the server's, not a client thread's wait for the
    GIL. Returns (req/s, p50 ms, p99 ms, answers that were not 200)."""
    import selectors

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
    start = time.perf_counter()
    end = start + seconds
    for c in conns:
        send(c)
    while time.perf_counter() < end:
        for key, _ in sel.select(timeout=1):
            c = key.data
            chunk = c["sock"].recv(1 << 20)
            if not chunk:
                raise RuntimeError("the API closed a keep-alive connection")
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
    wall = time.perf_counter() - start
    for c in conns:
        c["sock"].close()
    sel.close()
    lat.sort()
    return len(lat) / wall, lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000, bad


def api_clients(d, n, clients=50, seconds=10, label="", prepare=sqlite_ingested):
    """The API under 50 concurrent keep-alive clients, on :last alone and on the live page's
    mix: requests/s, p50, p99 (target p99 <= 50 ms at 1 M rows). The store and `label` as
    for api()."""
    prepare(d, n)
    port = free_port()
    p = subprocess.Popen(
        [PY, str(ROOT / "api/read_only.py"), "--port", str(port), "--name", f"benchapi{n}c"],
        cwd=d,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/api/rmb:last", timeout=2).ok:
                    break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)
        _keepalive_load(port, ["/api/rmb:last"], clients, 1)  # warm up
        for what, paths in (("rmb:last", ["/api/rmb:last"]), ("live-page mix", API_MIX)):
            rps, p50, p99, bad = _keepalive_load(port, paths, clients, seconds)
            row(f"API {clients} clients, {what}: requests/s{label}", n, fmt(rps), "req/s")
            row(f"API {clients} clients, {what}: p50{label}", n, f"{p50:.2f}", "ms")
            row(
                f"API {clients} clients, {what}: p99{label}",
                n,
                f"{p99:.2f}",
                "ms",
                "<= 50 ms",
                "yes" if p99 <= 50 and not bad else "NO",
            )
    finally:
        p.terminate()
        p.wait(timeout=30)
