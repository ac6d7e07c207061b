#!/usr/bin/env python3
"""tune.v18 (blueprint section 37.7): residual stddev over the last 10 minutes of event time
in the v2 log, and a suggestion.

Reads `paths.v2_log` of configs/ure_v18.yaml from its end back to the start of the window
(lumen.recent), using upstream events only (the URE loop's own ticks are its output, not
the signal). The threshold is `slo.residual_std_10m_max` (0.03). Prints
`[tune.v18] residual.stddev_10m=...` and `SUGGEST: LOWER_HZ & REDUCE_BATCH` or
`SUGGEST: maintain`; `[tune.v18] no-data` when the window is empty.
Departure: the blueprint takes the last 3000 lines whatever their time, its own echo included.
"""

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path: this checkout's lumen if this Python has none
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import argparse
import time

from lumen import CONFIGS, config, events
from lumen.recent import recent_events
from lumen.proc import cli_main
from lumen.ure import LOOP_ID
from lumen.windows import EventWindow


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(CONFIGS / "ure_v18.yaml"))
    ap.add_argument("--window", type=float, default=600.0, help="seconds of event time (600)")
    args = ap.parse_args(argv)
    cfg = config.load(args.config, "ure_v18")
    evs, _ = recent_events(
        cfg["paths"]["v2_log"],
        args.window,
        time.time(),
        events.Validator.named("resonance_event_v2.json"),
    )
    w = EventWindow(args.window)
    for t, e in evs:
        if e["trace"]["loop_id"] != LOOP_ID:
            w.add(t, e["phase_field"]["residual_entropy"])
    if w.count < 2:
        print("[tune.v18] no-data")
        return 0
    sd = w.stddev()
    print(f"[tune.v18] residual.stddev_10m={sd:.4f} (upstream events={w.count})")
    print(
        "SUGGEST: LOWER_HZ & REDUCE_BATCH"
        if sd > cfg["slo"]["residual_std_10m_max"]
        else "SUGGEST: maintain"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
