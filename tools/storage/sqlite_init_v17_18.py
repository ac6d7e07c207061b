#!/usr/bin/env python3
"""db.init (blueprint section 40): create or migrate the store (data/lumen.db, or the
PostgreSQL database of `db_url` / LUMEN_DB_URL).

Creates the tables (lumen/storage.py; lumen/pgstore.py), or brings an existing database
up to the current schema version. Running it twice, or on many hosts at once, is harmless.
Prints `[sqlite] init ok` (the blueprint's line), or `[postgres] init ok`, with the
schema version.
"""

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path: this checkout's lumen if this Python has none
    sys.path.append(str(Path(__file__).resolve().parents[2]))

import argparse

from lumen import CONFIGS, config, storage
from lumen.proc import cli_main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(CONFIGS / "api_v18.yaml"))
    ap.add_argument("--db", help="override db (default data/lumen.db)")
    args = ap.parse_args(argv)
    cfg = config.load(args.config, "api_v18", overrides={"db": args.db})
    return storage.init(cfg)


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
