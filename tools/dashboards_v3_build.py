#!/usr/bin/env python3
"""dashboards.v3.build: render ops/grafana/dashboards.src.yaml into Grafana dashboard JSON.

Writes ops/grafana/dashboards/*.json (--out); `--check` only compares and exits 1 when a
committed file differs from its source. The rendering: lumen/dashboards.py.
"""

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path: this checkout's lumen if this Python has none
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import argparse

from lumen import dashboards


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only check the committed JSON is current")
    ap.add_argument("--out", default=str(dashboards.OUT))
    a = ap.parse_args(argv)
    return dashboards.write(Path(a.out), a.check)


if __name__ == "__main__":
    raise SystemExit(main())
