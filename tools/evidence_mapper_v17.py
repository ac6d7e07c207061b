#!/usr/bin/env python3
"""evidence.map (blueprint section 31): map RMB events to evidence bundles, exactly once.

Reads `paths.queue` through the shared tailer (consumer `evidence_mapper`) and appends one
bundle per valid event to `logs/evidence_bundle.jsonl`; running it twice appends nothing
the second time. Bad lines are quarantined to `logs/rejects/rmb_events.jsonl` and counted.
The work is lumen/evidence.py.
Departure: the blueprint re-maps the whole log on every run (duplicating every bundle).
"""

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path: this checkout's lumen if this Python has none
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import argparse

from lumen import CONFIGS, config
from lumen.evidence import run
from lumen.proc import cli_main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(CONFIGS / "rmb_v17.yaml"))
    ap.add_argument("--queue", help="override paths.queue")
    ap.add_argument("--out", default="logs/evidence_bundle.jsonl")
    args = ap.parse_args(argv)
    cfg = config.load(args.config, "rmb_v17", overrides={"paths.queue": args.queue})
    mapped, skipped, rejected = run(cfg["paths"]["queue"], args.out)
    print(
        f"[evidence] mapped {mapped} events to {args.out}"
        + (f" ({skipped} already mapped)" if skipped else "")
        + (f", {rejected} lines rejected" if rejected else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
