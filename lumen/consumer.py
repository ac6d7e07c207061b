"""A consumer of one JSONL stream: tailer + classification + quarantine + self-monitoring.

Every Lumen process that reads a stream does the same things, written once here: hold
the consumer name's lock (one process per name), read complete new lines (lumen.tail),
classify each (lumen.events.Classifier: the same verdict in every stage), quarantine bad
ones by reason (lumen.rejects), and keep the counters an operator needs (lines by status,
rejects by reason, rotations, truncations, checkpoints and failed checkpoint writes,
bytes behind, bytes lost to gaps). The counters and the caller's own state are saved with
the offset in one atomic checkpoint, so they cover the whole stream across restarts.
It only counts: lumen.stats.consumer_families renders the counters for a scrape.

    c = Consumer("logs/rmb_events.jsonl", "rmb_exporter", "rmb_event_v1.json", "rmb_events")
    n = c.poll(lambda ev, pos: ...)   # each valid event and its Pos(fp, offset, t)
    c.commit(my_state)                # rejects first, then offset + counters + my_state

`pos.fp` and `pos.offset` name the line's own file and place in it: the identity every sink
deduplicates on. `pos.t` is the event's `ts` in Unix seconds. With `typed=True` events
are lumen.decoders objects (attribute access) instead of dicts, the cheapest form for
consumers that must keep up with the whole stream.

A checkpoint that cannot be written (disk full, I/O error) is counted, not fatal: the
consumer keeps its place in memory and the next commit tries again.
"""

import sys
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

from . import events, lock
from .rejects import Rejects
from .tail import Tailer


class Pos(NamedTuple):
    fp: str
    offset: int
    t: float


class Consumer:
    def __init__(
        self,
        path,
        name,
        schema,
        stream,
        offsets_dir="logs/.offsets",
        rejects_dir="logs/rejects",
        typed=False,
        max_future_s=events.MAX_FUTURE_S,
        clock=time.time,
        store=None,
    ):
        self.name, self.stream = name, stream
        self._lock = lock.hold(Path(offsets_dir) / f"{name}.lock", f"consumer {name}")
        try:
            self.tailer = Tailer(path, name, offsets_dir, store=store)
        except BaseException:
            lock.release(self._lock)
            raise
        st = self.tailer.state or {}
        mon = st.get("monitor") or {}
        self.state = st.get("user")
        self.valid = mon.get("valid", 0)
        self.rejected = Counter(mon.get("rejects", {}))
        self._base = (
            mon.get("rotations", 0),
            mon.get("truncates", 0),
            mon.get("checkpoints", 0),
            mon.get("gap_bytes", 0),
        )
        self.checkpoint_errors = mon.get("checkpoint_errors", 0)
        self.classifier = events.Classifier(
            schema, typed=typed, max_future_s=max_future_s, clock=clock
        )
        self.validator = self.classifier.validator
        self.rejects = Rejects(stream, name, rejects_dir)
        self.behind = 0
        self.bytes_read = 0  # bytes of lines delivered to this process (not persisted)
        self._dirty = False
        self._last_commit = time.monotonic()
        self._last_error = None

    @property
    def rotations(self):
        return self._base[0] + self.tailer.rotations

    @property
    def truncates(self):
        return self._base[1] + self.tailer.truncations

    @property
    def checkpoints(self):
        return self._base[2] + self.tailer.checkpoints

    @property
    def gap_bytes(self):
        return self._base[3] + self.tailer.gap_bytes

    def poll(self, on_event, max_polls=1, now=None):
        """Read up to `max_polls` batches; `on_event(event, pos)` for each valid event.
        `now` is the reader's clock for the `ts_future` bound (default: the consumer's
        clock, read once per batch). Returns the number of lines read (0: nothing new).
        An `on_event` that raises on a line makes it an `internal` reject (counted,
        quarantined with the error) and reading goes on."""
        classify = self.classifier.classify
        n = 0
        for _ in range(max_polls):
            batch = self.tailer.poll()
            if not batch:
                break
            n += len(batch)
            fp = batch.fp
            t_now = self.classifier.clock() if now is None else now
            nbytes = valid = 0
            for off, raw in batch:
                nbytes += len(raw)
                ev, t, err = classify(raw, t_now)
                if err is None:
                    try:
                        on_event(ev, Pos(fp, off, t))
                        valid += 1
                    except Exception as e:  # noqa: BLE001 - what a stage cannot take of a valid
                        # line (a bug, or a field outside the schema it trusted) is that line's
                        # reject, counted and quarantined: never a crash loop on one line
                        self.rejected["internal"] += 1
                        detail = f"{self.name}: {type(e).__name__}: {e}"[:500]
                        self.rejects.add("internal", detail, fp, off, raw)
                elif raw.strip():  # a blank line is neither an event nor an error
                    self.rejected[err[0]] += 1
                    self.rejects.add(err[0], err[1], fp, off, raw)
            self.valid += valid
            self.bytes_read += nbytes + len(batch)
        if n:
            self._dirty = True
        self.behind = self.tailer.bytes_behind()
        return n

    def reject(self, reason, detail, pos, raw):
        """Quarantine a line the caller found bad after classification (unmappable, a
        conflicting duplicate): it counts as rejected, not valid."""
        self.valid -= 1
        self.rejected[reason] += 1
        self.rejects.add(reason, detail, pos.fp, pos.offset, raw)

    def monitor(self):
        return {
            "valid": self.valid,
            "rejects": dict(self.rejected),
            "rotations": self.rotations,
            "truncates": self.truncates,
            "checkpoints": self.checkpoints + 1,
            "gap_bytes": self.gap_bytes,
            "checkpoint_errors": self.checkpoint_errors,
        }

    def commit(self, state=None):
        """Quarantine first, then move the checkpoint (offset, counters, state) past the
        lines. Returns False (and counts it) when the disk refused; nothing is lost: the
        pending rejects and the position stay in memory for the next try."""
        if state is not None:
            self.state = state
        try:
            self.rejects.flush()
            self.tailer.commit({"user": self.state, "monitor": self.monitor()})
        except OSError as e:  # ENOSPC, EIO, EDQUOT, EROFS: the process keeps serving
            self.checkpoint_errors += 1
            self._last_commit = time.monotonic()
            msg = f"{e.strerror or e}"
            if msg != self._last_error:
                print(
                    f"[{self.name}] warning: checkpoint not written ({msg}); will retry",
                    file=sys.stderr,
                    flush=True,
                )
                self._last_error = msg
            return False
        if self._last_error:
            print(f"[{self.name}] checkpoint written again", file=sys.stderr, flush=True)
            self._last_error = None
        self._dirty = False
        self._last_commit = time.monotonic()
        return True

    def maybe_commit(self, state_fn, every_s=1.0):
        """Commit if there is something new and `every_s` has passed (state_fn() gives state)."""
        if self._dirty and time.monotonic() - self._last_commit >= every_s:
            self.commit(state_fn())

    def close(self):
        self.tailer.close()
        lock.release(self._lock)
        self._lock = None
