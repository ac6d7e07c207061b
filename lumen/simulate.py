"""The emitter's simulated source: seeded profiles of v1 events (blueprint section 5).

- `seed`: the blueprint's exact distributions (residual U(0.05, 0.9), phase U(-3, 3),
  a uniformly random event type, always UPSERT).
- `steady` (the default): a stream inside the section 9 SLOs: residual around 0.40 with a
  stddev of 0.01, 1 % rollbacks, occasional DELETEs of earlier keys.
- `spike`: a rollback storm for alert tests: residual U(0.80, 0.98), so most events trip
  the residual gate, and phases near the +-3.0 gate.
- `jitter`: like steady but the residual's stddev is 0.08 (breaks only RMB-RES-002).
- `rollbacks`: like steady but 12 % rollbacks (breaks only RMB-ROLL-001).

Pure: builds event dicts from a caller's `random.Random`, reads and writes nothing. The
safety gates are applied by `lumen.gates.gate()`, not here, so every source (simulated,
stdin, replay) passes through the same gates; the pacing loop is lumen.emitter.run_sim.
"""

import hashlib

from . import vocab
from .gates import creative_band, risk_band

PROFILES = ("seed", "steady", "spike", "jitter", "rollbacks")


def _clamp(x, lo, hi):
    return lo if x < lo else hi if x > hi else x


def sample(profile, rng):
    """(residual, phase, event_type, delete) for one simulated event."""
    if profile == "seed":
        return rng.uniform(0.05, 0.9), rng.uniform(-3.0, 3.0), rng.choice(vocab.EVENT_TYPES), False
    if profile in ("steady", "jitter", "rollbacks"):
        residual = _clamp(rng.gauss(0.40, 0.08 if profile == "jitter" else 0.01), 0.0, 1.0)
        phase = _clamp(rng.gauss(0.0, 0.3), -3.0, 3.0)
        r = rng.random()
        etype = (
            vocab.ROLLBACK
            if r < (0.12 if profile == "rollbacks" else 0.01)
            else vocab.COMMIT
            if r < 0.40
            else vocab.DECIDE
            if r < 0.60
            else vocab.OBSERVE
        )
        return residual, phase, etype, rng.random() < 0.05
    if profile == "spike":
        return (
            rng.uniform(0.80, 0.98),
            rng.uniform(-3.1, 3.1),
            rng.choice(vocab.EVENT_TYPES),
            rng.random() < 0.05,
        )
    raise ValueError(f"unknown profile {profile!r} (expected one of {', '.join(PROFILES)})")


class EventFactory:
    """Builds v1 events for iteration numbers; config supplies namespace and hasher."""

    def __init__(
        self,
        profile,
        rng,
        slot_namespace,
        value_hasher,
        host,
        entity_id="lumen.core",
        group=vocab.DESIGN_CORE,
        loop_id="rmb.v17",
    ):
        if profile not in PROFILES:
            sample(profile, rng)  # raises the one-line error
        self.profile, self.rng = profile, rng
        self.ns = slot_namespace
        self.hasher = getattr(hashlib, value_hasher)
        self.host, self.entity_id, self.group, self.loop_id = host, entity_id, group, loop_id

    def make(self, i, ts):
        residual, phase, etype, delete = sample(self.profile, self.rng)
        key_i = i - 1 - int(self.rng.random() * 64) if delete and i > 64 else i
        return {
            "ts": ts,
            "entity_id": self.entity_id,
            "group": self.group,
            "event_type": etype,
            "resonance_v3": {
                "phase_diff": phase,
                "residual_entropy": residual,
                "creative_band": creative_band(residual),
                "risk_band": risk_band(residual),
            },
            "memory_bridge": {
                "slot_id": f"{self.ns}/slot-{key_i % 32}",
                "op": vocab.DELETE if key_i != i else vocab.UPSERT,
                "key": f"k:{key_i}",
                "value_hash": self.hasher(f"v{key_i}".encode()).hexdigest(),
            },
            "trace": {"loop_id": self.loop_id, "iter": i, "host": self.host},
        }
