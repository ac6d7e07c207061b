#!/usr/bin/env python3
"""Safety Music loop (blueprint section 13): residual entropy and rollback ratio -> levels.

Every 1/`loop.hz` seconds it appends one event to `output.channel`
(logs/safety_music_events.jsonl, schema schemas/safety_music_event_v1.json):
levels {residual, rollback_ratio, final}, the inputs they came from (residual, ratio,
window_s, events and rollbacks in the window), and `changed`/`previous` when the final
level moved. All bands, thresholds, the window and the rate come from
configs/safety_music_v17.yaml.

Inputs (`inputs.source`):
- `log` (default): the RMB event log through the shared tailer (consumer `safety_music`).
  A tick reads only the bytes appended since the last tick, so its cost does not grow
  with the log. The ratio is rollbacks/events among events whose *timestamps* fall in the
  last `window_s` seconds (one-second buckets, saved in the checkpoint across restarts).
- `metrics`: the exporter's /metrics; the ratio is delta(rmb_rollback_total) /
  delta(rmb_events_total) over `window_s` of scrapes, as Prometheus' increase() computes.
No event in the window means the ratio is undefined and its level is UNDEFINED.

Sound sinks (output.osc / midi_file / wav_file, any combination) follow the levels; the
MIDI and WAV files hold the last `recording_s` seconds and are rewritten every 10 s and
on exit. SIGTERM/SIGINT: flush, checkpoint, exit 0.

Departures from the blueprint: it reads its config (the blueprint hard-codes the bands
and ignores the file); it does not re-read the whole log twice per tick; the ratio is
windowed deltas, not a sum of cumulative totals.
"""
import argparse
import collections
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from lumen import ROOT, checkpoint, config, events
from lumen.consumer import Consumer
from lumen.jsonl import JsonlWriter
from lumen.proc import Lifecycle, cli_main
from lumen.windows import BucketWindow, CounterWindow
from safety import sound
from safety.safety_levels import check_bands, levels
from lumen import vocab

CONSUMER = "safety_music"
LOOP_ID = "safety.music.v17"
RECORD_EVERY_S = 10.0


class LogInput:
    """Residual and windowed ratio from the event log, reading only new bytes."""

    def __init__(self, path, window_s, offsets_dir="logs/.offsets", rejects_dir="logs/rejects"):
        self.consumer = Consumer(path, CONSUMER, "rmb_event_v1.json", "rmb_events",
                                 offsets_dir, rejects_dir)
        st = self.consumer.state or {}
        self.window = BucketWindow(window_s, st.get("window"))
        self.residual = st.get("residual")
        self.previous = st.get("previous")
        self.last_tick_bytes = 0

    @property
    def tailer(self):
        return self.consumer.tailer

    def _add(self, ev, pos):
        self.window.add(pos.t, ev["event_type"] == vocab.ROLLBACK)
        self.residual = ev["resonance_v3"]["residual_entropy"]

    def update(self, now, max_polls=64):
        before = self.consumer.bytes_read
        self.consumer.poll(self._add, max_polls, now)  # bounded; a backlog: caught up over ticks
        self.last_tick_bytes = self.consumer.bytes_read - before  # only what was appended
        self.window.expire(now)
        ev_n, rb_n = self.window.counts()
        return self.residual, (rb_n / ev_n if ev_n else None), ev_n, rb_n

    def commit(self, previous):
        self.consumer.commit({"window": self.window.to_state(), "residual": self.residual,
                              "previous": previous})

    def close(self):
        self.consumer.close()


class MetricsInput:
    """Residual and windowed ratio from the exporter's /metrics (counter deltas)."""

    def __init__(self, url, window_s, state_path="logs/.offsets/safety_music_metrics.json"):
        import requests
        self.session = requests.Session()
        self.url = url
        self.window = CounterWindow(window_s)
        self.state_path = state_path
        st = checkpoint.load_json(state_path) or {}
        self.previous = st.get("previous")
        self.residual = None
        self.scrape_errors = 0
        self.last_tick_bytes = 0

    def update(self, now):
        from prometheus_client.parser import text_string_to_metric_families
        import requests
        try:
            text = self.session.get(self.url, timeout=1.0).text
            vals = {}
            for fam in text_string_to_metric_families(text):
                for s in fam.samples:
                    if not s.labels:
                        vals[s.name] = s.value
            self.window.add(now, vals["rmb_events_total"], vals["rmb_rollback_total"])
            self.residual = vals["rmb_residual_entropy_last"] if vals["rmb_events_total"] else None
        except (requests.RequestException, KeyError, ValueError):
            self.scrape_errors += 1  # inputs stay as they were; the ratio window ages
        self.window.expire(now)  # ages even while scrapes fail: a long outage is undefined
        d = self.window.deltas()
        ev_n, rb_n = (int(d[0]), int(d[1])) if d else (0, 0)
        return self.residual, (rb_n / ev_n if ev_n > 0 else None), ev_n, rb_n

    def commit(self, previous):
        try:
            checkpoint.save_json(self.state_path, {"previous": previous})
        except OSError:  # a full disk: the previous level is only for `changed`; next tick
            pass

    def close(self):
        self.session.close()


class Recorder:
    """The MIDI/WAV sinks: keep the last `keep_s` seconds of levels, rewrite the files."""

    def __init__(self, smap, tick_s, keep_s, midi_path=None, wav_path=None):
        self.smap, self.tick_s = smap, tick_s
        self.midi_path, self.wav_path = midi_path, wav_path
        self.buf = collections.deque(maxlen=max(2, int(keep_s / tick_s)))
        self._last = time.monotonic()

    def add(self, t, level):
        self.buf.append((t, level))
        if time.monotonic() - self._last >= RECORD_EVERY_S:
            self.write()

    def write(self):
        self._last = time.monotonic()
        segs = sound.segments(list(self.buf), self.tick_s)
        if not segs:
            return
        try:
            self._write(segs)
        except OSError as e:  # a full disk: the recording is rewritten whole next time
            print(f"[safety] warning: recording not written ({e.strerror or e})",
                  file=sys.stderr, flush=True)

    def _write(self, segs):
        if self.midi_path:
            tmp = f"{self.midi_path}.tmp"
            Path(tmp).parent.mkdir(parents=True, exist_ok=True)
            sound.render_midi(segs, self.smap).save(tmp)
            os.replace(tmp, self.midi_path)
        if self.wav_path:
            tmp = f"{self.wav_path}.tmp"
            sound.write_wav(tmp, *sound.render_wav(segs, self.smap))
            os.replace(tmp, self.wav_path)


def _resolve(p):
    p = Path(p)
    return p if p.is_absolute() or p.exists() else ROOT / p


def load_config(path, overrides=None):
    cfg = config.load(path, "safety_music_v17", overrides=overrides)
    m = cfg["mapping"]
    try:
        check_bands(m["residual_entropy"]["bands"], f"{path}: mapping.residual_entropy.bands")
        check_bands(m["rollback_ratio"]["thresholds"], f"{path}: mapping.rollback_ratio.thresholds")
    except ValueError as e:
        raise config.ConfigError(str(e)) from None
    return cfg


class SafetyLoop:
    def __init__(self, cfg, source=None):
        self.cfg = cfg
        inp = cfg["inputs"]
        window_s = cfg["mapping"]["rollback_ratio"]["window_s"]
        self.source = source or inp.get("source", "log")
        if self.source == "log":
            self.input = LogInput(inp.get("log", "logs/rmb_events.jsonl"), window_s)
        else:
            self.input = MetricsInput(inp.get("metrics_url", "http://127.0.0.1:9409/metrics"),
                                      window_s)
        out = cfg["output"]
        self.writer = JsonlWriter(out["channel"], max_pending=10_000)
        self.validator = events.Validator.named("safety_music_event_v1.json")
        self.tick_s = 1.0 / cfg["loop"]["hz"]
        self.previous = self.input.previous
        self.osc = self.recorder = None
        smap = sound.load_map(_resolve(out.get("sound_bridge", "configs/midi_map_v18.json")))
        if out.get("osc", {}).get("enabled"):
            o = out["osc"]
            self.osc = sound.OscSink(o["host"], o["port"], o["address"])
        midi = out.get("midi_file", {})
        wav = out.get("wav_file", {})
        if midi.get("enabled") or wav.get("enabled"):
            self.recorder = Recorder(smap, self.tick_s, out.get("recording_s", 600),
                                     midi["path"] if midi.get("enabled") else None,
                                     wav["path"] if wav.get("enabled") else None)
        self.ticks = 0

    def tick(self, now=None):
        now = time.time() if now is None else now
        residual, ratio, ev_n, rb_n = self.input.update(now)
        lv = levels(residual, ratio, self.cfg["mapping"])
        evt = {
            "ts": datetime.fromtimestamp(now, timezone.utc).isoformat(),
            "loop": LOOP_ID,
            "levels": lv,
            "inputs": {"source": self.source, "residual_entropy": residual,
                       "rollback_ratio": ratio,
                       "window_s": self.cfg["mapping"]["rollback_ratio"]["window_s"],
                       "window_events": ev_n, "window_rollbacks": rb_n},
            "changed": self.previous is not None and lv["final"] != self.previous,
            "previous": self.previous,
        }
        err = self.validator.error(evt)
        if err:  # a bug, not bad input: say so loudly rather than write a bad event
            raise RuntimeError(f"safety music event does not match its schema: {err}")
        self.writer.add(evt)
        self.writer.try_flush("[safety]")
        if self.osc:
            self.osc.send(evt)
        if self.recorder:
            self.recorder.add(now, lv["final"])
        self.previous = lv["final"]
        self.input.commit(self.previous)
        self.ticks += 1
        return evt

    def close(self):
        if self.recorder:
            self.recorder.write()
        self.writer.try_flush("[safety]")
        self.input.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs/safety_music_v17.yaml"))
    ap.add_argument("--source", choices=("log", "metrics"), help="override inputs.source")
    ap.add_argument("--hz", type=float, help="override loop.hz")
    ap.add_argument("--ticks", type=int, help="stop after this many ticks")
    ap.add_argument("--name", default=CONSUMER, help="process name (PID file run/NAME.pid)")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, {"inputs.source": args.source, "loop.hz": args.hz})
    loop = SafetyLoop(cfg)
    with Lifecycle(args.name) as life:
        print(f"[safety] levels from {loop.source} every {loop.tick_s:g}s -> "
              f"{cfg['output']['channel']}", flush=True)
        next_t = time.monotonic()
        try:
            while not life.stop.is_set():
                evt = loop.tick()
                if loop.ticks == 1:
                    life.ready()  # the first output exists: healthy
                if evt["changed"]:
                    print(f"[safety] {evt['previous']} -> {evt['levels']['final']}", flush=True)
                if args.ticks and loop.ticks >= args.ticks:
                    break
                next_t += loop.tick_s
                life.stop.wait(max(0.0, next_t - time.monotonic()))
        finally:
            loop.close()
    print(f"[safety] stopped after {loop.ticks} ticks", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
