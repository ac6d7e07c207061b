#!/usr/bin/env python3
"""validate.v17.schema: every schema is a valid Draft-7 schema, every config validates
against its own schema, and tests/fixtures/rmb_sample.json is a valid v1 event.

Prints one line per check and `[validate.v17.schema] RESULT = OK`, or `RESULT = FAIL`
with the failures and exit status 1.
"""
import argparse
import json
import sys

import jsonschema

from lumen import CONFIGS, ROOT, SCHEMAS, config, events


def run(out=print):
    failures = []
    for p in sorted(SCHEMAS.glob("*.json")) + sorted((CONFIGS / "schemas").glob("*.json")):
        try:
            jsonschema.Draft7Validator.check_schema(json.loads(p.read_text()))
            out(f"[validate] schema {p.relative_to(ROOT)}: OK")
        except (ValueError, jsonschema.SchemaError) as e:
            failures.append(f"schema {p.relative_to(ROOT)}: {str(e).splitlines()[0]}")
    for p in sorted(CONFIGS.glob("*.yaml")):
        try:
            config.load(p)
            out(f"[validate] config {p.relative_to(ROOT)}: OK")
        except config.ConfigError as e:
            failures.append(f"config {e}")
    sample = ROOT / "tests" / "fixtures" / "rmb_sample.json"
    _, err = events.parse(sample.read_bytes().strip(), events.Validator.named("rmb_event_v1.json"))
    if err:
        failures.append(f"fixture {sample.relative_to(ROOT)}: {err[0]}: {err[1]}")
    else:
        out(f"[validate] fixture {sample.relative_to(ROOT)}: OK")
    return failures


def main(argv=None):
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    failures = run()
    for f in failures:
        print(f"[validate] FAIL {f}", file=sys.stderr)
    print(f"[validate.v17.schema] RESULT = {'FAIL' if failures else 'OK'}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
