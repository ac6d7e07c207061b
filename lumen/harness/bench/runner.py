"""The bench's runs: the generated logs, every stage in order, and `--only`.

run_all() measures the floor and the emitter once, then, for each log size, generates a
log with the real emitter in a temp directory (make_log) and runs every stage on it, in
the order of the table; the table goes to `--out` (default bench/results.md, RESULTS).
only() runs some stages at the given sizes (`--only ingest,ingest_pg,api,api_pg`: the
SQLite and PostgreSQL rows side by side), its table going to bench/results-<stages>.md
unless `--out` names another file. The PostgreSQL stages' cluster is stopped at the end.
"""

import os
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from lumen import ROOT
from lumen.harness.bench import postgres, servers, stages
from lumen.harness.bench.table import write_table

RESULTS = str(ROOT / "bench/results.md")


def make_log(d, n, queue="logs/rmb_events.jsonl"):
    start = (datetime.now(timezone.utc) - timedelta(seconds=n / 5)).isoformat()
    stages.run_emitter(
        d,
        n,
        "--batch-size",
        1000,
        "--quiet",
        "--sim-start",
        start,
        "--queue",
        queue,
        "--name",
        "benchgen",
    )
    # Write the new log out now: otherwise the first fsyncs of a stage (checkpoints) pay
    # for flushing hundreds of MB of it, and the cost looks as if it grew with log size.
    os.sync()


def only(a):
    """Some stages, at the given sizes: e.g. the safety tick at 10 k, 1 M and 10 M lines."""
    named = {
        "safety_tick": stages.safety_tick,
        "ure_tick": stages.ure_tick,
        "windowed_tools": stages.windowed_tools,
        "ingest": stages.ingest,
        "api": servers.api,
        "api_clients": servers.api_clients,
        "ingest_pg": postgres.ingest,
        "api_pg": postgres.api,
        "api_clients_pg": postgres.api_clients,
    }
    names = a.only.split(",")
    unknown = [x for x in names if x not in named]
    if unknown:
        print(f"error: unknown stage {', '.join(unknown)} (stages: {', '.join(named)})")
        return 2
    sizes = [int(x) for x in a.sizes.split(",")]
    try:
        for n in sizes:
            with tempfile.TemporaryDirectory(prefix="lumen-bench-") as d:
                print(f"[bench] generating {n} events", file=sys.stderr, flush=True)
                make_log(d, n)
                for name in names:
                    named[name](d, n)
    finally:
        postgres.close()
    out = a.out if a.out != RESULTS else str(ROOT / f"bench/results-{'-'.join(names)}.md")
    write_table(out)
    return 0


def run_all(a):
    """Every stage at every size (bench/bench.py's flags `a`); 0."""
    sizes = [10_000, 100_000] if a.quick else [int(x) for x in a.sizes.split(",")]
    n_req = 100 if a.quick else 500
    print("[bench] reference floor", file=sys.stderr)
    stages.reference()
    stages.emitter(max(sizes))
    seconds = 3 if a.quick else 10
    try:
        for n in sizes:
            with tempfile.TemporaryDirectory(prefix="lumen-bench-") as d:
                print(f"[bench] generating {n} events", file=sys.stderr, flush=True)
                make_log(d, n)
                ref = stages.blueprint_exporter(Path(d) / "logs/rmb_events.jsonl", n)
                stages.lumen_exporter(d, n, ref)
                servers.scrape(d, n, n_req)
                stages.safety_tick(d, n)
                stages.windowed_tools(d, n)
                stages.merge(d, n)
                stages.ure_tick(d, n)
                stages.ingest(d, n)
                servers.api(d, n, n_req)
                servers.api_clients(d, n, seconds=seconds)
                postgres.ingest(d, n)
                postgres.api(d, n, n_req)
                postgres.api_clients(d, n, seconds=seconds)
    finally:
        postgres.close()
    write_table(a.out)
    return 0
