"""v1.7 operator tools: tune.suggest, evidence.map, kpi.reporter, restore.pack,
restore.sanity, pkg.v17, logs.rotate under real logrotate."""

import gzip
import json
import os
import subprocess
import tarfile
import time


from conftest import CONFIG_RMB, EMITTER, ROOT, emit, free_port, run_make, wait_until, require_tool


def ago(seconds):
    from datetime import datetime, timezone

    return datetime.fromtimestamp(time.time() - seconds, timezone.utc).isoformat()


def test_tune_suggest_reads_only_the_window(workdir):
    # 20 000 old events (a day ago, a rollback storm), then 10 min of a jittery stream,
    # stamped from 400 s ago to 200 s ahead: all of it stays inside the 10-minute window
    # (which reaches 300 s past now) however long the machine takes to get to the report.
    emit(workdir, 20000, "--profile", "spike", "--sim-start", ago(86400))
    emit(workdir, 3000, "--profile", "jitter", "--hz", 5, "--sim-start", ago(400), "--seed", 3)
    r = run_make(workdir, "tune.suggest")
    assert r.returncode == 0, r.stderr
    line = r.stdout.splitlines()[0]
    fields = dict(
        x.split("=")
        for x in line.replace("(", "").replace(")", "").replace(",", "").split()
        if "=" in x
    )
    sd, ratio = float(fields["residual.stddev_10m"]), float(fields["rollback.ratio"])
    assert 0.06 < sd < 0.10  # jitter: stddev 0.08; the old storm is not in the window
    assert ratio < 0.05
    assert int(fields["events"]) == 3000
    assert int(fields["scanned"]) < 3100  # it stopped at the window's start, not at line 1
    assert "SUGGEST: reduce batch_size 20→12, hz 5→4" in r.stdout
    assert "residual_entropy_max" not in r.stdout


def test_tune_suggest_no_data(workdir):
    assert run_make(workdir, "tune.suggest").stdout.strip() == "no-data"


def test_evidence_map_is_exactly_once(workdir):
    emit(workdir, 500)
    (workdir / "logs/rmb_events.jsonl").open("ab").write(b"junk\n")
    r1 = run_make(workdir, "evidence.map")
    assert "mapped 500 events" in r1.stdout and "1 lines rejected" in r1.stdout
    r2 = run_make(workdir, "evidence.map")
    assert "mapped 0 events" in r2.stdout
    emit(workdir, 100)
    # Simulate a crash after the bundles were written but before the checkpoint moved.
    (workdir / "logs/.offsets/evidence_mapper.json").unlink()
    r3 = run_make(workdir, "evidence.map")
    assert "mapped 100 events" in r3.stdout and "(500 already mapped)" in r3.stdout
    bundles = [
        json.loads(x) for x in (workdir / "logs/evidence_bundle.jsonl").read_text().splitlines()
    ]
    assert len(bundles) == 600
    assert len({(b["source"]["fp"], b["source"]["offset"]) for b in bundles}) == 600
    events = [
        json.loads(x)
        for x in (workdir / "logs/rmb_events.jsonl").read_text().splitlines()
        if x != "junk"
    ]
    assert [b["memory_key"] for b in bundles] == [e["memory_bridge"]["key"] for e in events]
    assert bundles[0]["value_ref"] == events[0]["memory_bridge"]["value_hash"][:16]


def test_kpi_snapshot_and_reporter(workdir):
    assert run_make(workdir, "kpi.reporter").stdout.strip() == "[kpi] no data"
    emit(workdir, 3000, "--hz", 5, "--sim-start", ago(600), queue="logs/fake/rmb_events.jsonl")
    for _ in range(2):
        r = run_make(workdir, "kpi.snapshot")
        assert r.returncode == 0, r.stderr
    lines = (workdir / "logs/kpi_snapshot_v17.csv").read_text().splitlines()
    assert lines[0].startswith("ts,stream,window_s,events,rollbacks,rmb_residual_entropy_last,")
    assert len(lines) == 3  # one header, two rows
    r = run_make(workdir, "kpi.reporter")
    assert "[kpi] snapshots=2" in r.stdout and "residual_entropy_last mean=" in r.stdout


def test_restore_pack_is_sourceable_and_sanity_passes(workdir):
    r = run_make(workdir, "restore.pack", env={"RESIDUAL_MAX": "0.8"})
    assert r.returncode == 0
    (pack,) = workdir.glob("SESSION_RESTORE_*_v1_7_DELTA.env")
    out = subprocess.run(
        [
            "bash",
            "-c",
            f"source {pack} && bash -c 'echo $RMB_EXPORTER_PORT $RESIDUAL_MAX $LUMEN_TRACK'",
        ],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"]},
    )
    assert out.stdout.split() == ["9409", "0.8", "B"]
    r = run_make(workdir, "restore.sanity")
    assert r.returncode == 0 and "[sanity] schemas ok" in r.stdout


def test_pkg_contains_exactly_the_listed_content(workdir):
    r = run_make(workdir, "pkg.v17")
    assert r.returncode == 0, r.stderr
    (tgz,) = (workdir / "release").glob("lumen_v17_*.tar.gz")
    names = tarfile.open(tgz).getnames()
    tops = {
        n.split("/")[0] if not n.startswith("ops/") else "/".join(n.split("/")[:2]) for n in names
    }
    assert tops == {
        "schemas",
        "configs",
        "rmb",
        "exporters",
        "safety",
        "ops/grafana",
        "ops/prometheus",
        "tools",
        "scripts",
        "Makefile",
        "docs",
        "SESSION_RESTORE_2025-11-01_v1_7_DELTA.env",
        "SESSION_RESTORE_2025-11-01_v1_7_FULL.env",
    }
    assert not [n for n in names if "__pycache__" in n or n.startswith(("logs", "data"))]
    assert "rmb/rmb_emitter.py" in names and "configs/rmb_v17.yaml" in names


def _require_logrotate():
    require_tool("logrotate")


def _all_events(logdir):
    """Every line of the queue that reached disk: live file, .1, and compressed .N.gz."""
    out = []
    for p in sorted(logdir.glob("rmb_events.jsonl*")):
        data = gzip.open(p).read() if p.suffix == ".gz" else p.read_bytes()
        out += [json.loads(x) for x in data.splitlines() if x.strip()]
    return out


def test_logrotate_on_a_live_stream_loses_nothing(workdir, procs):
    _require_logrotate()
    port = free_port()
    procs.start(
        ROOT / "exporters/rmb_exporter_v17.py",
        "--config",
        CONFIG_RMB,
        "--port",
        port,
        "--host",
        "127.0.0.1",
    )
    # The exporter must be reading before rotations start: a file compressed to .N.gz
    # before a consumer ever saw it is out of every tailer's reach.
    wait_until(lambda: (workdir / "run/rmb_exporter.pid").exists(), what="exporter ready")
    n = 3000
    emitter = procs.start(
        EMITTER,
        "--config",
        CONFIG_RMB,
        "--count",
        n,
        "--hz",
        400,
        "--batch-size",
        10,
        "--flush-ms",
        20,
    )
    log = workdir / "logs/rmb_events.jsonl"
    for _ in range(3):  # three rotations while the emitter writes
        wait_until(lambda: log.exists() and log.stat().st_size, what="log growth")
        r = run_make(workdir, "logs.rotate")
        assert r.returncode == 0, r.stderr
        assert "RESULT = ROTATED" in r.stdout
        r = run_make(workdir, "evidence.map")  # a consumer that runs now and then
        assert r.returncode == 0, r.stderr
    assert emitter.wait(timeout=60) == 0
    import requests

    def total():
        txt = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        return next(
            float(x.split()[1]) for x in txt.splitlines() if x.startswith("rmb_events_total ")
        )

    wait_until(lambda: total() == n, timeout=30, what=f"exporter to count {n}")
    rotated = len(list((workdir / "logs").glob("rmb_events.jsonl.*")))
    assert rotated >= 2  # logrotate skips a run that finds no file (missingok, nocreate)
    # The last rename is seen at the exporter's next look at the path after its last line.
    wait_until(
        lambda: (
            f"rmb_file_rotations_total {rotated}.0"
            in requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        ),
        timeout=30,
        what=f"rmb_file_rotations_total {rotated}",
    )
    run_make(workdir, "evidence.map")
    bundles = (workdir / "logs/evidence_bundle.jsonl").read_text().splitlines()
    on_disk = _all_events(workdir / "logs")
    assert sorted(e["trace"]["iter"] for e in on_disk) == list(range(n))
    assert sorted(json.loads(b)["trace"]["iter"] for b in bundles) == list(range(n))
    assert list((workdir / "logs").glob("rmb_events.jsonl.*.gz"))  # older ones compressed
