#!/usr/bin/env python3
"""Safety Music loop (blueprint section 13): residual entropy and rollback ratio -> levels.

Reads the RMB event log (or the exporter's /metrics) and configs/safety_music_v17.yaml;
appends one event a tick to logs/safety_music_events.jsonl, plus the configured sound
sinks (OSC, MIDI, WAV). SIGTERM/SIGINT: flush, checkpoint, exit 0. The logic is in
lumen/safety/ (loop.py first).
"""

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path: this checkout's lumen if this Python has none
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import argparse

from lumen import CONFIGS
from lumen.proc import Lifecycle, cli_main
from lumen.safety.inputs import CONSUMER
from lumen.safety.loop import SafetyLoop, load_config


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(CONFIGS / "safety_music_v17.yaml"))
    ap.add_argument("--source", choices=("log", "metrics"), help="override inputs.source")
    ap.add_argument("--hz", type=float, help="override loop.hz")
    ap.add_argument("--ticks", type=int, help="stop after this many ticks")
    ap.add_argument("--name", default=CONSUMER, help="process name (PID file run/NAME.pid)")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, {"inputs.source": args.source, "loop.hz": args.hz})
    loop = SafetyLoop(cfg)
    with Lifecycle(args.name) as life:
        print(
            f"[safety] levels from {loop.source} every {loop.tick_s:g}s -> "
            f"{cfg['output']['channel']}",
            flush=True,
        )
        try:
            loop.run(life.stop, life.ready, args.ticks)
        finally:
            loop.close()
    print(f"[safety] stopped after {loop.ticks} ticks", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
