"""The schemas' vocabulary: every enum of schemas/*.json, read from the schemas themselves.

Event types, groups, bands, memory-bridge ops, Safety Music levels and sources, and the URE
regulation actions are named here once, as the JSON Schemas define them; code elsewhere
imports these names instead of spelling the strings (tests/test_vocab.py checks that no
other module repeats an enum literal). A schema that loses a member this module names
fails at import, not in the middle of a run.

Safety Music levels have one encoding: `SEVERITY` (UNDEFINED -1 < CALM 0 < TENSE 1 <
ALERT 2), the value of the `*_level` gauges and the order of "worst of".
"""

import json

from . import SCHEMAS


def _enum(schema, *path):
    node = json.loads((SCHEMAS / schema).read_text(encoding="utf-8"))
    for key in path:
        node = node["properties"][key]
    return tuple(node["enum"])


def _member(values, name):
    if name not in values:
        raise ImportError(f"lumen.vocab: {name!r} is no longer one of {values} in schemas/")
    return name


# rmb_event_v1.json
EVENT_TYPES = _enum("rmb_event_v1.json", "event_type")
GROUPS = _enum("rmb_event_v1.json", "group")
CREATIVE_BANDS = _enum("rmb_event_v1.json", "resonance_v3", "creative_band")
RISK_BANDS = _enum("rmb_event_v1.json", "resonance_v3", "risk_band")
OPS = _enum("rmb_event_v1.json", "memory_bridge", "op")

OBSERVE, DECIDE, COMMIT, ROLLBACK = (
    _member(EVENT_TYPES, n) for n in ("observe", "decide", "commit", "rollback")
)
LOW, MID, HIGH = (_member(CREATIVE_BANDS, n) for n in ("LOW", "MID", "HIGH"))
SAFE, WATCH, RISK = (_member(RISK_BANDS, n) for n in ("SAFE", "WATCH", "RISK"))
UPSERT, DELETE = (_member(OPS, n) for n in ("UPSERT", "DELETE"))
DESIGN_CORE = _member(GROUPS, "design_core")

# safety_music_event_v1.json: levels (final is the worst of residual and rollback_ratio)
LEVELS = _enum("safety_music_event_v1.json", "levels", "final")
CALM, TENSE, ALERT, UNDEFINED = (
    _member(LEVELS, n) for n in ("CALM", "TENSE", "ALERT", "UNDEFINED")
)
DEFINED_LEVELS = (CALM, TENSE, ALERT)  # mildest first
SEVERITY = {UNDEFINED: -1, CALM: 0, TENSE: 1, ALERT: 2}
SAFETY_SOURCES = _enum("safety_music_event_v1.json", "inputs", "source")

# resonance_event_v2.json
ACTIONS = _enum("resonance_event_v2.json", "auto_reg_action")
V2_RISK_BANDS = _enum("resonance_event_v2.json", "phase_field", "risk_band")
NO_ACTION, LOWER_HZ, RAISE_HZ, REDUCE_BATCH, INCREASE_BATCH, DOWNGRADE_OBSERVE = (
    _member(ACTIONS, n)
    for n in ("NONE", "LOWER_HZ", "RAISE_HZ", "REDUCE_BATCH", "INCREASE_BATCH", "DOWNGRADE_OBSERVE")
)

# alert_event_v1.json: an Alertmanager alert as the webhook receiver wrote it
ALERT_STATUSES = _enum("alert_event_v1.json", "status")
FIRING, RESOLVED = (_member(ALERT_STATUSES, n) for n in ("firing", "resolved"))
