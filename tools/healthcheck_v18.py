#!/usr/bin/env python3
"""health (blueprint section 43): is each Lumen endpoint answering?

Checks the RMB exporter (/metrics, :9409), the URE exporter (/metrics_ure, :9410) and the
API (/healthz, :8088), ports taken from the configs (and their env overrides), with
`requests` and a 1 s timeout. One line per target per round:
`[health] rmb_exporter http://127.0.0.1:9409/metrics 200 3.1ms`, or `DOWN (reason)`.
By default it repeats every `--interval` seconds until Ctrl-C (the blueprint's loop);
`--once` checks once and exits 1 when any target is down.
"""

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path: this checkout's lumen if this Python has none
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import argparse
import time

from lumen import CONFIGS, config  # first: it says what this Python lacks, if anything
from lumen.proc import cli_main

import requests


def _url(host, port, path):
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{host}:{port}{path}"


def targets(rmb_cfg, ure_cfg, api_cfg):
    r = config.load(rmb_cfg, "rmb_v17")["exporter"]
    u = config.load(ure_cfg, "ure_v18")["exporter"]
    a = config.load(api_cfg, "api_v18")["api"]
    return [
        ("rmb_exporter", _url(r["host"], r["port"], "/metrics")),
        ("ure_exporter", _url(u["host"], u["port"], "/metrics_ure")),
        ("api", _url(a["host"], a["port"], "/healthz")),
    ]


def check(name, url, session):
    t0 = time.perf_counter()
    try:
        r = session.get(url, timeout=1.0)
        ms = (time.perf_counter() - t0) * 1000
        ok = r.status_code == 200
        return ok, f"[health] {name} {url} {r.status_code} {ms:.1f}ms" + ("" if ok else " DOWN")
    except requests.RequestException as e:
        return False, f"[health] {name} {url} DOWN ({type(e).__name__})"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--once", action="store_true", help="check once; exit 1 if any is down")
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--rmb-config", default=str(CONFIGS / "rmb_v17.yaml"))
    ap.add_argument("--ure-config", default=str(CONFIGS / "ure_v18.yaml"))
    ap.add_argument("--api-config", default=str(CONFIGS / "api_v18.yaml"))
    args = ap.parse_args(argv)
    tgts = targets(args.rmb_config, args.ure_config, args.api_config)
    with requests.Session() as s:
        while True:
            results = [check(n, u, s) for n, u in tgts]
            for _, line in results:
                print(line, flush=True)
            if args.once:
                return 0 if all(ok for ok, _ in results) else 1
            time.sleep(args.interval)


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
