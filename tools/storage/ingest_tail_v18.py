#!/usr/bin/env python3
"""db.ingest (blueprint section 40): tail rmb_events.jsonl and resonance_events_v2.jsonl
(and safety_music_events.jsonl, for the live page) into SQLite, exactly once.

Reads configs/api_v18.yaml (db, ingest.*); writes data/lumen.db (rows and offsets). How:
lumen/ingest.py.

    ingest_tail_v18.py            follow both logs until SIGTERM (make db.ingest)
    ingest_tail_v18.py --once     backfill what is there, then exit
"""

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path: this checkout's lumen if this Python has none
    sys.path.append(str(Path(__file__).resolve().parents[2]))

import argparse

from lumen import CONFIGS, config, ingest
from lumen.proc import cli_main


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[-1],
    )
    ap.add_argument("--config", default=str(CONFIGS / "api_v18.yaml"))
    ap.add_argument("--once", action="store_true", help="backfill, then exit")
    ap.add_argument("--name", default="ingest", help="process name (PID file run/NAME.pid)")
    args = ap.parse_args(argv)
    return ingest.run(config.load(args.config, "api_v18"), args.name, args.once)


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
