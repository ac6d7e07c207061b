"""The bench's runs: the sizes, the generated logs, the stages in order, and the notes.

run() generates, for each log size, a log with the real emitter in a temp directory
(make_log: 5 events per simulated second, so time windows hold 10 minutes = 3 000 events
whatever the log size) and runs the stages on it in the order of STAGES: every stage but
the PostgreSQL ones (DEFAULT), or those `--only` names. Sizes: `--sizes`, else 10 000 and
100 000 with `--quick`, else 100 000 and 1 000 000, and 10 000 000 too with BENCH_BIG=1.
Repeats of a stage and its floor: `--repeats`, else 3 up to 1 000 000 events and 1 above
(1 with `--quick`). The table goes to `--out` (default bench/results.md, RESULTS; with
`--only`, bench/results-<stages>.md). The PostgreSQL stages' cluster is stopped at the end.
"""

import os
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

from lumen import ROOT
from lumen.harness.bench import floors, postgres, rss, servers, stages
from lumen.harness.bench.table import Opts, write_table

RESULTS = str(ROOT / "bench/results.md")
STAGES = {
    "emitter": stages.emitter,
    "exporter": stages.exporter,
    "scrape": servers.scrape,
    "merge": stages.merge,
    "safety_tick": stages.safety_tick,
    "windowed_tools": stages.windowed_tools,
    "ure_tick": stages.ure_tick,
    "ingest": stages.ingest,
    "rss": rss.rss,
    "api": servers.api,
    "api_16": servers.api_16,
    "api_clients": servers.api_clients,
    "ingest_pg": postgres.ingest,
    "api_pg": postgres.api,
    "api_16_pg": postgres.api_16,
    "api_clients_pg": postgres.api_clients,
}
DEFAULT = [name for name in STAGES if not name.endswith("_pg")]
BIG = 10_000_000


def make_log(d, n, queue=stages.RMB_LOG):
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


def sizes(a, env=os.environ):
    """The log sizes of a run (bench/bench.py's flags `a`); ValueError for bad --sizes."""
    if a.sizes:
        out = [int(x) for x in a.sizes.split(",")]
        if any(x <= 0 for x in out):
            raise ValueError(f"--sizes {a.sizes}: sizes are positive numbers of events")
        return out
    if a.quick:
        return [10_000, 100_000]
    return [100_000, 1_000_000] + ([BIG] if env.get("BENCH_BIG") == "1" else [])


def opts_for(a, n):
    repeats = a.repeats or (1 if a.quick or n > 1_000_000 else 3)
    return Opts(repeats, 2.0 if a.quick else 5.0, 100 if a.quick else 500)


def notes(a, ns, minutes):
    reps = ", ".join(f"{n:,}: {opts_for(a, n).repeats}" for n in ns)
    return (
        f"Sizes {', '.join(f'{n:,}' for n in ns)} events; the run took {minutes:.0f} min.",
        f"Each stage with a floor ran interleaved with it, ABBA (stage, floor, floor, stage, "
        f"...), repeats per size ({reps}); value and floor are the medians. Peak RSS is "
        "read once per process (VmHWM, catching up is long), its floor just before it.",
        "ratio = value / floor: a percentage for rates (the goal of the API is a ratio), a "
        "multiple for latencies and memory. MB = 10^6 bytes.",
        "Merge and ingest are timed as whole processes (interpreter start and imports, "
        "~0.3 s, included); the emitter by the time it prints; the exporter's catch-up in "
        "the bench process. Ingest rows are both logs' lines (2 per event).",
        "",
        *floors.NOTES,
    )


def run(a):
    """The stages `--only` names, else DEFAULT, at every size; 0, or 2 for bad usage."""
    names = a.only.split(",") if a.only else DEFAULT
    unknown = [x for x in names if x not in STAGES]
    if unknown:
        print(
            f"error: unknown stage {', '.join(unknown)} (stages: {', '.join(STAGES)})",
            file=sys.stderr,
        )
        return 2
    try:
        ns = sizes(a)
    except ValueError as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    try:
        for n in ns:
            opts = opts_for(a, n)
            with tempfile.TemporaryDirectory(prefix="lumen-bench-") as d:
                print(f"[bench] generating {n} events", file=sys.stderr, flush=True)
                make_log(d, n)
                for name in names:
                    print(f"[bench] {name} at {n} events", file=sys.stderr, flush=True)
                    STAGES[name](d, n, opts)
    finally:
        postgres.close()
    out = a.out
    if a.only and out == RESULTS:
        out = str(ROOT / f"bench/results-{'-'.join(names)}.md")
    write_table(out, notes(a, ns, (time.monotonic() - t0) / 60))
    return 0
