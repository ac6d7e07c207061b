"""lumen.gates (bands and safety gates) and lumen.simulate (profiles), in process."""

import random

import pytest

from lumen import vocab
from lumen.gates import RISK_ABOVE, WATCH_ABOVE, creative_band, gate, risk_band
from lumen.simulate import PROFILES, EventFactory, sample

GATES = {"residual_entropy_max": 0.85, "risk_band_block": [vocab.RISK], "phase_diff_abs_max": 3.0}


def event(phase=0.0, residual=0.4, band=None, etype=vocab.COMMIT):
    return {
        "event_type": etype,
        "resonance_v3": {
            "phase_diff": phase,
            "residual_entropy": residual,
            "risk_band": band or risk_band(residual),
        },
    }


@pytest.mark.parametrize(
    "phase, residual, band, fired",
    [
        (0.0, 0.40, None, None),
        (3.0, 0.40, None, None),  # on the bound: inside
        (-3.01, 0.40, None, "phase_diff"),
        (3.01, 0.40, None, "phase_diff"),
        (0.0, 0.40, vocab.RISK, "risk_band"),  # the band is taken as given
        (0.0, 0.85, None, None),  # WATCH, on the residual bound
        (0.0, 0.86, vocab.WATCH, "residual_entropy"),
        (3.5, 0.95, None, "phase_diff"),  # several out of band: the first gate names it
        (0.0, 0.95, None, "risk_band"),
    ],
)
def test_gate_table(phase, residual, band, fired):
    evt = event(phase, residual, band)
    assert gate(evt, GATES) == fired
    assert evt["event_type"] == (vocab.ROLLBACK if fired else vocab.COMMIT)


def test_gate_keeps_a_rollback_and_reads_the_config():
    evt = event(etype=vocab.ROLLBACK)
    assert gate(evt, GATES) is None and evt["event_type"] == vocab.ROLLBACK
    evt = event(residual=0.5)
    assert gate(evt, dict(GATES, residual_entropy_max=0.3)) == "residual_entropy"


@pytest.mark.parametrize(
    "residual, risk, creative",
    [
        (0.0, vocab.SAFE, vocab.HIGH),
        (0.2499, vocab.SAFE, vocab.HIGH),
        (0.25, vocab.SAFE, vocab.MID),
        (WATCH_ABOVE, vocab.SAFE, vocab.MID),
        (0.56, vocab.WATCH, vocab.MID),
        (0.6, vocab.WATCH, vocab.LOW),
        (RISK_ABOVE, vocab.WATCH, vocab.LOW),
        (0.86, vocab.RISK, vocab.LOW),
        (1.0, vocab.RISK, vocab.LOW),
    ],
)
def test_bands(residual, risk, creative):
    assert risk_band(residual) == risk
    assert creative_band(residual) == creative


@pytest.mark.parametrize("profile", PROFILES)
def test_profiles_are_seeded_and_in_range(profile):
    assert sample(profile, random.Random(3)) == sample(profile, random.Random(3))
    rng = random.Random(7)
    for _ in range(500):
        residual, phase, etype, delete = sample(profile, rng)
        assert 0.0 <= residual <= 1.0 and -3.1 <= phase <= 3.1
        assert etype in vocab.EVENT_TYPES and isinstance(delete, bool)


def test_unknown_profile_is_one_error():
    with pytest.raises(ValueError, match="unknown profile 'wild'"):
        EventFactory("wild", random.Random(1), "ns", "sha256", "h")


def test_factory_event_shape_and_deletes_of_earlier_keys():
    f = EventFactory("steady", random.Random(2), "my/ns", "sha256", "host1")
    evts = [f.make(i, "2025-01-01T00:00:00Z") for i in range(400)]
    e = evts[0]
    assert e["trace"] == {"loop_id": "rmb.v17", "iter": 0, "host": "host1"}
    assert e["resonance_v3"]["risk_band"] == risk_band(e["resonance_v3"]["residual_entropy"])
    deletes = [x for x in evts if x["memory_bridge"]["op"] == vocab.DELETE]
    assert deletes
    for x in deletes:  # a DELETE names an earlier key, in that key's slot
        k = int(x["memory_bridge"]["key"][2:])
        assert k < x["trace"]["iter"] and x["memory_bridge"]["slot_id"] == f"my/ns/slot-{k % 32}"
