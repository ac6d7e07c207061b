#!/usr/bin/env python3
"""Safety Music levels for given inputs: residual entropy and rollback ratio -> levels.

Blueprint section 13. Prints the levels the loop would give (one JSON object: residual,
rollback_ratio, final) under the bands of configs/safety_music_v17.yaml; an input given as
`-` is undefined (no event yet). The mapping itself is lumen/safety/levels.py.
"""

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path: this checkout's lumen if this Python has none
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import argparse
import json

from lumen import CONFIGS
from lumen.proc import cli_main
from lumen.safety.levels import levels
from lumen.safety.loop import load_config


def fraction(text):
    if text == "-":
        return None
    v = float(text)
    if not 0.0 <= v <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text!r} is not a number in [0, 1] or -")
    return v


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("residual", type=fraction, help="residual entropy in [0, 1], or -")
    ap.add_argument("ratio", type=fraction, help="rollback ratio in [0, 1], or -")
    ap.add_argument("--config", default=str(CONFIGS / "safety_music_v17.yaml"))
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    print(json.dumps(levels(args.residual, args.ratio, cfg["mapping"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
