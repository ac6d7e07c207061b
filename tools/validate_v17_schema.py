#!/usr/bin/env python3
"""validate.v17.schema: every schema is a valid Draft-7 schema, every config validates
against its own schema, and tests/fixtures/rmb_sample.json is a valid v1 event.

Prints one line per check and `[validate.v17.schema] RESULT = OK`, or `RESULT = FAIL`
with the failures and exit status 1. The checks: lumen/validate.py.
"""

import argparse
import sys

from lumen.validate import run


def main(argv=None):
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    failures = run()
    for f in failures:
        print(f"[validate] FAIL {f}", file=sys.stderr)
    print(f"[validate.v17.schema] RESULT = {'FAIL' if failures else 'OK'}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
