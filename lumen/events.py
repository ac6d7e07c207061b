"""What a line is: bytes -> a valid event, or a (reason, detail) reject. Never raises.

Every stage that reads a stream classifies its lines here, so every stage accepts exactly
the same lines. Reasons (the `reason` label of every rejects counter):

  oversize    longer than MAX_LINE_BYTES
  utf8        not valid UTF-8 (anywhere, including inside a string)
  json        not JSON, or nested deeper than the parser allows
  not_object  JSON, but not an object
  schema      not valid against the stream's JSON Schema (`ts` included: lumen.timefmt is
              the schema's `date-time` checker)
  ts_future   valid, but stamped more than `max_future_s` ahead of the reader's clock
  unmappable  valid, but a stage could not derive its output from it (merge)
  conflict    a sink already holds a different line at this line's position
  internal    anything else that went wrong while judging the line (a bug, counted)

The schema path is orjson and a jsonschema_rs validator compiled once; v1 and v2 lines take
a faster path first, lumen.decoders (msgspec types that decode and validate in one pass and
accept only what the schema accepts; `ts` is checked by the same RFC 3339 parser). A line
the fast path turns down is judged by the schema path, which gives the verdict.
"""

import json
import time
from functools import lru_cache

import jsonschema_rs
import orjson

from . import SCHEMAS, timefmt

REASONS = (
    "oversize",
    "utf8",
    "json",
    "not_object",
    "schema",
    "ts_future",
    "unmappable",
    "conflict",
    "internal",
)
MAX_LINE_BYTES = 1 << 20
MAX_FUTURE_S = 300.0  # Loki's creation grace period and Prometheus' out-of-bounds check alike
FORMATS = {"date-time": timefmt.is_datetime}
_parse_ts = timefmt.parse


@lru_cache(maxsize=None)
def load_schema(name):
    """A schema from `schemas/` by file name, e.g. 'rmb_event_v1.json'."""
    with open(SCHEMAS / name, encoding="utf-8") as f:
        return json.load(f)


class Validator:
    """A compiled validator for one schema: `error(obj)` is None or a one-line message."""

    def __init__(self, schema):
        self.schema = schema
        self._v = jsonschema_rs.validator_for(schema, validate_formats=True, formats=FORMATS)
        self.is_valid = self._v.is_valid

    @classmethod
    @lru_cache(maxsize=None)
    def named(cls, name):
        return cls(load_schema(name))

    def error(self, obj):
        if self._v.is_valid(obj):
            return None
        try:
            for err in self._v.iter_errors(obj):
                where = "/".join(str(p) for p in err.instance_path) or "(root)"
                return f"{where}: {err.message}"
        except (RecursionError, ValueError, TypeError):
            # The validator describes errors recursively; a document nested deep enough
            # (still valid JSON) exceeds that. The verdict stands: it is not valid.
            return "(root): not valid against the schema (nested too deep to say where)"
        return "invalid"


def _judge(line, validator, max_bytes):
    """(event, None) or (None, (reason, detail)); may raise on the unforeseen."""
    if len(line) > max_bytes:
        return None, ("oversize", f"line longer than {max_bytes} bytes")
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        try:
            bytes(line).decode("utf-8")
        except UnicodeDecodeError:
            return None, ("utf8", "not valid UTF-8")
        return None, ("json", str(e))
    if type(obj) is not dict:
        return None, ("not_object", f"expected a JSON object, got {type(obj).__name__}")
    if validator.is_valid(obj):
        return obj, None
    return None, ("schema", validator.error(obj))


def judge_future(t, now, max_future_s):
    """The reject for an event stamped `t` read at `now`, or None."""
    if now is not None and t > now + max_future_s:
        return (
            "ts_future",
            f"ts is {t - now:.0f}s ahead of this reader's clock (limit {max_future_s:g}s)",
        )
    return None


def parse(line, validator, max_bytes=MAX_LINE_BYTES, now=None, max_future_s=MAX_FUTURE_S):
    """(event, None) for a good line, else (None, (reason, detail)). Never raises.

    With `now` (Unix seconds), an event stamped more than `max_future_s` after it is a
    `ts_future` reject."""
    try:
        ev, err = _judge(line, validator, max_bytes)
        if err is None and now is not None:
            err = judge_future(timefmt.parse(ev.get("ts")) or 0.0, now, max_future_s)
            if err:
                ev = None
        return ev, err
    except Exception as e:  # noqa: BLE001 - totality: whatever breaks is this line's reject
        return None, ("internal", f"{type(e).__name__}: {e}"[:500])


class Classifier:
    """One stream's classification: `classify(raw, now)` gives (event, t, None) or
    (None, None, (reason, detail)), t being ts in Unix seconds and `now` the reader's
    clock (`clock()` when None).

    Events are dicts (as orjson gives them); `typed=True` hands out lumen.decoders objects
    (attribute access) instead, the cheapest form for a consumer that keeps up with a whole
    stream. Either way the set of accepted lines is the same. `fast=False` judges every line
    on the schema path alone (the reference the fast path is tested against)."""

    def __init__(
        self,
        schema,
        typed=False,
        max_future_s=MAX_FUTURE_S,
        clock=time.time,
        max_bytes=MAX_LINE_BYTES,
        fast=True,
    ):
        from . import decoders

        self.validator = Validator.named(schema)
        self.max_future_s, self.clock, self.max_bytes = max_future_s, clock, max_bytes
        fast = decoders.DECODERS.get(schema) if fast else None  # fast=False: schema path only
        if typed and schema not in decoders.TYPES:
            raise ValueError(f"no typed events for {schema}")
        self._fast = fast.decode if fast is not None else None
        self._out = None if typed else decoders.to_dict  # fast-path object -> dict
        self._as_typed = (lambda ev: decoders.as_typed(schema, ev)) if typed else None

    def classify(self, raw, now=None):
        try:
            if now is None:
                now = self.clock()
            if self._fast is not None and len(raw) <= self.max_bytes:
                try:
                    ev = self._fast(raw)
                except Exception:  # noqa: BLE001 - any refusal (bad UTF-8, depth, type): the
                    ev = None  # schema path below gives the one verdict and its message
                if ev is not None:
                    t = _parse_ts(ev.ts)
                    if t is not None:
                        if t > now + self.max_future_s:
                            return None, None, judge_future(t, now, self.max_future_s)
                        return (ev if self._out is None else self._out(ev)), t, None
            return self._schema_path(raw, now)
        except Exception as e:  # noqa: BLE001 - totality: whatever breaks is this line's reject
            return None, None, ("internal", f"{type(e).__name__}: {e}"[:500])

    def _schema_path(self, raw, now):
        ev, err = _judge(raw, self.validator, self.max_bytes)
        if err:
            return None, None, err
        t = _parse_ts(ev["ts"])
        if t is None:  # every Lumen schema requires ts as a date-time: cannot happen
            return None, None, ("schema", "ts: not an RFC 3339 date-time")
        err = judge_future(t, now, self.max_future_s)
        if err:
            return None, None, err
        return (self._as_typed(ev) if self._as_typed else ev), t, None
