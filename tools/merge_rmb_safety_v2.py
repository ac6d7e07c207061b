#!/usr/bin/env python3
"""merge.v2 (blueprint section 37.3): RMB and Safety Music events -> resonance_events_v2.jsonl.

Reads `paths.v1_rmb` and `paths.v1_safe` of configs/ure_v18.yaml through the shared
tailer (consumers `merge_rmb`, `merge_safety`) and appends their v2 mapping (ure/mapping.py)
to `paths.v2_log`, each line validated against schemas/resonance_event_v2.json. Running it
twice appends nothing the second time; a crash between writing and checkpointing is
repaired on the next run from the `source` of the newest merged lines (lumen/resume.py);
rotation of either input is followed by the tailer. `--follow` keeps merging as events
arrive (trackD.start runs it so). Bad input lines, and events whose mapping is not a valid
v2 event, are quarantined to logs/rejects/<stream>.jsonl and counted.

Departure from the blueprint: it re-read both inputs from the start on every run,
duplicating the whole v2 log each time, and dropped every error silently.
"""
import argparse
import socket
import sys
import time

import orjson

from lumen import ROOT, config, events
from lumen.consumer import Consumer
from lumen.jsonl import JsonlWriter
from lumen.proc import Lifecycle, cli_main
from lumen.resume import already_done, newest_sources
from ure.mapping import rmb_to_v2, safety_to_v2


class Merger:
    def __init__(self, paths, host=None, offsets_dir="logs/.offsets", rejects_dir="logs/rejects"):
        self.host = host or socket.gethostname()
        self.writer = JsonlWriter(paths["v2_log"])
        self.v2 = events.Validator.named("resonance_event_v2.json")
        done = newest_sources(paths["v2_log"], {"rmb", "safety"})
        self.inputs = [
            ("rmb", Consumer(paths["v1_rmb"], "merge_rmb", "rmb_event_v1.json", "rmb_events",
                             offsets_dir, rejects_dir), done.get("rmb")),
            ("safety", Consumer(paths["v1_safe"], "merge_safety", "safety_music_event_v1.json",
                                "safety_music_events", offsets_dir, rejects_dir),
             done.get("safety")),
        ]
        self.merged = {"rmb": 0, "safety": 0}
        self.skipped = 0

    def _map(self, stream, e, fp, off):
        src = {"stream": stream, "fp": fp, "offset": off}
        if stream == "rmb":
            return rmb_to_v2(e, self.host, src)
        return safety_to_v2(e, self.host, src, self.merged["safety"])

    def step(self):
        """Merge what is new in each input; returns the number of input lines read."""
        n = 0
        for stream, consumer, done in self.inputs:
            def on_event(e, off, stream=stream, consumer=consumer, done=done):
                fp = consumer.source
                if already_done(done, fp, off):
                    self.skipped += 1
                    return
                v2 = self._map(stream, e, fp, off)
                bad = self.v2.error(v2)
                if bad:
                    consumer.reject("unmappable", f"v2: {bad}", off, orjson.dumps(e))
                    return
                self.writer.add(v2)
                self.merged[stream] += 1
            read = consumer.poll(on_event)
            if read:
                n += read
                self.writer.flush()  # output first, then the checkpoint past it
                consumer.commit()
        return n

    def run(self, stop=None, follow=False, idle_s=0.2, progress=None):
        while stop is None or not stop.is_set():
            if not self.step():
                if not follow:
                    break
                stop.wait(idle_s)
            elif progress:
                progress(self)
        for _, consumer, _ in self.inputs:
            consumer.close()

    @property
    def rejected(self):
        return sum(sum(c.rejected.values()) for _, c, _ in self.inputs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs/ure_v18.yaml"))
    ap.add_argument("--follow", action="store_true", help="keep merging new events")
    ap.add_argument("--name", default="ure_merge", help="process name (PID file run/NAME.pid)")
    args = ap.parse_args(argv)
    cfg = config.load(args.config, "ure_v18")
    m = Merger(cfg["paths"])
    t0 = time.monotonic()
    last = [t0]

    def progress(mg):
        if sys.stderr.isatty() and time.monotonic() - last[0] >= 1.0:
            last[0] = time.monotonic()
            total = sum(mg.merged.values())
            print(f"\r[merge] {total} events, {total / (last[0] - t0):.0f}/s", end="",
                  file=sys.stderr, flush=True)

    with Lifecycle(args.name) as life:
        life.ready()
        m.run(life.stop, follow=args.follow, progress=progress)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(f"[merge] resonance_events_v2.jsonl appended: {m.merged['rmb']} rmb + "
          f"{m.merged['safety']} safety events"
          + (f" ({m.skipped} already merged)" if m.skipped else "")
          + (f", {m.rejected} rejected" if m.rejected else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
