"""Safety Music levels: the pure mapping of blueprint section 13 (no I/O).

A value maps to the level of the first band whose `max` it does not exceed (a value
equal to a band's max belongs to that band: 0.55 is CALM, 0.5500001 TENSE). The final
level is the worst of the defined levels (CALM < TENSE < ALERT). An undefined input (no
event yet, or no event in the ratio window) maps to UNDEFINED, never to CALM by accident;
the final level is the worst of the defined ones, and UNDEFINED only when none is.
"""

from lumen.vocab import SEVERITY, UNDEFINED


def check_bands(bands, where):
    """Raise ValueError unless band maxima strictly increase and the last one covers 1.0."""
    maxes = [b["max"] for b in bands]
    if any(b >= a for a, b in zip(maxes[1:], maxes)):
        raise ValueError(f"{where}: band max values must increase ({maxes})")
    if maxes[-1] < 1.0:
        raise ValueError(f"{where}: the last band must reach 1.0 (it ends at {maxes[-1]})")


def level_from(value, bands):
    if value is None:
        return UNDEFINED
    for b in bands:
        if value <= b["max"]:
            return b["level"]
    return bands[-1]["level"]


def worst(*levels):
    defined = [lv for lv in levels if lv != UNDEFINED]
    return max(defined, key=SEVERITY.__getitem__) if defined else UNDEFINED


def levels(residual, ratio, mapping):
    """{'residual', 'rollback_ratio', 'final'} for the inputs under `mapping` (the config's)."""
    lr = level_from(residual, mapping["residual_entropy"]["bands"])
    lq = level_from(ratio, mapping["rollback_ratio"]["thresholds"])
    return {"residual": lr, "rollback_ratio": lq, "final": worst(lr, lq)}
