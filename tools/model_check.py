#!/usr/bin/env python3
"""Model-based check: a seeded random plan of appends, rotations, kills and operator
commands against the real processes, checked against a plain in-memory model.

The entry of `make soak`'s long mode and of replays; the check is lumen.harness.model
(its docstring, printed by --help, says what it does and checks).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lumen.harness import model  # noqa: E402


def main(argv=None) -> int:
    doc = model.__doc__
    ap = argparse.ArgumentParser(
        description=doc.split("\n\n")[0],
        epilog=doc.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--seed", type=int, default=1, help="plan seed (default 1)")
    ap.add_argument("--seeds", help="several seeds: 1-20 or 1,4,9 (overrides --seed)")
    ap.add_argument("--steps", type=int, help="steps per seed (default 30; --long 300)")
    ap.add_argument(
        "--long", action="store_true", help="the soak mode: 300 steps per seed, 60 s bounded waits"
    )
    ap.add_argument("--plan", help="run this plan instead of a seeded one ('op args; ...')")
    ap.add_argument(
        "--known",
        action="store_true",
        help="also generate the bad-line kinds of KNOWN_ISSUES, and do not "
        "wait for the readers before rotating a fresh live file "
        "(KNOWN_SEQUENCES): expect failures",
    )
    ap.add_argument("--timeout", type=float, help="bounded wait per check (default 30 s)")
    ap.add_argument(
        "--dir",
        help="scratch directory, kept (default: a new temp dir, removed unless the run fails)",
    )
    ap.add_argument(
        "--shrink",
        action="store_true",
        help="on failure, look for a shorter failing plan and print it",
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="say each step and check")
    args = ap.parse_args(argv)
    steps = args.steps or (300 if args.long else 30)
    timeout = args.timeout or (60.0 if args.long else 30.0)
    try:
        seeds = model.parse_seeds(args.seeds) if args.seeds else [args.seed]
    except ValueError:
        ap.error(f"--seeds: expected e.g. 1-20 or 1,4,9, got {args.seeds!r}")
    if not seeds or steps < 1:
        ap.error("nothing to run (no seeds, or --steps below 1)")
    fixed = None
    if args.plan:
        try:
            fixed = model.parse_plan(args.plan)
        except ValueError as e:
            ap.error(str(e))
    return model.run_seeds(
        seeds,
        steps,
        timeout,
        fixed,
        args.long,
        args.known,
        args.dir,
        args.verbose,
        args.shrink,
        script=Path(__file__).resolve(),
    )


if __name__ == "__main__":
    raise SystemExit(main())
