"""What the exporters count, and how it is rendered as Prometheus metric families.

Reading and rendering apart: the readers (lumen.consumer, the emitter's counters file)
keep plain counters; this module turns them into metric families for a scrape, and
does no I/O of its own.

- `RmbStats`: the RMB stream (v1 events), fed typed events by a Consumer: the blueprint's
  `<prefix>_events_total`, `_rollback_total`, `_residual_entropy_last`, and by label
  `_events_by_type_total{event_type}`, `_events_by_risk_band_total{risk_band}`,
  `_last_event_timestamp_seconds` (prefix `rmb` in the RMB exporter, `ure_rmb` in the URE one);
- `UreStats`: the v2 log: the newest URE loop tick's figures, actions and events by entity;
- `SafetyStats`: the Safety Music stream: level by source, level changes, events;
- `consumer_families`: the self-monitoring counters of one consumer, or of several as one
  family per name with a `stream` label (lines by status, rejects by reason, rotations,
  truncations, checkpoints, gap bytes, bytes behind);
- `emitter_families`, `gate_families`, `scrape_duration`: the RMB exporter's other gauges.

A gauge with no value yet (no event seen: the residual, the URE tick's figures) is NaN,
Prometheus' "no value", never a made-up 0: a dashboard shows a gap, `x > threshold` is
false, and `x == x` selects only real values. Counters start at 0 (nothing counted is 0).
Timestamps of the newest event are 0 (the Unix epoch) until one is seen, so a staleness
rule `time() - x > N` fires on a stream that never produced anything.

Each stats class carries its counters across restarts: `to_state()` is saved with the
consumer's checkpoint and `Stats(consumer.state)` resumes from it.
"""

import math
import time
from collections import Counter

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from . import events, timefmt, vocab
from .ure import LOOP_ID


NAN = float("nan")
MAX_ENTITIES = 1000  # distinct entity_id labels of ure_v2_events_total; the rest count as:
OTHER_ENTITIES = "(other)"


def ts_seconds(ts):
    return timefmt.parse(ts) or 0.0


def _number(v):
    """A finite number, or None (a gauge without a value) for anything else."""
    return v if type(v) in (int, float) and math.isfinite(v) else None


def _value(v):
    """A gauge's value: NaN when there is none yet."""
    return NAN if v is None else float(v)


class RmbStats:
    """What the exporter knows about the stream; `to_state()` and `RmbStats(state)` carry
    it across restarts.

    Fed typed v1 events (lumen.decoders) by a typed Consumer."""

    def __init__(self, st=None):
        st = st or {}
        self.by_type = Counter(st.get("by_type", {}))
        self.by_risk = Counter(st.get("by_risk", {}))
        # None until the first event (a checkpoint of an empty log before NaN held 0.0).
        self.residual_last = st.get("residual_last") if self.events_total else None
        self.last_ts = st.get("last_ts")  # RFC 3339 text of the newest event
        self.last_t = st.get("last_t") or ts_seconds(self.last_ts)

    @property
    def events_total(self):
        return sum(self.by_type.values())

    def add(self, ev, pos):
        r3 = ev.resonance_v3
        self.by_type[ev.event_type] += 1
        self.by_risk[r3.risk_band] += 1
        self.residual_last = r3.residual_entropy
        self.last_ts, self.last_t = ev.ts, pos.t

    def to_state(self):
        return {
            "by_type": dict(self.by_type),
            "by_risk": dict(self.by_risk),
            "residual_last": self.residual_last,
            "last_ts": self.last_ts,
            "last_t": self.last_t,
        }

    def families(self, prefix="rmb"):
        """The blueprint's three metrics and the per-label counters, named `<prefix>_...`;
        the residual is NaN before the first event."""
        by_type = dict(self.by_type)
        yield CounterMetricFamily(
            f"{prefix}_events_total", "Valid v1 events in the log.", sum(by_type.values())
        )
        yield CounterMetricFamily(
            f"{prefix}_rollback_total", "Events of type rollback.", by_type.get(vocab.ROLLBACK, 0)
        )
        yield GaugeMetricFamily(
            f"{prefix}_residual_entropy_last",
            "resonance_v3.residual_entropy of the newest event (NaN: none yet).",
            _value(self.residual_last),
        )
        c = CounterMetricFamily(
            f"{prefix}_events_by_type", "Valid events by event_type.", labels=["event_type"]
        )
        for t in vocab.EVENT_TYPES:
            c.add_metric([t], by_type.get(t, 0))
        yield c
        c = CounterMetricFamily(
            f"{prefix}_events_by_risk_band", "Valid events by risk_band.", labels=["risk_band"]
        )
        for b in vocab.RISK_BANDS:
            c.add_metric([b], self.by_risk.get(b, 0))
        yield c
        yield GaugeMetricFamily(
            f"{prefix}_last_event_timestamp_seconds",
            "ts of the newest valid event, as Unix time (0: none yet).",
            self.last_t or 0.0,
        )


class UreStats:
    """The v2 log: every event counted by entity; the URE loop's own ticks (trace.loop_id
    LOOP_ID) also give the newest figures and the actions taken."""

    _known_actions = frozenset(vocab.ACTIONS)

    def __init__(self, st=None):
        st = st or {}
        self.last = st.get("last")  # fields of the newest loop event
        self.actions = Counter(st.get("actions", {}))
        self.entities = Counter(st.get("entities", {}))

    def add(self, ev, pos=None):
        entity = ev["entity_id"]
        if entity not in self.entities and len(self.entities) >= MAX_ENTITIES:
            entity = OTHER_ENTITIES  # a label per entity, but not without bound
        self.entities[entity] += 1
        if ev["trace"]["loop_id"] != LOOP_ID:
            return
        # `actions`, `loop` and `self_regulation_score` are the URE loop's own fields, outside
        # the v2 schema: any other writer claiming the loop's id may put any JSON there.
        actions = ev.get("actions")
        if type(actions) is not list:
            actions = [ev.get("auto_reg_action", vocab.NO_ACTION)]
        for a in actions:
            if type(a) is str and a in self._known_actions:
                self.actions[a] += 1
        loop = ev.get("loop")
        if type(loop) is not dict:
            loop = {}
        self.last = {
            "residual": ev["phase_field"]["residual_entropy"],
            "harmony": ev["harmony_index"],
            "coherence": ev["coherence_level"],
            "score": _number(ev.get("self_regulation_score")),
            "hz": _number(loop.get("hz")),
            "batch": _number(loop.get("batch_size")),
            "ts": ev["ts"],
        }

    def to_state(self):
        return {"last": self.last, "actions": dict(self.actions), "entities": dict(self.entities)}

    def families(self, prefix="ure"):
        """The newest tick's gauges (NaN before the first), actions and events by entity."""
        last = self.last or {}

        def gauge(name, doc, key):
            v = last.get(key)
            doc = f"{doc.rstrip('.')} (NaN: none yet)."
            return GaugeMetricFamily(f"{prefix}_{name}", doc, _value(v))

        yield gauge(
            "residual_entropy_last", "Observed residual of the newest URE tick.", "residual"
        )
        yield gauge("harmony_index", "harmony_index of the newest URE tick.", "harmony")
        yield gauge("coherence_level", "coherence_level of the newest URE tick.", "coherence")
        yield gauge(
            "self_regulation_score",
            "Share of URE ticks in the last 10 min with the residual inside its band.",
            "score",
        )
        yield gauge("loop_hz", "Current rate of the URE loop.", "hz")
        yield gauge("loop_batch_size", "Current observation batch of the URE loop.", "batch")
        c = CounterMetricFamily(
            f"{prefix}_actions", "URE regulation actions taken.", labels=["action"]
        )
        for a in vocab.ACTIONS:
            c.add_metric([a], self.actions.get(a, 0))
        yield c
        c = CounterMetricFamily(
            f"{prefix}_v2_events", "Events in the v2 log by entity.", labels=["entity_id"]
        )
        for e, n in sorted(self.entities.items()):
            c.add_metric([e], n)
        yield c


class SafetyStats:
    """The Safety Music stream: the newest levels, changes of the final level, events."""

    def __init__(self, st=None):
        st = st or {}
        self.levels = st.get("levels") or {}
        self.changes = st.get("changes", 0)
        self.events = st.get("events", 0)

    def add(self, ev, pos=None):
        self.events += 1
        self.levels = dict(ev["levels"])
        self.changes += bool(ev.get("changed"))

    def to_state(self):
        return {"levels": self.levels, "changes": self.changes, "events": self.events}

    def families(self, prefix="ure_safety_music"):
        """Level by source as vocab.SEVERITY (-1 when none yet), changes, events."""
        g = GaugeMetricFamily(
            f"{prefix}_level",
            "Safety Music level by source: 0 CALM, 1 TENSE, 2 ALERT, -1 UNDEFINED.",
            labels=["source"],
        )
        for src in ("residual", "rollback_ratio", "final"):
            g.add_metric([src], vocab.SEVERITY.get(self.levels.get(src), -1))
        yield g
        yield CounterMetricFamily(
            f"{prefix}_level_changes_total",
            "Changes of the final Safety Music level.",
            self.changes,
        )
        yield CounterMetricFamily(f"{prefix}_events_total", "Safety Music events.", self.events)


# A consumer's plain counters: (family name, help, lumen.consumer.Consumer attribute).
CONSUMER_COUNTERS = (
    ("file_rotations", "Rename rotations of the log followed.", "rotations"),
    ("file_truncates", "Truncations (copytruncate) of the log detected.", "truncates"),
    ("checkpoints_written", "Checkpoints of offset and counters written.", "checkpoints"),
    (
        "checkpoint_errors",
        "Checkpoint writes that failed (disk full, I/O error) and were retried.",
        "checkpoint_errors",
    ),
    (
        "log_gap_bytes",
        "Bytes of the log that were gone (deleted, truncated without a copy) before this "
        "consumer read them; a lower bound (bytes appended after the last checkpoint of a "
        "deleted file are not known).",
        "gap_bytes",
    ),
)


def consumer_families(streams, prefix):
    """Self-monitoring counters as metric families named `<prefix>_...`: of one
    lumen.consumer.Consumer, or of several given as {stream: consumer}, one family per name
    holding every stream's samples, labelled stream=<stream> (a name appears once in an
    exposition: Prometheus' parser rejects a second HELP for it)."""
    names = ["stream"] if isinstance(streams, dict) else []
    pairs = list(streams.items()) if names else [(None, streams)]

    def family(cls, name, doc, extra, values):
        f = cls(f"{prefix}_{name}", doc, labels=names + extra)
        for label, c in pairs:
            for more, v in values(c):
                f.add_metric(([label] if names else []) + more, v)
        return f

    yield family(
        CounterMetricFamily,
        "log_lines",
        "Lines read from the log, by status.",
        ["status"],
        lambda c: [(["valid"], c.valid), (["rejected"], sum(c.rejected.values()))],
    )
    yield family(
        CounterMetricFamily,
        "rejects",
        "Lines quarantined, by reason.",
        ["reason"],
        lambda c: [([r], c.rejected.get(r, 0)) for r in events.REASONS],
    )
    for name, doc, attr in CONSUMER_COUNTERS:
        yield family(CounterMetricFamily, name, doc, [], lambda c, a=attr: [([], getattr(c, a))])
    yield family(
        GaugeMetricFamily,
        "log_bytes_behind",
        "Bytes of the log not yet read.",
        [],
        lambda c: [([], c.behind)],
    )


def emitter_families(em, prefix="rmb_emitter"):
    """The emitter's counters (lumen.statsfile: dropped, write_errors, pending)."""
    yield CounterMetricFamily(
        f"{prefix}_dropped_total",
        "Events the emitter dropped because the queue could not be "
        "written and its memory bound was reached.",
        em.get("dropped", 0),
    )
    yield CounterMetricFamily(
        f"{prefix}_write_errors_total",
        "Failed appends to the queue (disk full, I/O error), retried.",
        em.get("write_errors", 0),
    )
    yield GaugeMetricFamily(
        f"{prefix}_pending_events",
        "Events the emitter holds in memory, waiting to be written.",
        em.get("pending", 0),
    )


def gate_families(gates, prefix="rmb_safety_gate"):
    """The emitter's safety-gate thresholds (config `safety_gates`), for alert rules."""
    yield GaugeMetricFamily(
        f"{prefix}_residual_entropy_max",
        "Emitter gate: residual entropy above this becomes rollback.",
        gates["residual_entropy_max"],
    )
    yield GaugeMetricFamily(
        f"{prefix}_phase_diff_abs_max",
        "Emitter gate: |phase_diff| above this becomes rollback.",
        gates["phase_diff_abs_max"],
    )
    c = GaugeMetricFamily(
        f"{prefix}_risk_band_blocked",
        "Emitter gate: 1 when events of this risk_band become rollback.",
        labels=["risk_band"],
    )
    for b in vocab.RISK_BANDS:
        c.add_metric([b], 1.0 if b in gates["risk_band_block"] else 0.0)
    yield c


def scrape_duration(prefix, t0):
    """`<prefix>_scrape_duration_seconds`: time since `t0` (time.perf_counter())."""
    return GaugeMetricFamily(
        f"{prefix}_scrape_duration_seconds",
        "Time this scrape took to render, in seconds.",
        time.perf_counter() - t0,
    )
