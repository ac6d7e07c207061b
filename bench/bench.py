#!/usr/bin/env python3
"""make bench: throughput and latency of every Lumen stage, printed as one table and
written to bench/results.md with the machine and date.

The flags; the stages and how they are measured are lumen.harness.bench.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lumen.harness.bench import runner  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,1000000", help="log sizes (comma separated)")
    ap.add_argument("--quick", action="store_true", help="sizes 10000,100000 and fewer requests")
    ap.add_argument("--out", default=runner.RESULTS)
    ap.add_argument(
        "--only",
        help="run only these stages, e.g. safety_tick,ure_tick "
        "(the table then goes to bench/results-<stages>.md unless --out is given)",
    )
    a = ap.parse_args(argv)
    if a.only:
        return runner.only(a)
    return runner.run_all(a)


if __name__ == "__main__":
    raise SystemExit(main())
