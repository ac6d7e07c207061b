"""Track A: section 0's one-liner, exactly as written, in a scratch directory; SLO maths."""

import os
import subprocess

import pytest

from lumen import slo
from conftest import ROOT, pid_alive, pids_in, run_make

ONE_LINER = """source SESSION_RESTORE_2025-11-01_v1_7_DELTA.env
make feature.v17.init dashboards.v3.build validate.v17.schema && \\
make metrics.fake.v17 exporter.v17.serve & \\
make slo.report kpi.snapshot trackA.exit
"""
POLICIES = [
    {
        "id": "RMB-ROLL-001",
        "evaluate": {
            "metric": "rollback_ratio_10m",
            "threshold": 0.05,
            "action_on_violation": "downgrade-to-observe",
        },
    },
    {
        "id": "RMB-RES-002",
        "evaluate": {
            "metric": "residual_entropy_last_stddev_10m",
            "threshold": 0.03,
            "action_on_violation": "reduce-batch-and-hz",
        },
    },
]


@pytest.fixture
def scratch(tmp_path, private_stack):
    """A directory where plain `make` finds Lumen's Makefile and the restore env file."""
    (tmp_path / "Makefile").write_text(f"include {ROOT}/Makefile\n")
    for env in ROOT.glob("SESSION_RESTORE_*.env"):
        (tmp_path / env.name).write_text(env.read_text())
    return tmp_path, private_stack(ports=("FAKE_EXPORTER_PORT",), cwd=tmp_path)


def run_one_liner(cwd, env, timeout=120):
    e = dict(os.environ)
    e.update(env)
    # `wait` lets the backgrounded list finish before the test looks at the result.
    script = ONE_LINER + "rc=$?\nwait\nexit $rc\n"
    return subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout
    )


def test_one_liner_passes_on_a_healthy_stream(scratch):
    cwd, env = scratch
    r = run_one_liner(cwd, env)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout.splitlines()
    # The backgrounded list may print after trackA.exit; trackA.exit's own last word is PASS.
    assert [x for x in out if x.startswith("[exit]")][-1] == "[exit] RESULT = PASS"
    assert "[slo] RESULT = PASS" in out
    assert "[kpi.snapshot] RESULT = OK" in out
    # exporter.v17.serve keeps serving the fake stream until make down
    pids = pids_in(cwd / "run")
    assert "rmb_exporter_fake" in pids and pid_alive(pids["rmb_exporter_fake"])
    r = run_make(cwd, "down", env=env)
    assert not pid_alive(pids["rmb_exporter_fake"])


@pytest.mark.parametrize(
    "profile, broken, kept",
    [
        ("rollbacks", "RMB-ROLL-001", "RMB-RES-002"),
        ("jitter", "RMB-RES-002", "RMB-ROLL-001"),
    ],
)
def test_one_liner_fails_with_reasons_when_an_slo_breaks(scratch, profile, broken, kept):
    cwd, env = scratch
    r = run_one_liner(cwd, dict(env, FAKE_PROFILE=profile))
    assert r.returncode != 0
    out = r.stdout
    assert "[exit] RESULT = FAIL" in out
    assert f"[exit] slo {broken}: FAIL" in out and f"[exit] slo {kept}: OK" in out
    action = {"RMB-ROLL-001": "downgrade-to-observe", "RMB-RES-002": "reduce-batch-and-hz"}
    assert f"(action: {action[broken]})" in out
    assert "[slo] RESULT = FAIL" in out


def test_stale_stream_is_no_data_not_pass(tmp_path):
    stream = tmp_path / "old.jsonl"
    subprocess.run(
        [
            str(ROOT / ".venv/bin/python"),
            str(ROOT / "rmb/rmb_emitter.py"),
            "--config",
            str(ROOT / "configs/rmb_v17.yaml"),
            "--queue",
            str(stream),
            "--count",
            "3000",
            "--unthrottled",
            "--quiet",
            "--sim-start",
            "2020-01-01T00:00:00Z",
        ],
        cwd=tmp_path,
        check=True,
    )
    r = subprocess.run(
        [
            str(ROOT / ".venv/bin/python"),
            str(ROOT / "tools/tracka_v17.py"),
            "slo",
            "--stream",
            str(stream),
            "--wait",
            "0",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 3  # NO_DATA: no verdict, not a pass
    assert "stream is stale" in r.stdout
    assert "[slo] RESULT = NO_DATA" in r.stdout


def _events(spec):
    """(t, residual, rollback) from (start, end, step, residual(i), rollback(i))."""
    out = []
    for start, n, step, res, rb in spec:
        for i in range(n):
            out.append((start + i * step, res(i), rb(i)))
    return out


def test_slo_maths_hand_computed():
    now = 10_000.0
    # 600 s window: 200 events, every 20th a rollback -> 10/200 = 0.05 exactly (PASS: <=).
    # residual alternates 0.40/0.459 -> population stddev 0.0295 (PASS).
    evs = _events([(now - 597, 200, 3, lambda i: 0.40 if i % 2 else 0.459, lambda i: i % 20 == 0)])
    v = {x.id: x for x in slo.evaluate(POLICIES, evs, now, min_events=10)}
    assert v["RMB-ROLL-001"].value == pytest.approx(0.05)
    assert v["RMB-ROLL-001"].status == "PASS"
    assert v["RMB-RES-002"].value == pytest.approx(0.0295)
    assert v["RMB-RES-002"].status == "PASS"
    wide = [(t, 0.40 if i % 2 else 0.462, rb) for i, (t, _, rb) in enumerate(evs)]
    v2 = {x.id: x for x in slo.evaluate(POLICIES, wide, now, min_events=10)}
    assert v2["RMB-RES-002"].value == pytest.approx(0.031)
    assert v2["RMB-RES-002"].status == "FAIL"
    # One more rollback inside the window tips it over.
    evs.append((now - 1, 0.43, True))
    v = {x.id: x for x in slo.evaluate(POLICIES, evs, now, min_events=10)}
    assert v["RMB-ROLL-001"].value == pytest.approx(11 / 201)
    assert v["RMB-ROLL-001"].status == "FAIL"


def test_slo_window_ignores_old_bursts_and_gaps():
    now = 50_000.0
    evs = _events(
        [
            (now - 5000, 100, 1, lambda i: 0.9, lambda i: True),  # a storm long ago
            (now - 100, 50, 2, lambda i: 0.40, lambda i: False),  # after a long gap
        ]
    )
    v = {x.id: x for x in slo.evaluate(POLICIES, evs, now, min_events=10)}
    assert v["RMB-ROLL-001"].value == 0.0 and v["RMB-ROLL-001"].events == 50
    assert v["RMB-RES-002"].value == pytest.approx(0.0)
    # A gap with too few events in the window is NO_DATA, never PASS.
    v = slo.evaluate(POLICIES, evs, now, min_events=100)
    assert [x.status for x in v] == ["NO_DATA", "NO_DATA"]
    assert slo.overall(v) == "NO_DATA"


def test_policy_window_comes_from_the_metric_name():
    assert slo.window_s("rollback_ratio_10m") == 600
    assert slo.window_s("residual_stddev_30s") == 30
    with pytest.raises(ValueError):
        slo.window_s("latency_p99_5m")
