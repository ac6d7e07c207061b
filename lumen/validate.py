"""The project's own files are valid (make validate.v17.schema, tools/validate_v17_schema.py):
every schema a Draft-7 schema, every config valid against its schema, and
tests/fixtures/rmb_sample.json (in the checkout: a dev check) a valid v1 event. Each check
that passes is a line through `out`; the failures are returned; `summary` counts the
passes for the one line `make validate.v17.schema` prints by default."""

import json

import jsonschema

from lumen import CONFIGS, ROOT, SCHEMAS, config, events
from lumen.proc import first_line


def shown(p):
    """`schemas/...` or `configs/...`, as in the repository, wherever the data is installed."""
    for base, name in ((CONFIGS, "configs"), (SCHEMAS, "schemas")):
        if p.is_relative_to(base):
            return f"{name}/{p.relative_to(base)}"
    return str(p)


KINDS = ("schema", "config", "fixture")


def summary(lines):
    """`9 schemas, 6 configs, 1 fixture` from the lines of the checks that passed."""
    counts = [(k, sum(ln.startswith(f"[validate] {k} ") for ln in lines)) for k in KINDS]
    return ", ".join(f"{n} {k}{'s' if n != 1 else ''}" for k, n in counts if n)


def run(out=print):
    """Every check, one line each through out when it passes; returns the failures."""
    failures = []
    for p in sorted(SCHEMAS.glob("*.json")) + sorted((CONFIGS / "schemas").glob("*.json")):
        try:
            jsonschema.Draft7Validator.check_schema(json.loads(p.read_text()))
            out(f"[validate] schema {shown(p)}: OK")
        except (ValueError, jsonschema.SchemaError) as e:
            failures.append(f"schema {shown(p)}: {first_line(e)}")
    for p in sorted(CONFIGS.glob("*.yaml")):
        try:
            config.load(p)
            out(f"[validate] config {shown(p)}: OK")
        except config.ConfigError as e:
            failures.append(f"config {e}")
    sample = ROOT / "tests" / "fixtures" / "rmb_sample.json"
    _, err = events.parse(sample.read_bytes().strip(), events.Validator.named("rmb_event_v1.json"))
    if err:
        failures.append(f"fixture {sample.relative_to(ROOT)}: {err[0]}: {err[1]}")
    else:
        out(f"[validate] fixture {sample.relative_to(ROOT)}: OK")
    return failures
