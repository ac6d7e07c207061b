"""The bench's stages that read a log or run a tool once; each adds its rows to the table.

Every stage takes the generated log's directory `d` (cwd of what it runs) and its size `n`:
- reference: the floor, parsing one JSON line (json, orjson, orjson + jsonschema_rs);
- emitter: the emitter unthrottled at two batch sizes (target >= 100 000 events/s);
- blueprint_exporter against lumen_exporter: the blueprint's loop (json.loads, no
  validation) and Lumen's exporter (lumen.exporters.RmbExporter) catching up on the log;
- safety_tick, ure_tick: one tick of the Safety Music and URE loops after catch-up (flat
  in log size), the blueprint's tick (a full re-read) beside the first;
- windowed_tools (slo.report, tune.suggest), merge (merge.v2), ingest (the store's
  backfill of both logs, target >= 50 000 rows/s; into PostgreSQL too: bench.postgres),
  as the processes run them.
"""

import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson

from lumen import CONFIGS, ROOT, vocab
from lumen.harness.bench.table import fmt, row, timed

PY = sys.executable
RMB_CFG = CONFIGS / "rmb_v17.yaml"
SAMPLE = (ROOT / "tests/fixtures/rmb_sample.json").read_bytes().strip()


def reference(n=200_000):
    from lumen.events import Validator

    v = Validator.named("rmb_event_v1.json")
    r = timed(lambda: [json.loads(SAMPLE) for _ in range(n)], n)
    row("floor: json.loads", "1 line", fmt(r), "lines/s")
    r = timed(lambda: [orjson.loads(SAMPLE) for _ in range(n)], n)
    row("floor: orjson.loads", "1 line", fmt(r), "lines/s")
    r = timed(lambda: [v.is_valid(orjson.loads(SAMPLE)) for _ in range(n)], n)
    row("floor: orjson.loads + jsonschema_rs", "1 line", fmt(r), "lines/s")
    return r


def run_emitter(cwd, n, *flags, **run_kw):
    """The RMB emitter writing `n` events flat out in `cwd` (seed 1), with extra `flags`."""
    cmd = [PY, str(ROOT / "rmb/rmb_emitter.py"), "--config", str(RMB_CFG), "--count", str(n)]
    cmd += ["--unthrottled", "--seed", "1", *map(str, flags)]
    return subprocess.run(cmd, cwd=cwd, check=True, **run_kw)


def emitter(n):
    for batch in (20, 1000):
        with tempfile.TemporaryDirectory() as d:
            r = run_emitter(d, n, "--batch-size", batch, capture_output=True, text=True)
            out = r.stdout
        secs = float(out.strip().splitlines()[-1].rsplit(" in ", 1)[1].rstrip("s"))
        r = n / secs
        row(
            f"emitter unthrottled (batch_size {batch})",
            n,
            fmt(r),
            "events/s",
            ">= 100 000",
            "yes" if r >= 100_000 else "NO",
        )


def blueprint_exporter(log, n):
    """The blueprint's exporter loop (json.loads per line, no validation), catching up."""

    def run():
        m = {"ev": 0, "rb": 0, "last": 0.0}
        with open(log, "r", encoding="utf-8") as f:
            for line in f:
                try:
                    evt = json.loads(line)
                    m["ev"] += 1
                    m["last"] = float(evt["resonance_v3"]["residual_entropy"])
                    if evt.get("event_type") == vocab.ROLLBACK:
                        m["rb"] += 1
                except Exception:
                    pass

    r = timed(run, n)
    row("blueprint exporter catch-up (no validation)", n, fmt(r), "events/s")
    return r


def lumen_exporter(d, n, reference_rate):
    from lumen.exporters import RmbExporter

    gates = {
        "residual_entropy_max": 0.85,
        "risk_band_block": [vocab.RISK],
        "phase_diff_abs_max": 3.0,
    }
    with contextlib.chdir(d):
        shutil.rmtree("logs/.offsets", ignore_errors=True)
        exp = RmbExporter("logs/rmb_events.jsonl", gates)
        t0 = time.perf_counter()
        while exp.poll_once():
            pass
        r = n / (time.perf_counter() - t0)
        exp.consumer.close()
    row(
        "Lumen exporter catch-up (validated)",
        n,
        fmt(r),
        "events/s",
        f">= blueprint ({fmt(reference_rate)})",
        "yes" if r >= reference_rate else "NO",
    )


def safety_tick(d, n):
    """Blueprint tick (re-reads the whole file twice) against Lumen's tick (new bytes only)."""
    log = Path(d) / "logs/rmb_events.jsonl"
    t0 = time.perf_counter()
    ev = rb = 0
    with open(log, "r", encoding="utf-8") as f:
        for line in f:
            ev += 1
            try:
                rb += json.loads(line).get("event_type") == vocab.ROLLBACK
            except ValueError:
                pass
    with open(log, "rb") as f:
        f.seek(max(0, log.stat().st_size - 2048))
        f.read()
    row(
        "safety tick, blueprint (full re-read)", n, f"{(time.perf_counter() - t0) * 1000:.1f}", "ms"
    )
    from lumen.safety.loop import SafetyLoop, load_config

    with contextlib.chdir(d):
        loop = SafetyLoop(load_config(CONFIGS / "safety_music_v17.yaml"))
        while loop.input.update(time.time(), max_polls=10_000) and loop.input.last_tick_bytes:
            pass  # catch up once, as a running loop would have
        ticks = []
        for i in range(20):
            append_one(log, i)
            t0 = time.perf_counter()
            loop.tick()
            ticks.append(time.perf_counter() - t0)
        loop.close()
    row(
        "safety tick, Lumen (tailer, 1 new event)",
        n,
        f"{statistics.median(ticks) * 1000:.2f}",
        "ms",
        "flat in log size",
    )


def append_one(log, i):
    e = json.loads(SAMPLE)
    e["ts"] = datetime.now(timezone.utc).isoformat()
    e["trace"]["iter"] = 10**9 + i
    with open(log, "ab") as f:
        f.write(orjson.dumps(e) + b"\n")


def windowed_tools(d, n):
    for name, args in (
        (
            "slo.report",
            [
                str(ROOT / "tools/tracka_v17.py"),
                "slo",
                "--stream",
                "logs/rmb_events.jsonl",
                "--wait",
                "0",
            ],
        ),
        ("tune.suggest", [str(ROOT / "tools/tuner_v17.py")]),
    ):
        t0 = time.perf_counter()
        r = subprocess.run([PY, *args], cwd=d, capture_output=True)
        if r.returncode not in (0, 1, 3):  # slo.report: 1 FAIL, 3 NO_DATA are verdicts
            raise subprocess.CalledProcessError(r.returncode, args, r.stdout, r.stderr)
        row(
            f"{name} (10-minute window)",
            n,
            f"{(time.perf_counter() - t0) * 1000:.0f}",
            "ms",
            "grows with the window",
        )


def _merge(d):
    subprocess.run(
        [PY, str(ROOT / "tools/merge_rmb_safety_v2.py")], cwd=d, check=True, capture_output=True
    )


def merge(d, n):
    t0 = time.perf_counter()
    _merge(d)
    row("merge.v2 (v1 -> v2, validated)", n, fmt(n / (time.perf_counter() - t0)), "events/s")


def ure_tick(d, n):
    from lumen import config
    from lumen.ure import UreLoop

    with contextlib.chdir(d):
        loop = UreLoop(config.load(CONFIGS / "ure_v18.yaml", env={}))
        while loop.observe(max_polls=10_000):
            pass
        ticks = []
        for _ in range(20):
            t0 = time.perf_counter()
            loop.tick()
            ticks.append(time.perf_counter() - t0)
        loop.close()
    row(
        "URE loop tick (after catch-up)",
        n,
        f"{statistics.median(ticks) * 1000:.2f}",
        "ms",
        "flat in log size",
    )


def ingest(d, n, label="", name="benchingest"):
    """The ingester's backfill (`--once`) of both logs into the store its environment names
    (data/lumen.db unless LUMEN_DB_URL is set); the row's stage ends with `label`. The v2 log
    is merged first when an earlier stage has not (bench --only)."""
    if not (Path(d) / "logs/resonance_events_v2.jsonl").exists():
        _merge(d)
    t0 = time.perf_counter()
    subprocess.run(
        [PY, str(ROOT / "tools/storage/ingest_tail_v18.py"), "--once", "--name", name],
        cwd=d,
        check=True,
        capture_output=True,
    )
    rows = 2 * n  # rmb + the merged v2 copy of each event
    r = rows / (time.perf_counter() - t0)
    row(
        f"ingest backfill (both logs){label}",
        rows,
        fmt(r),
        "rows/s",
        ">= 50 000",
        "yes" if r >= 50_000 else "NO",
    )
