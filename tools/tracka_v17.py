#!/usr/bin/env python3
"""Track A: the restore and exit checks of blueprint section 0 (and sections 9, 15, 24).

    tracka_v17.py init   feature.v17.init: create logs/ data/ run/, check Python and deps
    tracka_v17.py fake   metrics.fake.v17: a seeded, bounded fake v1 stream ending now
    tracka_v17.py slo    slo.report: the policies of resonance_v3.policy.yaml over their
                         windows (event timestamps), value, threshold, PASS/FAIL/NO_DATA
    tracka_v17.py kpi    kpi.snapshot: append one row to the KPI CSV (header when new)
    tracka_v17.py exit   trackA.exit: gate on all of the above -> [exit] RESULT = PASS|FAIL

Reads configs/trackA_v17.yaml, configs/rmb_v17.yaml (KPI CSV path) and
configs/resonance_v3.policy.yaml. The checks themselves: lumen/tracka.py.
"""

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path: this checkout's lumen if this Python has none
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import argparse

from lumen import CONFIGS, config, tracka
from lumen.proc import cli_main


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[1],
    )
    ap.add_argument("command", choices=tracka.COMMANDS)
    ap.add_argument("--config", default=str(CONFIGS / "trackA_v17.yaml"))
    ap.add_argument("--rmb-config", default=str(CONFIGS / "rmb_v17.yaml"))
    ap.add_argument("--stream", help="override stream (the v1 log the checks read)")
    ap.add_argument("--wait", type=float, help="override checks.wait_s")
    ap.add_argument(
        "--no-exporter", action="store_true", help="trackA.exit: do not require exporter.v17.serve"
    )
    args = ap.parse_args(argv)
    cfg = config.load(
        args.config, "trackA_v17", overrides={"stream": args.stream, "checks.wait_s": args.wait}
    )
    return tracka.COMMANDS[args.command](cfg, args)


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
