#!/usr/bin/env python3
"""db.init (blueprint section 40): create or migrate the SQLite store (data/lumen.db).

Creates the `rmb` and `ure` tables (lumen/storage.py) in WAL mode, or brings an existing
database up to the current schema version. Running it twice is harmless.
Prints `[sqlite] init ok` (the blueprint's line) with the schema version.
"""

import argparse
import sqlite3
import sys

from lumen import CONFIGS, config, storage
from lumen.proc import cli_main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(CONFIGS / "api_v18.yaml"))
    ap.add_argument("--db", help="override db (default data/lumen.db)")
    args = ap.parse_args(argv)
    path = config.load(args.config, "api_v18", overrides={"db": args.db})["db"]
    try:
        db = storage.connect(path)
        old, new = storage.migrate(db)
    except sqlite3.DatabaseError as e:
        print(f"error: {path}: {e}", file=sys.stderr)
        return 1
    how = "created" if old == 0 else ("migrated from v%d" % old if old < new else "up to date")
    print(f"[sqlite] init ok: {path} schema v{new} ({how})")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
