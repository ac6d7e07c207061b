"""Shared fixtures: a temp working directory per test, free ports, bounded waits, and
processes cleaned up by the PIDs the test started (never by name)."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CONFIG_RMB = ROOT / "configs" / "rmb_v17.yaml"


def wait_until(pred, timeout=10.0, interval=0.05, what="condition"):
    """Poll `pred` until it returns a truthy value; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def fingerprint(data):
    """The fingerprint a file is known by (lumen.tail's documented rule, written out here as
    an independent oracle): sha256 of its first line, capped at 1024 bytes; a file with no
    newline at all, of its partial content."""
    import hashlib
    head = data[:1024]
    nl = head.find(b"\n")
    if nl >= 0:
        head = head[: nl + 1]
    elif len(head) < 1024:
        head = b"partial:" + head
    return hashlib.sha256(head).hexdigest()[:24]


def unlabelled_samples(text):
    """{name: value} of the samples without labels in a Prometheus exposition."""
    out = {}
    for ln in text.splitlines():
        if ln and not ln.startswith("#") and "{" not in ln:
            name, value = ln.split()[:2]
            out[name] = float(value)
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh current directory: logs/, run/, data/ of the code under test land here."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


class Procs:
    """Processes a test started; all are killed (by PID) when the test ends."""

    def __init__(self, cwd):
        self.cwd = cwd
        self.started = []

    def start(self, *args, env=None, **kw):
        e = dict(os.environ)
        e.update(env or {})
        p = subprocess.Popen([PY, "-u", *map(str, args)], cwd=self.cwd, env=e,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True, **kw)
        self.started.append(p)
        return p

    def cleanup(self):
        for p in self.started:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            try:
                p.communicate(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - reported by pytest
                pass


@pytest.fixture
def procs(workdir):
    ps = Procs(workdir)
    yield ps
    ps.cleanup()


def run_make(cwd, *targets, env=None, timeout=120):
    """`make -f ROOT/Makefile TARGETS` from `cwd`; returns CompletedProcess (text)."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(["make", "-s", "--no-print-directory", "-f", str(ROOT / "Makefile"),
                           *targets], cwd=cwd, env=e, capture_output=True, text=True,
                          timeout=timeout)


def pids_in(run_dir):
    """PIDs recorded in run/*.pid under `run_dir`."""
    out = {}
    for p in Path(run_dir).glob("*.pid"):
        try:
            out[p.stem] = int(p.read_text().strip())
        except ValueError:
            pass
    return out


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
