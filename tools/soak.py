#!/usr/bin/env python3
"""make soak: the whole stack under load, faults and bad input, checked for loss.

The flags; the soak itself (what it starts, breaks and checks) is lumen.harness.soak.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lumen.harness import soak  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--rate", type=int, default=20_000, help="emitter events/s")
    ap.add_argument("--duration", type=float, help="seconds of faults (default: the emit time)")
    ap.add_argument("--kills", type=int, default=3, help="SIGKILLs per consumer")
    ap.add_argument("--rotations", type=int, default=3, help="logrotate runs (rename)")
    ap.add_argument("--copytruncates", type=int, default=2, help="copytruncate rotations")
    ap.add_argument("--bad-lines", type=int, default=25)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", help="scratch directory (default: a new temp dir)")
    ap.add_argument(
        "--hog",
        choices=("cpu", "disk", "cpu,disk"),
        help="run beside a busy-loop per core and/or a write+fsync loop",
    )
    ap.add_argument(
        "--break-checkpoint",
        action="store_true",
        help="corrupt the ingester's checkpoint once (the soak must then FAIL)",
    )
    args = ap.parse_args(argv)
    if args.duration is None:
        args.duration = max(5.0, 0.8 * args.events / args.rate)
    return soak.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
