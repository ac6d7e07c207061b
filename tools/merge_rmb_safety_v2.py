#!/usr/bin/env python3
"""merge.v2 (blueprint section 37.3): RMB and Safety Music events -> resonance_events_v2.jsonl.

Reads `paths.v1_rmb` and `paths.v1_safe` of configs/ure_v18.yaml and appends their v2
mapping to `paths.v2_log`, exactly once (lumen/merge.py: running it twice appends nothing
the second time; a crash is repaired on the next run; rotation is followed). `--follow`
keeps merging as events arrive (trackD.start runs it so). A one-shot run while the
follower is running hands over to it (says so, exit 0); a second follower exits 2 naming
the first. Bad input lines and unmappable events go to logs/rejects/<stream>.jsonl.

Departure from the blueprint: it re-read both inputs from the start on every run,
duplicating the whole v2 log each time, and dropped every error silently.
"""

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path: this checkout's lumen if this Python has none
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import argparse

from lumen import CONFIGS, config, lock
from lumen.merge import Merger, tty_progress
from lumen.proc import Lifecycle, cli_main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(CONFIGS / "ure_v18.yaml"))
    ap.add_argument("--follow", action="store_true", help="keep merging new events")
    ap.add_argument(
        "--name",
        help="process name (PID file run/NAME.pid; default ure_merge "
        "with --follow, merge_v2 without)",
    )
    args = ap.parse_args(argv)
    name = args.name or ("ure_merge" if args.follow else "merge_v2")
    cfg = config.load(args.config, "ure_v18")
    try:
        m = Merger(cfg["paths"])
    except lock.Busy as e:
        if args.follow:
            raise
        # Hand over: the running merge (the follower of trackD.start) merges new events
        # itself, exactly once; a second writer could only duplicate them.
        print(f"[merge] nothing to do here: {e}; it merges new events as they arrive")
        return 0
    progress = tty_progress()
    with Lifecycle(name) as life:
        life.ready()
        m.run(life.stop, follow=args.follow, progress=progress)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(m.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
