#!/usr/bin/env python3
"""Alert receiver: Alertmanager's webhook -> logs/alerts.jsonl and OSC, on 127.0.0.1:9411.

POST /alerts takes Alertmanager's webhook payload (version 4); each alert becomes one line
of logs/alerts.jsonl (schemas/alert_event_v1.json), once per firing episode and once when
it resolves (Alertmanager's repeats are skipped, also across restarts), written and
fsynced before the 200. With osc.enabled each new line is also an OSC message
(/lumen/alert/firing or /lumen/alert/resolved: alertname, severity, summary). A body that
is not a notification is 400 (413 when too large), counted by reason. GET / (what this
is), /healthz, /metrics. Reads configs/alert_receiver_v18.yaml. The server:
lumen/alert_server.py; the mapping and deduplication: lumen/alerts.py.
"""

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path: this checkout's lumen if this Python has none
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import argparse

from lumen import CONFIGS, config
from lumen.alert_server import Receiver
from lumen.proc import cli_main, first_line, run_server


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(CONFIGS / "alert_receiver_v18.yaml"))
    ap.add_argument("--port", type=int, help="override receiver.port (9411)")
    ap.add_argument("--host", help="override receiver.host (127.0.0.1)")
    ap.add_argument("--log", help="override log (logs/alerts.jsonl)")
    ap.add_argument("--name", default="alert_receiver", help="process name (run/NAME.pid)")
    args = ap.parse_args(argv)
    cfg = config.load(
        args.config,
        "alert_receiver_v18",
        overrides={"receiver.port": args.port, "receiver.host": args.host, "log": args.log},
    )
    try:
        rx = Receiver(cfg, args.name)
    except OSError as e:
        print(f"error: cannot start the alert receiver: {first_line(e)}", file=sys.stderr)
        return 1
    r = cfg["receiver"]
    lines, bad = rx.rebuilt
    print(
        f"[alerts] {len(rx.seen)} alert keys read back from {cfg['log']} "
        f"({lines} lines, {bad} bad lines skipped); OSC "
        + (f"to {rx.osc.where}" if rx.osc else "off"),
        flush=True,
    )
    return run_server(
        args.name,
        rx.app,
        r["host"],
        r["port"],
        "[alerts] receiver on :{port}, Alertmanager's webhook: POST " + r["path"],
        timeout=r["request_timeout_s"],
        max_conns=r["max_conns"],
        post=rx.post,
        max_body=r["max_body_bytes"],
        on_error=rx.on_error,
    )


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
