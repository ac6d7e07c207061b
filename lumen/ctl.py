"""Start, stop and list Lumen's background processes by PID file (DESIGN.md section 3).

    python -m lumen.ctl start NAME [--port P] [--host H] [--timeout S] -- CMD ARGS...
    python -m lumen.ctl stop NAME [NAME ...] | --all
    python -m lumen.ctl status

`start` returns once the process is healthy: its PID file exists (it writes it when
ready) and, with --port, the port answers. Output goes to `logs/proc/NAME.log`.
Starting a running process says so and succeeds; stopping a stopped one succeeds.
A busy port is one line naming the port and its owner, exit 1. Nothing is ever stopped
by name: only the PID recorded in `run/NAME.pid`.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import ports

RUN = Path("run")
LOGS = Path("logs/proc")


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def read_pid(name):
    try:
        return int((RUN / f"{name}.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def running_pid(name):
    pid = read_pid(name)
    return pid if pid is not None and _pid_alive(pid) else None


def _tail(path, n=5):
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    return [ln for ln in lines if ln.strip()][-n:]


def start(name, cmd, port=None, host="127.0.0.1", timeout=20.0):
    pid = running_pid(name)
    if pid:
        print(f"[ctl] {name} already running (pid {pid})")
        return 0
    if port and not ports.is_free(host if host not in ("", "::") else "0.0.0.0", port):
        print(f"error: {name}: {ports.busy_message(host, port)}", file=sys.stderr)
        return 1
    RUN.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    (RUN / f"{name}.pid").unlink(missing_ok=True)
    log = LOGS / f"{name}.log"
    with open(log, "ab") as out:
        child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
    (RUN / f"{name}.json").write_text(json.dumps(
        {"name": name, "cmd": cmd, "port": port, "host": host, "log": str(log)}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = child.poll()
        if code is not None:
            last = _tail(log, 3)
            print(f"error: {name} exited with status {code} while starting"
                  + (": " + " | ".join(last) if last else f" (see {log})"), file=sys.stderr)
            return 1
        if read_pid(name) == child.pid and (not port or ports.answers(host, port)):
            print(f"[ctl] {name} started (pid {child.pid}{f', port {port}' if port else ''},"
                  f" log {log})")
            return 0
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    print(f"error: {name} not healthy after {timeout:g}s (see {log}); stopped it", file=sys.stderr)
    return 1


def stop(name, timeout=15.0):
    pidfile = RUN / f"{name}.pid"
    pid = running_pid(name)
    if pid is None:
        pidfile.unlink(missing_ok=True)
        print(f"[ctl] {name} not running")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _pid_alive(pid):
        print(f"[ctl] {name} (pid {pid}) ignored SIGTERM for {timeout:g}s: sending SIGKILL",
              file=sys.stderr)
        os.kill(pid, signal.SIGKILL)
        while _pid_alive(pid):
            time.sleep(0.05)
    pidfile.unlink(missing_ok=True)
    print(f"[ctl] {name} stopped (pid {pid})")
    return 0


def status():
    metas = sorted(RUN.glob("*.json")) if RUN.exists() else []
    if not metas:
        print("[status] nothing started (no run/*.json)")
        return 0
    print(f"{'name':<18} {'pid':>7} {'alive':<6} {'port':>5}  log")
    for meta_path in metas:
        meta = json.loads(meta_path.read_text())
        pid = read_pid(meta["name"])
        alive = pid is not None and _pid_alive(pid)
        print(f"{meta['name']:<18} {pid if pid else '-':>7} {'yes' if alive else 'no':<6} "
              f"{meta.get('port') or '-':>5}  {meta['log']}")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m lumen.ctl", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="action", required=True)
    s = sub.add_parser("start", help="start NAME in the background and wait until healthy")
    s.add_argument("name")
    s.add_argument("--port", type=int)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--timeout", type=float, default=20.0)
    t = sub.add_parser("stop", help="stop by PID file: SIGTERM, wait, SIGKILL after --timeout")
    t.add_argument("names", nargs="*")
    t.add_argument("--all", action="store_true", help="every process with a PID file in run/")
    t.add_argument("--timeout", type=float, default=15.0)
    sub.add_parser("status", help="each process: pid, alive, port, log")
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = argv[argv.index("--") + 1:] if "--" in argv else []
    a = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if a.action == "start":
        if not cmd:
            ap.error("start needs a command after --")
        return start(a.name, cmd, a.port, a.host, a.timeout)
    if a.action == "stop":
        names = list(a.names)
        if a.all and RUN.exists():
            names += sorted({p.stem for p in RUN.glob("*.pid")} - set(names))
        if not names:
            print("[ctl] nothing to stop")
            return 0
        return max(stop(n, a.timeout) for n in names)
    return status()


if __name__ == "__main__":
    raise SystemExit(main())
