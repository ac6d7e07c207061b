#!/usr/bin/env python3
"""The README's screenshot of the live page, from a real run of the stack.

A private stack (`make up` in a temp directory, free ports, the default configs) runs for
--minutes; then the live page is opened in headless Chromium and, once every chart has
data, written to --out; the stack is stopped and the temp directory removed, also on
failure or SIGTERM. Needs chromium on PATH and Playwright (the [test] extra). What it
starts and checks: lumen.harness.livepage.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lumen import ROOT  # noqa: E402
from lumen.harness import livepage  # noqa: E402
from lumen.simulate import PROFILES  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--out", type=Path, default=ROOT / "docs/live_page.png", help="the PNG to write"
    )
    ap.add_argument(
        "--minutes", type=float, default=3.0, help="how long the stack runs first (default 3)"
    )
    ap.add_argument("--profile", choices=PROFILES, help="the emitter's profile (default: steady)")
    ap.add_argument(
        "--dir", type=Path, help="where the stack's temp directory is made (default: TMPDIR)"
    )
    args = ap.parse_args(argv)
    if not 0 < args.minutes <= 60:
        print("error: --minutes must be more than 0 and at most 60", file=sys.stderr)
        return 2
    for flag, d in (("--out", args.out.parent), ("--dir", args.dir)):
        if d is not None and not d.is_dir():
            print(f"error: {flag}: no directory {d}", file=sys.stderr)
            return 2
    code = livepage.shoot(args.out.resolve(), args.minutes, args.profile, args.dir)
    if code == 0:
        print(f"{args.out}: the live page {args.minutes:g} minutes after make up")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
