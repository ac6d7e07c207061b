"""Lifecycle of a long-running Lumen process.

`Lifecycle(name)` writes `run/<name>.pid` once the process is ready, turns SIGTERM and
SIGINT into a `stop` event the main loop watches (so it can flush and checkpoint), and
removes its PID file on the way out. `cli_main` gives every entry point the same exit
codes: bad usage or config -> one line on stderr and 2, runtime failure -> 1; a dependency
this Python lacks (imported late, inside main) -> one line naming it and `make venv`, 2
(one missing when lumen is imported: lumen/__init__.py says it the same way).
"""

import os
import signal
import sys
import threading
from pathlib import Path

from . import DEPENDENCIES, HINT, missing_message
from .checkpoint import CorruptState
from .config import ConfigError
from .lock import Busy
from .ports import PortInUse


class Lifecycle:
    def __init__(self, name, run_dir="run"):
        self.name = name
        self.pidfile = Path(run_dir) / f"{name}.pid"
        self.stop = threading.Event()
        self._old = {}

    def _on_signal(self, signum, frame):
        self.stop.set()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._on_signal)
        return self

    def ready(self):
        """Announce readiness: the PID file is what `lumen.ctl start` waits for."""
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.pidfile.with_suffix(".pid.tmp")
        tmp.write_text(f"{os.getpid()}\n")
        os.replace(tmp, self.pidfile)

    def __exit__(self, *exc):
        try:
            if self.pidfile.read_text().strip() == str(os.getpid()):
                self.pidfile.unlink()
        except FileNotFoundError:
            pass
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def _proc_table():
    """{pid: (state, ppid, session)} of every process, from Linux /proc (None elsewhere)."""
    table = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for d in entries:
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    st = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # gone meanwhile
            table[int(d)] = (st[0], int(st[1]), int(st[3]))
    return table


def session_busy():
    """Whether another command runs in this terminal session beside this process, its
    ancestors and its descendants: a process of the same session (a shell's background
    job, or its foreground pipeline's other commands), alive, neither. Blueprint section 0
    starts `make metrics.fake.v17 &` beside the checks that read what it writes; alone at
    a prompt, nothing else runs. Without /proc (not Linux): True, as it cannot tell."""
    table = _proc_table()
    if not table:
        return True
    me, sid = os.getpid(), os.getsid(0)
    kin, p = set(), me
    while p in table and p not in kin:  # ancestors
        kin.add(p)
        p = table[p][1]
    children = {}
    for pid, (_, ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    todo = [me]
    while todo:  # descendants
        for c in children.get(todo.pop(), ()):
            if c not in kin:
                kin.add(c)
                todo.append(c)
    return any(
        s == sid and pid not in kin and state not in ("Z", "X")
        for pid, (state, _, s) in table.items()
    )


def first_line(e):
    """An exception's message as one line (a server's or parser's can span several; an
    empty one is the exception's type)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def warn_retry(tag, failures, what):
    """Say a retried failure on stderr the first time and every 100th time after, so a
    full disk that lasts an hour neither goes unsaid nor floods the process log."""
    if failures == 1 or failures % 100 == 0:
        print(f"{tag} warning: {what}; will retry ({failures} so far)", file=sys.stderr, flush=True)


def cli_main(main):
    """Run `main()` (returns an exit code) turning expected failures into one line each."""
    try:
        return main()
    except (ConfigError, Busy, CorruptState) as e:  # the operator's to fix: one line, 2
        print(f"error: {e}", file=sys.stderr)
        return 2
    except PortInUse as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as e:  # imported late (psycopg, say): this Python lacks it
        top = (e.name or "").split(".")[0]
        if top not in DEPENDENCIES:
            raise
        print(f"error: {missing_message([top])}: {HINT}", file=sys.stderr)
        return 2


def run_server(name, app, host, port, banner, worker=None, **serve_kw):
    """Serve `app` on host:port, until SIGTERM/SIGINT, while `worker(stop)` (if any) runs in
    a thread: an exporter's reader, say; the API has none.

    The PID file is written once the port is bound and the worker started. Returns 0 on a
    clean stop, 1 if the worker or the server died on its own. `banner` may use {port};
    `serve_kw` go to lumen.httpserve.serve (timeout, max_url, max_conns, workers)."""
    from .httpserve import serve

    server = serve(app, host, port, **serve_kw)
    with Lifecycle(name) as life:
        serving = threading.Thread(target=server.serve_forever, daemon=True, name="http")
        serving.start()
        work = threading.Thread(target=worker or (lambda stop: stop.wait()), args=(life.stop,))
        work.start()
        life.ready()
        print(banner.format(port=server.server_address[1]), flush=True)
        while work.is_alive() and serving.is_alive() and not life.stop.is_set():
            life.stop.wait(0.5)
        crashed = not life.stop.is_set()  # the worker or the server ended on its own: an error
        dead = "worker" if not work.is_alive() else "HTTP server"
        life.stop.set()
        work.join(timeout=30)
        server.shutdown()  # returns at once if serve_forever has ended already
        server.server_close()
    if crashed:
        print(
            f"error: the {dead} thread of {name} stopped unexpectedly (see above)", file=sys.stderr
        )
        return 1
    return 0
