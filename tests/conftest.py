"""Shared fixtures: a temp working directory per test, free ports, bounded waits, and
processes cleaned up by the PIDs the test started (never by name); the RMB emitter run as
tests run it (`run_emitter`, `emit`); private make stacks (`private_stack`, `stop_stack`)."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lumen import harness

ROOT = Path(__file__).resolve().parent.parent
# make's own last line when a recipe fails: "make: ***" or, under an outer make
# (make test), "make[1]: ***"
MAKE_FAILED = re.compile(r"make(\[\d+\])?: \*\*\* ")
PY = sys.executable
# The processes `make up` starts (their PID files in run/, their supervisord programs).
STACK = frozenset(
    {
        "rmb_exporter",
        "rmb_emitter",
        "safety_music",
        "ure_merge",
        "ure_loop",
        "ure_exporter",
        "ingest",
        "api",
        "alert_receiver",
    }
)
CONFIG_RMB = ROOT / "configs" / "rmb_v17.yaml"
EMITTER = ROOT / "rmb" / "rmb_emitter.py"


def wait_until(pred, timeout=10.0, interval=0.05, what="condition"):
    """Poll `pred` until it returns a truthy value; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def fingerprint(data):
    """The fingerprint a file is known by (lumen.tail's documented rule, written out here as
    an independent oracle): sha256 of its first line, capped at 1024 bytes; a file with no
    newline at all, of its partial content."""
    import hashlib

    head = data[:1024]
    nl = head.find(b"\n")
    if nl >= 0:
        head = head[: nl + 1]
    elif len(head) < 1024:
        head = b"partial:" + head
    return hashlib.sha256(head).hexdigest()[:24]


def unlabelled_samples(text):
    """{name: value} of the samples without labels in a Prometheus exposition."""
    out = {}
    for ln in text.splitlines():
        if ln and not ln.startswith("#") and "{" not in ln:
            name, value = ln.split()[:2]
            out[name] = float(value)
    return out


def merged_env(env=None):
    """os.environ updated with `env`; a variable set to None in `env` is removed."""
    e = dict(os.environ)
    for k, v in (env or {}).items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = str(v)
    return e


def unavailable(why):
    """A tool or facility a test needs is missing: a visible skip locally, a failure under
    LUMEN_REQUIRE_OPS_TOOLS=1 (CI, .ci/run), where everything is installed."""
    if os.environ.get("LUMEN_REQUIRE_OPS_TOOLS") == "1":
        pytest.fail(f"{why} (LUMEN_REQUIRE_OPS_TOOLS=1)")
    pytest.skip(why)


# The Debian package of each tool whose name is not its package's (.ci/run installs them).
PACKAGES = {"promtool": "prometheus", "amtool": "prometheus-alertmanager",
            "alertmanager": "prometheus-alertmanager"}  # fmt: skip


def require_tool(name, *alternatives):
    """The path of `name` (or of the first alternative found); else unavailable()."""
    path = next(filter(None, (shutil.which(n) for n in (name, *alternatives))), None)
    if path is None:
        unavailable(f"{name} is not installed (apt-get install {PACKAGES.get(name, name)})")
    return path


free_port = harness.free_port  # a port this test session was not given before


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh current directory: logs/, run/, data/ of the code under test land here."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


class Procs:
    """Processes a test started; all are killed (by PID) when the test ends."""

    def __init__(self, cwd):
        self.cwd = cwd
        self.started = []

    def start(self, *args, env=None, **kw):
        e = merged_env(env)
        p = subprocess.Popen(
            [PY, "-u", *map(str, args)],
            cwd=self.cwd,
            env=e,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            **kw,
        )
        self.started.append(p)
        return p

    def cleanup(self):
        for p in self.started:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            try:
                p.communicate(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - reported by pytest
                pass


@pytest.fixture
def procs(workdir):
    ps = Procs(workdir)
    yield ps
    ps.cleanup()


def run_make(cwd, *targets, env=None, timeout=120):
    """`make -f ROOT/Makefile TARGETS` from `cwd`; returns CompletedProcess (text)."""
    return harness.make(cwd, merged_env(env), *targets, timeout=timeout)


def pids_in(run_dir):
    """PIDs recorded in run/*.pid under `run_dir`."""
    out = {}
    for p in Path(run_dir).glob("*.pid"):
        try:
            out[p.stem] = int(p.read_text().strip())
        except ValueError:
            pass
    return out


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# ------------------------------------------------------------------ the RMB emitter
def run_emitter(cwd, *args, input=None, env=None, timeout=60):
    """The RMB emitter on CONFIG_RMB with `args`, run from `cwd` (its logs/ land there);
    returns the CompletedProcess (output captured, bytes)."""
    e = merged_env(env)
    return subprocess.run(
        [PY, str(EMITTER), "--config", str(CONFIG_RMB), *map(str, args)],
        cwd=cwd,
        input=input,
        capture_output=True,
        env=e,
        timeout=timeout,
    )


def emit(cwd, n, *extra, queue=None, timeout=120):
    """Append `n` events at full speed to cwd's logs/rmb_events.jsonl (or to `queue`), as
    process `emit`; the test fails if the emitter does."""
    args = ["--count", n, "--unthrottled", "--quiet", "--name", "emit", *extra]
    if queue:
        args += ["--queue", queue]
    r = run_emitter(cwd, *args, timeout=timeout)
    assert r.returncode == 0, f"emitter exited {r.returncode}: {r.stderr.decode(errors='replace')}"
    return r


# ------------------------------------------------------------------ private make stacks
STACK_PORTS = ("RMB_EXPORTER_PORT", "URE_EXPORTER_PORT", "API_PORT", "ALERT_RECEIVER_PORT")


def stop_stack(cwd, env=None, target="down"):
    """Stop what make started in `cwd`: `make TARGET` (down: every process and its
    supervisord), then SIGKILL, by PID only, whatever run/*.pid still names alive."""
    run_make(cwd, target, env=env)
    for pid in pids_in(Path(cwd) / "run").values():
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def private_stack(workdir):
    """private_stack(ports=STACK_PORTS, stop="down", cwd=workdir, **env) -> the env for make
    targets run in `cwd`: `env` (values as strings; None removes the variable, see
    merged_env) and a free port for each variable in `ports` that `env` does not set. When
    the test ends, each stack is stopped with stop_stack(cwd, env, stop)."""
    stacks = []

    def new(ports=STACK_PORTS, stop="down", cwd=None, **extra):
        env = {k: None if v is None else str(v) for k, v in extra.items()}
        for name in ports:
            if env.get(name) is None:
                env[name] = str(free_port())
        stacks.append((cwd or workdir, env, stop))
        return env

    yield new
    for cwd, env, stop in reversed(stacks):
        stop_stack(cwd, env, stop)


# ------------------------------------------------------------------ hermetic runs, goldens
def config_env_vars():
    """Every environment variable a config key can be overridden by (`x-env` in
    configs/schemas/*.schema.json)."""
    import json

    found = set()

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("x-env"), str):
                found.add(node["x-env"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for p in (ROOT / "configs" / "schemas").glob("*.schema.json"):
        walk(json.loads(p.read_text()))
    return found


def makefile_env_vars():
    """The Makefile's `NAME ?= default` variables (the environment overrides them)."""
    import re

    return set(re.findall(r"^([A-Z][A-Z0-9_]*) \?=", (ROOT / "Makefile").read_text(), re.M))


def hermetic_env(**env):
    """An env for merged_env/run_make/Procs.start in which no config override or Makefile
    default comes from the caller's environment: each of those variables is removed, then
    `env` (values as strings) is set."""
    out = {name: None for name in config_env_vars() | makefile_env_vars()}
    out.update({k: str(v) for k, v in env.items()})
    return out


GOLDEN = ROOT / "tests" / "golden"
# LUMEN_UPDATE_GOLDEN=1 rewrites the golden files from this run's output instead of comparing
# (then review `git diff tests/golden/` and commit what is intended).
UPDATE_GOLDEN = os.environ.get("LUMEN_UPDATE_GOLDEN") == "1"


def assert_golden(name, text):
    """`text` must equal tests/golden/NAME byte for byte (LUMEN_UPDATE_GOLDEN=1: write it)."""
    import difflib

    path = GOLDEN / name
    data = text.encode("utf-8")
    if UPDATE_GOLDEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return
    assert path.exists(), f"no golden file {path} (create it: LUMEN_UPDATE_GOLDEN=1)"
    want = path.read_bytes()
    if data != want:
        diff = "".join(
            difflib.unified_diff(
                want.decode("utf-8", "replace").splitlines(True),
                text.splitlines(True),
                f"golden/{name}",
                "this run",
            )
        )
        raise AssertionError(
            f"output differs from tests/golden/{name} (if intended, "
            f"regenerate with LUMEN_UPDATE_GOLDEN=1):\n{diff}"
        )
