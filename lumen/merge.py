"""merge.v2 (blueprint section 37.3): RMB and Safety Music events into the v2 log, exactly once.

`Merger(paths)` reads `paths.v1_rmb` and `paths.v1_safe` through the shared consumer
(consumers `merge_rmb`, `merge_safety`: their locks make it one merge per state
directory) and appends each event's v2 mapping (lumen/v2map.py) to `paths.v2_log`, each
line a valid v2 event (schemas/resonance_event_v2.json): RMB events read on the typed fast
path map to valid v2 events by construction, the others are validated, and an event whose
mapping is not a valid v2 event is quarantined as `unmappable`. The output is fsynced before the
checkpoints move, and a crash in between is repaired on the next run from the `source` of
the lines merged since the last checkpoint (lumen/exactly_once.py). A full disk keeps the
batch and retries it before anything new is read.

    m = Merger(cfg["paths"])          # lock.Busy if another merge holds the consumers
    m.run(stop, follow=True)          # until stop; without follow, until nothing is new
    print(m.summary())

Departure from the blueprint: it re-read both inputs from the start on every run,
duplicating the whole v2 log each time, and dropped every error silently.
"""

import socket
import sys
import time

import orjson

from . import events
from .consumer import Consumer
from .exactly_once import already_done, out_position, written_since
from .jsonl import JsonlWriter
from .proc import warn_retry
from .decoders import RmbEventV1
from .v2map import rmb_to_v2, safety_to_v2

POLLS_PER_STEP = 8  # up to 8 MiB of input (written a batch at a time) per fsync + checkpoint
RESCAN_BYTES = 4 << 20  # the most output a restart reads again for a quiet input
INPUTS = (  # (stream, consumer, paths key, schema, quarantine stream, typed events)
    ("rmb", "merge_rmb", "v1_rmb", "rmb_event_v1.json", "rmb_events", True),
    (
        "safety",
        "merge_safety",
        "v1_safe",
        "safety_music_event_v1.json",
        "safety_music_events",
        False,
    ),
)


class Merger:
    """Both inputs -> the v2 log, exactly once. Holds both consumer locks: a second merge
    (one-shot or follower) of the same state directory gets lock.Busy."""

    def __init__(self, paths, host=None, offsets_dir="logs/.offsets", rejects_dir="logs/rejects"):
        self.host = host or socket.gethostname()
        self.out = paths["v2_log"]
        self.writer = JsonlWriter(self.out, fsync="later")  # durable before the checkpoint
        self.v2 = events.Validator.named("resonance_event_v2.json")
        self.inputs = []
        try:
            for stream, name, key, schema, qname, typed in INPUTS:
                c = Consumer(paths[key], name, schema, qname, offsets_dir, rejects_dir, typed=typed)
                since = (c.state or {}).get("out") if c.state is not None else None
                self.inputs.append((stream, c, written_since(self.out, since, {stream})))
        except BaseException:
            self.close()
            raise
        self.merged = {"rmb": 0, "safety": 0}
        self.skipped = 0
        self.write_errors = 0

    def _map(self, stream, e, pos):
        """(v2 event, None) or (None, why it is not a valid v2 event)."""
        src = {"stream": stream, "fp": pos.fp, "offset": pos.offset}
        if stream == "rmb":
            v2 = rmb_to_v2(e, self.host, src)
            if type(e) is RmbEventV1:  # valid by construction (lumen.v2map)
                return v2, None
        else:
            v2 = safety_to_v2(e, self.host, src, self.merged["safety"])
        return v2, self.v2.error(v2)

    def step(self):
        """Merge what is new in each input; returns the number of input lines read.
        If the output cannot be written (disk full), the batch is kept and retried before
        anything new is read; the checkpoints move only after the output is durable."""
        if len(self.writer) and not self._flush():
            return 0
        n = 0
        for stream, consumer, done in self.inputs:

            def on_event(e, pos, stream=stream, consumer=consumer, done=done):
                if done and already_done(done, stream, pos):
                    self.skipped += 1  # written before a crash, checkpoint not yet moved
                    return
                v2, bad = self._map(stream, e, pos)
                if bad:
                    consumer.reject("unmappable", f"v2: {bad}", pos, orjson.dumps(e))
                    return
                self.writer.add(v2)
                self.merged[stream] += 1

            for _ in range(POLLS_PER_STEP):
                k = consumer.poll(on_event)
                n += k
                if not k:
                    break
                if not self._write():  # each batch's output written at once: memory stays
                    return n  # one batch's; a full disk keeps it and stops reading
        if n:
            self._flush()
        return n

    def _write(self):
        try:
            self.writer.flush()  # written, not yet durable (fsync="later")
            return True
        except OSError as e:  # ENOSPC/EIO: keep the batch, keep the checkpoints behind it
            self.write_errors += 1
            warn_retry("[merge]", self.write_errors, f"{self.out}: {e.strerror or e}")
            return False

    def _flush(self):
        """Write what is pending, make all of it durable, then move the checkpoints."""
        if not self._write():
            return False
        try:
            self.writer.sync()
        except OSError as e:  # EIO on fsync: the checkpoints stay behind what it vouched for
            self.write_errors += 1
            warn_retry("[merge]", self.write_errors, f"{self.out}: {e.strerror or e}")
            return False
        pos = out_position(self.out)
        for _, consumer, _ in self.inputs:
            if consumer._dirty or _lags(consumer.state, pos):
                consumer.commit({"out": pos})
        return True

    def run(self, stop=None, follow=False, idle_s=0.2, progress=None):
        while stop is None or not stop.is_set():
            if not self.step():
                if not follow and not len(self.writer):
                    break
                if stop is None:
                    time.sleep(idle_s)
                else:
                    stop.wait(idle_s)
            elif progress:
                progress(self)
        self.close()

    def close(self):
        self.writer.close()
        for _, consumer, _ in self.inputs:
            consumer.close()

    @property
    def rejected(self):
        return sum(sum(c.rejected.values()) for _, c, _ in self.inputs)

    def summary(self):
        """The one line a run ends with."""
        return (
            f"[merge] resonance_events_v2.jsonl appended: {self.merged['rmb']} rmb + "
            f"{self.merged['safety']} safety events"
            + (f" ({self.skipped} already merged)" if self.skipped else "")
            + (f", {self.rejected} rejected" if self.rejected else "")
        )


def _lags(state, pos, most=RESCAN_BYTES):
    """True when this input's checkpoint names an output position more than `most` bytes
    behind `pos`: a restart would read all of that to learn what was merged. An input with
    nothing read since its checkpoint (a quiet one) can move it along: none of the output
    past its position comes from lines after its offset."""
    out = (state or {}).get("out")
    if pos is None:
        return False
    if not out or out.get("ino") != pos["ino"] or out.get("dev") != pos["dev"]:
        return True
    return pos["offset"] - out.get("offset", 0) > most


def tty_progress():
    """A `progress` callback for `Merger.run`: events merged and the rate, on a terminal's
    stderr at most once a second (nothing when stderr is not a terminal)."""
    t0 = time.monotonic()
    last = [t0]

    def progress(mg):
        if sys.stderr.isatty() and time.monotonic() - last[0] >= 1.0:
            last[0] = time.monotonic()
            total = sum(mg.merged.values())
            print(
                f"\r[merge] {total} events, {total / (last[0] - t0):.0f}/s",
                end="",
                file=sys.stderr,
                flush=True,
            )

    return progress
