#!/usr/bin/env python3
"""Turn a Prometheus scrape job in ops/prometheus/scrape.yml off or on (blueprint 37.10).

`--disable JOB` comments the job's block out (`#off# ` before each of its lines);
`--enable JOB` restores it. Idempotent; the file stays valid YAML either way. After a
change, Prometheus needs a reload (`make prom.reload` once Prometheus runs under Lumen).
"""

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path: this checkout's lumen if this Python has none
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import argparse
import re

from lumen import ROOT

MARK = "#off# "


def toggle(text, job, enable):
    out, lines, i = [], text.splitlines(), 0
    start = re.compile(rf"^(?:{re.escape(MARK)})?(\s*)- job_name:\s*{re.escape(job)}\s*$")
    found = False
    while i < len(lines):
        m = start.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        found = True
        indent = len(m.group(1))
        block = [lines[i]]
        i += 1
        while i < len(lines):
            body = lines[i][len(MARK) :] if lines[i].startswith(MARK) else lines[i]
            if body.strip() and (len(body) - len(body.lstrip())) <= indent:
                break
            block.append(lines[i])
            i += 1
        for ln in block:
            plain = ln[len(MARK) :] if ln.startswith(MARK) else ln
            out.append(plain if enable else MARK + plain)
    if not found:
        raise KeyError(job)
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--disable", metavar="JOB")
    g.add_argument("--enable", metavar="JOB")
    ap.add_argument("--file", default=str(ROOT / "ops/prometheus/scrape.yml"))
    a = ap.parse_args(argv)
    p = Path(a.file)
    job = a.disable or a.enable
    try:
        new = toggle(p.read_text(), job, enable=bool(a.enable))
    except KeyError:
        print(f"error: {p}: no scrape job {job!r}", file=sys.stderr)
        return 2
    p.write_text(new)
    print(f"[scrape] {job} {'enabled' if a.enable else 'disabled'} in {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
