"""Supervision (issue 13): every background process runs under this directory's supervisord.
A SIGKILLed process comes back with a new PID and `make status` counts the restart; a
process that keeps crashing ends FATAL; one that dies while starting is one error line and
is not retried; `make up` twice starts nothing twice; `make down` leaves no process and no
supervisord; a `make up` that fails part way stops what it started and says where to look;
a bad config is one line and exit 2 with nothing started; an orphan of a dead supervisord
is stopped by `make down`, a process that merely reuses a recorded PID never is."""

import os
import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import PY, STACK, free_port, pid_alive, pids_in, run_make, wait_until
from lumen import supervise as sv

NAMES = STACK

# A process as Lumen's are: ready = run/NAME.pid written; then behaves as told.
TOY = """
import os, sys, time
from lumen.proc import Lifecycle
name, mode = sys.argv[1], sys.argv[2]
with Lifecycle(name) as life:
    if mode == "die":
        print("cannot start: no such thing", flush=True)
        sys.exit(3)
    life.ready()
    print("ready", os.getpid(), flush=True)
    if mode == "crash":
        time.sleep(0.3)
        print("crashing", flush=True)
        sys.exit(1)
    if mode == "chatty":
        while not life.stop.is_set():
            print("x" * 200, flush=True)
    life.stop.wait()
"""


def ctl(cwd, *args, timeout=60, env=None):
    return subprocess.run(
        [PY, "-m", "lumen.ctl", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, **(env or {})),
    )


def ours(cwd):
    """{pid: name} of every live process this directory's supervisord started."""
    here = os.getcwd()
    os.chdir(cwd)
    try:
        return {pid: name for pid, name in sv.find_orphans()}
    finally:
        os.chdir(here)


def supervisord_pid(cwd):
    try:
        return int((cwd / "run/supervisord.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None


def status_rows(out):
    """{name: {state, pid, uptime, restarts, last_exit, port, log}} from `status`."""
    rows = {}
    for line in out.splitlines():
        m = re.match(
            r"^(\S+)\s+(STARTING|RUNNING|BACKOFF|STOPPING|STOPPED|EXITED|FATAL|UNKNOWN)"
            r"\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$",
            line,
        )
        if m:
            rows[m.group(1)] = dict(
                zip(
                    ("state", "pid", "uptime", "restarts", "last_exit", "port", "log"),
                    m.groups()[1:],
                )
            )
    return rows


@pytest.fixture
def here(workdir):
    """A state directory; whatever its supervisord runs is stopped at the end."""
    (workdir / "toy.py").write_text(TOY)
    yield workdir
    ctl(workdir, "stop", "--all")
    for pid in list(ours(workdir)) + [supervisord_pid(workdir)]:  # belt and braces, by PID
        if pid and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def stack(here, private_stack):
    return here, private_stack(RMB_HZ=20)


def toy(cwd, name, mode, *opts):
    return ctl(cwd, "start", name, *opts, "--", PY, "-u", cwd / "toy.py", name, mode)


def test_socket_path_is_short_from_a_deep_directory(here):
    deep = here / ("d" * 60) / ("e" * 60) / ("f" * 60)
    deep.mkdir(parents=True)
    (deep / "toy.py").write_text(TOY)
    assert len(str(deep / "run" / "supervisor.sock")) > 108  # where it could not live
    try:
        r = toy(deep, "deep", "run")
        assert r.returncode == 0, r.stderr
        assert "[ctl] deep started (pid" in r.stdout
        os.chdir(deep)
        assert len(sv.socket_path()) < 60 and os.path.exists(sv.socket_path())
        os.chdir(here)
        assert status_rows(ctl(deep, "status").stdout)["deep"]["state"] in ("STARTING", "RUNNING")
    finally:
        os.chdir(here)
        ctl(deep, "stop", "--all")
    assert not ours(deep) and not (deep / "run/supervisord.pid").exists()


def test_sigkill_brings_a_new_pid_and_status_counts_the_restart(here):
    r = toy(here, "toy", "run", "--startsecs", "1")
    assert r.returncode == 0, r.stderr
    pid = pids_in(here / "run")["toy"]
    wait_until(
        lambda: status_rows(ctl(here, "status").stdout)["toy"]["state"] == "RUNNING",
        timeout=10,
        what="toy RUNNING",
    )
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    new = wait_until(
        lambda: (p := pids_in(here / "run").get("toy")) != pid and p and pid_alive(p) and p,
        timeout=20,
        what="toy back with a new PID",
    )
    back = time.monotonic() - t0
    row = status_rows(ctl(here, "status").stdout)["toy"]
    assert int(row["restarts"]) >= 1 and row["last_exit"] == "SIGKILL", row
    assert row["pid"] == str(new) and row["state"] in ("STARTING", "RUNNING")
    assert list(ours(here)) == [new]  # one toy, no leftover
    print(f"[figures] back after SIGKILL in {back:.2f}s, restarts={row['restarts']}")

    # A real Lumen process, started by its make target, comes back the same way.
    env = {"RMB_EXPORTER_PORT": str(free_port()), "RMB_HZ": "20"}
    r = run_make(here, "trackB.start", env=env, timeout=60)
    assert r.returncode == 0 and "[trackB] RESULT = STARTED" in r.stdout, r.stderr
    emitter = pids_in(here / "run")["rmb_emitter"]
    t0 = time.monotonic()
    os.kill(emitter, signal.SIGKILL)
    wait_until(
        lambda: (p := pids_in(here / "run").get("rmb_emitter")) != emitter and p and pid_alive(p),
        timeout=20,
        what="rmb_emitter back",
    )
    back = time.monotonic() - t0
    s = run_make(here, "status", env=env)
    row = status_rows(s.stdout)["rmb_emitter"]
    assert int(row["restarts"]) >= 1 and row["last_exit"] == "SIGKILL", s.stdout
    print(f"[figures] rmb_emitter back after SIGKILL in {back:.2f}s, restarts={row['restarts']}")
    r = run_make(here, "trackB.stop", env=env)
    assert r.returncode == 0 and "[trackB] RESULT = STOPPED" in r.stdout


def test_a_crash_loop_ends_fatal_and_status_shows_it(here):
    r = toy(here, "crashy", "crash", "--startsecs", "2", "--startretries", "2")
    assert r.returncode == 0, r.stderr  # it did become ready before crashing
    wait_until(
        lambda: status_rows(ctl(here, "status").stdout)["crashy"]["state"] == "FATAL",
        timeout=40,
        what="crashy FATAL",
    )
    row = status_rows(ctl(here, "status").stdout)["crashy"]
    assert row["restarts"] == "2" and row["last_exit"] == "exit=1" and row["pid"] == "-", row
    assert not ours(here)
    # FATAL stays visible: supervisord keeps running for it until make down
    assert pid_alive(supervisord_pid(here))
    assert "FATAL" in run_make(here, "status").stdout
    sup = supervisord_pid(here)
    r = ctl(here, "stop", "crashy")  # stopping it on purpose clears it, and supervisord goes
    assert r.returncode == 0 and "crashy not running (it was FATAL" in r.stdout, r.stdout
    assert not pid_alive(sup) and "nothing running" in run_make(here, "status").stdout

    r = toy(here, "crashy", "crash", "--startsecs", "2", "--startretries", "0")  # again
    assert r.returncode == 0, r.stderr
    wait_until(
        lambda: status_rows(ctl(here, "status").stdout)["crashy"]["state"] == "FATAL",
        timeout=40,
        what="crashy FATAL again",
    )
    assert status_rows(ctl(here, "status").stdout)["crashy"]["restarts"] == "0"
    r = run_make(here, "down")
    assert r.returncode == 0 and "[ctl] supervisord stopped" in r.stdout
    assert "nothing running" in run_make(here, "status").stdout


def test_exit_while_starting_is_one_line_and_not_retried(here):
    r = toy(here, "dies", "die")
    assert r.returncode == 1
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "dies exited with status 3 while starting" in err[0], r.stderr
    assert "cannot start: no such thing" in err[0]
    watch_until = time.monotonic() + 2.5  # longer than supervisord's first backoff
    while time.monotonic() < watch_until:  # nothing may respawn it meanwhile
        assert (here / "run/dies.spawns").read_text().count("\n") == 1
        time.sleep(0.1)
    assert not ours(here)
    # nothing else ran here, so supervisord went away with it
    assert supervisord_pid(here) is None


def test_process_logs_rotate(here, monkeypatch):
    from lumen import ctl as lctl

    monkeypatch.setattr(sv, "LOG_MAXBYTES", "20KB")
    monkeypatch.setattr(sv, "LOG_BACKUPS", 2)
    assert lctl.start("chatty", [PY, "-u", str(here / "toy.py"), "chatty", "chatty"]) == 0
    wait_until(
        lambda: (here / "logs/proc/chatty.log.2").exists(), timeout=20, what="two rotated logs"
    )
    assert lctl.stop_all() == 0
    logs = sorted(p.name for p in (here / "logs/proc").glob("chatty.log*"))
    assert logs == ["chatty.log", "chatty.log.1", "chatty.log.2"]
    assert all(p.stat().st_size < 100_000 for p in (here / "logs/proc").glob("chatty.log*"))


def test_up_twice_same_pids_then_down_leaves_nothing(stack):
    cwd, env = stack
    r = run_make(cwd, "up", env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    first = {k: v for k, v in pids_in(cwd / "run").items() if k != "supervisord"}
    assert set(first) == NAMES
    supervisor = supervisord_pid(cwd)
    r = run_make(cwd, "up", env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    again = re.findall(r"^\[ctl\] (\S+) already running \(pid (\d+)\)$", r.stdout, re.M)
    assert {n: int(p) for n, p in again} == first and " started (pid" not in r.stdout
    assert {k: v for k, v in pids_in(cwd / "run").items() if k != "supervisord"} == first
    assert supervisord_pid(cwd) == supervisor
    running = ours(cwd)
    assert sorted(running.values()) == sorted(NAMES)  # one of each, nothing else
    assert set(running) == set(first.values())

    s = run_make(cwd, "status", env=env)
    assert re.search(
        r"^name\s+state\s+pid\s+uptime\s+restarts\s+last-exit\s+port\s+log$", s.stdout, re.M
    ), s.stdout
    rows = status_rows(s.stdout)
    assert set(rows) == NAMES
    for name, row in rows.items():
        assert row["state"] in ("STARTING", "RUNNING") and row["pid"] == str(first[name])
        assert re.match(r"^\d+:\d\d:\d\d$", row["uptime"]) and row["restarts"] == "0"
        assert row["last_exit"] == "-" and row["log"] == f"logs/proc/{name}.log"
    assert rows["api"]["port"] == env["API_PORT"]

    r = run_make(cwd, "down", env=env)
    assert r.returncode == 0, r.stderr
    assert not [p for p in list(first.values()) + [supervisor] if pid_alive(p)]
    assert not ours(cwd) and supervisord_pid(cwd) is None
    assert not list((cwd / "run").glob("*.pid"))
    assert "nothing running" in run_make(cwd, "status", env=env).stdout
    r = run_make(cwd, "down", env=env)  # twice is fine
    assert r.returncode == 0 and "nothing running" in r.stdout


def test_up_with_the_api_port_busy_stops_what_it_started(stack):
    cwd, env = stack
    port = int(env["API_PORT"])
    with socket.socket() as s:
        s.bind(("0.0.0.0", port))
        s.listen()
        r = run_make(cwd, "up", env=env, timeout=180)
    assert r.returncode != 0
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and f"port {port}" in err[0] and f"pid {os.getpid()}" in err[0], r.stderr
    assert "[up] FAILED part way" in r.stderr and "logs/proc/" in r.stderr
    assert "make down" in r.stderr
    assert "Lumen is up" not in r.stdout
    assert not ours(cwd)
    assert supervisord_pid(cwd) is None
    assert not [p for p in pids_in(cwd / "run").values() if pid_alive(p)]


@pytest.mark.parametrize("bad", [{"API_PORT": "abc"}, {"RMB_HZ": "fast"}, {"SAFETY_HZ": "-"}])
def test_a_bad_config_is_one_line_exit_2_and_starts_nothing(here, bad):
    env = {
        "RMB_EXPORTER_PORT": str(free_port()),
        "URE_EXPORTER_PORT": str(free_port()),
        "API_PORT": str(free_port()),
        **bad,
    }
    r = run_make(here, "up", env=env, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and list(bad)[0] in err[0], r.stderr
    assert not (here / "run/supervisord.pid").exists() and not ours(here)
    assert "started" not in r.stdout


def test_down_without_a_venv_succeeds(here):
    r = run_make(here, "down", "VENV=/nonexistent/venv")
    assert r.returncode == 0, r.stderr
    assert "nothing running" in r.stdout


def test_orphans_of_a_dead_supervisord_are_stopped_and_reused_pids_never(here):
    r = toy(here, "toy", "run")
    assert r.returncode == 0, r.stderr
    pid = pids_in(here / "run")["toy"]
    os.kill(supervisord_pid(here), signal.SIGKILL)
    wait_until(lambda: not pid_alive(supervisord_pid(here) or 0), what="supervisord gone")
    assert pid_alive(pid)  # the child runs on, unsupervised
    s = ctl(here, "status")
    assert s.returncode == 1 and f"toy (pid {pid}) runs without its supervisord" in s.stderr

    # A stranger that holds a PID recorded here must never be signalled.
    stranger = subprocess.Popen(["sleep", "60"], cwd="/", start_new_session=True)
    try:
        (here / "run/other.pid").write_text(f"{stranger.pid}\n")
        (here / "run/other.json").write_text('{"name": "other"}')
        r = run_make(here, "down")
        assert r.returncode == 0, r.stderr
        assert f"toy stopped (pid {pid}" in r.stdout
        assert not pid_alive(pid) and not ours(here)
        assert stranger.poll() is None  # untouched
        assert not (here / "run/other.pid").exists()  # a stale record, dropped
        assert not (here / "run/supervisord.pid").exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_start_after_a_dead_supervisord_replaces_its_orphans(here):
    env = {"RMB_EXPORTER_PORT": str(free_port()), "RMB_HZ": "20"}
    r = run_make(here, "trackB.start", env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    old = {k: v for k, v in pids_in(here / "run").items() if k != "supervisord"}
    os.kill(supervisord_pid(here), signal.SIGKILL)
    wait_until(lambda: not pid_alive(supervisord_pid(here) or 0), what="supervisord gone")
    r = run_make(here, "trackB.start", env=env, timeout=60)  # the orphans hold the port
    assert r.returncode == 0, r.stdout + r.stderr
    assert "it ran on after its supervisord had gone" in r.stdout
    new = {k: v for k, v in pids_in(here / "run").items() if k != "supervisord"}
    assert set(new) == set(old) == {"rmb_exporter", "rmb_emitter"}
    assert not [p for p in old.values() if pid_alive(p)]
    assert sorted(ours(here).values()) == ["rmb_emitter", "rmb_exporter"]  # one of each
    assert set(ours(here)) == set(new.values())
