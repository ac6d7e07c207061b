#!/usr/bin/env python3
"""safety.music.render: turn a stretch of logs/safety_music_events.jsonl into .wav and .mid.

Blueprint section 13. Reads configs/safety_music_v17.yaml and the events of the last
`--minutes` (default 2) of event time, or `--from/--to` (RFC 3339); writes `<out>.wav` and
`<out>.mid` (default logs/safety_music_render). Exit 1 when the stretch holds no event.
The work is lumen/safety/render.py.
"""

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path: this checkout's lumen if this Python has none
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import argparse
import time

from lumen import CONFIGS
from lumen.proc import cli_main
from lumen.safety.loop import load_config
from lumen.safety.render import render
from lumen.timefmt import seconds as parse_ts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(CONFIGS / "safety_music_v17.yaml"))
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--from", dest="t_from", help="start (RFC 3339); default now - minutes")
    ap.add_argument("--to", dest="t_to", help="end (RFC 3339); default now")
    ap.add_argument("--out", default="logs/safety_music_render", help="output path prefix")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    try:
        t_to = parse_ts(args.t_to) if args.t_to else time.time()
        t_from = parse_ts(args.t_from) if args.t_from else t_to - args.minutes * 60
    except ValueError as e:
        print(f"error: --from/--to: {e}", file=sys.stderr)
        return 2
    return render(cfg, t_from, t_to, args.out)


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
