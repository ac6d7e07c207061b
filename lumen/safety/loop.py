"""Safety Music loop (blueprint section 13): residual entropy and rollback ratio -> levels.

Every 1/`loop.hz` seconds `SafetyLoop.tick` appends one event to `output.channel`
(logs/safety_music_events.jsonl, schema schemas/safety_music_event_v1.json):
levels {residual, rollback_ratio, final} (lumen/safety/levels.py), the inputs they came
from (residual, ratio, window_s, events and rollbacks in the window; lumen/safety/inputs.py),
and `changed`/`previous` when the final level moved. All bands, thresholds, the window and
the rate come from configs/safety_music_v17.yaml, read by `load_config`.

Sound sinks (output.osc / midi_file / wav_file, any combination) follow the levels; the
MIDI and WAV files hold the last `recording_s` seconds and are rewritten every 10 s and on
`close()` (lumen/safety/recorder.py). `run` ticks until told to stop; the entry point
safety/safety_music_loop.py runs it under a Lifecycle (SIGTERM/SIGINT: flush, checkpoint,
exit 0).

Departures from the blueprint: it reads its config (the blueprint hard-codes the bands
and ignores the file); it does not re-read the whole log twice per tick; the ratio is
windowed deltas, not a sum of cumulative totals.
"""

import time

from lumen import config, events, timefmt
from lumen.jsonl import JsonlWriter
from lumen.safety import sound
from lumen.ticker import Ticker
from lumen.safety.inputs import LogInput, MetricsInput
from lumen.safety.levels import check_bands, levels
from lumen.safety.recorder import Recorder

LOOP_ID = "safety.music.v17"


def load_config(path, overrides=None):
    """The validated config; band maxima that do not increase or stop short of 1.0 are a
    ConfigError."""
    cfg = config.load(path, "safety_music_v17", overrides=overrides)
    m = cfg["mapping"]
    try:
        check_bands(m["residual_entropy"]["bands"], f"{path}: mapping.residual_entropy.bands")
        check_bands(m["rollback_ratio"]["thresholds"], f"{path}: mapping.rollback_ratio.thresholds")
    except ValueError as e:
        raise config.ConfigError(str(e)) from None
    return cfg


class SafetyLoop:
    """One input, the event channel and the sound sinks of one config; `source` overrides
    `inputs.source`."""

    def __init__(self, cfg, source=None):
        self.cfg = cfg
        inp = cfg["inputs"]
        window_s = cfg["mapping"]["rollback_ratio"]["window_s"]
        self.source = source or inp.get("source", "log")
        if self.source == "log":
            self.input = LogInput(inp.get("log", "logs/rmb_events.jsonl"), window_s)
        else:
            self.input = MetricsInput(
                inp.get("metrics_url", "http://127.0.0.1:9409/metrics"), window_s
            )
        out = cfg["output"]
        self.writer = JsonlWriter(out["channel"], max_pending=10_000)
        self.validator = events.Validator.named("safety_music_event_v1.json")
        self.tick_s = 1.0 / cfg["loop"]["hz"]
        self.previous = self.input.previous
        self.osc = self.recorder = None
        smap = sound.config_map(cfg)
        if out.get("osc", {}).get("enabled"):
            o = out["osc"]
            self.osc = sound.OscSink(o["host"], o["port"], o["address"])
        midi = out.get("midi_file", {})
        wav = out.get("wav_file", {})
        if midi.get("enabled") or wav.get("enabled"):
            self.recorder = Recorder(
                smap,
                self.tick_s,
                out.get("recording_s", 600),
                midi["path"] if midi.get("enabled") else None,
                wav["path"] if wav.get("enabled") else None,
            )
        self.ticks = 0

    def tick(self, now=None):
        now = time.time() if now is None else now
        residual, ratio, ev_n, rb_n = self.input.update(now)
        lv = levels(residual, ratio, self.cfg["mapping"])
        evt = {
            "ts": timefmt.format(now),
            "loop": LOOP_ID,
            "levels": lv,
            "inputs": {
                "source": self.source,
                "residual_entropy": residual,
                "rollback_ratio": ratio,
                "window_s": self.cfg["mapping"]["rollback_ratio"]["window_s"],
                "window_events": ev_n,
                "window_rollbacks": rb_n,
            },
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

    def run(self, stop, ready, max_ticks=None, clock=time.monotonic):
        """Tick every tick_s (lumen.ticker) until `stop` (a threading.Event) is set, or
        after `max_ticks`; call `ready()` once the first event exists and print each change
        of level."""
        ticker = Ticker(self.tick_s, clock)
        while not stop.is_set():
            evt = self.tick()
            if self.ticks == 1:
                ready()  # the first output exists: healthy
            if evt["changed"]:
                print(f"[safety] {evt['previous']} -> {evt['levels']['final']}", flush=True)
            if max_ticks and self.ticks >= max_ticks:
                break
            ticker.wait(stop)

    def close(self):
        if self.recorder:
            self.recorder.write()
        self.writer.try_flush("[safety]")
        self.input.close()
