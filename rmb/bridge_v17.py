#!/usr/bin/env python3
"""The memory bridge: applies the `memory_bridge` ops of committed v1 events to a KV store.

Blueprint section 1 (SQLite per milestone M3, section 34). Reads `paths.queue` (consumer
`rmb_bridge`), writes `memory_bridge.store` (default data/rmb_bridge.db); which ops apply
and in what order is lumen/bridge.py.

    bridge_v17.py apply [--follow]   catch up with the log (and keep following)
    bridge_v17.py rebuild            drop the store and replay the log from its oldest file
    bridge_v17.py get KEY            the stored value of KEY (exit 1 when absent)
    bridge_v17.py slot SLOT_ID       the keys held in a slot
"""

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path: this checkout's lumen if this Python has none
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import json

from lumen import config
from lumen.bridge import (
    CONSUMER,
    DEFAULT_STORE,
    Bridge,
    build_parser,
    get,
    open_store,
    rebuild_from,
    size,
    slot_keys,
)
from lumen.proc import Lifecycle, cli_main


def main(argv=None):
    args = build_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    cfg = config.load(
        args.config,
        "rmb_v17",
        overrides={"memory_bridge.store": args.store, "paths.queue": args.queue},
    )
    store = cfg["memory_bridge"].get("store", DEFAULT_STORE)
    queue = cfg["paths"]["queue"]

    if args.cmd == "get":
        row = get(open_store(store), args.key)
        if row is None:
            print(f"error: key {args.key!r} not in {store}", file=sys.stderr)
            return 1
        print(json.dumps(row))
        return 0
    if args.cmd == "slot":
        rows = slot_keys(open_store(store), args.slot_id)
        for key, vh in rows:
            print(f"{key}\t{vh}")
        print(f"[bridge] slot {args.slot_id}: {len(rows)} keys", file=sys.stderr)
        return 0
    if args.cmd == "rebuild":
        print(f"[bridge] rebuilding {store} from {rebuild_from(store, queue)}")
    bridge = Bridge(queue, store)
    with Lifecycle(CONSUMER) as life:
        life.ready()
        bridge.run(life.stop, follow=getattr(args, "follow", False))
    print(
        f"[bridge] applied {bridge.upserts} upserts, {bridge.deletes} deletes "
        f"({sum(bridge.consumer.rejected.values())} lines rejected); "
        f"store holds {size(bridge.db)} keys"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
