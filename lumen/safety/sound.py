"""Safety Music as sound (milestone M4): the sound bridge map, MIDI and WAV rendering, OSC.

The map (`configs/midi_map_v18.json`) gives each level its notes, pulse tempo, velocity
and General MIDI program. A stretch of levels is rendered as pulses of the level's chord at
its tempo, so CALM, TENSE and ALERT differ in harmony (major triad / diminished triad /
cluster with a tritone), in tempo and in loudness; UNDEFINED is silence.

- `load_map(path)`, `config_map(cfg)`: the map, from a path or as a loop config names it;
  a map that cannot be played (a level missing, a tempo, note, velocity or program out of
  MIDI's range) is a ConfigError naming the key.
- `segments(events, tick_s)`: (level, seconds) pieces from safety music events.
- `render_midi(segments, smap)`: a mido.MidiFile (one track, program change and marker at
  each level change, fixed 120 bpm clock so 1 s = 960 ticks).
- `render_wav(segments, smap)`: 16-bit mono PCM samples (numpy), sine partials with a
  short attack and decay per pulse; `write_wav` saves them.
- `OscSink`: sends `/lumen/safety/level` (final level, residual, ratio, changed) over UDP.
"""

import json
import wave
from pathlib import Path

import mido
import numpy as np

from lumen import config, vocab

TICKS_PER_BEAT = 480
MIDI_TEMPO = 500_000  # microseconds per beat: 120 bpm, so one second is 960 ticks
TICKS_PER_S = TICKS_PER_BEAT * 1_000_000 / MIDI_TEMPO


BPM_RANGE = (4, 1000)  # 4 bpm is about MIDI's slowest tempo (0xFFFFFF microseconds a beat)


def _number(v, lo, hi, integer=False):
    ok = type(v) is int or (type(v) is float and not integer and v == v)
    return ok and lo <= v <= hi


def _check_map(path, smap):
    if type(smap) is not dict or type(smap.get("levels")) is not dict:
        raise config.ConfigError(f"{path}: levels must be an object of level -> sound")
    for level in vocab.LEVELS:
        spec, key = smap["levels"].get(level), f"{path}: levels.{level}"
        if type(spec) is not dict:
            raise config.ConfigError(f"{key} is missing or not an object")
        notes = spec.get("notes")
        if type(notes) is not list or not all(_number(n, 0, 127, True) for n in notes):
            raise config.ConfigError(f"{key}.notes must be a list of MIDI notes 0..127")
        if not _number(spec.get("tempo_bpm"), *BPM_RANGE):
            raise config.ConfigError(f"{key}.tempo_bpm must be a number from 4 to 1000")
        for k in ("velocity", "program"):
            if not _number(spec.get(k), 0, 127, True):
                raise config.ConfigError(f"{key}.{k} must be an integer 0..127")
    r = smap.get("render", {})
    if type(r) is not dict or not _number(r.get("gate", 0.6), 0.01, 1.0):
        raise config.ConfigError(f"{path}: render.gate must be a number from 0.01 to 1")
    if not _number(r.get("sample_rate", 22050), 8000, 192000, True):
        raise config.ConfigError(f"{path}: render.sample_rate must be an integer 8000..192000")


def load_map(path):
    try:
        with open(path, encoding="utf-8") as f:
            smap = json.load(f)
    except (OSError, ValueError) as e:
        raise config.ConfigError(f"{path}: sound bridge map not readable: {e}") from None
    _check_map(path, smap)
    return smap


def config_map(cfg):
    """The map a Safety Music config names (`output.sound_bridge`): a relative path is
    taken from the working directory when it exists there, else `configs/...` is the
    shipped file (config.shipped)."""
    return load_map(config.shipped(cfg["output"].get("sound_bridge", "configs/midi_map_v18.json")))


def note_hz(n):
    return 440.0 * 2 ** ((n - 69) / 12)


def segments(events, tick_s):
    """[(level, seconds)] from events with 'ts' (Unix seconds) and 'level', in time order.

    Each event lasts until the next one (at most two ticks: a gap is not stretched);
    the last lasts one tick. Consecutive equal levels are merged."""
    out = []
    for i, (t, level) in enumerate(events):
        nxt = events[i + 1][0] if i + 1 < len(events) else t + tick_s
        dur = min(max(nxt - t, 0.0), 2 * tick_s)
        if dur <= 0:
            continue
        if out and out[-1][0] == level:
            out[-1] = (level, out[-1][1] + dur)
        else:
            out.append((level, dur))
    return out


def _pulses(segs, smap):
    """(start_s, dur_s, notes, velocity, level) for every pulse of every segment."""
    t = 0.0
    gate = smap.get("render", {}).get("gate", 0.6)
    for level, dur in segs:
        spec = smap["levels"][level]
        if spec["notes"] and spec["velocity"] > 0:
            period = 60.0 / spec["tempo_bpm"]
            k = 0
            while k * period < dur - 1e-9:
                start = t + k * period
                yield (
                    start,
                    min(gate * period, t + dur - start),
                    spec["notes"],
                    spec["velocity"],
                    level,
                )
                k += 1
        t += dur


def render_midi(segs, smap):
    mid = mido.MidiFile(ticks_per_beat=TICKS_PER_BEAT)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=MIDI_TEMPO, time=0))
    timeline = []  # (tick, order, message)
    t = 0.0
    for level, dur in segs:
        spec = smap["levels"][level]
        tick = round(t * TICKS_PER_S)
        timeline.append((tick, 0, mido.MetaMessage("marker", text=level)))
        timeline.append((tick, 1, mido.Message("program_change", program=spec["program"])))
        t += dur
    for start, dur, notes, vel, _ in _pulses(segs, smap):
        on, off = round(start * TICKS_PER_S), round((start + dur) * TICKS_PER_S)
        for n in notes:
            timeline.append((on, 3, mido.Message("note_on", note=n, velocity=vel)))
            timeline.append((max(off, on + 1), 2, mido.Message("note_off", note=n, velocity=0)))
    timeline.sort(key=lambda x: (x[0], x[1]))
    now = 0
    for tick, _, msg in timeline:
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    return mid


def render_wav(segs, smap, sample_rate=None):
    sr = sample_rate or smap.get("render", {}).get("sample_rate", 22050)
    total = sum(d for _, d in segs)
    out = np.zeros(int(total * sr) + 1, dtype=np.float64)
    for start, dur, notes, vel, _ in _pulses(segs, smap):
        n = int(dur * sr)
        if n <= 0:
            continue
        tt = np.arange(n) / sr
        env = np.minimum(1.0, tt / 0.01) * np.exp(-3.0 * tt / max(dur, 1e-3))
        chord = sum(
            np.sin(2 * np.pi * note_hz(x) * tt) + 0.2 * np.sin(4 * np.pi * note_hz(x) * tt)
            for x in notes
        )
        i0 = int(start * sr)
        seg = out[i0 : i0 + n]
        seg += (vel / 127.0) * env[: len(seg)] * chord[: len(seg)] / len(notes)
    peak = np.max(np.abs(out)) if len(out) else 0.0
    if peak > 0:
        out *= 0.9 / peak
    return (out * 32767).astype(np.int16), sr


def write_wav(path, samples, sr):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(samples.tobytes())


class OscSink:
    def __init__(self, host, port, address):
        from pythonosc.udp_client import SimpleUDPClient

        self.client = SimpleUDPClient(host, port)
        self.address = address
        self.errors = 0

    def send(self, evt):
        inp = evt.get("inputs", {})
        r, q = inp.get("residual_entropy"), inp.get("rollback_ratio")
        try:
            self.client.send_message(
                self.address,
                [
                    evt["levels"]["final"],
                    -1.0 if r is None else float(r),
                    -1.0 if q is None else float(q),
                    int(bool(evt.get("changed"))),
                ],
            )
        except OSError:  # nobody listening is fine for UDP; a send error is counted
            self.errors += 1
