"""A consumer of one JSONL stream: tailer + parse/validate + quarantine + self-monitoring.

Every Lumen process that reads a stream does the same four things, written once here:
read complete new lines (lumen.tail), parse and validate each against the stream's
schema (lumen.events, with a fast path for good lines), quarantine bad ones by reason
(lumen.rejects), and keep the counters an operator needs (lines by status, rejects by
reason, rotations, truncations, checkpoints, bytes behind). The counters and the caller's
own state are saved with the offset in one atomic checkpoint, so they cover the whole
stream across restarts.

    c = Consumer("logs/rmb_events.jsonl", "rmb_exporter", "rmb_event_v1.json", "rmb_events")
    n = c.poll(lambda ev, off: ...)   # calls back for each valid event; returns lines read
    c.commit(my_state)                # rejects first, then offset + counters + my_state

With `typed=True` (v1 stream only) events are decoded and validated in one pass by
lumen.v1types and handed over as typed objects (attribute access: ev.resonance_v3.risk_band,
ev.ts a datetime): the fast path for consumers that must keep up with the whole stream.
"""
import time
from collections import Counter

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from . import events, v1types
from .rejects import Rejects
from .tail import Tailer


class Consumer:
    def __init__(self, path, name, schema, stream, offsets_dir="logs/.offsets",
                 rejects_dir="logs/rejects", typed=False):
        self.name, self.stream = name, stream
        self.tailer = Tailer(path, name, offsets_dir)
        st = self.tailer.state or {}
        mon = st.get("monitor") or {}
        self.state = st.get("user")
        self.valid = mon.get("valid", 0)
        self.rejected = Counter(mon.get("rejects", {}))
        self._base = (mon.get("rotations", 0), mon.get("truncates", 0), mon.get("checkpoints", 0))
        self.validator = events.Validator.named(schema)
        self.decoder = v1types.DECODERS[schema] if typed else None
        self.rejects = Rejects(stream, name, rejects_dir)
        self.behind = 0
        self.bytes_read = 0       # bytes of lines delivered to this process (not persisted)
        self._dirty = False
        self._last_commit = time.monotonic()

    @property
    def source(self):
        return self.tailer.source

    @property
    def rotations(self):
        return self._base[0] + self.tailer.rotations

    @property
    def truncates(self):
        return self._base[1] + self.tailer.truncations

    @property
    def checkpoints(self):
        return self._base[2] + self.tailer.checkpoints

    def poll(self, on_event, max_polls=1):
        """Read up to `max_polls` batches; `on_event(event, offset)` for each valid event.

        Returns the number of lines read (0: nothing new)."""
        loads, is_valid, maxb = orjson.loads, self.validator.is_valid, events.MAX_LINE_BYTES
        decode = self.decoder.decode if self.decoder else None
        n = 0
        for _ in range(max_polls):
            lines = self.tailer.poll()
            if not lines:
                break
            n += len(lines)
            for off, raw in lines:
                self.bytes_read += len(raw) + 1
                if decode is not None and len(raw) <= maxb:
                    try:
                        ev = decode(raw)
                        self.valid += 1
                        on_event(ev, off)
                        continue
                    except v1types.DecodeError:
                        pass  # the JSON Schema decides below
                if len(raw) <= maxb:
                    try:
                        ev = loads(raw)
                    except orjson.JSONDecodeError:
                        ev = None
                    if type(ev) is dict and is_valid(ev):
                        self.valid += 1
                        on_event(v1types.as_typed(ev) if decode is not None else ev, off)
                        continue
                if not raw.strip():
                    continue  # a blank line is neither an event nor an error
                _, (reason, detail) = events.parse(raw, self.validator)
                self.rejected[reason] += 1
                self.rejects.add(reason, detail, self.tailer.source, off, raw)
        if n:
            self._dirty = True
        self.behind = self.tailer.bytes_behind()
        return n

    def reject(self, reason, detail, offset, raw):
        """Quarantine a line the caller found bad after validation (e.g. unmappable)."""
        self.valid -= 1
        self.rejected[reason] += 1
        self.rejects.add(reason, detail, self.tailer.source, offset, raw)

    def commit(self, state=None):
        """Quarantine first, then move the checkpoint (offset, counters, state) past the lines."""
        if state is not None:
            self.state = state
        self.rejects.flush()
        self.tailer.commit({"user": self.state, "monitor": {
            "valid": self.valid, "rejects": dict(self.rejected), "rotations": self.rotations,
            "truncates": self.truncates, "checkpoints": self.checkpoints + 1}})
        self._dirty = False
        self._last_commit = time.monotonic()

    def maybe_commit(self, state_fn, every_s=1.0):
        """Commit if there is something new and `every_s` has passed (state_fn() gives state)."""
        if self._dirty and time.monotonic() - self._last_commit >= every_s:
            self.commit(state_fn())

    def close(self):
        self.tailer.close()

    def families(self, prefix, label=None):
        """Self-monitoring metric families, named `<prefix>_...`, optionally labelled stream=label."""
        names = ["stream"] if label else []
        lv = [label] if label else []

        def counter(name, doc, value):
            c = CounterMetricFamily(f"{prefix}_{name}", doc, labels=names)
            c.add_metric(lv, value)
            return c

        c = CounterMetricFamily(f"{prefix}_log_lines", "Lines read from the log, by status.",
                                labels=names + ["status"])
        c.add_metric(lv + ["valid"], self.valid)
        c.add_metric(lv + ["rejected"], sum(self.rejected.values()))
        yield c
        c = CounterMetricFamily(f"{prefix}_rejects", "Lines quarantined, by reason.",
                                labels=names + ["reason"])
        for r in events.REASONS:
            c.add_metric(lv + [r], self.rejected.get(r, 0))
        yield c
        yield counter("file_rotations", "Rename rotations of the log followed.", self.rotations)
        yield counter("file_truncates", "Truncations (copytruncate) of the log detected.",
                      self.truncates)
        yield counter("checkpoints_written", "Checkpoints of offset and counters written.",
                      self.checkpoints)
        g = GaugeMetricFamily(f"{prefix}_log_bytes_behind",
                              "Bytes of the log not yet read.", labels=names)
        g.add_metric(lv, self.behind)
        yield g
