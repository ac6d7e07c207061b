"""Issue 13.2: a full disk, for real. A tmpfs of 2 MB is mounted on <work>/logs in a private
mount namespace (`unshare -m`, as root), and the real processes run on it with cwd <work>:
the RMB emitter at 2000 Hz, the exporter, the merge (--follow) and the ingester (its
database on the same tmpfs). When the disk is full none of them exits: the exporter keeps
serving and counts failed checkpoint writes, the emitter keeps its batch in bounded memory
and counts write errors (and, past `loop.max_pending`, dropped events), no line is torn.
When the tmpfs grows again everything resumes and every consumer ends up with exactly the
events in the queue: nothing lost, nothing twice.

The processes must live inside the namespace, so the test runs a driver (this module's
`driver()`, under `unshare -m --propagation private`) that mounts, starts, waits (every
wait bounded), checks and prints its findings as JSON; the test asserts on them. Every
PID the driver starts is also written to <work>/pids, and the test kills what is left.
Without root, unshare or mount this is skipped with the reason, unless
LUMEN_REQUIRE_OPS_TOOLS=1 (`.ci/run`), which makes it a failure.
"""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
import traceback
import urllib.request
from pathlib import Path

import pytest

from conftest import PY, ROOT, free_port, unlabelled_samples, unavailable

pytestmark = pytest.mark.timeout(240)

TESTS = Path(__file__).resolve().parent
QUEUE = "logs/rmb_events.jsonl"
V2 = "logs/resonance_events_v2.jsonl"
DB = "logs/db/lumen.db"
STATS = "logs/.state/rmb_emitter.stats"
_probe = {}


def _require_private_tmpfs(tmp_path):
    """Skip (or fail under LUMEN_REQUIRE_OPS_TOOLS=1) when a tmpfs cannot be mounted in a
    private mount namespace here."""
    if "why" not in _probe:
        why = None
        if os.geteuid() != 0:
            why = "needs root (mounts a tmpfs in a private mount namespace)"
        elif not shutil.which("unshare") or not shutil.which("mount"):
            why = "needs unshare and mount (util-linux)"
        else:
            d = tmp_path / "probe"
            d.mkdir()
            r = subprocess.run(
                [
                    "unshare",
                    "-m",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    f"mount -t tmpfs -o size=1m tmpfs '{d}'",
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            if r.returncode != 0:
                why = f"cannot mount a tmpfs in a private mount namespace: {r.stderr.strip()}"
        _probe["why"] = why
    if _probe["why"]:
        unavailable(_probe["why"])


def run_driver(tmp_path, mode, timeout=200):
    _require_private_tmpfs(tmp_path)
    work = tmp_path / "w"
    work.mkdir()
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {"mode": mode, "work": str(work), "root": str(ROOT), "py": PY, "port": free_port()}
        )
    )
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r}); import test_diskfull; "
        f"test_diskfull.driver(sys.argv[1])"
    )
    try:
        r = subprocess.run(
            ["unshare", "-m", "--propagation", "private", PY, "-c", code, str(spec)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=tmp_path,
        )
    finally:
        _kill_left(work / "pids")
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"driver printed no result (rc {r.returncode}):\n{r.stdout}\n{r.stderr}"
    res = json.loads(lines[-1])
    assert res.get("error") is None, res["error"] + "\n" + json.dumps(res.get("stderr"), indent=1)
    return res


def _kill_left(pidfile):
    """SIGKILL what the driver started and did not stop (a timeout): by PID, checked
    against the process's command line so a reused PID is never hit."""
    try:
        pids = [int(x) for x in pidfile.read_text().split()]
    except FileNotFoundError:
        return
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if str(ROOT).encode() not in f.read():
                    continue
            os.kill(pid, signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError):
            pass


# ---------------------------------------------------------------- the driver
class Driver:
    """Runs inside the private mount namespace: mounts, starts, waits, checks."""

    def __init__(self, spec):
        self.spec = spec
        self.w = Path(spec["work"])
        self.root = Path(spec["root"])
        self.py = spec["py"]
        self.port = spec["port"]
        self.logs = self.w / "logs"
        self.out = self.w / "out"  # the processes' stdout/stderr: on the real disk
        self.out.mkdir()
        self.procs = {}
        self.must_live = set()
        self.res = {"error": None}

    # -- processes
    def start(self, name, *args):
        f_out = open(self.out / f"{name}.out", "wb")
        f_err = open(self.out / f"{name}.err", "wb")
        p = subprocess.Popen(
            [self.py, "-u", *map(str, args)],
            cwd=self.w,
            stdout=f_out,
            stderr=f_err,
            start_new_session=True,
        )
        f_out.close()
        f_err.close()
        with open(self.w / "pids", "a") as f:
            f.write(f"{p.pid}\n")
        self.procs[name] = p
        self.must_live.add(name)
        return p

    def stop(self, name, timeout=30):
        p = self.procs[name]
        self.must_live.discard(name)
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
            return f"did not stop within {timeout}s of SIGTERM"

    def kill_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()  # SIGKILL ends a stopped process too
                p.wait(timeout=10)

    def stderr(self, name):
        try:
            return (self.out / f"{name}.err").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def check_alive(self):
        for name in self.must_live:
            rc = self.procs[name].poll()
            if rc is not None:
                raise AssertionError(
                    f"{name} exited ({rc}) while it had to keep running:\n"
                    + self.stderr(name)[-3000:]
                )

    def wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            value = pred()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.05)

    # -- what is on disk and on /metrics
    def mount(self, size):
        self.logs.mkdir(exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(self.logs)], check=True
        )

    def grow(self, size):
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.logs)], check=True)

    def free_bytes(self):
        st = os.statvfs(self.logs)
        return st.f_bavail * st.f_frsize

    def metrics(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return None
        return unlabelled_samples(text)

    def metric(self, name):
        m = self.metrics()
        return None if m is None else m.get(name)

    def emitter_stats(self):
        try:
            return json.loads((self.w / STATS).read_bytes())
        except (OSError, ValueError):
            return None

    def lines(self, path):
        """(events parsed, lines that do not parse) of a JSONL file."""
        try:
            data = (self.w / path).read_bytes()
        except FileNotFoundError:
            return [], 0
        good, bad = [], 0
        for raw in data.splitlines():
            try:
                good.append(json.loads(raw))
            except ValueError:
                bad += 1
        return good, bad

    def rows(self, table):
        try:
            db = sqlite3.connect(f"file:{self.w / DB}?mode=ro", uri=True, timeout=1)
            try:
                return db.execute(f"SELECT count(*), count(DISTINCT ts) FROM {table}").fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            return None

    def config(self, src, name, change):
        import yaml

        cfg = yaml.safe_load((self.root / "configs" / src).read_text())
        change(cfg)
        path = self.w / name
        path.write_text(yaml.safe_dump(cfg))
        return path

    def start_exporter(self, cfg):
        self.start(
            "exporter",
            self.root / "exporters/rmb_exporter_v17.py",
            "--config",
            cfg,
            "--port",
            self.port,
            "--host",
            "127.0.0.1",
        )
        self.wait(self.metrics, 60, "the exporter to serve /metrics")

    # -- the scenarios
    def full(self):
        """Emitter, exporter, merge and ingester on a 2 MB disk that fills up; then 64 MB."""
        rmb_cfg = self.root / "configs/rmb_v17.yaml"
        api_cfg = self.config("api_v18.yaml", "api.yaml", lambda c: c.update(db=DB))
        self.mount("2m")
        self.start_exporter(rmb_cfg)
        self.start(
            "merge",
            self.root / "tools/merge_rmb_safety_v2.py",
            "--config",
            self.root / "configs/ure_v18.yaml",
            "--follow",
        )
        self.start("ingest", self.root / "tools/storage/ingest_tail_v18.py", "--config", api_cfg)
        self.wait(
            lambda: (
                (self.w / "run/ure_merge.pid").exists() and (self.w / "run/ingest.pid").exists()
            ),
            60,
            "merge and ingester ready",
        )
        # Merge and ingester lag behind (paused) while the emitter fills the disk, so that
        # each surely has lines to write when it resumes on the full disk.
        for name in ("merge", "ingest"):
            os.kill(self.procs[name].pid, signal.SIGSTOP)
        self.start("emitter", self.root / "rmb/rmb_emitter.py", "--config", rmb_cfg, "--hz", 2000)

        # The disk fills up: every process stays, the counters say what failed.
        st = self.wait(
            lambda: (
                (self.emitter_stats() or {}).get("write_errors", 0) > 0 and self.emitter_stats()
            ),
            60,
            "the emitter to hit the full disk",
        )
        for name in ("merge", "ingest"):
            os.kill(self.procs[name].pid, signal.SIGCONT)
        m = self.wait(
            lambda: (
                (self.metrics() or {}).get("rmb_checkpoint_errors_total", 0) > 0
                and self.metrics().get("rmb_emitter_write_errors_total", 0) > 0
                and self.metrics()
            ),
            60,
            "rmb_checkpoint_errors_total and rmb_emitter_write_errors_total > 0",
        )
        self.wait(
            lambda: "warning" in self.stderr("merge") and "warning" in self.stderr("ingest"),
            60,
            "merge and ingester to meet the full disk",
        )
        # ... and it stays full for a while: the retries fail and are counted, nobody exits.
        m = self.wait(
            lambda: (
                (self.metric("rmb_emitter_write_errors_total") or 0) >= 4
                and (self.metric("rmb_checkpoint_errors_total") or 0) >= 4
                and self.metrics()
            ),
            60,
            "retries on the full disk to fail 4 times",
        )
        st = self.emitter_stats()
        _, torn = self.lines(QUEUE)
        self.check_alive()
        self.res["full"] = {
            "free_bytes": self.free_bytes(),
            "emitter_stats": st,
            "metrics": {
                k: v
                for k, v in m.items()
                if k.startswith(("rmb_checkpoint", "rmb_emitter", "rmb_events_total"))
            },
            "torn_lines": torn,
            "alive": sorted(n for n in self.must_live if self.procs[n].poll() is None),
        }

        # Space returns: the emitter writes again; then it stops and everyone catches up.
        size = (self.w / QUEUE).stat().st_size
        self.grow("64m")
        self.wait(lambda: (self.w / QUEUE).stat().st_size > size, 30, "the emitter to write again")
        self.res["emitter_rc"] = self.stop("emitter")
        events, bad = self.lines(QUEUE)
        n = len(events)
        iters = [e["trace"]["iter"] for e in events]
        self.res["queue"] = {
            "lines": n,
            "bad_lines": bad,
            "iters_are_0_to_n": iters == list(range(n)),
            "emitter_stats": self.emitter_stats(),
        }
        self.wait(
            lambda: (
                self.metric("rmb_events_total") == n and self.metric("rmb_log_bytes_behind") == 0
            ),
            60,
            f"the exporter to count {n} events",
        )
        self.res["exporter_events_total"] = self.metric("rmb_events_total")

        def merged():
            v2, bad = self.lines(V2)
            src = [
                (x["source"]["fp"], x["source"]["offset"])
                for x in v2
                if x.get("source", {}).get("stream") == "rmb"
            ]
            return len(src) >= n and {
                "lines": len(src),
                "distinct": len(set(src)),
                "iters": sorted(x["trace"]["iter"] for x in v2 if x["source"]["stream"] == "rmb")
                == list(range(n)),
                "bad_lines": bad,
            }

        self.res["v2"] = self.wait(merged, 60, f"the merge to write {n} events")
        self.wait(
            lambda: (self.rows("rmb") or (0,))[0] >= n and (self.rows("ure") or (0,))[0] >= n,
            60,
            f"{n} rows in tables rmb and ure",
        )
        self.res["db"] = {"rmb": self.rows("rmb"), "ure": self.rows("ure")}
        self.res["rc"] = {name: self.stop(name) for name in ("exporter", "merge", "ingest")}

    def overflow(self):
        """An emitter with loop.max_pending 500 on a disk filled up behind its back."""
        cfg = self.config(
            "rmb_v17.yaml", "rmb_small.yaml", lambda c: c["loop"].update(max_pending=500)
        )
        self.mount("2m")
        self.start_exporter(cfg)
        self.start("emitter", self.root / "rmb/rmb_emitter.py", "--config", cfg, "--hz", 2000)
        self.wait(
            lambda: (self.emitter_stats() or {}).get("emitted", 0) > 0,
            60,
            "the emitter to write its first batch",
        )
        filler = self.logs / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
        try:  # fill the disk to the last page
            for chunk in (1 << 16, 4096):
                while True:
                    try:
                        os.write(fd, b"\0" * chunk)
                    except OSError:
                        break
        finally:
            os.close(fd)
        self.res["free_after_filling"] = self.free_bytes()
        m = self.wait(
            lambda: (
                (self.metric("rmb_emitter_dropped_total") or 0) > 0
                and self.metric("rmb_emitter_pending_events") == 500
                and self.metrics()
            ),
            60,
            "rmb_emitter_dropped_total > 0 with 500 events pending",
        )
        self.res["full"] = {k: v for k, v in m.items() if k.startswith("rmb_emitter")}
        self.check_alive()
        filler.unlink()
        self.wait(
            lambda: (self.emitter_stats() or {}).get("pending", 1) == 0,
            30,
            "the emitter to write its pending events",
        )
        self.res["emitter_rc"] = self.stop("emitter")
        events, bad = self.lines(QUEUE)
        n = len(events)
        st = self.emitter_stats()
        iters = [e["trace"]["iter"] for e in events]
        self.res["queue"] = {
            "lines": n,
            "bad_lines": bad,
            "distinct_iters": len(set(iters)),
            "max_iter": max(iters),
            "emitter_stats": st,
        }
        self.wait(
            lambda: (
                self.metric("rmb_events_total") == n and self.metric("rmb_log_bytes_behind") == 0
            ),
            60,
            f"the exporter to count {n} events",
        )
        self.res["exporter"] = {
            k: v
            for k, v in self.metrics().items()
            if k.startswith(("rmb_emitter", "rmb_events_total"))
        }
        self.res["rc"] = {"exporter": self.stop("exporter")}


def driver(spec_path):
    spec = json.loads(Path(spec_path).read_text())
    d = Driver(spec)
    try:
        getattr(d, spec["mode"])()
    except BaseException:  # noqa: BLE001 - reported to the test as JSON
        d.res["error"] = traceback.format_exc()
    finally:
        d.kill_all()
        d.res["stderr"] = {name: d.stderr(name)[-2000:] for name in d.procs}
        print(json.dumps(d.res), flush=True)


# ------------------------------------------------------------------ the tests
def test_full_disk_nobody_exits_and_everything_resumes_exactly_once(tmp_path):
    res = run_driver(tmp_path, "full")
    full = res["full"]
    # While the disk is full: all four alive, the failures counted, no torn line.
    assert full["alive"] == ["emitter", "exporter", "ingest", "merge"]
    assert full["metrics"]["rmb_checkpoint_errors_total"] > 0
    assert full["metrics"]["rmb_emitter_write_errors_total"] > 0
    assert full["emitter_stats"]["write_errors"] > 0
    assert full["torn_lines"] == 0
    # Space back: the emitter wrote everything it had (nothing dropped, nothing left),
    # the queue is whole lines, iterations 0..n-1 each once.
    q = res["queue"]
    assert res["emitter_rc"] == 0, res["stderr"]["emitter"]
    assert q["bad_lines"] == 0 and q["iters_are_0_to_n"]
    st = q["emitter_stats"]
    assert st["dropped"] == 0 and st["pending"] == 0 and st["emitted"] == q["lines"] > 0
    # Every consumer: exactly the events in the queue.
    n = q["lines"]
    assert res["exporter_events_total"] == n
    assert res["v2"] == {"lines": n, "distinct": n, "iters": True, "bad_lines": 0}
    assert res["db"] == {"rmb": [n, n], "ure": [n, n]}
    assert res["rc"] == {"exporter": 0, "merge": 0, "ingest": 0}, res["stderr"]


def test_full_disk_emitter_memory_is_bounded_and_overflow_counted(tmp_path):
    res = run_driver(tmp_path, "overflow")
    assert res["full"]["rmb_emitter_dropped_total"] > 0
    assert res["full"]["rmb_emitter_pending_events"] == 500
    assert res["emitter_rc"] == 0, res["stderr"]["emitter"]
    q = res["queue"]
    st = q["emitter_stats"]
    assert q["bad_lines"] == 0 and q["distinct_iters"] == q["lines"] == st["emitted"]
    assert st["dropped"] > 0 and st["pending"] == 0
    assert q["max_iter"] + 1 == st["emitted"] + st["dropped"]  # every iteration accounted
    assert res["exporter"]["rmb_events_total"] == q["lines"]
    assert res["exporter"]["rmb_emitter_dropped_total"] == st["dropped"]
    assert res["rc"] == {"exporter": 0}
