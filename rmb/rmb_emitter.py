#!/usr/bin/env python3
"""RMB emitter: appends schema-valid v1 events to `paths.queue` under the safety gates.

Blueprint section 5. Reads configs/rmb_v17.yaml and a source (`--source sim|stdin|replay`);
writes the queue (`logs/rmb_events.jsonl`), `logs/rejects/rmb_input.jsonl` for bad input
lines and `logs/.state/<name>.json|.stats`. The core (gates, batching, disk-full handling,
sources) is lumen/emitter.py.
"""

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path: this checkout's lumen if this Python has none
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from lumen.emitter import from_argv
from lumen.proc import cli_main


def main(argv=None):
    return from_argv(argv, __doc__.split("\n\n")[0])


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
