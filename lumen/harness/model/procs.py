"""The model check's process control: the four processes under test, by their own PIDs.

Proc is one long-running process of the stack (exporter, merge follower, ingest follower,
Safety Music loop), started from this repository's entry scripts in the run's scratch
directory with its output in proc/<key>.<generation>.log, and signalled only through its
own Popen (SIGKILL, SIGTERM), never by name. A process is ready when run/<name>.pid holds
its PID. clean_env() drops the variables that would override config keys, so every run
reads the default configs whatever the caller's environment.

ModelFailure is how anything in a run says the stack disagrees with the model (or did
not start, stop or answer): the message is what a failure prints.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lumen import CONFIGS, ROOT, config

PY = sys.executable
SAFETY_HZ = "4"
CONSUMER = {
    "exporter": "rmb_exporter",
    "safety": "safety_music",
    "merge": "merge_rmb",
    "ingest": "ingest_rmb",
}
PIDNAME = {
    "exporter": "rmb_exporter",
    "merge": "ure_merge",
    "ingest": "ingest",
    "safety": "safety_music",
}


class ModelFailure(Exception):
    pass


def clean_env():
    """This environment without the variables that override config keys (x-env)."""
    names = {
        var
        for p in (CONFIGS / "schemas").glob("*.json")
        for _, var in config.env_keys(json.loads(p.read_text()))
    }
    env = {k: v for k, v in os.environ.items() if k not in names}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def tail(path, n=15):
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except (FileNotFoundError, TypeError):
        return "(no log)"
    return "\n".join("    " + ln for ln in lines[-n:])


class Proc:
    """One long-running process of the stack; started and signalled by its own PID."""

    def __init__(self, key, cwd, env, port):
        self.key, self.cwd, self.env, self.port = key, cwd, env, port
        self.p = None
        self.gen = 0
        self.log = None
        self.killed = False  # down on purpose (SIGKILL or SIGTERM by this driver)
        self.all = []  # every Popen ever started (cleanup)

    def argv(self):
        c = ROOT / "configs"
        return {
            "exporter": [
                ROOT / "exporters/rmb_exporter_v17.py",
                "--config",
                c / "rmb_v17.yaml",
                "--host",
                "127.0.0.1",
                "--port",
                self.port,
            ],
            "merge": [
                ROOT / "tools/merge_rmb_safety_v2.py",
                "--config",
                c / "ure_v18.yaml",
                "--follow",
            ],
            "ingest": [ROOT / "tools/storage/ingest_tail_v18.py", "--config", c / "api_v18.yaml"],
            "safety": [
                ROOT / "safety/safety_music_loop.py",
                "--config",
                c / "safety_music_v17.yaml",
                "--hz",
                SAFETY_HZ,
            ],
        }[self.key]

    def spawn(self, argv=None, tag=None):
        """Start a process (this one's command, or `argv`); output to proc/<tag>.log."""
        self.gen += 1
        tag = tag or f"{self.key}.{self.gen}"
        log = self.cwd / "proc" / f"{tag}.log"
        log.parent.mkdir(exist_ok=True)
        with open(log, "wb") as out:
            p = subprocess.Popen(
                [PY, "-u", *map(str, argv or self.argv())],
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.all.append(p)
        return p, log

    def start(self):
        self.p, self.log = self.spawn()

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def wait_ready(self, timeout=30.0):
        """Until run/<name>.pid holds this process' PID (it writes it when ready)."""
        pidfile = self.cwd / "run" / f"{PIDNAME[self.key]}.pid"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                raise ModelFailure(
                    f"{self.key} exited with {self.p.returncode} while starting:\n{tail(self.log)}"
                )
            try:
                if pidfile.read_text().strip() == str(self.p.pid):
                    return
            except FileNotFoundError:
                pass
            time.sleep(0.02)
        raise ModelFailure(f"{self.key} not ready after {timeout:.0f}s:\n{tail(self.log)}")

    def kill9(self):
        if self.alive():
            self.p.send_signal(signal.SIGKILL)
            self.p.wait()

    def cleanup(self):
        for p in self.all:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
