#!/usr/bin/env python3
"""tune.suggest (blueprint section 28): residual stddev and rollback ratio over the last
10 minutes of event time in the live queue, and the blueprint's suggestions.

Reads `paths.queue` of configs/rmb_v17.yaml from its end back to the start of the window
(lumen.recent): a 1 GB log costs what its last 10 minutes cost. The thresholds are the
policies' (configs/resonance_v3.policy.yaml: RMB-RES-002 0.03, RMB-ROLL-001 0.05); the
suggested values are derived from the current config the way the blueprint's are
(batch_size x0.6, hz -1, residual_entropy_max -0.05: 20->12, 5->4, 0.85->0.80).
Prints `no-data` when the window is empty. Departure: the blueprint counts the last 3000
lines whatever their time, and divides rollbacks in the whole file by that window.
"""

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path: this checkout's lumen if this Python has none
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import argparse
import time

from lumen import CONFIGS, config, events, vocab
from lumen.proc import cli_main
from lumen.recent import recent_events
from lumen.windows import EventWindow


def suggestions(sd, ratio, cfg, policies):
    """Lines of advice for the measured stddev and ratio (pure)."""
    th = {p["evaluate"]["metric"].rsplit("_", 1)[0]: p["evaluate"]["threshold"] for p in policies}
    sd_max = th.get("residual_entropy_last_stddev", th.get("residual_stddev", 0.03))
    ratio_max = th.get("rollback_ratio", 0.05)
    loop, gates, out = cfg["loop"], cfg["safety_gates"], []
    if sd is not None and sd > sd_max:
        out.append(
            f"SUGGEST: reduce batch_size {loop['batch_size']}→"
            f"{max(1, round(loop['batch_size'] * 0.6))}, "
            f"hz {loop['hz']:g}→{max(1, loop['hz'] - 1):g}"
        )
    if ratio is not None and ratio > ratio_max:
        out.append(
            f"SUGGEST: residual_entropy_max {gates['residual_entropy_max']:.2f}→"
            f"{max(0.0, gates['residual_entropy_max'] - 0.05):.2f} "
            f"and enable downgrade-to-observe"
        )
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(CONFIGS / "rmb_v17.yaml"))
    ap.add_argument("--policy", default=str(CONFIGS / "resonance_v3.policy.yaml"))
    ap.add_argument("--queue", help="override paths.queue")
    ap.add_argument("--window", type=float, default=600.0, help="seconds of event time (600)")
    args = ap.parse_args(argv)
    cfg = config.load(args.config, "rmb_v17", overrides={"paths.queue": args.queue})
    policies = config.load(args.policy, "resonance_v3.policy")["policies"]
    now = time.time()
    evs, stats = recent_events(
        cfg["paths"]["queue"], args.window, now, events.Validator.named("rmb_event_v1.json")
    )
    if not evs:
        print("no-data")
        return 0
    win = EventWindow(args.window)
    for t, e in evs:
        win.add(t, e["resonance_v3"]["residual_entropy"], e["event_type"] == vocab.ROLLBACK)
    sd, ratio = win.stddev() or 0.0, win.ratio()
    print(
        f"residual.stddev_10m={sd:.4f} rollback.ratio={ratio:.4f} "
        f"(events={win.count}, lines scanned={stats['lines_scanned']})"
    )
    for line in suggestions(sd, ratio, cfg, policies):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
