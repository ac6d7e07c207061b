"""The Makefile as the user meets it: help, README and blueprint targets exist, and the
Track B lifecycle (start returns, counts grow at ~hz, stop frees everything, twice is
harmless, a busy port is one clear line). Supervision itself: tests/test_supervise.py."""

import os
import re
import socket
import time

import pytest
import requests

from lumen import ports
from conftest import ROOT, STACK, pid_alive, pids_in, run_make, wait_until

# Every make target the blueprint names, in any section (0, 2, 9, 13.3, 16, 24, 27, 28, 31,
# 32, 36, 37.6, 39, 40, 41, 43, 45, 46, 48), written here so no test reads ../shared.
BLUEPRINT_TARGETS = [
    "feature.v17.init",
    "dashboards.v3.build",
    "validate.v17.schema",
    "metrics.fake.v17",
    "exporter.v17.serve",
    "slo.report",
    "kpi.snapshot",
    "trackA.exit",
    "trackB.start",
    "trackB.stop",
    "rmb.emit",
    "rmb.verify",
    "rmb.dev",
    "serve.rmb.emit",
    "exporter.v17.rmb",
    "safety.music.start",
    "safety.music.stop",
    "kpi.reporter",
    "logs.rotate",
    "tune.suggest",
    "evidence.map",
    "pkg.v17",
    "restore.sanity",
    "trackD.start",
    "trackD.stop",
    "ure.exporter",
    "ure.verify",
    "tune.v18",
    "merge.v2",
    "alert.reload",
    "db.init",
    "db.ingest",
    "api.readonly",
    "health",
    "restore.pack",
]
# Paths the blueprint's tree (section 1) and its later sections name.
BLUEPRINT_PATHS = [
    "schemas/rmb_event_v1.json",
    "schemas/resonance_event_v2.json",
    "configs/rmb_v17.yaml",
    "configs/safety_music_v17.yaml",
    "configs/ure_v18.yaml",
    "configs/midi_map_v18.json",
    "rmb/rmb_emitter.py",
    "rmb/bridge_v17.py",
    "exporters/rmb_exporter_v17.py",
    "exporters/ure_exporter_v18.py",
    "safety/safety_music_loop.py",
    "safety/safety_levels.py",
    "ure/ure_loop_v18.py",
    "tools/merge_rmb_safety_v2.py",
    "tools/tuner_v17.py",
    "tools/tuner_v18.py",
    "tools/kpi_reporter_v17.py",
    "tools/evidence_mapper_v17.py",
    "tools/healthcheck_v18.py",
    "tools/storage/sqlite_init_v17_18.py",
    "tools/storage/ingest_tail_v18.py",
    "api/read_only.py",
    "ops/prometheus/scrape.yml",
    "ops/prometheus/rules/rmb_v17_rules.yaml",
    "ops/prometheus/rules/recording_rules_v18.yaml",
    "ops/alertmanager/alertmanager.yml",
    "ops/grafana/dashboards/resonance_memory_bridge_v17.json",
    "ops/grafana/dashboards/ure_v18.json",
    "ops/logrotate/rmb_v17.logrotate",
    "ops/argo/app-rmb-v17.yaml",
    "ops/k8s/rmb-v17/deploy.yaml",
    "scripts/rmb.dev.sh",
    "scripts/rmb.verify.sh",
    "scripts/smoke.v17.sh",
    "scripts/smoke.v18.sh",
    "scripts/safety.dev.sh",
    "scripts/restore.pack",
    "scripts/restore.sanity.sh",
    "scripts/pkg.v17.sh",
    "scripts/bench.v18.sh",
    "tests/fixtures/rmb_sample.json",
    ".github/workflows/lumen_v17_ci.yml",
    ".vscode/tasks.json",
    "docker-compose.yml",
    "docs/risk_register_v17.md",
    "SESSION_RESTORE_2025-11-01_v1_7_DELTA.env",
    "SESSION_RESTORE_2025-11-01_v1_7_FULL.env",
    "configs/resonance_v3.policy.yaml",
]


def makefile_targets():
    text = (ROOT / "Makefile").read_text()
    return re.findall(r"^([a-zA-Z][a-zA-Z0-9_.-]*):(?!=)", text, re.M)


def test_help_lists_every_target_with_a_description(tmp_path):
    r = run_make(tmp_path, "help")
    assert r.returncode == 0
    listed = dict(re.findall(r"^  (\S+)\s+(.+)$", r.stdout, re.M))
    for t in makefile_targets():
        assert t in listed, f"make help does not list {t}"
        assert len(listed[t]) > 10


def test_blueprint_targets_and_paths_exist(tmp_path):
    targets = set(makefile_targets())
    for t in BLUEPRINT_TARGETS:
        assert t in targets, t
    r = run_make(tmp_path, "-n", *BLUEPRINT_TARGETS)  # every one of them can be planned
    assert r.returncode == 0, r.stderr
    for p in BLUEPRINT_PATHS:
        assert (ROOT / p).exists(), p


def test_readme_commands_and_targets_exist():
    readme = (ROOT / "README.md").read_text()
    assert "make up" in readme and "make test" in readme
    targets = set(makefile_targets())
    for t in re.findall(r"make ([a-zA-Z][\w.-]*)", readme):
        assert t in targets, f"README names make {t}, which does not exist"


@pytest.fixture
def stack(workdir, private_stack):
    """A private stack in a temp dir on a free port; everything it started is stopped."""
    env = private_stack(RMB_HZ=20)
    return workdir, int(env["RMB_EXPORTER_PORT"]), env


def total(port):
    r = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    m = re.search(r"^rmb_events_total (\S+)$", r.text, re.M)
    return float(m.group(1))


def test_up_status_and_down(stack):
    cwd, port, env = stack
    t0 = time.monotonic()
    r = run_make(cwd, "up", env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 30
    assert "[trackB] RESULT = STARTED" in r.stdout
    assert f"http://127.0.0.1:{port}/metrics" in r.stdout
    assert f"http://127.0.0.1:{env['API_PORT']}/api/rmb:last" in r.stdout
    assert f"http://127.0.0.1:{env['URE_EXPORTER_PORT']}/metrics_ure" in r.stdout
    assert f"http://127.0.0.1:{env['ALERT_RECEIVER_PORT']}/alerts" in r.stdout
    s = run_make(cwd, "status", env=env)
    # name, state, pid, uptime, restarts, last exit, port, log
    up = r"(?:STARTING|RUNNING)\s+\d+\s+\d+:\d\d:\d\d\s+0\s+-"
    assert re.search(
        r"^rmb_exporter\s+%s\s+%d\s+logs/proc/rmb_exporter.log$" % (up, port), s.stdout, re.M
    ), s.stdout
    for name in sorted(STACK - {"rmb_exporter"}):
        assert re.search(r"^%s\s+%s\s" % (name, up), s.stdout, re.M), (name, s.stdout)
    pids = pids_in(cwd / "run")
    # Data flows end to end: an event reaches the API through the ingester.
    api = f"http://127.0.0.1:{env['API_PORT']}/api/rmb:last"
    wait_until(
        lambda: requests.get(api, timeout=5).json().get("ts"),
        timeout=20,
        what="an RMB row in the API",
    )
    r = run_make(cwd, "down", env=env)
    assert r.returncode == 0
    assert not [name for name, pid in pids.items() if pid_alive(pid)]  # supervisord too
    assert "nothing running" in run_make(cwd, "status", env=env).stdout


def test_trackB_lifecycle(stack):
    cwd, port, env = stack
    r = run_make(cwd, "trackB.start", env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("[trackB] RESULT = STARTED")
    pids = pids_in(cwd / "run")
    supervisord = pids.pop("supervisord")  # both run under this directory's supervisord
    assert set(pids) == {"rmb_exporter", "rmb_emitter"}

    # Counts grow at about hz (20 events/s here) as the emitter flushes every 500 ms.
    first = wait_until(
        lambda: total(port) > 0 and (time.monotonic(), total(port)), what="first events counted"
    )
    wait_until(lambda: time.monotonic() - first[0] >= 3.0, timeout=10, what="3 s to pass")
    rate = (total(port) - first[1]) / (time.monotonic() - first[0])
    assert 10 <= rate <= 30, rate

    # Starting again is harmless: same processes, success.
    r = run_make(cwd, "trackB.start", env=env, timeout=60)
    assert r.returncode == 0 and "already running" in r.stdout
    assert pids_in(cwd / "run") == dict(pids, supervisord=supervisord)

    r = run_make(cwd, "trackB.stop", env=env)
    assert r.returncode == 0 and "[trackB] RESULT = STOPPED" in r.stdout
    assert not any(pid_alive(p) for p in pids.values())
    assert not pid_alive(supervisord)  # it had nothing left to supervise
    assert not list((cwd / "run").glob("*.pid"))
    assert ports.is_free("127.0.0.1", port)
    r = run_make(cwd, "trackB.stop", env=env)  # stopping twice is fine
    assert r.returncode == 0 and "[trackB] RESULT = STOPPED" in r.stdout


def test_busy_port_is_a_clear_error(stack):
    cwd, port, env = stack
    with socket.socket() as s:
        s.bind(("0.0.0.0", port))
        s.listen()
        r = run_make(cwd, "trackB.start", env=env, timeout=60)
    assert r.returncode != 0
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and f"port {port}" in err[0] and f"pid {os.getpid()}" in err[0]
    assert "RESULT = STARTED" not in r.stdout


def test_rmb_emit_verify_and_validate(workdir):
    r = run_make(workdir, "rmb.emit", "N=100")
    assert r.returncode == 0, r.stderr
    assert len((workdir / "logs/rmb_events.jsonl").read_text().splitlines()) == 100
    r = run_make(workdir, "rmb.verify")
    assert r.stdout.strip() == "[rmb.verify] RESULT = OK"
    r = run_make(workdir, "validate.v17.schema")
    assert r.returncode == 0 and "[validate.v17.schema] RESULT = OK" in r.stdout
    r = run_make(workdir, "rmb.bridge")
    assert r.returncode == 0 and "[bridge] applied" in r.stdout


def test_smoke_v17(stack):
    cwd, port, env = stack
    r = run_make(cwd, "smoke.v17", env=env, timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("[smoke] OK")
    assert "rmb_events_total" in r.stdout


SECTION_48 = """bash scripts/restore.sanity.sh && \\
make trackB.start && make safety.music.start && \\
make merge.v2 && make trackD.start && make ure.exporter && \\
make db.init && make db.ingest && make api.readonly && \\
bash scripts/smoke.v18.sh
"""


def test_section_48_full_stack_starter_as_written(stack):
    cwd, port, env = stack
    (cwd / "Makefile").write_text(f"include {ROOT}/Makefile\n")
    (cwd / "scripts").symlink_to(ROOT / "scripts")
    e = dict(os.environ, **env)
    import subprocess

    r = subprocess.run(
        ["bash", "-c", SECTION_48], cwd=cwd, env=e, capture_output=True, text=True, timeout=180
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[sanity] schemas ok" in r.stdout
    assert "[trackB] RESULT = STARTED" in r.stdout and "[sqlite] init ok" in r.stdout
    assert r.stdout.strip().endswith("[smoke.v18] OK")
    alive = {k for k, v in pids_in(cwd / "run").items() if pid_alive(v)}
    assert STACK - {"alert_receiver"} <= alive  # the blueprint's starter predates it (issue 17)
