#!/usr/bin/env python3
"""kpi.reporter (blueprint section 24): summarise the KPI CSV that kpi.snapshot appends.

Reads `paths.kpi_snapshot` of configs/rmb_v17.yaml (logs/kpi_snapshot_v17.csv): prints
the number of snapshots, the mean of `rmb_residual_entropy_last` (the blueprint's line),
and the newest snapshot's SLO verdict and metrics. `[kpi] no data` when there is none.
Departure: the blueprint forgets `import os` and crashes; rows with an empty value are
skipped, not counted as 0.
"""

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path: this checkout's lumen if this Python has none
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import argparse
import csv
import statistics

from lumen import CONFIGS, config
from lumen.proc import cli_main


def summarise(rows):
    vals = [
        float(r["rmb_residual_entropy_last"]) for r in rows if r.get("rmb_residual_entropy_last")
    ]
    out = [f"[kpi] snapshots={len(rows)}"]
    if vals:
        out.append(f"[kpi] residual_entropy_last mean= {round(statistics.mean(vals), 4)}")
    last = rows[-1]
    extra = {k: v for k, v in last.items() if k not in ("ts", "stream", "slo") and v}
    out.append(
        f"[kpi] newest {last['ts']} slo={last.get('slo', '?')} "
        + " ".join(f"{k}={v}" for k, v in extra.items())
    )
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(CONFIGS / "rmb_v17.yaml"))
    args = ap.parse_args(argv)
    path = config.load(args.config, "rmb_v17")["paths"]["kpi_snapshot"]
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        rows = []
    if not rows:
        print("[kpi] no data")
        return 0
    for line in summarise(rows):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
