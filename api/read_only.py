#!/usr/bin/env python3
"""Read-only HTTP API over data/lumen.db (blueprint sections 41 and 47), on 127.0.0.1:8088.

Reads configs/api_v18.yaml; serves /api/rmb:last, /api/ure:last, /api/rmb, /api/ure,
/api/alerts, /api/summary, /api/hosts, /api/series, /api/slo, /api/stream (server-sent
events), /healthz, /openapi.json and the live page (/); the lists also as CSV or NDJSON,
streamed (docs/api.md). The endpoints, the connection pool and the errors:
lumen/api/app.py.
"""

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path: this checkout's lumen if this Python has none
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import argparse

from lumen import CONFIGS, config
from lumen.api.app import serve
from lumen.proc import cli_main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(CONFIGS / "api_v18.yaml"))
    ap.add_argument("--port", type=int, help="override api.port (8088)")
    ap.add_argument("--host", help="override api.host (127.0.0.1)")
    ap.add_argument("--name", default="api", help="process name (PID file run/NAME.pid)")
    args = ap.parse_args(argv)
    cfg = config.load(
        args.config, "api_v18", overrides={"api.port": args.port, "api.host": args.host}
    )
    return serve(cfg, args.name)


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
