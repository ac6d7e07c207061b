#!/usr/bin/env python3
"""ops.build: generate the ops files that have another file as their source.

Reads ops/prometheus/scrape.yml, rules/*.rules.yml and ops/alertmanager/alertmanager.yml;
writes ops/prometheus/prometheus.yml (--prometheus-out), prometheus.compose.yml, the
PrometheusRule resources (blueprint sections 14 and 38) and alertmanager.compose.yml.
`--check` only compares and exits 1 when a committed file differs from its source.
`--hosts FILE`: one Prometheus for many hosts, each host's targets labelled `host` (the
file's format: lumen/ops_build.py). The rendering: lumen/ops_build.py.
"""

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path: this checkout's lumen if this Python has none
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import argparse

from lumen import ops_build


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--scrape", default=str(ops_build.PROM / "scrape.yml"))
    ap.add_argument("--prometheus-out", default=str(ops_build.PROM / "prometheus.yml"))
    ap.add_argument("--hosts", help="hosts file: scrape every host's exporters, labelled host")
    a = ap.parse_args(argv)
    return ops_build.write(a.scrape, a.prometheus_out, a.check, a.hosts)


if __name__ == "__main__":
    raise SystemExit(main())
