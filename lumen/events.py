"""Parse and validate one JSONL line against a stream's JSON Schema, with a reason when bad.

Reasons (the `reason` label of every rejects counter): `oversize`, `utf8`, `json`,
`not_object`, `schema`. Parsing uses orjson and validation a jsonschema_rs validator
compiled once (DESIGN.md section 8: together ~250 000 lines/s per core, against ~1 000
for the blueprint's `jsonschema.validate` per call). Error text comes from the same
validator, so a rejected line says which field is wrong.
"""
import json
from functools import lru_cache

import jsonschema_rs
import orjson

from . import SCHEMAS

REASONS = ("oversize", "utf8", "json", "not_object", "schema", "unmappable")
MAX_LINE_BYTES = 1 << 20


@lru_cache(maxsize=None)
def load_schema(name):
    """A schema from `schemas/` by file name, e.g. 'rmb_event_v1.json'."""
    with open(SCHEMAS / name, encoding="utf-8") as f:
        return json.load(f)


class Validator:
    """A compiled validator for one schema: `error(obj)` is None or a one-line message."""

    def __init__(self, schema):
        self.schema = schema
        self._v = jsonschema_rs.validator_for(schema, validate_formats=True)
        self.is_valid = self._v.is_valid

    @classmethod
    def named(cls, name):
        return cls(load_schema(name))

    def error(self, obj):
        if self._v.is_valid(obj):
            return None
        for err in self._v.iter_errors(obj):
            where = "/".join(str(p) for p in err.instance_path) or "(root)"
            return f"{where}: {err.message}"
        return "invalid"


def parse(line: bytes, validator: Validator, max_bytes=MAX_LINE_BYTES):
    """(event, None) for a good line, else (None, (reason, detail))."""
    if len(line) > max_bytes:
        return None, ("oversize", f"line longer than {max_bytes} bytes")
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return None, ("utf8", "not valid UTF-8")
        return None, ("json", str(e))
    if type(obj) is not dict:
        return None, ("not_object", f"expected a JSON object, got {type(obj).__name__}")
    if validator.is_valid(obj):
        return obj, None
    return None, ("schema", validator.error(obj))
