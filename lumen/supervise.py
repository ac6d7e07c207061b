"""One supervisord per state directory: the process manager under `lumen.ctl` (issue 13).

Lumen's background processes run under supervisor (supervisord), not under hand-written
restart logic. This module owns the pieces of that arrangement, all relative to the
current directory (the state directory):

- `run/supervisord.conf`, generated; `run/supervisor.d/NAME.conf`, one [program:NAME] each;
- the control socket `/tmp/lumen-UID-HASH.sock` (HASH of the state directory's absolute
  path: a deep directory would exceed the 108-byte AF_UNIX limit under run/);
- `run/supervisord.pid`, `logs/proc/supervisord.log` (rotated by supervisord) and
  `logs/proc/NAME.log`, each program's output (rotated by supervisord too);
- `run/NAME.json`, what `lumen.ctl start` asked for (command, environment, port); the
  program's command is `lumen/supervise_spawn.py run/NAME.json`, which appends a line to
  `run/NAME.spawns` (the restart count) and execs the real command;
- `run/supervisor.lock`, taken while the supervisor or its programs are changed.

A crashed program is restarted (autorestart=unexpected: exit status 0, a bounded run that
finished, is not a crash). One that dies within `startsecs` of a start is retried with a
growing delay (1 s, 2 s, 3 s, ...) and after `startretries` such failures ends FATAL.
supervisord stays up while it has something to supervise (a program running, retrying or
FATAL) and is shut down when the last one is stopped. Talking to it is plain XML-RPC over
the unix socket (standard library), so only starting it needs the supervisor package.

Signals by PID happen only to an orphan (a child left behind by a supervisord that died):
it is recognised by the SUPERVISOR_SERVER_URL supervisord put in its environment (this
directory's socket), re-checked after pinning the process with a pidfd, so a process that
merely reuses a recorded PID is never signalled.
"""

import fcntl
import hashlib
import http.client
import json
import os
import re
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client
from contextlib import contextmanager
from pathlib import Path

RUN = Path("run")
LOGS = Path("logs/proc")
PROGRAMS = RUN / "supervisor.d"
CONF = RUN / "supervisord.conf"
PIDFILE = RUN / "supervisord.pid"
LOCK = RUN / "supervisor.lock"
LOG = LOGS / "supervisord.log"
OUT = LOGS / "supervisord.out"  # supervisord's own stderr: only a failure to start lands here
SPAWN = Path(__file__).resolve().with_name("supervise_spawn.py")

STARTSECS = 5  # up this long after a start = started; dying sooner is a failed start
STARTRETRIES = 3  # failed starts in a row (1 s, 2 s, 3 s apart) before FATAL
STOPWAITSECS = 15  # SIGTERM, then SIGKILL after this long
LOG_MAXBYTES = "10MB"
LOG_BACKUPS = 5

UP = {"STARTING", "RUNNING"}
ACTIVE = UP | {"BACKOFF", "STOPPING"}  # a process exists or will be spawned again
IDLE = {"STOPPED", "EXITED"}  # nothing to supervise (FATAL stays visible)

# supervisor's XML-RPC fault codes
BAD_NAME, NOT_RUNNING, SHUTDOWN_STATE, ALREADY_STARTED = 10, 70, 6, 60

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


class SupervisorError(Exception):
    """One line for the operator."""


def state_dir():
    return os.path.realpath(os.getcwd())


def socket_path(directory=None):
    h = hashlib.sha256((directory or state_dir()).encode()).hexdigest()[:16]
    return f"/tmp/lumen-{os.getuid()}-{h}.sock"


def server_url():
    return f"unix://{socket_path()}"


def identifier():
    return f"lumen:{state_dir()}"


# ------------------------------------------------------------------ XML-RPC client
class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self._path)
        except OSError:
            s.close()
            raise
        self.sock = s


class _Transport(xmlrpc.client.Transport):
    def __init__(self, path, timeout):
        super().__init__()
        self._path, self._timeout = path, timeout

    def make_connection(self, host):
        return _UnixConnection(self._path, self._timeout)


def rpc(timeout=30.0):
    """The `supervisor` namespace of this directory's supervisord (not checked to run)."""
    return xmlrpc.client.ServerProxy(
        "http://localhost", transport=_Transport(socket_path(), timeout)
    ).supervisor


def _ping():
    """'RUNNING', 'SHUTDOWN' (on its way out) or None (no supervisord answers here)."""
    try:
        s = rpc(5.0)
        state = s.getState()["statename"]
        ident = s.getIdentification()
    except xmlrpc.client.Fault as e:
        if e.faultCode == SHUTDOWN_STATE:
            return "SHUTDOWN"
        raise SupervisorError(f"supervisord at {socket_path()}: {e.faultString}") from None
    except (OSError, http.client.HTTPException):
        return None
    if ident != identifier():
        raise SupervisorError(
            f"{socket_path()} is the socket of another supervisord ({ident}), not of {state_dir()}"
        )
    return "RUNNING" if state == "RUNNING" else "SHUTDOWN"


def _wait_gone(deadline):
    while time.monotonic() < deadline:
        if _ping() is None:
            return True
        time.sleep(0.05)
    return False


def connect():
    """The RPC proxy of the running supervisord here, or None when there is none."""
    state = _ping()
    if state == "SHUTDOWN":
        _wait_gone(time.monotonic() + 60)
        return None
    return rpc() if state else None


# ------------------------------------------------------------------------- locking
_lock_depth = 0
_lock_file = None


@contextmanager
def locked():
    """Exclusive, re-entrant: one change to this directory's supervisor at a time."""
    global _lock_depth, _lock_file
    if _lock_depth == 0:
        RUN.mkdir(parents=True, exist_ok=True)
        _lock_file = open(LOCK, "a")
        fcntl.flock(_lock_file, fcntl.LOCK_EX)
    _lock_depth += 1
    try:
        yield
    finally:
        _lock_depth -= 1
        if _lock_depth == 0:
            _lock_file.close()  # releases the flock
            _lock_file = None


# ------------------------------------------------------------------- configuration
def _q(value):
    """A value for supervisor's config (it %-interpolates every value)."""
    return str(value).replace("%", "%%")


def main_conf():
    d = state_dir()
    return f"""\
; Generated by lumen.supervise for the state directory {_q(d)}: do not edit.
[unix_http_server]
file = {_q(socket_path())}
chmod = 0700

[supervisord]
pidfile = {_q(d)}/run/supervisord.pid
logfile = {_q(d)}/logs/proc/supervisord.log
logfile_maxbytes = 5MB
logfile_backups = 3
loglevel = info
directory = {_q(d)}
childlogdir = {_q(d)}/logs/proc
nodaemon = true
silent = true
identifier = {_q(identifier())}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl = {_q(server_url())}

[include]
files = supervisor.d/*.conf
"""


def program_conf(name, startsecs=STARTSECS, startretries=STARTRETRIES, stopwaitsecs=STOPWAITSECS):
    d = state_dir()
    command = shlex.join([sys.executable, str(SPAWN), f"{d}/run/{name}.json"])
    return f"""\
; Generated by lumen.ctl start {name}: do not edit.
[program:{name}]
command = {_q(command)}
directory = {_q(d)}
autostart = false
autorestart = unexpected
exitcodes = 0
startsecs = {startsecs:g}
startretries = {startretries}
stopsignal = TERM
stopwaitsecs = {stopwaitsecs:g}
stopasgroup = true
killasgroup = true
redirect_stderr = true
stdout_logfile = {_q(d)}/logs/proc/{name}.log
stdout_logfile_maxbytes = {LOG_MAXBYTES}
stdout_logfile_backups = {LOG_BACKUPS}
"""


def _write(path, text, mode=0o644):
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _clean_env():
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SUPERVISOR_")
        and k not in ("LUMEN_CTL_STARTED", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")
    }


def record(name, cmd, port, host):
    """run/NAME.json: what to run, in which environment (mode 0600: it holds the env)."""
    meta = {
        "name": name,
        "cmd": cmd,
        "port": port,
        "host": host,
        "log": str(LOGS / f"{name}.log"),
        "env": _clean_env(),
    }
    _write(RUN / f"{name}.json", json.dumps(meta), mode=0o600)
    (RUN / f"{name}.spawns").write_text("")


def meta(name):
    try:
        return json.loads((RUN / f"{name}.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def ensure_running(say=print):
    """This directory's supervisord, started if needed; returns its RPC proxy."""
    s = connect()
    if s is not None:
        return s
    clear_stale_supervisor()
    if PIDFILE.exists():
        raise SupervisorError(
            f"supervisord (pid {PIDFILE.read_text().strip()}, {PIDFILE}) runs "
            f"but does not answer on {socket_path()}: see {LOG}"
        )
    stop_orphans(say=say)
    for p in (RUN, LOGS, PROGRAMS):
        p.mkdir(parents=True, exist_ok=True)
    for old in PROGRAMS.glob("*.conf"):  # a new supervisor knows what is started from now on
        old.unlink()
    _write(CONF, main_conf())
    env = _clean_env()
    with open(OUT, "ab") as out:
        p = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(CONF.resolve())],
            cwd=state_dir(),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if _ping() == "RUNNING":
            return rpc()
        code = p.poll()
        if code is not None:
            raise SupervisorError(
                f"supervisord exited with status {code} while starting: "
                + " | ".join(tail(OUT, 3))
                + f" (see {OUT})"
            )
        time.sleep(0.05)
    p.kill()
    p.wait()
    raise SupervisorError(
        f"supervisord did not answer on {socket_path()} within 20s (see {LOG}); stopped it"
    )


def add_program(s, name, **conf):
    """Create or update [program:NAME] (it is not running) and make supervisord load it."""
    path = PROGRAMS / f"{name}.conf"
    text = program_conf(name, **conf)
    try:
        same = path.read_text() == text
    except FileNotFoundError:
        same = False
    if same and info(s, name) is not None:
        return
    _write(path, text)
    added, changed, _removed = s.reloadConfig()[0]
    if name in changed:
        s.removeProcessGroup(name)
        s.addProcessGroup(name)
    elif name in added:
        s.addProcessGroup(name)


def info(s, name):
    """supervisor's getProcessInfo for NAME, or None if it does not know NAME."""
    try:
        return s.getProcessInfo(name)
    except xmlrpc.client.Fault as e:
        if e.faultCode == BAD_NAME:
            return None
        raise


def stop_programs(s, names, timeout):
    """Ask supervisord to stop NAMES (SIGTERM, SIGKILL after stopwaitsecs) and wait.
    Returns {name: pid it had} for those that were active."""
    was = {}
    for name in names:
        i = info(s, name)
        if i is None or i["statename"] not in ACTIVE:
            continue
        was[name] = i["pid"]
        try:
            s.stopProcess(name, False)
        except xmlrpc.client.Fault as e:
            if e.faultCode != NOT_RUNNING:
                raise
    deadline = time.monotonic() + timeout
    pending = set(was)
    while pending and time.monotonic() < deadline:
        pending = {n for n in pending if info(s, n)["statename"] in ACTIVE}
        if pending:
            time.sleep(0.05)
    if pending:
        raise SupervisorError(
            f"{', '.join(sorted(pending))} still stopping after {timeout:g}s (see {LOG})"
        )
    for name in was:
        clear_stale_pidfile(name)
    return was


def shutdown(s, say=print):
    """Stop supervisord (it stops whatever still runs) and wait until it is gone."""
    pid = s.getPID()
    try:
        s.shutdown()
    except xmlrpc.client.Fault as e:
        if e.faultCode != SHUTDOWN_STATE:
            raise
    except (OSError, http.client.HTTPException):
        pass
    deadline = time.monotonic() + STOPWAITSECS + 45
    while time.monotonic() < deadline and (pid_alive(pid) or _ping() is not None):
        time.sleep(0.05)
    if pid_alive(pid):
        raise SupervisorError(f"supervisord (pid {pid}) did not exit (see {LOG})")
    say(f"[ctl] supervisord stopped (pid {pid})")


def shutdown_if_idle(s, say=print):
    """Shut supervisord down when it supervises nothing (every program stopped or done)."""
    if all(i["statename"] in IDLE for i in s.getAllProcessInfo()):
        shutdown(s, say=lambda *a: None)
        return True
    return False


# ------------------------------------------------------------------- observations
def pid_alive(pid):
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before open, or between open and read
        return False


def read_pid(name):
    try:
        return int((RUN / f"{name}.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def tail(path, n=5):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 65536))
            lines = f.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    return [ln.strip() for ln in lines if ln.strip()][-n:]


def restarts(name):
    """Spawns since the last `lumen.ctl start NAME`, minus the first: supervisord's restarts."""
    try:
        with open(RUN / f"{name}.spawns", "rb") as f:
            return max(0, sum(1 for _ in f) - 1)
    except FileNotFoundError:
        return None


_EXIT_RE = r"(?:exited|stopped): {name} \((.+)\)\s*$"


def last_exit(name, i=None):
    """How NAME last ended, from supervisord's log: 'exit=1', 'SIGKILL', ... or '-'."""
    if i is not None and not i.get("stop"):
        return "-"
    pat = re.compile(_EXIT_RE.format(name=re.escape(name)))
    for line in reversed(tail(LOG, 4000)):
        m = pat.search(line)
        if m:
            how = m.group(1)
            code = re.search(r"exit status (\d+)", how)
            if code:
                return f"exit={code.group(1)}"
            sig = re.search(r"terminated by (\w+)", how)
            if sig:
                return sig.group(1) + ("(core)" if "core dumped" in how else "")
            return how.split(";")[0].replace(" ", "_")
    if i is not None:
        return f"exit={i.get('exitstatus', '?')}"
    return "-"


def describe_exit(name):
    """'exited with status 2' / 'was terminated by SIGKILL' for an error line."""
    how = last_exit(name)
    if how.startswith("exit="):
        return f"exited with status {how[5:]}"
    if how.startswith("SIG"):
        return f"was terminated by {how}"
    return "exited"


def clear_stale_pidfile(name):
    """Remove run/NAME.pid when it names no live process of this directory (a SIGKILLed
    process cannot remove its own). Kept: a supervised process' file, and that of a
    process running in the foreground in this directory (`make serve.rmb.emit`)."""
    p = read_pid(name)
    if p is None:
        return
    if pid_alive(p):
        if _is_ours(p):
            return
        try:
            if os.path.realpath(f"/proc/{p}/cwd") == state_dir():
                return
        except OSError:
            pass
    try:
        if read_pid(name) == p:
            (RUN / f"{name}.pid").unlink()
    except FileNotFoundError:
        pass


# ------------------------------------------------------------------------ orphans
def _environ(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, PermissionError, ProcessLookupError):
        return None
    env = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep and k.startswith(b"SUPERVISOR_"):
            env[k.decode(errors="replace")] = v.decode(errors="replace")
    return env


def _is_ours(pid, name=None):
    env = _environ(pid)
    return (
        bool(env)
        and env.get("SUPERVISOR_SERVER_URL") == server_url()
        and (name is None or env.get("SUPERVISOR_PROCESS_NAME") == name)
    )


def find_orphans(name=None):
    """[(pid, name)] of live processes a supervisord of this directory started. Only
    orphans while no supervisord runs here (or after it was shut down)."""
    out = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        env = _environ(pid)
        if (
            env
            and env.get("SUPERVISOR_SERVER_URL") == server_url()
            and (name is None or env.get("SUPERVISOR_PROCESS_NAME") == name)
            and pid_alive(pid)
        ):
            out.append((pid, env.get("SUPERVISOR_PROCESS_NAME", "?")))
    return sorted(out)


def _wait_pidfd(fd, timeout):
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(timeout * 1000))


def _stop_verified(pid, name, grace=STOPWAITSECS):
    """SIGTERM, then SIGKILL after `grace`, to `pid` only while it is this directory's
    process `name`: the pidfd pins the process, the environment is checked after that."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except (AttributeError, OSError):  # no pidfd (old kernel): check right before each signal
        fd = None
    try:
        if not _is_ours(pid, name):
            return False
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
            if fd is not None:
                signal.pidfd_send_signal(fd, sig)
                if _wait_pidfd(fd, wait):
                    return True
            else:
                if not _is_ours(pid, name):
                    return True
                os.kill(pid, sig)
                deadline = time.monotonic() + wait
                while pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if not pid_alive(pid):
                    return True
        return not pid_alive(pid)
    except ProcessLookupError:
        return True
    finally:
        if fd is not None:
            os.close(fd)


def stop_orphans(name=None, say=print):
    """Stop processes a dead supervisord of this directory left behind; [(pid, name)]."""
    stopped = []
    for pid, pname in find_orphans(name):
        if _stop_verified(pid, pname):
            say(f"[ctl] {pname} stopped (pid {pid}; it ran on after its supervisord had gone)")
            stopped.append((pid, pname))
            clear_stale_pidfile(pname)
    return stopped


def clear_stale_supervisor():
    """After a supervisord died (SIGKILL): drop its PID file and socket, which only a clean
    exit removes. A PID file naming a live supervisord of this directory is kept."""
    try:
        pid = int(PIDFILE.read_text().strip())
    except (FileNotFoundError, ValueError):
        pid = None
    if pid is not None:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                mine = str(CONF.resolve()).encode() in f.read().split(b"\0")
        except OSError:
            mine = False
        if not (mine and pid_alive(pid)):
            PIDFILE.unlink(missing_ok=True)
    if os.path.exists(socket_path()) and _ping() is None:
        try:
            os.unlink(socket_path())
        except FileNotFoundError:
            pass


def known_names():
    names = {p.stem for p in PROGRAMS.glob("*.conf")} if PROGRAMS.exists() else set()
    if RUN.exists():
        names |= {p.stem for p in RUN.glob("*.json")}
    return sorted(n for n in names if NAME_RE.match(n))


__all__ = [
    "SupervisorError",
    "connect",
    "ensure_running",
    "add_program",
    "info",
    "stop_programs",
    "shutdown",
    "shutdown_if_idle",
    "find_orphans",
    "stop_orphans",
    "record",
    "meta",
    "restarts",
    "last_exit",
    "describe_exit",
    "tail",
    "read_pid",
    "pid_alive",
    "clear_stale_pidfile",
    "clear_stale_supervisor",
    "known_names",
    "locked",
]
