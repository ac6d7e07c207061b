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
stdin, replay) passes through the same gates; the pacing loop is lumen.emit_sources.run_sim.
Every event built here is a valid v1 event whatever the profile, seed, namespace, hasher,
host, iteration (0 to 2**63) and RFC 3339 `ts` (tests/test_emit_valid.py), so the emitter
writes them without classifying them again. `sampler` binds a profile to its rng once;
the draws are those of `random.Random` call for call (the same seed, the same stream).
"""

import hashlib
from math import cos, log, pi, sin, sqrt

from . import vocab
from .gates import CREATIVE_HIGH_BELOW, CREATIVE_MID_BELOW, RISK_ABOVE, WATCH_ABOVE

HIGH, MID, LOW = vocab.HIGH, vocab.MID, vocab.LOW
RISK, WATCH, SAFE = vocab.RISK, vocab.WATCH, vocab.SAFE

PROFILES = ("seed", "steady", "spike", "jitter", "rollbacks")
TWOPI = 2.0 * pi  # as random.py


def sample(profile, rng):
    """(residual, phase, event_type, delete) for one simulated event."""
    return sampler(profile, rng)()


def sampler(profile, rng):
    """`sample(profile, rng)` as a function of no argument bound to `rng`: the same draws in
    the same order, the profile looked up once (the emitter calls it for every event)."""
    random, gauss, uniform, choice = rng.random, rng.gauss, rng.uniform, rng.choice
    types = vocab.EVENT_TYPES
    if profile == "seed":
        return lambda: (uniform(0.05, 0.9), uniform(-3.0, 3.0), choice(types), False)
    if profile in ("steady", "jitter", "rollbacks"):
        sd = 0.08 if profile == "jitter" else 0.01
        p_rollback = 0.12 if profile == "rollbacks" else 0.01
        ROLLBACK, COMMIT, DECIDE, OBSERVE = (
            vocab.ROLLBACK,
            vocab.COMMIT,
            vocab.DECIDE,
            vocab.OBSERVE,
        )

        def steady():
            if rng.gauss_next is None:
                # gauss(0.40, sd) then gauss(0.0, 0.3), as random.Random.gauss computes them
                # (the first call makes a pair of deviates, the second takes the other one),
                # without two calls of a Python function (tests/test_emit_valid.py checks
                # this against gauss itself)
                x2pi = random() * TWOPI
                g2rad = sqrt(-2.0 * log(1.0 - random()))
                residual = 0.40 + cos(x2pi) * g2rad * sd
                phase = 0.0 + sin(x2pi) * g2rad * 0.3
            else:
                residual, phase = gauss(0.40, sd), gauss(0.0, 0.3)
            residual = 0.0 if residual < 0.0 else 1.0 if residual > 1.0 else residual
            phase = -3.0 if phase < -3.0 else 3.0 if phase > 3.0 else phase
            r = random()
            etype = (
                ROLLBACK
                if r < p_rollback
                else COMMIT
                if r < 0.40
                else DECIDE
                if r < 0.60
                else OBSERVE
            )
            return residual, phase, etype, random() < 0.05

        return steady
    if profile == "spike":
        return lambda: (
            uniform(0.80, 0.98),
            uniform(-3.1, 3.1),
            choice(types),
            random() < 0.05,
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
        self.profile, self.rng = profile, rng
        self._sample = sampler(profile, rng)  # raises the one-line error for a bad profile
        self._random = rng.random
        self.ns = slot_namespace
        self._slots = tuple(f"{slot_namespace}/slot-{k}" for k in range(32))
        self.hasher = getattr(hashlib, value_hasher)
        self.host, self.entity_id, self.group, self.loop_id = host, entity_id, group, loop_id

    def make(self, i, ts):
        residual, phase, etype, delete = self._sample()
        key_i = i - 1 - int(self._random() * 64) if delete and i > 64 else i
        return {
            "ts": ts,
            "entity_id": self.entity_id,
            "group": self.group,
            "event_type": etype,
            "resonance_v3": {
                "phase_diff": phase,
                "residual_entropy": residual,
                # creative_band(residual) and risk_band(residual), without two calls
                "creative_band": HIGH
                if residual < CREATIVE_HIGH_BELOW
                else (MID if residual < CREATIVE_MID_BELOW else LOW),
                "risk_band": RISK
                if residual > RISK_ABOVE
                else (WATCH if residual > WATCH_ABOVE else SAFE),
            },
            "memory_bridge": {
                "slot_id": self._slots[key_i % 32],
                "op": vocab.DELETE if key_i != i else vocab.UPSERT,
                "key": f"k:{key_i}",
                "value_hash": self.hasher(b"v%d" % key_i).hexdigest(),
            },
            "trace": {"loop_id": self.loop_id, "iter": i, "host": self.host},
        }
