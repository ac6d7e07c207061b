"""The bench's peak-RSS rows: each long-running process of the stack, started by its entry
script, is left to catch up on the generated log; its peak resident set (VmHWM of
/proc/<pid>/status, the real process's) is then read, and it is stopped by its own Popen.
Goal: <= 40 MB (10^6 bytes) each. The floor, measured just before each process: the
VmHWM of a bare interpreter (`python -c "import time; time.sleep(..)"`).

The processes run one at a time in a scratch directory inside `d` with the RMB log linked
in, in an order that gives each its input: the merge follower (it writes the scratch v2
log), the URE loop, the URE exporter, the ingest follower, the Safety Music loop, the RMB
exporter. A process has caught up when a checkpoint it wrote (logs/.offsets/*.json, or
the store's offsets table) stands at or past the size each of its inputs had when it
started. The API's row: the API on the log's store after `opts.seconds` of 16 keep-alive
clients on the live page's polling mix.
"""

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lumen import ROOT
from lumen.harness import free_port
from lumen.harness.bench import servers
from lumen.harness.bench.stages import RMB_LOG, V2_LOG
from lumen.harness.bench.table import compare

PY = sys.executable
GOAL_MB = 40


def vmhwm_mb(pid):
    """Peak resident set of process `pid` in MB (10^6 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def bare_python():
    """VmHWM of a bare interpreter that has started and sleeps."""
    p = subprocess.Popen(
        [PY, "-c", "import time; print('up', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE,
    )
    try:
        p.stdout.readline()
        return vmhwm_mb(p.pid)
    finally:
        p.kill()
        p.wait()
        p.stdout.close()


def processes(n):
    """(label, argv, inputs) of the long-running processes, in the order they run."""
    return (
        ("merge follower", ["tools/merge_rmb_safety_v2.py", "--follow"], (RMB_LOG,)),
        ("URE loop", ["ure/ure_loop_v18.py"], (V2_LOG,)),
        (
            "URE exporter",
            ["exporters/ure_exporter_v18.py", "--host", "127.0.0.1", "--port", str(free_port())],
            (V2_LOG, RMB_LOG),
        ),
        ("ingest follower", ["tools/storage/ingest_tail_v18.py"], (RMB_LOG, V2_LOG)),
        ("Safety Music loop", ["safety/safety_music_loop.py"], (RMB_LOG,)),
        ("RMB exporter", servers.rmb_exporter_argv(free_port(), f"rss{n}"), (RMB_LOG,)),
    )


def _checkpoints(cwd):
    """{name: checkpoint} of the consumers in `cwd`: logs/.offsets/*.json, and the rows of
    the store's offsets table (as "db:<consumer>")."""
    out = {}
    for p in Path(cwd, "logs/.offsets").glob("*.json"):
        try:
            out[p.name] = json.loads(p.read_text())
        except (OSError, ValueError):
            pass  # replaced while read: the next poll reads it
    db = Path(cwd, "data/lumen.db")
    if db.exists():
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as c:
                for name, ck in c.execute("SELECT consumer, ck FROM offsets"):
                    out[f"db:{name}"] = json.loads(ck)
        except (sqlite3.Error, ValueError):
            pass  # not created yet, or busy
    return out


def _positions(cwd, before):
    """(inode, offset) of each checkpoint in `cwd` whose name is not in `before`."""
    return [
        (ck.get("ino"), ck.get("offset", 0))
        for name, ck in _checkpoints(cwd).items()
        if name not in before and isinstance(ck, dict)
    ]


def peak(cwd, label, argv, inputs, timeout):
    """(VmHWM in MB, caught up) of `argv` run in `cwd` once it has caught up on `inputs`
    (or after `timeout` seconds, caught up False)."""
    want = [(os.stat(Path(cwd, f)).st_ino, os.stat(Path(cwd, f)).st_size) for f in inputs]
    before = set(_checkpoints(cwd))
    argv = [str(ROOT / argv[0]), *argv[1:]] if not os.path.isabs(argv[0]) else argv
    with servers.running(cwd, argv) as (p, check):
        deadline = time.monotonic() + timeout
        while True:
            check()
            at = _positions(cwd, before)
            if all(any(i == ino and o >= size for i, o in at) for ino, size in want):
                return vmhwm_mb(p.pid), True
            if time.monotonic() > deadline:
                return vmhwm_mb(p.pid), False
            time.sleep(0.2)


def _row(label, n, value, floor, caught=True):
    stage = f"peak RSS: {label}" + ("" if caught else " (NOT caught up)")
    met = lambda v, f: caught and v <= GOAL_MB  # noqa: E731
    compare(stage, n, [value], [floor], "MB", f"<= {GOAL_MB} MB", met, higher_is_better=False)


def rss(d, n, opts, prepare=servers.sqlite_ingested):
    timeout = 120 + n / 2000
    with tempfile.TemporaryDirectory(dir=d) as p:
        Path(p, "logs/.offsets").mkdir(parents=True)
        os.link(Path(d) / RMB_LOG, Path(p) / RMB_LOG)
        for label, argv, inputs in processes(n):
            floor = bare_python()
            value, caught = peak(p, label, argv, inputs, timeout)
            _row(label, n, value, floor, caught)
    prepare(d, n)
    port = free_port()
    argv = servers.api_argv(port, f"rssapi{n}")
    with servers.start(d, argv, port, "/api/rmb:last") as api:
        floor = bare_python()
        servers.keepalive_load(port, servers.API_MIX, 16, opts.seconds)
        _row("API (after 16 clients on the live-page mix)", n, vmhwm_mb(api.pid), floor)
