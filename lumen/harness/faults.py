"""The soak's fault driver: what goes wrong on a real host, done to the running stack.

- BAD_LINES: one line of every reject kind a reader can meet (not JSON, invalid UTF-8,
  also inside a string, 1 000-deep nesting, not an object, truncated, oversize,
  schema-invalid, a space for the `T`, stamped 2099); FRAGMENT: a torn line without its
  newline, as a writer killed mid line leaves.
- Driver: SIGKILLs a process and waits until supervisord has restarted it; rotates the
  RMB log with `make logs.rotate` (real logrotate, rename) or with copytruncate, as a
  foreign logrotate would; injects a bad line or a fragment through a second writer; and,
  for `--break-checkpoint`, moves the ingester's checkpoint forward while it is stopped (a
  tailer that skips lines, which the soak must catch).
Everything it did is counted (kills, rotations, injected) for the soak's report; whatever
did not come back is listed in `not_back` (each one fails the soak).
"""

import fcntl
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson

from lumen import ctl, vocab
from lumen.harness import make
from lumen.jsonl import append_lines

_FUTURE = {
    "ts": "2099-01-01T00:00:00Z",
    "entity_id": "soak.future",
    "group": vocab.GROUPS[-1],
    "event_type": vocab.ROLLBACK,
    "resonance_v3": {
        "phase_diff": 0.1,
        "residual_entropy": 0.5,
        "creative_band": vocab.MID,
        "risk_band": vocab.SAFE,
    },
    "memory_bridge": {"slot_id": "s", "op": vocab.UPSERT, "key": "k", "value_hash": "deadbeef"},
    "trace": {"loop_id": "soak", "iter": 0, "host": "soak"},
}
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
        subprocess.run(
            [sys.executable, "-m", "lumen.ctl", "stop", name],
            env=self.env,
            capture_output=True,
            timeout=60,
        )
        try:
            with sqlite3.connect("data/lumen.db", timeout=30) as db:
                row = db.execute("SELECT ck FROM offsets WHERE consumer = 'ingest_rmb'").fetchone()
                st = json.loads(row[0]) if row else None
                live = os.stat(self.log)
                if (
                    st
                    and (live.st_dev, live.st_ino) == (st["dev"], st["ino"])
                    and live.st_size > st["offset"] + 30_000
                ):
                    st["offset"] += 10_000
                    db.execute(
                        "UPDATE offsets SET ck = ? WHERE consumer = 'ingest_rmb'", (json.dumps(st),)
                    )
                    self.corrupted = True
        except (OSError, sqlite3.Error):
            pass
        meta = json.loads(Path(f"run/{name}.json").read_text())
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "lumen.ctl",
                "start",
                name,
                *(
                    ["--port", str(meta["port"]), "--host", meta["host"]]
                    if meta.get("port")
                    else []
                ),
                "--",
                *meta["cmd"],
            ],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            self.not_back.append(f"{name}: {out.stderr.strip()}")

    def rotate(self, copytruncate=False):
        if copytruncate:
            conf = Path("run/logrotate.copytruncate.conf")
            conf.write_text(
                f"{self.cwd}/logs/rmb_events.jsonl {{\n  rotate 20\n  missingok\n"
                "  notifempty\n  copytruncate\n  compress\n  delaycompress\n}\n"
            )
            r = subprocess.run(
                ["logrotate", "-f", "-s", "run/logrotate.state", str(conf)],
                capture_output=True,
                text=True,
            )
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

    def do(self, action, arg):
        """One step of the soak's fault plan: ("kill"|"break", name), ("rotate",
        copytruncate) or ("inject", None)."""
        if action == "kill":
            self.kill_restart(arg)
        elif action == "break":
            self.kill_restart(arg, corrupt=True)
        elif action == "rotate":
            self.rotate(copytruncate=arg)
        else:
            self.inject()
