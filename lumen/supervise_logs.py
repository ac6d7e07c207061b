"""make logs: the output of this state directory's processes, `logs/proc/<name>.log`.

`show(name, lines, follow)` prints the last `lines` lines of each log (of NAME's only, when
given), then, following, each new line as it is written, like `tail -F`: a log that is
rotated (supervisord renames it to `<name>.log.1`) is read to its end and the new file
from its start; one that gets shorter (truncated) is read again from its start; a log that
appears later (a process started meanwhile) is picked up. With more than one log each line
is prefixed by its process name. Ctrl-C or SIGTERM ends it, exit 0; not following, it
exits once the lines are printed. It only reads: it never writes or rotates a log.

Ctrl-C at a terminal signals the whole foreground process group, `make` included, and make
then ends by that signal (status 130) whatever its recipe returns. So, following at a
terminal (stdin and stdout a tty, this process in its foreground group), the follower
takes the terminal's foreground for a process group of its own, as a shell does for a
job, and gives it back on the way out: Ctrl-C reaches only the follower, which ends with
0, and so does `make logs`. Ctrl-Z is ignored meanwhile (a stopped follower would hold
the terminal with nobody to resume it).
"""

import os
import signal
import sys
import threading
from contextlib import contextmanager, nullcontext

from .supervise import LOGS

BLOCK = 64 * 1024
POLL_S = 0.2


def available():
    """The process names with a log here, sorted."""
    return sorted(p.name[: -len(".log")] for p in LOGS.glob("*.log"))


def last_lines(f, n):
    """The last `n` complete lines (bytes, without their newline) of the open file `f`,
    read backwards in blocks; `f` is left at the end of the last complete line."""
    end = f.seek(0, os.SEEK_END)
    data, pos = b"", end
    while pos > 0 and data.count(b"\n") <= n:
        step = min(BLOCK, pos)
        pos -= step
        f.seek(pos)
        data = f.read(step) + data
    complete = data[: data.rfind(b"\n") + 1]
    f.seek(end - (len(data) - len(complete)))
    return complete.splitlines()[-n:] if n > 0 else []


class Followed:
    """One log being followed: its open file, inode, and a line not yet complete."""

    def __init__(self, name, lines, from_start=False):
        self.name, self.path = name, LOGS / f"{name}.log"
        self.f = open(self.path, "rb")
        self.ino = os.fstat(self.f.fileno()).st_ino
        self.rest = b""
        self.first = [] if from_start else last_lines(self.f, lines)

    def read(self):
        """New complete lines; a rotation or truncation reopens the log."""
        out = self._drain()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return out  # between a rename and the new file
        if st.st_ino != self.ino or st.st_size < self.f.tell():
            if self.rest:
                out.append(self.rest)
                self.rest = b""
            self.f.close()
            self.f = open(self.path, "rb")
            self.ino = os.fstat(self.f.fileno()).st_ino
            out += self._drain()
        return out

    def _drain(self):
        data = self.rest + self.f.read()
        cut = data.rfind(b"\n") + 1
        self.rest = data[cut:]
        return data[:cut].splitlines()

    def close(self):
        self.f.close()


@contextmanager
def terminal_of_its_own():
    """While inside: this process leads the terminal's foreground process group, alone
    (see the module docstring); a no-op unless following at a terminal, in its foreground."""
    try:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            raise OSError
        tty = os.open("/dev/tty", os.O_RDWR)
    except (OSError, ValueError):
        yield
        return
    try:
        before = os.tcgetpgrp(tty)
        if before != os.getpgrp():
            yield
            return
        old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGTTOU, signal.SIGTSTP)}
        os.setpgid(0, 0)
        os.tcsetpgrp(tty, os.getpgrp())
        try:
            yield
        finally:
            try:
                os.tcsetpgrp(tty, before)
                os.setpgid(0, before)  # back in make's group
            except OSError:  # make is gone meanwhile: nothing to give back
                pass
            for sig, h in old.items():
                signal.signal(sig, h)
    finally:
        os.close(tty)


def show(name=None, lines=20, follow=True, out=None):
    """Print the logs (see the module docstring); returns the exit status."""
    out = out or sys.stdout
    names = available()
    if name is not None and name not in names:
        where = f"the logs here: {', '.join(names)}" if names else "no process logs here"
        print(f"error: no log {LOGS}/{name}.log ({where})", file=sys.stderr)
        return 2
    if not names and not follow:
        print(f"[logs] no process logs here ({LOGS}/ is empty): nothing was started here")
        return 0
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):  # SIGINT even if started ignoring it
            signal.signal(sig, lambda *a: stop.set())
    logs, later = {}, False  # later: a log that appears now is new, shown from its start
    try:
        with terminal_of_its_own() if follow else nullcontext():
            while True:
                for n in [name] if name else available():
                    if n not in logs:
                        try:
                            logs[n] = Followed(n, lines, from_start=later)
                        except FileNotFoundError:  # removed meanwhile
                            pass
                later = True
                width = max(map(len, logs), default=0)
                for n, log in sorted(logs.items()):
                    batch = log.first + log.read()
                    log.first = []
                    for raw in batch:
                        text = raw.decode("utf-8", "replace")
                        out.write(f"{n:<{width}} | {text}\n" if name is None else f"{text}\n")
                out.flush()
                if not follow or stop.wait(POLL_S):
                    return 0
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `make logs | head`: the reader is gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        for log in logs.values():
            log.close()
