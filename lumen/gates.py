"""The safety gates of blueprint section 5 and the bands of an event's residual entropy.

Pure functions, no I/O. `risk_band` and `creative_band` derive an event's bands from its
residual entropy (section 5, and section 7's dashboard: SAFE <= 0.55, WATCH <= 0.85, RISK
above); the v1 -> v2 mapping (lumen.v2map) uses them, the simulated source (lumen.simulate)
applies their thresholds, the constants below, inline. `gate` applies the config's
`safety_gates` to one event: an out-of-band event becomes a rollback, in place. Every
emitter source (simulated, stdin, replay) passes through `gate` (lumen.emitter,
lumen.emit_sources); nothing else here decides what is written.
"""

from . import vocab

# Risk and creative bands of an event's residual entropy, as the blueprint's emitter and
# dashboard define them (section 5, section 7: SAFE <= 0.55, WATCH <= 0.85, RISK above).
WATCH_ABOVE, RISK_ABOVE = 0.55, 0.85


def risk_band(residual):
    return (
        vocab.RISK
        if residual > RISK_ABOVE
        else (vocab.WATCH if residual > WATCH_ABOVE else vocab.SAFE)
    )


CREATIVE_HIGH_BELOW, CREATIVE_MID_BELOW = 0.25, 0.6


def creative_band(residual):
    return (
        vocab.HIGH
        if residual < CREATIVE_HIGH_BELOW
        else (vocab.MID if residual < CREATIVE_MID_BELOW else vocab.LOW)
    )


def gate(evt, gates):
    """Apply the safety gates in place: an out-of-band event becomes a rollback.

    `gates` is the config's `safety_gates` (phase_diff_abs_max, risk_band_block,
    residual_entropy_max), checked in that order. Returns the name of the gate that
    fired, or None."""
    r3 = evt["resonance_v3"]
    if abs(r3["phase_diff"]) > gates["phase_diff_abs_max"]:
        why = "phase_diff"
    elif r3["risk_band"] in gates["risk_band_block"]:
        why = "risk_band"
    elif r3["residual_entropy"] > gates["residual_entropy_max"]:
        why = "residual_entropy"
    else:
        return None
    evt["event_type"] = vocab.ROLLBACK
    return why
