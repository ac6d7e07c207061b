#!/usr/bin/env python3
"""make soak: the whole stack under load, faults and bad input, checked for loss.

In a scratch directory, on ephemeral ports: `make up` starts every process; the emitter is
replaced by one writing N events (default 200 000) at `--rate` events/s; meanwhile a
seeded fault driver, bounded in time,
  - SIGKILLs each consumer (exporter, safety loop, merge, URE loop, URE exporter,
    ingester) at random moments, several times each; supervisord restarts it;
  - rotates the logs with `make logs.rotate` (real logrotate, rename), and a few times
    with copytruncate, as a foreign logrotate would;
  - injects bad lines of every reject kind (not JSON, invalid UTF-8 also inside a string,
    1 000-deep nesting, not an object, truncated, oversize, schema-invalid, a space for the
    `T`, stamped 2099) and torn fragments (no newline, as a writer killed mid line leaves)
    through a second writer;
and 16 clients keep requesting /metrics, /metrics_ure and the API.
At the end it reports, per stage, events expected / seen / lost / duplicated / rejected,
and exits 1 on any loss or duplication of a valid event, rejects that differ from the
bad lines on disk, any 5xx, or a process that did not come back.

Expected = every valid event that reached disk (live files, rotated copies, compressed
ones): logrotate's copytruncate can drop lines between its copy and its truncate before
any reader sees them. Stages that keep only counters (exporter, safety loop, URE) are
checked by count; merge and ingest by event identity. `--break-checkpoint` moves one
consumer's checkpoint forward while it is down (a tailer that skips lines): the soak must
then fail, which tests/test_soak.py checks.
"""
import argparse
import fcntl
import gzip
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lumen import ctl, events, vocab  # noqa: E402
from lumen.jsonl import append_lines  # noqa: E402

CONSUMERS = ["rmb_exporter", "safety_music", "ure_merge", "ure_loop", "ure_exporter", "ingest"]
CHECKPOINTS = {  # stage -> consumer checkpoints whose monitor counts its reads
    "rmb_exporter": ["rmb_exporter"], "safety_music": ["safety_music"],
    "ure_loop": ["ure_loop"], "ure_exporter": ["ure_exporter_rmb"],
}


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make(cwd, env, *targets, timeout=180):
    return subprocess.run(["make", "-s", "--no-print-directory", "-f", str(ROOT / "Makefile"),
                           *targets], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


class Clients:
    """16 threads requesting the servers until stopped; counts statuses."""

    def __init__(self, urls, n=16):
        self.urls, self.n = urls, n
        self.status = Counter()
        self.errors = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)]

    def _run(self, i):
        s = requests.Session()
        k = i
        while not self.stop.is_set():
            url = self.urls[k % len(self.urls)]
            k += 1
            try:
                code = s.get(url, timeout=5).status_code
                with self.lock:
                    self.status[code] += 1
            except requests.RequestException:  # a server being restarted: not a 5xx
                with self.lock:
                    self.errors += 1
                self.stop.wait(0.05)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)


_FUTURE = {"ts": "2099-01-01T00:00:00Z", "entity_id": "soak.future", "group": vocab.GROUPS[-1],
           "event_type": vocab.ROLLBACK,
           "resonance_v3": {"phase_diff": 0.1, "residual_entropy": 0.5, "creative_band": vocab.MID,
                            "risk_band": vocab.SAFE},
           "memory_bridge": {"slot_id": "s", "op": vocab.UPSERT, "key": "k",
                             "value_hash": "deadbeef"},
           "trace": {"loop_id": "soak", "iter": 0, "host": "soak"}}
BAD_LINES = {  # one of every reject kind a reader can meet
    "json": b"this is not json",
    "utf8": b"\xff\xfe\xfd not utf-8",
    "utf8_in_string": b'{"entity_id":"\xff\xfe"}',
    "deep": b'{"x": ' + b"[" * 1000 + b"]" * 1000 + b"}",
    "not_object": b"[1, 2, 3]",
    "truncated": b'{"ts": "2025-11-01T00:00:00Z", "entity_id": "x", "group": "desi',
    "oversize": b'{"pad": "' + b"x" * (1 << 20) + b'"}',
    "schema": b'{"ts": "2025-11-01T00:00:00Z", "entity_id": "x"}',
    "ts_space": orjson.dumps(dict(_FUTURE, ts="2025-11-01 00:00:00Z")),
    "ts_future": orjson.dumps(_FUTURE),
}
FRAGMENT = b'{"ts": "2025-11-01T00:00:00Z", "entity_id": "torn'  # a writer died mid line


class Driver:
    def __init__(self, cwd, env, rng, log):
        self.cwd, self.env, self.rng, self.log = cwd, env, rng, log
        self.kills = Counter()
        self.rotations = Counter()
        self.injected = Counter()
        self.not_back = []
        self.corrupted = False

    def kill_restart(self, name, corrupt=False):
        """SIGKILL the process; supervisord restarts it. Waits (bounded) until a new process
        has written its PID file."""
        pid = ctl.running_pid(name)
        if pid is None:
            self.not_back.append(f"{name} was not running before a kill")
            return
        if corrupt:
            return self._corrupt_and_restart(name)
        os.kill(pid, signal.SIGKILL)
        self.kills[name] += 1
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            new = ctl.running_pid(name)
            if new is not None and new != pid:
                return
            time.sleep(0.05)
        self.not_back.append(f"{name}: not back 120 s after SIGKILL (pid was {pid})")

    def _corrupt_and_restart(self, name):
        """A broken checkpoint: the ingester's position 10 000 bytes ahead of what it
        stored, in the live file it is reading (it is stopped meanwhile)."""
        subprocess.run([sys.executable, "-m", "lumen.ctl", "stop", name], env=self.env,
                       capture_output=True, timeout=60)
        try:
            with sqlite3.connect("data/lumen.db", timeout=30) as db:
                row = db.execute("SELECT ck FROM offsets WHERE consumer = 'ingest_rmb'").fetchone()
                st = json.loads(row[0]) if row else None
                live = os.stat(self.log)
                if st and (live.st_dev, live.st_ino) == (st["dev"], st["ino"]) and \
                        live.st_size > st["offset"] + 30_000:
                    st["offset"] += 10_000
                    db.execute("UPDATE offsets SET ck = ? WHERE consumer = 'ingest_rmb'",
                               (json.dumps(st),))
                    self.corrupted = True
        except (OSError, sqlite3.Error):
            pass
        meta = json.loads(Path(f"run/{name}.json").read_text())
        out = subprocess.run([sys.executable, "-m", "lumen.ctl", "start", name,
                              *(["--port", str(meta["port"]), "--host", meta["host"]]
                                if meta.get("port") else []), "--", *meta["cmd"]],
                             env=self.env, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            self.not_back.append(f"{name}: {out.stderr.strip()}")

    def rotate(self, copytruncate=False):
        if copytruncate:
            conf = Path("run/logrotate.copytruncate.conf")
            conf.write_text(f"{self.cwd}/logs/rmb_events.jsonl {{\n  rotate 20\n  missingok\n"
                            "  notifempty\n  copytruncate\n  compress\n  delaycompress\n}\n")
            r = subprocess.run(["logrotate", "-f", "-s", "run/logrotate.state", str(conf)],
                               capture_output=True, text=True)
            kind = "copytruncate"
        else:
            r = make(self.cwd, self.env, "logs.rotate")
            kind = "rename"
        if r.returncode == 0:
            self.rotations[kind] += 1
        else:
            self.not_back.append(f"logrotate ({kind}): {r.stderr.strip()[:200]}")

    def inject(self):
        kind = self.rng.choice(sorted(BAD_LINES) + ["fragment"])
        if kind == "fragment":
            # What a writer killed mid-line leaves: no newline. The next batch ends it.
            fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.write(fd, FRAGMENT)
            finally:
                os.close(fd)
        else:
            append_lines(self.log, [BAD_LINES[kind] + b"\n"])
        self.injected[kind] += 1


def on_disk(logdir, stem, validator, key, now=None):
    """(key(event) of each valid event, bad lines) in every file of a stream: live, .N and
    .N.gz, judged as every stage judges them (events.parse, ts_future against `now`). Only
    the keys are kept: millions of event dicts would not fit in memory."""
    good, bad = [], 0
    now = time.time() if now is None else now
    for p in sorted(logdir.glob(stem + "*")):
        if p.name.endswith(".tmp"):
            continue
        data = gzip.open(p).read() if p.suffix == ".gz" else p.read_bytes()
        for raw in data.split(b"\n"):
            if not raw.strip():
                continue
            ev, err = events.parse(raw, validator, now=now)
            if err:
                bad += 1
            else:
                good.append(key(ev))
    return good, bad


def monitor(name):
    """(valid, rejected) counted by a consumer, from its checkpoint (ingest: the offsets
    table of the store)."""
    if name.startswith("ingest_"):
        with sqlite3.connect("data/lumen.db", timeout=30) as db:
            row = db.execute("SELECT ck FROM offsets WHERE consumer = ?", (name,)).fetchone()
        ck = json.loads(row[0]) if row else {}
    else:
        ck = json.loads(Path(f"logs/.offsets/{name}.json").read_text())
    mon = (ck.get("state") or {}).get("monitor") or {}
    return mon.get("valid", 0), sum((mon.get("rejects") or {}).values())


RMB_READERS = ("rmb_exporter", "safety_music", "ure_exporter_rmb", "merge_rmb", "ingest_rmb")


def position(name):
    """(dev, ino, offset) of a consumer's checkpoint (ingest: the offsets table)."""
    if name.startswith("ingest_"):
        with sqlite3.connect("data/lumen.db", timeout=30) as db:
            row = db.execute("SELECT ck FROM offsets WHERE consumer = ?", (name,)).fetchone()
        ck = json.loads(row[0]) if row else {}
    else:
        try:
            ck = json.loads(Path(f"logs/.offsets/{name}.json").read_text())
        except FileNotFoundError:
            ck = {}
    return ck.get("dev"), ck.get("ino"), ck.get("offset")


def caught_up(log, stall_s=180, cap_s=4 * 3600):
    """Wait until every reader of the RMB log has checkpointed the end of the live file
    (nothing is written any more). A slow reader on a loaded machine is waited for as long
    as it makes progress; one whose position has not moved for `stall_s` is stuck. Returns
    the names still behind when it gives up ([] when all caught up)."""
    deadline = time.monotonic() + cap_s
    seen, moved = {}, time.monotonic()
    behind = list(RMB_READERS)
    while time.monotonic() < deadline:
        st = os.stat(log)
        end = (st.st_dev, st.st_ino, st.st_size)
        now = {n: position(n) for n in RMB_READERS}
        behind = [n for n in RMB_READERS if now[n] != end]
        if not behind:
            return []
        if now != seen:
            seen, moved = now, time.monotonic()
        elif time.monotonic() - moved > stall_s:
            return behind
        time.sleep(1.0)
    return behind


T0 = time.monotonic()


def say(msg):
    print(f"[soak] {time.monotonic() - T0:6.1f}s {msg}", file=sys.stderr, flush=True)


class Hogs:
    """Other work on the machine, as a busy host has it: `cpu` runs one busy loop per core,
    `disk` a loop writing and fsyncing 1 GiB files in the scratch directory. Stopped by the
    PIDs started here."""

    def __init__(self, kinds, where):
        self.kinds, self.where, self.procs = kinds, where, []

    def __enter__(self):
        if "cpu" in self.kinds:
            for _ in range(os.cpu_count() or 2):
                self.procs.append(subprocess.Popen(["yes"], stdout=subprocess.DEVNULL))
        if "disk" in self.kinds:
            self.where.mkdir(parents=True, exist_ok=True)
            big = self.where / "hog.bin"
            self.procs.append(subprocess.Popen(
                ["bash", "-c", f"while true; do dd if=/dev/zero of={big} bs=1M count=1024 "
                 f"conv=fsync status=none; rm -f {big}; done"], start_new_session=True))
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            try:
                if p.args[0] == "bash":
                    os.killpg(p.pid, signal.SIGKILL)  # the loop and its dd
                else:
                    p.kill()
            except ProcessLookupError:
                pass
            p.wait()
        (self.where / "hog.bin").unlink(missing_ok=True)


def run(args):
    with Hogs(args.hog or "", Path(args.dir or tempfile.gettempdir())):
        return _run(args)


def _run(args):
    cwd = Path(args.dir or tempfile.mkdtemp(prefix="lumen-soak-")).resolve()
    cwd.mkdir(parents=True, exist_ok=True)
    os.chdir(cwd)
    rng = random.Random(args.seed)
    ports = {k: free_port() for k in ("RMB_EXPORTER_PORT", "URE_EXPORTER_PORT", "API_PORT")}
    env = dict(os.environ, **{k: str(v) for k, v in ports.items()})
    print(f"[soak] {args.events} events at {args.rate}/s in {cwd}"
          + (f", beside {args.hog} hogs" if args.hog else ", no hogs"), flush=True)
    r = make(cwd, env, "up")
    say("stack up")
    if r.returncode != 0:
        print(f"[soak] make up failed: {r.stderr}", file=sys.stderr)
        return 1
    failures = []
    try:
        ctl.stop("rmb_emitter")
        out = subprocess.run([sys.executable, "-m", "lumen.ctl", "start", "rmb_emitter", "--",
                              sys.executable, "-u", str(ROOT / "rmb/rmb_emitter.py"),
                              "--config", str(ROOT / "configs/rmb_v17.yaml"),
                              "--hz", str(args.rate), "--count", str(args.events),
                              "--batch-size", "100", "--flush-ms", "50", "--seed", str(args.seed),
                              "--name", "rmb_emitter"], env=env, capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return 1
        urls = [f"http://127.0.0.1:{ports['RMB_EXPORTER_PORT']}/metrics",
                f"http://127.0.0.1:{ports['URE_EXPORTER_PORT']}/metrics_ure",
                f"http://127.0.0.1:{ports['API_PORT']}/api/rmb:last",
                f"http://127.0.0.1:{ports['API_PORT']}/api/summary?window=1h",
                f"http://127.0.0.1:{ports['API_PORT']}/api/rmb?limit=50&risk=SAFE"]
        drv = Driver(cwd, env, rng, Path("logs/rmb_events.jsonl"))
        plan = [("kill", c) for c in CONSUMERS for _ in range(args.kills)]
        plan += [("rotate", False)] * args.rotations + [("rotate", True)] * args.copytruncates
        plan += [("inject", None)] * args.bad_lines
        rng.shuffle(plan)
        if args.break_checkpoint:
            for k in (6, 3, 0):  # early, while the emitter writes; it counts only when the
                plan.insert(k, ("break", "ingest"))  # ingester is reading the live file
        print(f"[soak] seed {args.seed}, fault plan ({len(plan)} actions; replay with the same "
              f"--seed and sizes): " + " ".join(f"{a}:{x}" if x not in (None, False) else a
                                                for a, x in plan), flush=True)
        gap = args.duration / max(1, len(plan))
        # Each kill waits for the restarted process to be healthy, so the plan needs more
        # than its sleeps; the bound only stops a driver that is stuck.
        t_end = time.monotonic() + 2 * args.duration + 60 * len(plan)
        with Clients(urls) as clients:
            for action, arg in plan:
                if time.monotonic() > t_end:
                    failures.append("fault driver ran out of time")
                    break
                time.sleep(rng.uniform(0.3, 1.7) * gap)
                if action == "kill":
                    drv.kill_restart(arg)
                elif action == "break":
                    drv.kill_restart(arg, corrupt=True)
                elif action == "rotate":
                    drv.rotate(copytruncate=arg)
                else:
                    drv.inject()
            say(f"fault plan done ({len(plan)} actions)")
            emitter = ctl.read_pid("rmb_emitter")
            deadline = time.monotonic() + max(120, 3 * args.events / args.rate)
            while emitter and ctl._pid_alive(emitter) and time.monotonic() < deadline:
                time.sleep(0.2)
            v1 = events.Validator.named("rmb_event_v1.json")
            v2v = events.Validator.named("resonance_event_v2.json")
            db = Path("data/lumen.db")
            say("emitter done")
            # The URE loop writes for ever, so the v2 log never ends: its readers are
            # checked after `make down`, when they have drained and written checkpoints.
            behind = caught_up(Path("logs/rmb_events.jsonl"))
            if behind:
                failures.append(f"stuck behind the RMB log (no progress for 180 s): {behind}")
            say("consumers caught up")
        for name in CONSUMERS + ["api"]:
            if ctl.running_pid(name) is None:
                failures.append(f"{name} is not running at the end")
        make(cwd, env, "down")  # every consumer writes its final checkpoint
        say("stack down")
        # ------------------------------------------------------------ the verdict
        good, bad_on_disk = on_disk(Path("logs"), "rmb_events.jsonl", v1, lambda e: (
            e["trace"]["iter"], e["ts"], e["resonance_v3"]["residual_entropy"]))
        iters = Counter(k[0] for k in good)
        expected = len(iters)
        v2, _ = on_disk(Path("logs"), "resonance_events_v2.jsonl", v2v, lambda e: (
            (e.get("source") or {}).get("stream"), e["trace"]["iter"]))
        table = []

        def stage(name, seen, lost, dup, rejected, note=""):
            table.append((name, expected, seen, lost, dup, rejected, note))
            if lost or dup:
                failures.append(f"{name}: {lost} lost, {dup} duplicated")
        for name in ("rmb_exporter", "safety_music", "ure_exporter"):
            seen, rej = monitor(CHECKPOINTS[name][0])
            stage(name, seen, max(0, expected - seen), 0, rej, "count (can exceed: copytruncate window)")
            if rej != bad_on_disk:
                failures.append(f"{name}: {rej} rejects, {bad_on_disk} bad lines on disk")
        merged = Counter(it for stream, it in v2 if stream == "rmb")
        m_seen, m_rej = monitor("merge_rmb")
        stage("ure_merge", sum(merged.values()), len(set(iters) - set(merged)),
              sum(c - 1 for c in merged.values() if c > 1), m_rej, "by event identity")
        if m_rej != bad_on_disk:
            failures.append(f"ure_merge: {m_rej} rejects, {bad_on_disk} bad lines on disk")
        u_seen, _ = monitor("ure_loop")
        table.append(("ure_loop (v2 log)", len(v2), u_seen, max(0, len(v2) - u_seen),
                      max(0, u_seen - len(v2)), 0, "count of v2 lines"))
        if u_seen != len(v2):
            failures.append(f"ure_loop: read {u_seen} of {len(v2)} v2 lines")
        with sqlite3.connect(db) as c:
            rows = Counter(c.execute("SELECT ts, residual FROM rmb").fetchall())
        keys = Counter(k[1:] for k in good)
        i_seen, i_rej = monitor("ingest_rmb")
        stage("ingest (rmb rows)", sum(rows.values()), len(set(keys) - set(rows)),
              sum(c - 1 for c in rows.values() if c > 1), i_rej, "by event identity")
        if i_rej != bad_on_disk:
            failures.append(f"ingest: {i_rej} rejects, {bad_on_disk} bad lines on disk")
        # 503 is a server shedding load (its connection cap), not an error; any other 5xx is.
        fivexx = sum(v for k, v in clients.status.items() if k >= 500 and k != 503)
        if fivexx:
            failures.append(f"{fivexx} responses were 5xx")
        failures += drv.not_back
        if args.break_checkpoint:
            print(f"[soak] checkpoint broken on purpose: {drv.corrupted}")
        print(f"[soak] emitted {args.events}, valid on disk {expected} "
              f"(copytruncate may drop some), bad lines on disk {bad_on_disk} "
              f"(injected {sum(drv.injected.values())}: {dict(drv.injected)})")
        print(f"[soak] kills {dict(drv.kills)}; rotations {dict(drv.rotations)}; "
              f"requests {dict(clients.status)}, {clients.errors} refused during restarts")
        print(f"{'stage':<20} {'expected':>9} {'seen':>9} {'lost':>6} {'dup':>6} {'rejected':>9}  check")
        for name, exp, seen, lost, dup, rej, note in table:
            print(f"{name:<20} {exp:>9} {seen:>9} {lost:>6} {dup:>6} {rej:>9}  {note}")
    finally:
        make(cwd, env, "down")
    for f in failures:
        print(f"[soak] FAIL {f}")
    print(f"[soak] RESULT = {'FAIL' if failures else 'PASS'}")
    return 1 if failures else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--rate", type=int, default=20_000, help="emitter events/s")
    ap.add_argument("--duration", type=float, help="seconds of faults (default: the emit time)")
    ap.add_argument("--kills", type=int, default=3, help="SIGKILLs per consumer")
    ap.add_argument("--rotations", type=int, default=3, help="logrotate runs (rename)")
    ap.add_argument("--copytruncates", type=int, default=2, help="copytruncate rotations")
    ap.add_argument("--bad-lines", type=int, default=25)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", help="scratch directory (default: a new temp dir)")
    ap.add_argument("--hog", choices=("cpu", "disk", "cpu,disk"),
                    help="run beside a busy-loop per core and/or a write+fsync loop")
    ap.add_argument("--break-checkpoint", action="store_true",
                    help="corrupt the ingester's checkpoint once (the soak must then FAIL)")
    args = ap.parse_args(argv)
    if args.duration is None:
        args.duration = max(5.0, 0.8 * args.events / args.rate)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
