"""RMB exporter: whole-log counts across restarts, bad lines counted and quarantined,
rotation and truncation, valid exposition, 404/405, busy port."""

import json
import os
import shutil
import signal
import socket
import subprocess

import requests
from prometheus_client.parser import text_string_to_metric_families

from lumen.exporters import RmbExporter
from conftest import CONFIG_RMB, PY, ROOT, emit, free_port, wait_until

EXPORTER = ROOT / "exporters/rmb_exporter_v17.py"
GATES = {"residual_entropy_max": 0.85, "risk_band_block": ["RISK"], "phase_diff_abs_max": 3.0}


def log_counts(cwd):
    lines = (cwd / "logs/rmb_events.jsonl").read_bytes().splitlines()
    evts = []
    for line in lines:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict) and "resonance_v3" in e:
            evts.append(e)
    return len(evts), sum(e["event_type"] == "rollback" for e in evts)


def scrape(port, path="/metrics"):
    r = requests.get(f"http://127.0.0.1:{port}{path}", timeout=5)
    r.raise_for_status()
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            key = s.name + (json.dumps(s.labels, sort_keys=True) if s.labels else "")
            out[key] = s.value
    return out


def start_exporter(procs, port, *extra):
    p = procs.start(EXPORTER, "--config", CONFIG_RMB, "--port", port, *extra)
    wait_until(lambda: p.poll() is not None or _answers(port), what="exporter port")
    assert p.poll() is None, p.stderr.read().decode()
    return p


def _answers(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def wait_total(port, n, key="rmb_events_total", timeout=20):
    return wait_until(
        lambda: scrape(port).get(key) == n and scrape(port), timeout=timeout, what=f"{key} == {n}"
    )


def test_counts_whole_log_across_restarts(procs, workdir):
    emit(workdir, 400, "--profile", "spike", "--seed", "1")
    port = free_port()
    p = start_exporter(procs, port)
    m = wait_total(port, 400)
    n, rb = log_counts(workdir)
    assert (m["rmb_events_total"], m["rmb_rollback_total"]) == (n, rb)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=10) == 0
    emit(workdir, 300, "--profile", "spike", "--seed", "2")  # written while it is down
    p = start_exporter(procs, port)
    m = wait_total(port, 700)
    assert m["rmb_rollback_total"] == log_counts(workdir)[1]
    # SIGKILL: the checkpoint holds offset and counters together, so nothing is counted twice.
    emit(workdir, 100)
    wait_total(port, 800)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=10)
    emit(workdir, 50)
    start_exporter(procs, port)
    m = wait_total(port, 850)
    assert m["rmb_rollback_total"] == log_counts(workdir)[1]
    assert m["rmb_checkpoints_written_total"] >= 2


def test_rebuilds_from_the_log_without_checkpoint(procs, workdir):
    emit(workdir, 250)
    port = free_port()
    p = start_exporter(procs, port)
    wait_total(port, 250)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=10)
    (workdir / "logs/.offsets/rmb_exporter.json").unlink()
    start_exporter(procs, port)
    wait_total(port, 250)


def test_bad_lines_counted_quarantined_and_serving_continues(procs, workdir):
    emit(workdir, 100)
    sample = (ROOT / "tests/fixtures/rmb_sample.json").read_bytes().strip()
    bad_schema = json.loads(sample)
    bad_schema["resonance_v3"]["residual_entropy"] = 7
    with open(workdir / "logs/rmb_events.jsonl", "ab") as f:
        f.write(b"garbage here\n")
        f.write(b"\xff\xfe\xfa not utf-8\n")
        f.write(b"{" + b"x" * (10 * 1024 * 1024) + b"}\n")  # a 10 MB line
        f.write(json.dumps(bad_schema).encode() + b"\n")
        f.write(b"\n")  # blank: neither event nor reject
        f.write(sample + b"\n")
    port = free_port()
    start_exporter(procs, port)
    m = wait_total(port, 101)
    assert m['rmb_rejects_total{"reason": "json"}'] == 1
    assert m['rmb_rejects_total{"reason": "utf8"}'] == 1
    assert m['rmb_rejects_total{"reason": "oversize"}'] == 1
    assert m['rmb_rejects_total{"reason": "schema"}'] == 1
    assert m['rmb_log_lines_total{"status": "rejected"}'] == 4
    assert m['rmb_log_lines_total{"status": "valid"}'] == 101
    recs = [
        json.loads(x) for x in (workdir / "logs/rejects/rmb_events.jsonl").read_text().splitlines()
    ]
    assert [r["reason"] for r in recs] == ["json", "utf8", "oversize", "schema"]
    assert all(r["consumer"] == "rmb_exporter" for r in recs)
    assert "residual_entropy" in recs[3]["detail"]
    # Still serving and still counting after the bad lines.
    emit(workdir, 10)
    wait_total(port, 111)


def test_rotation_and_truncation_while_running(procs, workdir):
    emit(workdir, 100)
    port = free_port()
    start_exporter(procs, port)
    wait_total(port, 100)
    log = workdir / "logs/rmb_events.jsonl"
    os.rename(log, str(log) + ".1")  # rename rotation
    emit(workdir, 40)
    m = wait_total(port, 140)
    assert m["rmb_file_rotations_total"] == 1
    shutil.copy(log, str(log) + ".1")  # copytruncate, as a foreign logrotate would
    with open(log, "r+b") as f:
        f.truncate(0)
    emit(workdir, 25)
    m = wait_total(port, 165)
    assert m["rmb_file_truncates_total"] == 1


def test_exposition_is_valid_and_has_the_blueprint_metrics(procs, workdir):
    emit(workdir, 20)
    port = free_port()
    start_exporter(procs, port)
    wait_total(port, 20)
    r = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    fams = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert fams["rmb_events"].type == "counter"
    assert fams["rmb_rollback"].type == "counter"
    assert fams["rmb_residual_entropy_last"].type == "gauge"
    for name in (
        "rmb_log_lines",
        "rmb_rejects",
        "rmb_file_rotations",
        "rmb_file_truncates",
        "rmb_checkpoints_written",
        "rmb_log_bytes_behind",
        "rmb_last_event_timestamp_seconds",
        "rmb_scrape_duration_seconds",
        "rmb_safety_gate_residual_entropy_max",
    ):
        assert name in fams, name
    assert "# HELP rmb_events_total" in r.text and "# TYPE rmb_events_total counter" in r.text
    last = json.loads((workdir / "logs/rmb_events.jsonl").read_text().splitlines()[-1])
    m = scrape(port)
    assert m["rmb_residual_entropy_last"] == last["resonance_v3"]["residual_entropy"]
    assert requests.get(f"http://127.0.0.1:{port}/other", timeout=5).status_code == 404
    r = requests.post(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert r.status_code == 405 and "GET" in r.headers["Allow"]


def test_scrape_reads_no_file(workdir):
    emit(workdir, 300)
    exp = RmbExporter("logs/rmb_events.jsonl", GATES)
    while exp.poll_once():
        pass
    before = exp.app("GET", "/metrics", {})[2]
    os.rename("logs/rmb_events.jsonl", "logs/elsewhere.jsonl")  # the log is gone ...
    after = exp.app("GET", "/metrics", {})[2]  # ... and the scrape does not notice

    def strip(b):  # what changes by itself: the scrape's duration, the process' own figures
        return [
            x
            for x in b.splitlines()
            if not x.startswith((b"rmb_scrape_duration", b"process_", b"python_gc_"))
        ]

    assert strip(before) == strip(after)
    assert b"rmb_events_total 300.0" in after


def test_busy_port_is_one_clear_line(workdir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run(
            [
                PY,
                str(EXPORTER),
                "--config",
                str(CONFIG_RMB),
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
            ],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0
    assert f"port {port}" in r.stderr and f"pid {os.getpid()}" in r.stderr
