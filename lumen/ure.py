"""The URE loop (blueprint section 37.4): the adaptive-rate loop of the Unified Resonance Engine.

Observes **upstream**: the merged RMB events in `paths.v2_log` (v2 events carrying an
`rmb` block, read through the shared consumer `ure_loop`). Its own events (trace.loop_id
`ure.v18`) are skipped, so it never regulates on its own echo, and so are merged Safety
Music ticks, which are not events of the stream being regulated: every residual and
rollback statistic below is over RMB events only (the blueprint re-read the last line
of the file it writes, and after one tick saw only itself). Each tick (1/hz s) it appends
one v2 event (entity `lumen.ure`) to the same log under the shared writer lock:

- observed residual: the mean of the newest `batch_size` upstream residuals;
- hz: LOWER_HZ by `adapt.step_hz` (not below `hz_min`) when the residual is above
  `adapt.residual_high`; RAISE_HZ (not above `hz_max`) when below `adapt.residual_low`;
- batch: REDUCE_BATCH by `adapt.step_batch` (not below `batch_min`) when the residual's
  stddev over the last 10 minutes of event time exceeds `slo.residual_std_10m_max`;
  INCREASE_BATCH back towards `batch_size` when it is below half of that;
- DOWNGRADE_OBSERVE when the upstream rollback ratio over 10 minutes exceeds
  `slo.rollback_ratio_10m_max` (it takes precedence in `auto_reg_action`; all actions of
  the tick are listed in `actions`);
- harmony_index = max(0, 1 - 8 * stddev_10m), coherence_level = max(0, 1 - 2 * |residual - 0.5|),
  as 37.4;
- self_regulation_score: the share of this loop's ticks in the last 10 minutes whose
  observed residual was inside [residual_low, residual_high], i.e. how much of the time
  the regulation kept the residual in its band (1.0 = always).
Until the first upstream event arrives it waits and writes nothing. The windows, hz and
batch survive restarts in the checkpoint. SIGTERM/SIGINT: checkpoint and exit 0.
"""

import collections
import socket
import time

from . import events, timefmt, vocab
from .consumer import Consumer
from .gates import risk_band
from .ticker import Ticker
from .jsonl import JsonlWriter
from .windows import BucketWindow

LOOP_ID = "ure.v18"
CONSUMER = "ure_loop"
WINDOW_S = 600.0
CHECKPOINT_EVERY_S = 1.0


def decide(residual, std10, ratio10, hz, bsz, cfg):
    """(new_hz, new_batch, actions) for one tick (pure)."""
    lp, ad, slo = cfg["loop"], cfg["loop"]["adapt"], cfg["slo"]
    actions = []
    if residual > ad["residual_high"] and hz > lp["hz_min"]:
        hz = max(lp["hz_min"], hz - ad["step_hz"])
        actions.append(vocab.LOWER_HZ)
    elif residual < ad["residual_low"] and hz < lp["hz_max"]:
        hz = min(lp["hz_max"], hz + ad["step_hz"])
        actions.append(vocab.RAISE_HZ)
    bmin = lp.get("batch_min", 1)
    if std10 is not None and std10 > slo["residual_std_10m_max"] and bsz > bmin:
        bsz = max(bmin, bsz - ad["step_batch"])
        actions.append(vocab.REDUCE_BATCH)
    elif std10 is not None and std10 <= slo["residual_std_10m_max"] / 2 and bsz < lp["batch_size"]:
        bsz = min(lp["batch_size"], bsz + ad["step_batch"])
        actions.append(vocab.INCREASE_BATCH)
    if ratio10 is not None and ratio10 > slo["rollback_ratio_10m_max"]:
        actions.append(vocab.DOWNGRADE_OBSERVE)
    return hz, bsz, actions


def primary(actions):
    if not actions:
        return vocab.NO_ACTION
    return vocab.DOWNGRADE_OBSERVE if vocab.DOWNGRADE_OBSERVE in actions else actions[-1]


class UreLoop:
    """Observe upstream, decide, write one v2 event a tick. `tick()` is the unit of work;
    `run(stop)` paces it at the current hz."""

    def __init__(self, cfg, host=None, offsets_dir="logs/.offsets", rejects_dir="logs/rejects"):
        self.cfg = cfg
        self.host = host or socket.gethostname()
        v2 = cfg["paths"]["v2_log"]
        self.consumer = Consumer(
            v2, CONSUMER, "resonance_event_v2.json", "resonance_events_v2", offsets_dir, rejects_dir
        )
        st = self.consumer.state or {}
        lp = cfg["loop"]
        self.hz = st.get("hz", lp["base_hz"])
        self.bsz = st.get("batch_size", lp["batch_size"])
        self.iter = st.get("iter", 0)
        self.obs = BucketWindow(WINDOW_S, st.get("obs"))  # upstream residuals, rollbacks
        self.inband = BucketWindow(WINDOW_S, st.get("inband"))  # this loop's ticks in band
        self.recent = collections.deque(st.get("recent", []), maxlen=max(lp["batch_size"], 1))
        self.phase = st.get("phase", 0.0)
        self.writer = JsonlWriter(v2, max_pending=10_000)
        self.validator = events.Validator.named("resonance_event_v2.json")
        self.own_seen = 0
        self.upstream_seen = 0
        self._last_commit = 0.0

    def _add(self, ev, pos):
        if ev["trace"]["loop_id"] == LOOP_ID:
            self.own_seen += 1  # our own echo: never an observation
            return
        self.upstream_seen += 1
        rmb = ev.get("rmb")
        if not isinstance(rmb, dict):
            return  # merged Safety Music ticks and other entities are not RMB events
        pf = ev["phase_field"]
        self.obs.add(pos.t, rmb.get("event_type") == vocab.ROLLBACK, pf["residual_entropy"])
        self.recent.append(pf["residual_entropy"])
        self.phase = pf["phase_diff"]

    def observe(self, max_polls=64, now=None):
        """Read new v2 lines; upstream RMB ones feed the windows, our own are skipped."""
        return self.consumer.poll(self._add, max_polls, now)

    def tick(self, now=None):
        """One step: observe, decide, write. Returns the event written, or None (no upstream)."""
        now = time.time() if now is None else now
        self.observe(now=now)
        self.obs.expire(now)
        self.inband.expire(now)
        evt = None
        if self.recent:
            n = min(self.bsz, len(self.recent))
            residual = sum(list(self.recent)[-n:]) / n
            std10 = self.obs.stddev()
            ev_n, rb_n = self.obs.counts()
            ratio10 = rb_n / ev_n if ev_n else None
            self.hz, self.bsz, actions = decide(
                residual, std10, ratio10, self.hz, self.bsz, self.cfg
            )
            ad = self.cfg["loop"]["adapt"]
            self.inband.add(
                now, value=1.0 if ad["residual_low"] <= residual <= ad["residual_high"] else 0.0
            )
            evt = {
                "ts": timefmt.format(now),
                "entity_id": "lumen.ure",
                "phase_field": {
                    "phase_diff": self.phase,
                    "residual_entropy": residual,
                    "risk_band": risk_band(residual),
                },
                "harmony_index": max(0.0, 1.0 - (std10 or 0.0) * 8),
                "coherence_level": max(0.0, 1.0 - abs(residual - 0.5) * 2),
                "auto_reg_action": primary(actions),
                "trace": {"loop_id": LOOP_ID, "iter": self.iter, "host": self.host, "ver": "v1.8"},
                "actions": actions,
                "loop": {"hz": self.hz, "batch_size": self.bsz},
                "self_regulation_score": self.inband.mean(),
                "observed": {
                    "events_10m": ev_n,
                    "residual_std_10m": std10,
                    "rollback_ratio_10m": ratio10,
                },
            }
            err = self.validator.error(evt)
            if err:  # a bug, not input: stop loudly rather than write a bad event
                raise RuntimeError(f"URE event does not match schema v2: {err}")
            self.writer.add(evt)
            self.writer.try_flush("[ure]")
            self.iter += 1
        if time.monotonic() - self._last_commit >= CHECKPOINT_EVERY_S:
            self.commit()
        return evt

    def commit(self):
        self.consumer.commit(
            {
                "hz": self.hz,
                "batch_size": self.bsz,
                "iter": self.iter,
                "obs": self.obs.to_state(),
                "inband": self.inband.to_state(),
                "recent": list(self.recent),
                "phase": self.phase,
            }
        )
        self._last_commit = time.monotonic()

    def close(self):
        self.writer.try_flush("[ure]")
        self.observe()  # read our own last event too, so the checkpoint ends at the log's end
        self.commit()
        self.consumer.close()

    def run(self, stop, max_ticks=None, clock=time.monotonic):
        """Tick at the current hz (lumen.ticker) until `stop` is set (or `max_ticks`),
        saying each action taken; then checkpoint and release the consumer."""
        ticker = Ticker(1.0 / max(self.hz, 1e-3), clock)
        ticks = 0
        waiting_said = False
        try:
            while not stop.is_set():
                evt = self.tick()
                ticks += 1
                if evt is None and not waiting_said:
                    print("[ure] waiting for upstream v2 events (make merge.v2)", flush=True)
                    waiting_said = True
                if evt is not None and evt["auto_reg_action"] != vocab.NO_ACTION:
                    print(
                        f"[ure] {evt['auto_reg_action']}: hz={self.hz:g} batch={self.bsz}",
                        flush=True,
                    )
                if max_ticks and ticks >= max_ticks:
                    break
                ticker.wait(stop, 1.0 / max(self.hz, 1e-3))
        finally:
            self.close()


def config_error(cfg):
    """What is wrong with a loop config the schema cannot see, or None."""
    lp = cfg["loop"]
    if not lp["hz_min"] <= lp["base_hz"] <= lp["hz_max"]:
        return (
            f"loop.base_hz {lp['base_hz']} is outside "
            f"[hz_min {lp['hz_min']}, hz_max {lp['hz_max']}]"
        )
    if lp["adapt"]["residual_low"] >= lp["adapt"]["residual_high"]:
        return "loop.adapt.residual_low must be below residual_high"
    return None
