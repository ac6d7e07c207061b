"""Issue 16, point 11: operating a stack. `make logs` (this directory's logs/proc/*.log: the
last LINES of each, then followed like `tail -F` until Ctrl-C, exit 0; NAME= one log;
FOLLOW=0 prints and exits) and PROFILE= for the emitter (checked before anything starts,
and passed to the emitter supervisord runs). The logs here are written by the test itself,
so every line and every rotation is known."""

import os
import pty
import re
import signal
import threading

from conftest import MAKE_FAILED, ROOT, hermetic_env, merged_env, pids_in, run_make, wait_until

MAKE = ["make", "-s", "--no-print-directory", "-f", str(ROOT / "Makefile")]


def write_log(cwd, name, *lines, mode="a"):
    d = cwd / "logs/proc"
    d.mkdir(parents=True, exist_ok=True)
    with open(d / f"{name}.log", mode) as f:
        f.write("".join(f"{ln}\n" for ln in lines))


def test_make_logs_bounded(workdir):
    env = hermetic_env()
    r = run_make(workdir, "logs", "FOLLOW=0", env=env)
    assert r.returncode == 0 and r.stdout == (
        "[logs] no process logs here (logs/proc/ is empty): nothing was started here\n"
    )
    write_log(workdir, "rmb_exporter", *(f"x{i}" for i in range(1, 31)))
    write_log(workdir, "api", "a1", "a2")
    with open(workdir / "logs/proc/api.log", "a") as f:
        f.write("a3 not finished")  # a line still being written is not shown
    r = run_make(workdir, "logs", "FOLLOW=0", "LINES=3", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "api          | a1",
        "api          | a2",
        "rmb_exporter | x28",
        "rmb_exporter | x29",
        "rmb_exporter | x30",
    ]
    r = run_make(workdir, "logs", "FOLLOW=0", "NAME=rmb_exporter", env=env)  # LINES=20
    assert r.stdout.splitlines() == [f"x{i}" for i in range(11, 31)]
    r = run_make(workdir, "logs", "FOLLOW=0", "NAME=rmb_emitter", env=env)
    assert r.returncode != 0
    err = [ln for ln in r.stderr.splitlines() if not MAKE_FAILED.match(ln)]
    assert err == ["error: no log logs/proc/rmb_emitter.log (the logs here: api, rmb_exporter)"]


class Terminal:
    """`argv` run in `cwd` as at a terminal: on a new pseudo-terminal, its session's
    foreground; what it writes is collected line by line; type() sends keys."""

    def __init__(self, cwd, argv, env):
        self.pid, self.master = pty.fork()
        if self.pid == 0:  # the child: exec at once
            try:
                os.chdir(cwd)
                os.execvpe(argv[0], argv, env)
            finally:
                os._exit(127)
        self.lines, self.status = [], None
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        buf = b""
        while True:
            try:
                data = os.read(self.master, 4096)
            except OSError:  # EIO: the terminal's last writer is gone
                return
            if not data:
                return
            buf += data
            *done, buf = buf.split(b"\n")
            self.lines += [ln.decode().rstrip("\r") for ln in done]

    def type(self, keys):
        os.write(self.master, keys)

    def until(self, *want):
        wait_until(lambda: self.lines[-len(want) :] == list(want), timeout=30, what=repr(want))

    def exited(self):
        if self.status is None:
            pid, st = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(st)
        return self.status is not None

    def close(self):
        os.close(self.master)  # hangs up: SIGHUP to whatever still runs on it
        if not self.exited():
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)


def test_make_logs_follows_like_tail_F_and_ctrl_c_ends_it_with_0(workdir):
    write_log(workdir, "a", "old1", "old2")
    write_log(workdir, "b", "b1")
    term = Terminal(workdir, [*MAKE, "logs", "LINES=1"], merged_env(hermetic_env()))
    try:
        term.until("a | old2", "b | b1")
        write_log(workdir, "a", "new1")
        term.until("a | new1")
        with open(workdir / "logs/proc/a.log", "a") as f:
            f.write("half")  # shown once the line is complete
        write_log(workdir, "b", "b2")
        term.until("b | b2")
        write_log(workdir, "a", " done")
        term.until("a | half done")
        # supervisord's rotation: rename, then a new file; the old one is read to its end.
        write_log(workdir, "a", "last of the old file")
        os.rename(workdir / "logs/proc/a.log", workdir / "logs/proc/a.log.1")
        write_log(workdir, "a", "first of the new file")
        term.until("a | first of the new file")
        assert term.lines[-2] == "a | last of the old file"
        # truncated in place (shorter than what was read): read again from the start
        write_log(workdir, "b", "b0", mode="w")
        term.until("b | b0")
        # a process started meanwhile: its log is shown from its first line
        write_log(workdir, "c", "c1", "c2")
        term.until("c | c1", "c | c2")
        term.type(b"\x03")  # Ctrl-C: the terminal signals its foreground process group
        wait_until(term.exited, timeout=30, what="make logs to end")
        assert term.status == 0, term.lines
    finally:
        term.close()
    assert term.lines.count("a | new1") == 1 and "a | old1" not in term.lines  # LINES=1
    assert not [ln for ln in term.lines if "make:" in ln or "Interrupt" in ln]


def test_bad_profile_stops_before_anything_starts(workdir, private_stack):
    env = private_stack(**hermetic_env())
    for targets, extra in (
        (["up", "PROFILE=bogus"], {}),
        (["trackB.start"], {"PROFILE": "spike steady"}),
    ):
        r = run_make(workdir, *targets, env=dict(env, **extra), timeout=60)
        assert r.returncode == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "is not a profile of the emitter" in lines[0], r.stderr
        assert "(seed steady spike jitter rollbacks)" in lines[0]
        assert "RESULT = STARTED" not in r.stdout
        assert pids_in(workdir / "run") == {}


def test_profile_from_the_environment_reaches_the_supervised_emitter(workdir, private_stack):
    env = private_stack(ports=("RMB_EXPORTER_PORT",), **hermetic_env(RMB_HZ=20))
    r = run_make(workdir, "trackB.start", env=dict(env, PROFILE="rollbacks"), timeout=60)
    assert r.returncode == 0, r.stderr
    log = workdir / "logs/proc/rmb_emitter.log"
    wait_until(lambda: "profile=rollbacks" in log.read_text(), timeout=30, what="its line")
    r = run_make(workdir, "logs", "NAME=rmb_emitter", "FOLLOW=0", env=env)
    assert re.search(r"^\[rmb\] emitting to logs/rmb_events.jsonl .*profile=rollbacks", r.stdout)


def test_help_lists_logs_and_profile(tmp_path):
    r = run_make(tmp_path, "help")
    listed = dict(re.findall(r"^  (\S+)\s+(.+)$", r.stdout, re.M))
    assert "NAME=" in listed["logs"] and "FOLLOW=0" in listed["logs"]
    assert "PROFILE=" in listed["up"] and "PROFILE=" in listed["trackB.start"]
