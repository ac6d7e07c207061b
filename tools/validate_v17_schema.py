#!/usr/bin/env python3
"""validate.v17.schema: every schema is a valid Draft-7 schema, every config validates
against its own schema, and tests/fixtures/rmb_sample.json is a valid v1 event.

Prints one summary line (`--verbose`: one line per check) and
`[validate.v17.schema] RESULT = OK`, or each failure, `RESULT = FAIL` and exit status 1.
The checks: lumen/validate.py.
"""

import sys
from pathlib import Path

if __name__ == "__main__":  # run by path: this checkout's lumen if this Python has none
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import argparse

from lumen.validate import run, summary


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-v", "--verbose", action="store_true", help="one line per check passed")
    args = ap.parse_args(argv)
    passed = []
    failures = run(out=print if args.verbose else passed.append)
    for f in failures:
        print(f"[validate] FAIL {f}", file=sys.stderr)
    if not args.verbose and not failures:
        print(f"[validate] {summary(passed)}: OK")
    print(f"[validate.v17.schema] RESULT = {'FAIL' if failures else 'OK'}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
