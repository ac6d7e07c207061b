"""Start, stop and list Lumen's background processes, supervised by supervisord (issue 13).

    python -m lumen.ctl start NAME [--port P] [--host H] [--timeout S] -- CMD ARGS...
    python -m lumen.ctl stop NAME [NAME ...] | --all
    python -m lumen.ctl status
    python -m lumen.ctl up -- CMD ARGS...
    python -m lumen.ctl logs [NAME] [--lines N] [--no-follow]

`start` runs CMD as the program NAME of this directory's supervisord (started if needed;
see lumen/supervise.py) and returns once it is healthy: supervisord has it up, it wrote
`run/NAME.pid` with its own PID (it does when ready), and with --port the port answers.
Output goes to `logs/proc/NAME.log`, rotated by supervisord. From then on a crash is
restarted (with backoff; a crash loop ends FATAL). Starting a running process says so and
succeeds; a busy port is one line naming the port and its owner, exit 1; a process that
exits while starting is one line with the end of its log, exit 1, and is not retried.
`stop` asks supervisord to stop (SIGTERM, SIGKILL after 15 s); `stop --all` stops every
program and supervisord itself. `status` shows each program's state, pid, uptime,
restarts, last exit, port and log. `up` runs CMD (the Makefile's start targets) and, if it
fails, stops every process that CMD started and says where to look. `logs` prints and
follows the processes' logs (lumen/supervise_logs.py).
"""

import argparse
import http.client
import os
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from pathlib import Path

from . import ports, supervise_logs
from . import supervise as sv
from .supervise import ACTIVE, LOGS, RUN, UP, SupervisorError, pid_alive, read_pid

# Kept for callers of the former module (tools/soak.py): same meaning.
_pid_alive = pid_alive
STARTED_ENV = "LUMEN_CTL_STARTED"  # `up` collects the names its start targets started here


def running_pid(name):
    pid = read_pid(name)
    return pid if pid is not None and pid_alive(pid) else None


def _err(msg):
    print(f"error: {msg}", file=sys.stderr, flush=True)


def _note_started(name):
    path = os.environ.get(STARTED_ENV)
    if path:
        with open(path, "a") as f:
            f.write(name + "\n")


def _healthy(i, name, port, host):
    return (
        i is not None
        and i["statename"] in UP
        and pid_alive(i["pid"])
        and read_pid(name) == i["pid"]
        and (not port or ports.answers(host, port))
    )


def start(
    name,
    cmd,
    port=None,
    host="127.0.0.1",
    timeout=20.0,
    startsecs=sv.STARTSECS,
    startretries=sv.STARTRETRIES,
    stopwaitsecs=sv.STOPWAITSECS,
):
    if not sv.NAME_RE.match(name):
        _err(f"{name!r}: a process name is letters, digits, '_', '.', '-'")
        return 2
    log = LOGS / f"{name}.log"
    deadline = time.monotonic() + timeout
    try:
        with sv.locked():
            s = sv.connect()
            i = sv.info(s, name) if s is not None else None
            while i is not None and i["statename"] == "STOPPING" and time.monotonic() < deadline:
                time.sleep(0.05)
                i = sv.info(s, name)
            already = i is not None and i["statename"] in ACTIVE
            if not already:
                if s is None:  # a dead supervisord's children would hold ports: stop them
                    sv.stop_orphans()
                if port and not ports.is_free(host if host not in ("", "::") else "0.0.0.0", port):
                    _err(f"{name}: {ports.busy_message(host, port)}")
                    return 1
                s = sv.ensure_running()
                LOGS.mkdir(parents=True, exist_ok=True)
                sv.record(name, cmd, port, host)
                sv.clear_stale_pidfile(name)
                sv.add_program(
                    s,
                    name,
                    startsecs=startsecs,
                    startretries=startretries,
                    stopwaitsecs=stopwaitsecs,
                )
                s.startProcess(name, False)
                _note_started(name)
        if already:
            return _wait_already(s, name, port, host, deadline, log)
        return _wait_started(s, name, port, host, deadline, log, timeout)
    except SupervisorError as e:
        _err(f"{name}: {e}")
        return 1


def _wait_already(s, name, port, host, deadline, log):
    """NAME is supervised already (perhaps being restarted): wait until it is healthy."""
    while True:
        i = sv.info(s, name)
        if _healthy(i, name, port, host):
            print(f"[ctl] {name} already running (pid {i['pid']})")
            return 0
        if i is None or i["statename"] not in ACTIVE:
            _err(f"{name} is {i['statename'] if i else 'gone'} (see {log})")
            return 1
        if time.monotonic() > deadline:
            _err(f"{name} is supervised but not healthy ({i['statename']}; see {log})")
            return 1
        time.sleep(0.05)


def _wait_started(s, name, port, host, deadline, log, timeout):
    first = None
    while time.monotonic() < deadline:
        i = sv.info(s, name)
        state, pid = i["statename"], i["pid"]
        if state not in UP or (first and pid != first):  # it exited: no retries from here
            with sv.locked():
                sv.stop_programs(s, [name], sv.STOPWAITSECS + 10)
                time.sleep(0.1)  # the last lines of its output reach the log
                last = sv.tail(log, 3)
                how = sv.describe_exit(name)
                sv.shutdown_if_idle(s)
            _err(
                f"{name} {how} while starting"
                + (": " + " | ".join(last) if last else f" (see {log})")
            )
            return 1
        first = first or pid
        if _healthy(i, name, port, host):
            print(f"[ctl] {name} started (pid {pid}{f', port {port}' if port else ''}, log {log})")
            return 0
        time.sleep(0.05)
    with sv.locked():
        sv.stop_programs(s, [name], sv.STOPWAITSECS + 10)
        sv.shutdown_if_idle(s)
    _err(f"{name} not healthy after {timeout:g}s (see {log}); stopped it")
    return 1


def stop(name, timeout=30.0):
    """Stop NAME (kept for callers that stop one process)."""
    return stop_many([name], timeout)


def stop_many(names, timeout=30.0):
    try:
        with sv.locked():
            s = sv.connect()
            if s is None:
                for name in names:
                    if not sv.stop_orphans(name):
                        print(f"[ctl] {name} not running")
                    sv.clear_stale_pidfile(name)
                return 0
            was = sv.stop_programs(s, names, timeout + sv.STOPWAITSECS)
            for name in names:
                i = sv.info(s, name)
                if name in was:
                    print(
                        f"[ctl] {name} stopped"
                        + (f" (pid {was[name]})" if was[name] else " (it was between restarts)")
                    )
                elif i is not None and i["statename"] == "FATAL":
                    s.removeProcessGroup(name)  # stopped on purpose: no longer on show
                    print(f"[ctl] {name} not running (it was FATAL; see {LOGS / name}.log)")
                else:
                    print(f"[ctl] {name} not running")
                sv.clear_stale_pidfile(name)
            sv.shutdown_if_idle(s)
        return 0
    except SupervisorError as e:
        _err(str(e))
        return 1


def stop_all(timeout=30.0):
    """Every program of this directory, then supervisord; then anything left behind."""
    did = False
    try:
        with sv.locked():
            s = sv.connect()
            if s is not None:
                names = [i["name"] for i in s.getAllProcessInfo()]
                was = sv.stop_programs(s, names, timeout + sv.STOPWAITSECS)
                for name, pid in was.items():
                    print(
                        f"[ctl] {name} stopped"
                        + (f" (pid {pid})" if pid else " (it was between restarts)")
                    )
                sv.shutdown(s)
                did = True
            did = bool(sv.stop_orphans()) or did
            for name in sv.known_names():
                sv.clear_stale_pidfile(name)
            sv.clear_stale_supervisor()
    except SupervisorError as e:
        _err(str(e))
        return 1
    if not did:
        print("[ctl] nothing running")
    return 0


def _uptime(i):
    if i["statename"] not in UP or not i["start"]:
        return "-"
    secs = max(0, int(i["now"] - i["start"]))
    d, rest = divmod(secs, 86400)
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    return (f"{d}d" if d else "") + f"{h}:{m:02d}:{sec:02d}"


def status():
    try:
        s = sv.connect()
        if s is None:
            orphans = sv.find_orphans()
            for pid, name in orphans:
                print(
                    f"warning: {name} (pid {pid}) runs without its supervisord (it died): "
                    "`make down` stops it",
                    file=sys.stderr,
                )
            print("[status] nothing running here (no supervisord for this directory)")
            return 1 if orphans else 0
        infos = s.getAllProcessInfo()
        pid = s.getPID()
    except SupervisorError as e:
        _err(str(e))
        return 1
    print(f"[status] supervisord pid {pid}, log {sv.LOG}")
    print(
        f"{'name':<18} {'state':<9} {'pid':>7} {'uptime':>9} {'restarts':>8} "
        f"{'last-exit':<10} {'port':>5}  log"
    )
    for i in sorted(infos, key=lambda x: x["name"]):
        name = i["name"]
        meta = sv.meta(name)
        n = sv.restarts(name) if i["start"] else None
        print(
            f"{name:<18} {i['statename']:<9} {i['pid'] or '-':>7} {_uptime(i):>9} "
            f"{'-' if n is None else n:>8} {sv.last_exit(name, i):<10} "
            f"{meta.get('port') or '-':>5}  {meta.get('log') or LOGS / (name + '.log')}"
        )
    return 0


def up(cmd):
    """Run CMD; if it fails, stop what it started (and supervisord if then idle)."""
    RUN.mkdir(parents=True, exist_ok=True)
    fd, started_path = tempfile.mkstemp(prefix="up.", suffix=".started", dir=RUN)
    os.close(fd)
    try:
        try:
            rc = subprocess.call(cmd, env=dict(os.environ, **{STARTED_ENV: started_path}))
        except KeyboardInterrupt:
            rc = 130
        if rc == 0:
            return 0
        names = list(dict.fromkeys(Path(started_path).read_text().split()))
    finally:
        Path(started_path).unlink(missing_ok=True)
    print(
        "[up] FAILED part way"
        + (
            f": stopping what this run started ({', '.join(names)})"
            if names
            else " (it had started nothing)"
        ),
        file=sys.stderr,
        flush=True,
    )
    if names:
        try:
            with sv.locked():
                s = sv.connect()
                if s is not None:
                    sv.stop_programs(s, list(reversed(names)), 30 + sv.STOPWAITSECS)
                    sv.shutdown_if_idle(s)
        except SupervisorError as e:
            _err(str(e))
    print(
        f"[up] look at: the error above; {LOGS}/<name>.log (each process' output), "
        f"{sv.LOG}; `make status` shows what still runs, `make down` stops everything",
        file=sys.stderr,
        flush=True,
    )
    return rc or 1


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m lumen.ctl", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="action", required=True)
    s = sub.add_parser("start", help="start NAME under supervisord and wait until healthy")
    s.add_argument("name")
    s.add_argument("--port", type=int)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--timeout", type=float, default=20.0)
    s.add_argument(
        "--startsecs",
        type=float,
        default=sv.STARTSECS,
        help="up this long = started; dying sooner is retried with backoff",
    )
    s.add_argument(
        "--startretries",
        type=int,
        default=sv.STARTRETRIES,
        help="failed starts in a row before FATAL",
    )
    s.add_argument(
        "--stopwaitsecs",
        type=float,
        default=sv.STOPWAITSECS,
        help="SIGTERM, then SIGKILL after this long",
    )
    t = sub.add_parser("stop", help="stop via supervisord: SIGTERM, SIGKILL after 15 s")
    t.add_argument("names", nargs="*")
    t.add_argument("--all", action="store_true", help="every program, then supervisord")
    t.add_argument("--timeout", type=float, default=30.0)
    sub.add_parser(
        "status", help="each process: state, pid, uptime, restarts, last exit, port, log"
    )
    sub.add_parser("up", help="run the command after --; on failure stop what it started")
    g = sub.add_parser("logs", help="the process logs here (logs/proc/*.log), like tail -F")
    g.add_argument("name", nargs="?", help="one process (default: every log here)")
    g.add_argument("--lines", type=int, default=20, help="last lines of each log first (20)")
    g.add_argument("--no-follow", action="store_true", help="print those lines and exit")
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = argv[argv.index("--") + 1 :] if "--" in argv else []
    a = ap.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if a.action in ("start", "up") and not cmd:
        ap.error(f"{a.action} needs a command after --")
    try:
        return _run(a, cmd)
    except (xmlrpc.client.Fault, OSError, http.client.HTTPException) as e:
        _err(f"talking to supervisord ({sv.socket_path()}): {e} (see {sv.LOG})")
        return 1


def _run(a, cmd):
    if a.action == "start":
        return start(
            a.name, cmd, a.port, a.host, a.timeout, a.startsecs, a.startretries, a.stopwaitsecs
        )
    if a.action == "up":
        return up(cmd)
    if a.action == "logs":
        if a.lines < 0:
            _err(f"--lines {a.lines}: a number of lines is 0 or more")
            return 2
        return supervise_logs.show(a.name, a.lines, follow=not a.no_follow)
    if a.action == "stop":
        if a.all:
            return stop_all(a.timeout)
        if not a.names:
            print("[ctl] nothing to stop")
            return 0
        return stop_many(a.names, a.timeout)
    return status()


if __name__ == "__main__":
    raise SystemExit(main())
