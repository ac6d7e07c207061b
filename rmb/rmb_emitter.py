#!/usr/bin/env python3
"""RMB emitter: appends schema-valid v1 events to `paths.queue` under the safety gates.

Blueprint section 5. Reads configs/rmb_v17.yaml and a source (`--source sim|stdin|replay`);
writes the queue (`logs/rmb_events.jsonl`), `logs/rejects/rmb_input.jsonl` for bad input
lines and `logs/.state/<name>.json|.stats`. The core (gates, batching, disk-full handling,
sources) is lumen/emitter.py.
"""

import sys

from lumen import config
from lumen.emitter import build_parser, run, usage_error
from lumen.proc import cli_main


def main(argv=None):
    args = build_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    cfg = config.load(
        args.config,
        "rmb_v17",
        overrides={
            "loop.hz": args.hz,
            "loop.batch_size": args.batch_size,
            "loop.flush_ms": args.flush_ms,
            "paths.queue": args.queue,
        },
    )
    err = usage_error(args)
    if err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return run(args, cfg)


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
