#!/usr/bin/env python3
"""URE loop (blueprint section 37.4): the adaptive-rate loop of the Unified Resonance Engine.

`make trackD.start` runs it; the loop itself (what it observes, how it decides) is
lumen/ure.py. Reads the merged v2 log (`paths.v2_log` of configs/ure_v18.yaml, consumer
`ure_loop`) and appends one v2 event (entity `lumen.ure`, trace.loop_id `ure.v18`) to it
each tick, at the hz it regulates. `--ticks N` stops after N ticks. SIGTERM/SIGINT:
checkpoint and exit 0; a loop config the schema cannot catch (base_hz outside
[hz_min, hz_max], residual band inverted): one line and exit 2.

Departure from the blueprint: it regulated on the last line of the file it writes (after
one tick, its own echo); see lumen/ure.py.
"""

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path: this checkout's lumen if this Python has none
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import argparse

from lumen import CONFIGS, config
from lumen.proc import Lifecycle, cli_main
from lumen.ure import CONSUMER, UreLoop, config_error


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(CONFIGS / "ure_v18.yaml"))
    ap.add_argument("--ticks", type=int, help="stop after this many ticks")
    ap.add_argument("--name", default=CONSUMER, help="process name (PID file run/NAME.pid)")
    args = ap.parse_args(argv)
    cfg = config.load(args.config, "ure_v18")
    err = config_error(cfg)
    if err:
        print(f"error: {args.config}: {err}", file=sys.stderr)
        return 2
    loop = UreLoop(cfg)
    with Lifecycle(args.name) as life:
        life.ready()
        print(f"[ure] loop on {cfg['paths']['v2_log']} at {loop.hz:g} Hz", flush=True)
        loop.run(life.stop, args.ticks)
    print(f"[ure] stopped after {loop.iter} events", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
