"""Issue 16, a newcomer's trial in a fresh clone: points 2 to 5.

2. Track A says at once which stream it reads (the fake one; the live queue is STREAM=)
   and decides at once when nothing can change the stream, instead of waiting 60 s.
3. restore.pack works or fails: never a pack with empty values; generated packs ignored.
4. slo.report exits non-zero unless PASS; section 0's one-liner still gates in trackA.exit.
5. One summary line from validate.v17.schema, one [merge] line; without a venv, `make down`
   succeeds and every entry point and script says, in one line, to run `make venv`.

Runs real make targets in temp dirs; private stacks on free ports; a "fresh clone" is a
copy of the checkout's files (tracked and new, not ignored: no .venv). Commands that must
decide at once run in a session of their own, as at a prompt (the waits they would do
otherwise, TRACKA_WAIT_S=600, are far beyond the test's deadline).
"""

import os
import shutil
import signal
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from conftest import MAKE_FAILED, PY, ROOT, emit, hermetic_env, merged_env, run_make, wait_until
from lumen import DEPENDENCIES, HINT, proc

MAKE = ["make", "-s", "--no-print-directory", "-f", str(ROOT / "Makefile")]
ENTRY_DIRS = ("rmb", "exporters", "safety", "ure", "api", "tools", "bench")


def make_alone(cwd, *targets, env=None, timeout=240):
    """make TARGETS from `cwd` in a new session (alone at a prompt: no other command of the
    session runs beside it)."""
    return subprocess.run(
        [*MAKE, *targets],
        cwd=cwd,
        env=merged_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )


def fresh_clone(dst):
    """The checkout's files as a clone of the working tree has them (tracked and new, not
    ignored: no .venv, no logs/), copied to `dst`."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / os.fsdecode(name)
        if src.is_file():
            (dst / src.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / src.relative_to(ROOT))
    assert (dst / "Makefile").is_file() and not (dst / ".venv").exists()
    return dst


def one_error_line(r, *words):
    """The run's stderr is one line that holds every word (make's own `make: ***` line
    aside); returns it."""
    lines = [ln for ln in r.stderr.strip().splitlines() if not MAKE_FAILED.match(ln)]
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


# ------------------------------------------------------------------ 2. which stream, and when
def test_after_up_track_a_names_the_fake_stream_at_once_and_decides(workdir, private_stack):
    env = private_stack(**hermetic_env(RMB_HZ=20, TRACKA_WAIT_S=600))
    r = run_make(workdir, "up", "PROFILE=spike", env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    # PROFILE reached the emitter that supervisord runs (point 11).
    log = workdir / "logs/proc/rmb_emitter.log"
    wait_until(lambda: "profile=spike" in log.read_text(), timeout=30, what="the emitter's line")
    wait_until(lambda: (workdir / "logs/rmb_events.jsonl").exists(), what="the live queue")

    r = make_alone(workdir, "kpi.snapshot", env=env)
    out = r.stdout.splitlines()
    assert out[0] == (
        "[kpi] reading the fake stream logs/fake/rmb_events.jsonl (make metrics.fake.v17 "
        "writes it); the live queue is STREAM=logs/rmb_events.jsonl"
    )
    assert not [ln for ln in out if "waiting" in ln]  # decided, not waited for
    assert "slo=NO_DATA" in r.stdout and r.returncode == 0  # the row is recorded

    r = make_alone(workdir, "slo.report", env=env)
    assert r.stdout.startswith("[slo] reading the fake stream logs/fake/rmb_events.jsonl")
    assert "nothing here is writing it" in r.stdout and "waiting" not in r.stdout
    assert "[slo] RESULT = NO_DATA" in r.stdout and r.returncode != 0

    r = make_alone(workdir, "trackA.exit", env=env)
    assert "[exit] reading the fake stream" in r.stdout and "waiting" not in r.stdout
    assert "exporter.v17.serve: FAIL" in r.stdout and "not running here" in r.stdout
    assert "[exit] RESULT = FAIL" in r.stdout and r.returncode != 0

    # Pointed at the live queue, it says so (and the running emitter is worth waiting for).
    r = make_alone(workdir, "slo.report", "STREAM=logs/rmb_events.jsonl", env=env)
    assert r.stdout.startswith("[slo] reading the live queue logs/rmb_events.jsonl\n")


def test_track_a_waits_while_a_writer_runs_and_not_otherwise(workdir, procs):
    env = hermetic_env(TRACKA_WAIT_S=1)
    r = make_alone(workdir, "slo.report", env=env)
    assert "waiting" not in r.stdout and "[slo] RESULT = NO_DATA" in r.stdout
    # metrics.fake.v17 running here (its PID file names a live process): worth waiting for.
    writer = procs.start("-c", "import signal; signal.pause()")  # alive until killed by PID
    (workdir / "run").mkdir(exist_ok=True)
    (workdir / "run/metrics_fake.pid").write_text(f"{writer.pid}\n")
    r = make_alone(workdir, "slo.report", env=env)
    assert "[slo] waiting up to 1s for logs/fake/rmb_events.jsonl: no events" in r.stdout
    assert "[slo] RESULT = NO_DATA" in r.stdout and r.returncode != 0
    (workdir / "run/metrics_fake.pid").unlink()
    # Another command of this session runs (section 0's backgrounded metrics.fake.v17).
    p = subprocess.Popen(
        ["bash", "-c", f"sleep 120 >/dev/null 2>&1 & {' '.join(MAKE)} slo.report"],
        cwd=workdir,
        env=merged_env(env),
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = p.communicate(timeout=240)
    finally:
        os.killpg(p.pid, signal.SIGKILL)  # the backgrounded sleep, by its process group
    assert "[slo] waiting up to 1s" in out and "[slo] RESULT = NO_DATA" in out


def test_session_busy_sees_a_background_job_only():
    code = "from lumen.proc import session_busy; print(session_busy())"
    alone = subprocess.run(
        [PY, "-c", code], capture_output=True, text=True, timeout=60, start_new_session=True
    )
    assert alone.stdout.strip() == "False", alone.stderr
    beside = subprocess.Popen(
        ["bash", "-c", f"sleep 120 >/dev/null 2>&1 & {PY} -c '{code}'"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = beside.communicate(timeout=60)
    finally:
        os.killpg(beside.pid, signal.SIGKILL)
    assert out.strip() == "True"


def test_metrics_fake_never_replaces_the_live_queue(workdir):
    emit(workdir, 10)
    before = (workdir / "logs/rmb_events.jsonl").read_bytes()
    r = run_make(workdir, "metrics.fake.v17", "STREAM=logs/rmb_events.jsonl", env=hermetic_env())
    assert r.returncode != 0
    one_error_line(r, "live queue", "unset STREAM")
    assert (workdir / "logs/rmb_events.jsonl").read_bytes() == before


# ------------------------------------------------------------------ 3. restore.pack
def _packs(d):
    return sorted(p.name for p in Path(d).glob("SESSION_RESTORE_*"))


def test_restore_pack_without_venv_fails_and_writes_nothing(tmp_path):
    clone = fresh_clone(tmp_path / "clone")
    committed = _packs(clone)
    r = subprocess.run(
        ["bash", "scripts/restore.pack"], cwd=clone, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2
    one_error_line(r, "run make venv")
    assert _packs(clone) == committed  # no new pack, no temp file


def test_restore_pack_checks_every_value(workdir):
    today = f"SESSION_RESTORE_{date.today():%Y-%m-%d}_v1_7_DELTA.env"
    r = run_make(workdir, "restore.pack", env=hermetic_env(RMB_EXPORTER_PORT="abc"))
    assert r.returncode != 0
    assert one_error_line(r, "nothing written", "exporter.port").startswith("error:")
    assert _packs(workdir) == []
    r = run_make(workdir, "restore.pack", env=hermetic_env())
    assert r.returncode == 0, r.stderr
    assert _packs(workdir) == [today]
    values = dict(
        ln.removeprefix("export ").split("=", 1)
        for ln in (workdir / today).read_text().splitlines()
        if ln.startswith("export ")
    )
    assert values == {"LUMEN_TRACK": "B", "RMB_EXPORTER_PORT": "9409", "RESIDUAL_MAX": "0.85"}
    # A failed run later leaves the good pack as it was.
    good = (workdir / today).read_bytes()
    r = run_make(workdir, "restore.pack", env=hermetic_env(RESIDUAL_MAX="-1"))
    assert r.returncode != 0 and (workdir / today).read_bytes() == good
    assert _packs(workdir) == [today]


def test_generated_packs_are_git_ignored_the_blueprints_are_not():
    def ignored(name):
        r = subprocess.run(["git", "check-ignore", "-q", name], cwd=ROOT, timeout=30)
        return r.returncode == 0

    assert ignored("SESSION_RESTORE_2031-02-03_v1_7_DELTA.env")
    assert ignored("SESSION_RESTORE_2031-02-03_v1_7_DELTA.env.tmp.123")
    assert not ignored("SESSION_RESTORE_2025-11-01_v1_7_DELTA.env")
    assert not ignored("SESSION_RESTORE_2025-11-01_v1_7_FULL.env")


# ------------------------------------------------------------------ 4. exit status = result
def test_slo_report_exit_status_follows_its_result(workdir):
    env = hermetic_env(TRACKA_WAIT_S=600)
    assert run_make(workdir, "metrics.fake.v17", env=env).returncode == 0
    r = make_alone(workdir, "slo.report", env=env)
    assert r.returncode == 0 and "[slo] RESULT = PASS" in r.stdout, r.stdout + r.stderr

    env_bad = dict(env, FAKE_PROFILE="rollbacks")
    assert run_make(workdir, "metrics.fake.v17", env=env_bad).returncode == 0
    r = make_alone(workdir, "slo.report", env=env)
    assert r.returncode != 0 and "[slo] RESULT = FAIL" in r.stdout
    # Without the gate asked for, a FAIL stops make there ...
    r = make_alone(workdir, "slo.report", "kpi.snapshot", env=env)
    assert r.returncode != 0 and "[kpi.snapshot]" not in r.stdout
    # ... with it (section 0), the verdict is recorded and the gate fails with its reasons.
    r = make_alone(workdir, "slo.report", "kpi.snapshot", "trackA.exit", env=env)
    assert r.returncode != 0
    assert "[kpi] logs/kpi_snapshot_v17.csv: " in r.stdout and "slo=FAIL" in r.stdout
    assert "[exit] slo RMB-ROLL-001: FAIL" in r.stdout and "[exit] RESULT = FAIL" in r.stdout

    # NO_DATA is no verdict: not a pass either (the tool's own status: 3).
    shutil.rmtree(workdir / "logs/fake")
    r = subprocess.run(
        [PY, str(ROOT / "tools/tracka_v17.py"), "slo"],
        cwd=workdir,
        env=merged_env(env),
        capture_output=True,
        text=True,
        timeout=240,
        start_new_session=True,
    )
    assert r.returncode == 3 and "[slo] RESULT = NO_DATA" in r.stdout


# ------------------------------------------------------------------ 5. noise, no venv
def test_validate_prints_one_summary_line_unless_verbose(workdir):
    n_schemas = len(list((ROOT / "schemas").glob("*.json")))
    n_schemas += len(list((ROOT / "configs/schemas").glob("*.json")))
    n_configs = len(list((ROOT / "configs").glob("*.yaml")))
    r = run_make(workdir, "validate.v17.schema", env=hermetic_env())
    assert r.returncode == 0
    assert r.stdout.splitlines() == [
        f"[validate] {n_schemas} schemas, {n_configs} configs, 1 fixture: OK",
        "[validate.v17.schema] RESULT = OK",
    ]
    r = run_make(workdir, "validate.v17.schema", "VERBOSE=1", env=hermetic_env())
    checks = [ln for ln in r.stdout.splitlines() if ln.endswith(": OK")]
    assert len(checks) == n_schemas + n_configs + 1
    assert "[validate] config configs/rmb_v17.yaml: OK" in checks


def test_merge_says_its_line_once(workdir, private_stack):
    env = private_stack(ports=(), **hermetic_env())
    emit(workdir, 50)
    r = run_make(workdir, "merge.v2", "trackD.start", env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    merge = [ln for ln in r.stdout.splitlines() if ln.startswith("[merge]")]
    assert merge == ["[merge] resonance_events_v2.jsonl appended: 50 rmb + 0 safety events"]
    assert "[trackD] RESULT = STARTED" in r.stdout


def _entry_points(root):
    return [
        p for d in ENTRY_DIRS for p in sorted((root / d).rglob("*.py")) if p.name != "__init__.py"
    ]


def test_without_the_dependencies_every_entry_point_says_run_make_venv(tmp_path):
    clone = fresh_clone(tmp_path / "clone")
    entries = _entry_points(clone)
    assert len(entries) >= 25
    for entry in entries:
        # -S: no site-packages, so no Lumen installed and none of its dependencies.
        r = subprocess.run(
            [PY, "-S", str(entry), "--help"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 2, (entry, r.stdout, r.stderr)
        one_error_line(r, "lacks the Python module", "yaml (pyyaml)", HINT)
    # python -m from the clone finds lumen in the working directory: the same line.
    r = subprocess.run(
        [PY, "-S", "-m", "lumen.ctl", "status"],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    one_error_line(r, "yaml (pyyaml)", HINT)


def test_fresh_clone_down_and_scripts_without_venv(tmp_path):
    clone = fresh_clone(tmp_path / "clone")
    state = tmp_path / "state"
    state.mkdir()
    env = hermetic_env(PATH="/usr/bin:/bin")
    r = subprocess.run(
        ["make", "-s", "-f", str(clone / "Makefile"), "down"],
        cwd=state,
        env=merged_env(env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and "nothing running" in r.stdout, r.stdout + r.stderr
    for script in ("rmb.verify.sh", "restore.pack", "bench.v18.sh", "safety.dev.sh"):
        r = subprocess.run(
            ["bash", str(clone / "scripts" / script)],
            cwd=state,
            env=merged_env(env),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 2, (script, r.stdout, r.stderr)
        one_error_line(r, "run make venv")
    # A venv without Lumen's dependencies (a `make venv` cut short, say).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", clone / ".venv"], check=True)
    r = subprocess.run(
        ["make", "-s", "-f", str(clone / "Makefile"), "down"],
        cwd=state,
        env=merged_env(env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and "nothing running" in r.stdout, r.stdout + r.stderr
    r = subprocess.run(
        ["bash", str(clone / "scripts/rmb.verify.sh")],
        cwd=state,
        env=merged_env(env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    one_error_line(r, "lacks the Python module", HINT)
    r = subprocess.run(
        [clone / ".venv/bin/python", clone / "rmb/rmb_emitter.py"],
        cwd=state,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    one_error_line(r, "yaml (pyyaml)", HINT)


def test_a_dependency_imported_late_is_one_line_too(capsys):
    def main():
        raise ModuleNotFoundError("No module named 'psycopg'", name="psycopg")

    assert proc.cli_main(main) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "psycopg" in err[0] and HINT in err[0]

    def broken():
        raise ModuleNotFoundError("No module named 'lumen.nothing'", name="lumen.nothing")

    with pytest.raises(ModuleNotFoundError):  # a bug of ours stays a traceback
        proc.cli_main(broken)


def test_dependency_list_is_pyprojects():
    tomllib = pytest.importorskip("tomllib")
    import re

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[\[<>=~! ]", d, maxsplit=1)[0].lower().replace("_", "-") for d in deps}
    assert names == {d.lower().replace("_", "-") for d in DEPENDENCIES.values()}


def test_down_with_something_running_and_no_usable_venv_says_so(tmp_path, procs):
    clone = fresh_clone(tmp_path / "clone")
    state = tmp_path / "state"
    (state / "run").mkdir(parents=True)
    alive = procs.start("-c", "import signal; signal.pause()")  # alive until killed by PID
    (state / "run/supervisord.pid").write_text(f"{alive.pid}\n")
    r = subprocess.run(
        ["make", "-s", "-f", str(clone / "Makefile"), "down"],
        cwd=state,
        env=merged_env(hermetic_env()),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0
    assert f"supervisord (pid {alive.pid})" in r.stderr and "make venv" in r.stderr
    assert alive.poll() is None  # nothing signalled
