"""schemas/rmb_event_v1.json as msgspec types: decode and validate a v1 line in one pass.

The JSON Schema stays the contract. These types accept a subset of what it accepts
(every field, type, range, enum and pattern of section 3; `ts` is decoded as text and
checked by lumen.timefmt, the schema's own `date-time` checker), so a line they accept is
valid; a line they reject is judged again by the JSON Schema validator, which gives the
verdict and the message. Callers go through lumen.events.Classifier, never the decoder
alone (the decoder does not check `ts`).
tests/test_v1_decoder.py checks the two agree on generated valid and broken events.
Unknown properties are allowed, as in the schema.
"""

from types import SimpleNamespace
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct
from . import vocab


class Resonance(Struct):
    phase_diff: Annotated[float, Meta(ge=-3.1416, le=3.1416)]
    residual_entropy: Annotated[float, Meta(ge=0, le=1)]
    creative_band: Literal[vocab.CREATIVE_BANDS]
    risk_band: Literal[vocab.RISK_BANDS]


class MemoryBridge(Struct):
    slot_id: str
    op: Literal[vocab.OPS]
    key: str
    value_hash: Annotated[str, Meta(pattern="^[a-f0-9]{8,}$")]


class Trace(Struct):
    loop_id: str
    iter: Annotated[int, Meta(ge=0)]
    host: str


class RmbEventV1(Struct):
    ts: str
    entity_id: Annotated[str, Meta(min_length=1)]
    group: Literal[vocab.GROUPS]
    event_type: Literal[vocab.EVENT_TYPES]
    resonance_v3: Resonance
    memory_bridge: MemoryBridge
    trace: Trace


DECODERS = {"rmb_event_v1.json": msgspec.json.Decoder(RmbEventV1)}


def as_typed(ev):
    """A schema-valid event dict the types turned down (they are stricter in corner cases,
    e.g. an integral float as `iter`), as an object with the same attribute access."""
    try:
        return msgspec.convert(ev, RmbEventV1, strict=False)
    except msgspec.ValidationError:
        return _ns(ev)


def _ns(v):
    if isinstance(v, dict):
        return SimpleNamespace(**{k: _ns(x) for k, x in v.items()})
    return v


DecodeError = (msgspec.ValidationError, msgspec.DecodeError)
