#!/usr/bin/env python3
"""make bench: every Lumen stage beside its floor (the same work stripped to its unavoidable
parts, measured in the same run), the ratio, and whether each goal was met; one table,
printed and written to bench/results.md with the machine and the date.

Sizes: 100 000 and 1 000 000 events (and 10 000 000 with BENCH_BIG=1). The stages, their
floors and how they are measured: lumen.harness.bench.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lumen.harness.bench import runner  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", help="log sizes in events, comma separated (default 100000,1000000)")
    ap.add_argument(
        "--quick", action="store_true", help="sizes 10000,100000 (unless --sizes), one run each"
    )
    ap.add_argument("--repeats", type=int, help="runs of each stage and its floor (default 3)")
    ap.add_argument("--out", default=runner.RESULTS, help="the table's file")
    ap.add_argument(
        "--only",
        help=f"run only these stages, e.g. emitter,merge ({', '.join(runner.STAGES)}; the "
        "table then goes to bench/results-<stages>.md unless --out is given)",
    )
    a = ap.parse_args(argv)
    if a.repeats is not None and a.repeats < 1:
        print("error: --repeats must be at least 1", file=sys.stderr)
        return 2
    return runner.run(a)


if __name__ == "__main__":
    raise SystemExit(main())
