"""The bench's stages that read a log or run a tool once; each adds its rows to the table.

Every stage takes the generated log's directory `d` (cwd of what it runs), its size `n`
and the run's table.Opts. The throughput stages run `opts.repeats` times interleaved with
their floor (lumen.harness.bench.floors) and show the medians:
- emitter: the emitter process unthrottled (`--count n`, its own timing line) at the
  config's batch size and at 1 000, each in a fresh directory (goal >= 200 000 events/s);
- exporter: Lumen's RMB exporter (lumen.exporters.RmbExporter, in this process, fresh
  checkpoints each run) catching up on the log (goal >= 600 000 events/s);
- merge: `merge.v2` (v1 -> v2, validated) as a process from scratch, in a directory with
  the log linked in; the last run's v2 log is kept for the stages after it
  (goal >= 300 000 events/s);
- ingest: the ingester's backfill (`--once`) of both logs into a new SQLite store, as a
  process, rows = lines of both logs (goal >= 150 000 rows/s); ingest_store() is one run
  into the store the environment names (bench.postgres), without a floor.
Merge and ingest are timed as whole processes (interpreter start and imports, ~0.3 s,
included); the emitter by the time it prints.
Single runs: safety_tick and ure_tick (one tick after catch-up; the goal is a tick flat in
log size, <= 2x the first size's), the blueprint's safety tick (a full re-read) beside
them, and windowed_tools (slo.report, tune.suggest) as the processes run them.
"""

import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson

from lumen import CONFIGS, ROOT, config, vocab
from lumen.harness.bench import floors
from lumen.harness.bench.table import compare, interleaved, row

PY = sys.executable
RMB_CFG = CONFIGS / "rmb_v17.yaml"
SAMPLE = (ROOT / "tests/fixtures/rmb_sample.json").read_bytes().strip()
RMB_LOG = "logs/rmb_events.jsonl"
V2_LOG = "logs/resonance_events_v2.jsonl"
GOALS = {"emitter": 200_000, "exporter": 600_000, "merge": 300_000, "ingest": 150_000}
_first = {}  # stage -> its value at the run's first size (the flat-in-log-size goal)


def count_lines(path):
    return sum(len(lines) for _, lines in floors.chunks(path))


def run_emitter(cwd, n, *flags, **run_kw):
    """The RMB emitter writing `n` events flat out in `cwd` (seed 1), with extra `flags`."""
    cmd = [PY, str(ROOT / "rmb/rmb_emitter.py"), "--config", str(RMB_CFG), "--count", str(n)]
    cmd += ["--unthrottled", "--seed", "1", *map(str, flags)]
    return subprocess.run(cmd, cwd=cwd, check=True, **run_kw)


def _goal(stage, unit):
    g = GOALS[stage]
    return f">= {g:,} {unit}".replace(",", " "), lambda v, f: v >= g


def emitter(d, n, opts):
    config_batch = config.load(RMB_CFG, "rmb_v17")["loop"]["batch_size"]
    for batch in dict.fromkeys((config_batch, 1000)):

        def stage(batch=batch):
            with tempfile.TemporaryDirectory(dir=d) as t:
                t0 = time.perf_counter()
                r = run_emitter(t, n, "--batch-size", batch, capture_output=True, text=True)
                wall = time.perf_counter() - t0
            said = re.search(r" in ([0-9.]+)s\s*$", r.stdout)
            return n / (float(said.group(1)) if said and float(said.group(1)) > 0 else wall)

        def floor(batch=batch):
            with tempfile.TemporaryDirectory(dir=d) as t:
                return floors.emitter(t, n, batch)

        values, fl = interleaved(stage, floor, opts.repeats, f"emitter batch {batch}")
        goal, met = _goal("emitter", "events/s")
        compare(f"emitter unthrottled (batch_size {batch})", n, values, fl, "events/s", goal, met)


def exporter(d, n, opts):
    from lumen.exporters import RmbExporter

    gates = config.load(RMB_CFG, "rmb_v17")["safety_gates"]
    log = Path(d) / RMB_LOG

    def stage():
        with tempfile.TemporaryDirectory(dir=d) as state, contextlib.chdir(d):
            exp = RmbExporter(
                RMB_LOG, gates, offsets_dir=f"{state}/offsets", rejects_dir=f"{state}/rejects"
            )
            t0, got = time.perf_counter(), 0
            while k := exp.poll_once():
                got += k
            dt = time.perf_counter() - t0
            exp.consumer.close()
        return got / dt

    values, fl = interleaved(stage, lambda: floors.decode(log), opts.repeats, "exporter")
    goal, met = _goal("exporter", "events/s")
    compare("exporter catch-up (validated)", n, values, fl, "events/s", goal, met)


def _merge(d):
    subprocess.run(
        [PY, str(ROOT / "tools/merge_rmb_safety_v2.py")], cwd=d, check=True, capture_output=True
    )


def merge(d, n, opts):
    log = Path(d) / RMB_LOG
    lines = count_lines(log)

    def stage():
        with tempfile.TemporaryDirectory(dir=d) as p:
            (Path(p) / "logs").mkdir()
            os.link(log, Path(p) / RMB_LOG)
            t0 = time.perf_counter()
            _merge(p)
            dt = time.perf_counter() - t0
            os.replace(Path(p) / V2_LOG, Path(d) / V2_LOG)  # the last run's, for what follows
        return lines / dt

    def floor():
        with tempfile.TemporaryDirectory(dir=d) as p:
            return floors.roundtrip(log, Path(p) / "v2.jsonl")

    values, fl = interleaved(stage, floor, opts.repeats, "merge")
    goal, met = _goal("merge", "events/s")
    compare("merge.v2 (v1 -> v2, validated)", n, values, fl, "events/s", goal, met)


def safety_tick(d, n, opts=None):
    """Blueprint tick (re-reads the whole file twice) against Lumen's tick (new bytes only)."""
    log = Path(d) / RMB_LOG
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
    _flat("safety tick, Lumen (tailer, 1 new event)", n, statistics.median(ticks) * 1000)


def _flat(stage, n, ms):
    """A tick's row: goal flat in log size, met when <= 2x the run's first size's."""
    first = _first.setdefault(stage, (n, ms))
    met = "" if first[0] == n else ("yes" if ms <= 2 * first[1] else "NO")
    row(stage, n, f"{ms:.2f}", "ms", goal="flat in log size (<= 2x first size)", met=met)


def append_one(log, i):
    e = json.loads(SAMPLE)
    e["ts"] = datetime.now(timezone.utc).isoformat()
    e["trace"]["iter"] = 10**9 + i
    with open(log, "ab") as f:
        f.write(orjson.dumps(e) + b"\n")


def windowed_tools(d, n, opts=None):
    for name, args in (
        ("slo.report", ["tools/tracka_v17.py", "slo", "--stream", RMB_LOG, "--wait", "0"]),
        ("tune.suggest", ["tools/tuner_v17.py"]),
    ):
        t0 = time.perf_counter()
        r = subprocess.run([PY, str(ROOT / args[0]), *args[1:]], cwd=d, capture_output=True)
        if r.returncode not in (0, 1, 3):  # slo.report: 1 FAIL, 3 NO_DATA are verdicts
            raise subprocess.CalledProcessError(r.returncode, args, r.stdout, r.stderr)
        row(
            f"{name} (10-minute window)",
            n,
            f"{(time.perf_counter() - t0) * 1000:.0f}",
            "ms",
            goal="grows with the window",
        )


def ure_tick(d, n, opts=None):
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
    _flat("URE loop tick (after catch-up)", n, statistics.median(ticks) * 1000)


def _backfill(d, name):
    """Seconds the ingester's `--once` run takes in `d`, and the rows it had to store."""
    if not (Path(d) / V2_LOG).exists():
        _merge(d)  # bench --only: no earlier stage has merged
    rows = count_lines(Path(d) / RMB_LOG) + count_lines(Path(d) / V2_LOG)
    t0 = time.perf_counter()
    subprocess.run(
        [PY, str(ROOT / "tools/storage/ingest_tail_v18.py"), "--once", "--name", name],
        cwd=d,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - t0, rows


def ingest(d, n, opts):
    """Backfills into a new data/lumen.db beside the executemany floor; the last run's
    store is kept (the API stages serve it)."""
    db = Path(d) / "data/lumen.db"

    def stage():
        for p in db.parent.glob("lumen.db*"):
            p.unlink()
        secs, rows = _backfill(d, "benchingest")
        return rows / secs

    def floor():
        with tempfile.TemporaryDirectory(dir=d) as p:
            return floors.executemany(Path(d) / RMB_LOG, Path(d) / V2_LOG, Path(p) / "floor.db")

    values, fl = interleaved(stage, floor, opts.repeats, "ingest")
    goal, met = _goal("ingest", "rows/s")
    compare("ingest backfill (both logs), SQLite", n, values, fl, "rows/s", goal, met)


def ingest_store(d, n, label, name):
    """One backfill into the store the environment names (bench.postgres), no floor."""
    secs, rows = _backfill(d, name)
    row(f"ingest backfill (both logs){label}", n, f"{rows / secs:,.0f}", "rows/s")
