"""`make smoke.v18` (scripts/smoke.v18.sh) from a fresh directory, as a fresh clone runs it
(issue 16): with no RMB event yet it appends a bounded batch, so the merged event, the URE
tick and ure.verify are real, and passes; run again it appends nothing. A failing smoke
exits non-zero and stops exactly the processes it started (by lumen.ctl, never by name):
none of its own is left, and what ran before it keeps running. `make ure.verify` on a
missing or empty v2 log: one FAIL line, exit 1 (make then says Error 1)."""

import json
import math
import os
import socket
import subprocess
from pathlib import Path

import pytest
import requests

from conftest import PY, ROOT, pid_alive, pids_in, run_make, unlabelled_samples

EMIT_N = 20  # the batch scripts/smoke.v18.sh appends to an empty queue


@pytest.fixture
def stack(workdir, private_stack):
    return workdir, private_stack(ports=("URE_EXPORTER_PORT", "RMB_EXPORTER_PORT"))


def processes_in(cwd):
    """PIDs of the live processes whose working directory is `cwd`, this test's excluded:
    what the smoke (make, ctl, supervisord and its programs) started there."""
    out = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if os.readlink(d / "cwd") == str(cwd) and pid_alive(int(d.name)):
                out.add(int(d.name))
        except OSError:  # gone, or not ours to look at
            pass
    return out


def lines(path):
    return path.read_text().splitlines() if path.exists() else []


def test_smoke_v18_passes_from_a_fresh_directory(stack):
    cwd, env = stack
    r = run_make(cwd, "smoke.v18", env=env, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout.strip().splitlines()
    assert out[-1] == "[smoke.v18] OK"
    assert f"appending {EMIT_N} simulated RMB events" in out[0]
    assert any(x.startswith("[ure.verify] OK") for x in out)
    assert len(lines(cwd / "logs/rmb_events.jsonl")) == EMIT_N
    v2 = [json.loads(x) for x in lines(cwd / "logs/resonance_events_v2.jsonl")]
    assert sum("rmb" in e for e in v2) == EMIT_N  # every event merged
    assert any(e["trace"]["loop_id"] == "ure.v18" for e in v2)  # and a real URE tick
    m = unlabelled_samples(
        requests.get(f"http://127.0.0.1:{env['URE_EXPORTER_PORT']}/metrics_ure", timeout=5).text
    )
    assert not math.isnan(m["ure_residual_entropy_last"])
    assert m["ure_rmb_events_total"] == EMIT_N
    pids = pids_in(cwd / "run")
    assert {"ure_merge", "ure_loop", "ure_exporter", "supervisord"} <= set(pids)
    assert set(pids.values()) <= processes_in(cwd)  # (the oracle of the failing tests)

    # Again: the queue holds events, so nothing is appended; the processes stay as they are.
    r = run_make(cwd, "smoke.v18", env=env, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "appending" not in r.stdout and r.stdout.strip().endswith("[smoke.v18] OK")
    assert len(lines(cwd / "logs/rmb_events.jsonl")) == EMIT_N
    assert pids_in(cwd / "run") == pids


def busy(port):
    s = socket.socket()
    s.bind(("0.0.0.0", int(port)))
    s.listen()
    return s


def test_failing_smoke_stops_what_it_started_and_nothing_else_is_left(stack):
    cwd, env = stack
    with busy(env["URE_EXPORTER_PORT"]):
        r = run_make(cwd, "smoke.v18", env=env, timeout=180)
        assert r.returncode != 0
        assert "[smoke.v18] OK" not in r.stdout
        assert f"port {env['URE_EXPORTER_PORT']}" in r.stderr  # the cause, said once
        said = [x for x in r.stderr.splitlines() if x.startswith("[smoke.v18] FAIL")]
        assert said == ["[smoke.v18] FAIL: stopping what this smoke started: ure_loop ure_merge"]
        assert processes_in(cwd) == set()  # no program, no supervisord, no make left
        assert not any(pid_alive(p) for p in pids_in(cwd / "run").values())
        assert not list((cwd / "run").glob("smoke.v18.*"))


def test_failing_smoke_leaves_running_what_ran_before_it(stack):
    cwd, env = stack
    r = run_make(cwd, "trackD.start", env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    before = pids_in(cwd / "run")
    assert {"ure_merge", "ure_loop", "supervisord"} <= set(before)
    with busy(env["URE_EXPORTER_PORT"]):
        r = run_make(cwd, "smoke.v18", env=env, timeout=180)
    assert r.returncode != 0
    assert "stopping what this smoke started" not in r.stderr  # it started nothing
    assert "[ctl] ure_merge already running" in r.stdout
    after = pids_in(cwd / "run")
    assert after == before and all(pid_alive(p) for p in after.values())


@pytest.mark.parametrize("content", [None, b"", b"\n\n", b'{"ts": "no newline yet"'])
def test_ure_verify_on_a_missing_or_empty_v2_log_is_one_fail_line(workdir, content):
    log = workdir / "logs/resonance_events_v2.jsonl"
    if content is not None:
        log.parent.mkdir(parents=True)
        log.write_bytes(content)
    r = subprocess.run(
        [PY, str(ROOT / "tools/ure_verify_v18.py")],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    why = "does not exist yet" if content is None else "holds no events yet"
    assert r.stdout.splitlines() == [
        f"[ure.verify] FAIL: logs/resonance_events_v2.jsonl {why} "
        "(make merge.v2 / make trackD.start write it)"
    ]
    assert r.stderr == ""
