#!/usr/bin/env python3
"""ure.verify (blueprint section 37.6): validate the newest v2 event and the last N events.

Reads `paths.v2_log` of configs/ure_v18.yaml from its end (lumen.recent) and checks the
newest event, then the last `--last` (100) events, against schemas/resonance_event_v2.json.
Prints `[ure.verify] OK` (the blueprint's line) or `[ure.verify] FAIL` with each bad
line's position from the end and reason, exit 1. A missing log, an empty one (no complete
line) or an unreadable one is a FAIL too, in one line saying which, exit 1: there is no
newest event to vouch for, and an OK would claim one (the blueprint's snippet crashed with
a traceback there). `make smoke.v18` appends a bounded batch of RMB events to an empty
queue first, so in a fresh checkout it verifies a real merged event and URE tick.
"""

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path: this checkout's lumen if this Python has none
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import argparse
import os

from lumen import CONFIGS, config, events
from lumen.recent import reverse_lines
from lumen.proc import cli_main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(CONFIGS / "ure_v18.yaml"))
    ap.add_argument("--last", type=int, default=100, help="how many newest events to check")
    args = ap.parse_args(argv)
    if args.last < 1:
        ap.error(f"--last must be at least 1, not {args.last}")
    path = config.load(args.config, "ure_v18")["paths"]["v2_log"]
    v = events.Validator.named("resonance_event_v2.json")
    bad, n = [], 0
    try:
        for raw in reverse_lines(path):
            if not raw.strip():
                continue
            n += 1
            _, err = events.parse(raw, v)
            if err:
                bad.append(f"line {n} from the end: {err[0]}: {err[1]}")
            if n >= args.last:
                break
    except OSError as e:
        print(f"[ure.verify] FAIL: cannot read {path}: {e.strerror or e}")
        return 1
    if n == 0:
        why = "holds no events yet" if os.path.exists(path) else "does not exist yet"
        print(f"[ure.verify] FAIL: {path} {why} (make merge.v2 / make trackD.start write it)")
        return 1
    if bad:
        print(f"[ure.verify] FAIL: {len(bad)} of the last {n} events are not valid v2")
        for b in bad[:20]:
            print(f"[ure.verify]   {b}", file=sys.stderr)
        return 1
    print(f"[ure.verify] OK (newest and last {n} events valid v2)")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
