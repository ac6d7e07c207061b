"""v1 -> v2 mapping of blueprint section 37.3 (pure functions, no I/O; lumen/merge.py uses it).

RMB events keep ts, entity_id and their resonance fields; harmony and coherence are the
blueprint's neutral 0.5 (the URE loop computes the real ones). Safety Music events become
`lumen.safety` events whose harmony is 0.5 shifted by the level (CALM +0.1, TENSE -0.05,
ALERT -0.1, as 37.3) and whose residual is the one the level was computed from (the
blueprint's fixed 0.5 when the safety event carries none). Every v2 event also carries
`source` {stream, fp, offset} for exactly-once merging and, for RMB events, `rmb`
{event_type, group} so the URE loop can see rollbacks.
"""

from . import vocab
from .gates import risk_band

HARMONY_ADJ = {vocab.CALM: 0.1, vocab.TENSE: -0.05, vocab.ALERT: -0.1}
MERGE_TRACE = {"loop_id": "ure.merge", "ver": "v1.8-pre"}


def _clamp01(x):
    return max(0.0, min(1.0, x))


def rmb_to_v2(e, host, source):
    """`e`: a typed v1 event (lumen.decoders; merge reads the RMB log on that path). From
    an event of the fast path's types the result is a valid v2 event by construction: the
    two schemas give phase_diff, residual_entropy and risk_band the same bounds and enum
    (tests/test_decoders.py checks it over generated events)."""
    r3 = e.resonance_v3
    return {
        "ts": e.ts,
        "entity_id": e.entity_id,
        "phase_field": {
            "phase_diff": r3.phase_diff,
            "residual_entropy": r3.residual_entropy,
            "risk_band": r3.risk_band,
        },
        "harmony_index": 0.5,
        "coherence_level": 0.5,
        "auto_reg_action": vocab.NO_ACTION,
        "trace": {**MERGE_TRACE, "iter": e.trace.iter, "host": host},
        "rmb": {"event_type": e.event_type, "group": e.group},
        "source": source,
    }


def safety_to_v2(s, host, source, iter_):
    residual = (s.get("inputs") or {}).get("residual_entropy")
    residual = 0.5 if residual is None else residual
    return {
        "ts": s["ts"],
        "entity_id": "lumen.safety",
        "phase_field": {
            "phase_diff": 0.0,
            "residual_entropy": residual,
            "risk_band": risk_band(residual),
        },
        "harmony_index": _clamp01(0.5 + HARMONY_ADJ.get(s["levels"]["final"], 0.0)),
        "coherence_level": 0.5,
        "auto_reg_action": vocab.NO_ACTION,
        "trace": dict(MERGE_TRACE, iter=iter_, host=host),
        "safety": {"level": s["levels"]["final"]},
        "source": source,
    }
