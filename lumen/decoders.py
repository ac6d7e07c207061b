"""The event schemas as msgspec types: decode and validate a line in one pass, in C.

The JSON Schemas (schemas/rmb_event_v1.json, schemas/resonance_event_v2.json) stay the
contract; these types are a fast path that accepts a SUBSET of what a schema accepts:

- every field, type, range (read from the schema itself), enum and pattern the schema
  states; `ts` is decoded as text and checked by lumen.timefmt, the schema's own
  `date-time` checker, in lumen.events.Classifier;
- no property the types do not declare (`forbid_unknown_fields`): msgspec skips an
  undeclared property without checking it, so a line carrying invalid UTF-8 or a number
  out of range there would pass the types and fail the parser of the schema path. A line
  with an undeclared property takes the schema path instead (the v2 log's own extra blocks,
  `rmb`, `source`, `safety`, `actions`, `loop`, `observed`, `self_regulation_score`, are
  declared with the shapes Lumen's writers give them);
- optional fields default to UNSET, so `msgspec.to_builtins(event)` is the same dict the
  schema path's parser (orjson) gives for the line (numbers in float fields as floats).

A line the types turn down is judged again by the JSON Schema validator, which gives the
verdict and its message: callers go through lumen.events.Classifier, never a decoder alone.
tests/test_decoders.py checks that the two paths agree on generated and hostile lines.
"""

import functools
import json
import typing
from types import SimpleNamespace
from typing import Annotated, Literal, Union

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from . import SCHEMAS, vocab

V1 = "rmb_event_v1.json"
V2 = "resonance_event_v2.json"


def _bounds(schema, *path):
    """Meta(ge=minimum, le=maximum) of a number property, as the schema states them."""
    node = json.loads((SCHEMAS / schema).read_text(encoding="utf-8"))
    for key in path:
        node = node["properties"][key]
    return Meta(ge=node["minimum"], le=node["maximum"])


class Strict(Struct, forbid_unknown_fields=True):
    """Every type here refuses properties it does not declare (see the module's notes)."""


# -- schemas/rmb_event_v1.json ------------------------------------------------------------
class Resonance(Strict):
    phase_diff: Annotated[float, _bounds(V1, "resonance_v3", "phase_diff")]
    residual_entropy: Annotated[float, _bounds(V1, "resonance_v3", "residual_entropy")]
    creative_band: Literal[vocab.CREATIVE_BANDS]
    risk_band: Literal[vocab.RISK_BANDS]


class MemoryBridge(Strict):
    slot_id: str
    op: Literal[vocab.OPS]
    key: str
    value_hash: Annotated[str, Meta(pattern="^[a-f0-9]{8,}$")]


class Trace(Strict):
    loop_id: str
    iter: Annotated[int, Meta(ge=0)]
    host: str


class RmbEventV1(Strict):
    ts: str
    entity_id: Annotated[str, Meta(min_length=1)]
    group: Literal[vocab.GROUPS]
    event_type: Literal[vocab.EVENT_TYPES]
    resonance_v3: Resonance
    memory_bridge: MemoryBridge
    trace: Trace


# -- schemas/resonance_event_v2.json ------------------------------------------------------
class PhaseField(Strict):
    phase_diff: Annotated[float, _bounds(V2, "phase_field", "phase_diff")]
    residual_entropy: Annotated[float, _bounds(V2, "phase_field", "residual_entropy")]
    risk_band: Literal[vocab.V2_RISK_BANDS]


class TraceV2(Strict):
    loop_id: str
    iter: int
    host: str
    ver: str


# The blocks Lumen's v2 writers add (the schema leaves them free): merge's and the URE loop's.
class RmbBlock(Strict):
    event_type: str
    group: str


class SourceBlock(Strict):
    stream: str
    fp: str
    offset: int


class SafetyBlock(Strict):
    level: str


class LoopBlock(Strict):
    hz: float
    batch_size: int


class Observed(Strict):
    events_10m: int
    residual_std_10m: Union[float, None]
    rollback_ratio_10m: Union[float, None]


class ResonanceEventV2(Strict):
    ts: str
    entity_id: str
    phase_field: PhaseField
    harmony_index: Annotated[float, _bounds(V2, "harmony_index")]
    coherence_level: Annotated[float, _bounds(V2, "coherence_level")]
    trace: TraceV2
    auto_reg_action: Union[Literal[vocab.ACTIONS], UnsetType] = UNSET
    rmb: Union[RmbBlock, None, UnsetType] = UNSET
    source: Union[SourceBlock, None, UnsetType] = UNSET
    safety: Union[SafetyBlock, None, UnsetType] = UNSET
    actions: Union[list[str], None, UnsetType] = UNSET
    loop: Union[LoopBlock, None, UnsetType] = UNSET
    self_regulation_score: Union[float, None, UnsetType] = UNSET
    observed: Union[Observed, None, UnsetType] = UNSET


TYPES = {V1: RmbEventV1, V2: ResonanceEventV2}
DECODERS = {name: msgspec.json.Decoder(t) for name, t in TYPES.items()}
to_dict = msgspec.to_builtins


def as_typed(schema, ev):
    """A schema-valid event dict the types turned down (they are stricter in corner cases,
    e.g. an integral float as `iter`, or a property they do not declare), as an object
    with the same attribute access. Undeclared properties are left as they are (never
    walked: one may be nested as deep as the parser allows)."""
    t = TYPES[schema]
    try:
        return msgspec.convert(_declared(ev, t), t, strict=False)
    except msgspec.ValidationError:
        return _ns(ev, t)


@functools.lru_cache(maxsize=None)
def _fields(t):
    """{field name: the Struct type inside its annotation, or None} of Struct type `t`."""

    def struct_in(a):
        if isinstance(a, type) and issubclass(a, Struct):
            return a
        return next((s for s in map(struct_in, typing.get_args(a)) if s), None)

    return {f.name: struct_in(f.type) for f in msgspec.structs.fields(t)}


def _declared(v, t):
    """`v` with only the properties Struct type `t` declares, nested ones too."""
    if not isinstance(v, dict):
        return v
    f = _fields(t)
    return {k: (_declared(x, f[k]) if f[k] else x) for k, x in v.items() if k in f}


def _ns(v, t):
    if not isinstance(v, dict) or t is None:
        return v
    f = _fields(t)
    return SimpleNamespace(**{k: _ns(x, f.get(k)) for k, x in v.items()})


DecodeError = (msgspec.ValidationError, msgspec.DecodeError)
