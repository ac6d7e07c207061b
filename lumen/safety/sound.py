"""Safety Music as sound (milestone M4): the sound bridge map, MIDI and WAV rendering, OSC.

The map (`configs/midi_map_v18.json`) gives each level its notes, pulse tempo, velocity
and General MIDI program. A stretch of levels is rendered as pulses of the level's chord,
one per beat of its tempo, so CALM, TENSE and ALERT differ in harmony (major triad /
diminished triad / cluster with a tritone), in tempo and in loudness; UNDEFINED is silence.

- `load_map(path)`, `config_map(cfg)`: the map, from a path or as a loop config names it;
  a map that cannot be played (a level missing, a tempo, note, velocity or program out of
  MIDI's range) is a ConfigError naming the key.
- `for_page(smap)`: the map as the API serves it to the live page (GET /api/sound).
- `segments(events, tick_s)`: (level, seconds) pieces from safety music events.
- `plan(segments, smap)`: the one score both renders follow (a `Plan`): a section per
  segment with the level's tempo as a MIDI Set Tempo value (whole microseconds per beat),
  pulses in ticks (one per beat), and the tempo map that turns a tick into seconds.
- `render_midi(segments, smap)`: a mido.MidiFile, type 1: a conductor track (Set Tempo and
  a marker at each level change) and a note track (program change at each level change,
  the pulses), so a DAW shows the tempo changing with the level.
- `render_wav(segments, smap)`: 16-bit mono PCM samples (numpy), sine partials with a
  short attack and decay per pulse, each at the seconds the plan's tempo map gives its
  ticks, so the WAV and the MIDI sound the same notes at the same times; `write_wav`
  saves them.
- `OscSink`: sends `/lumen/safety/level` (final level, residual, ratio, changed) over UDP;
  it carries no tempo (a receiver maps the level to its own sound).
"""

import json
import wave
from bisect import bisect_right
from collections import namedtuple
from pathlib import Path

from lumen import config, vocab

TICKS_PER_BEAT = 480
BPM_RANGE = (4, 1000)  # 4 bpm is about MIDI's slowest tempo (0xFFFFFF microseconds a beat)


def tempo_us(bpm):
    """MIDI Set Tempo value for `bpm`: whole microseconds per beat, the clock of both renders."""
    return round(60_000_000 / bpm)


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


def for_page(smap):
    """The map as the live page plays it (GET /api/sound, lumen/api/static/sound.js): each
    level's notes, tempo_bpm, velocity, program and instrument name, and the render's gate
    and sample rate with their defaults filled in; comments and unknown keys left out."""
    levels = {}
    for level in vocab.LEVELS:
        spec = smap["levels"][level]
        levels[level] = {k: spec[k] for k in ("notes", "tempo_bpm", "velocity", "program")}
        if type(spec.get("instrument")) is str:
            levels[level]["instrument"] = spec["instrument"]
    r = smap.get("render", {})
    render = {"gate": r.get("gate", 0.6), "sample_rate": r.get("sample_rate", 22050)}
    return {"ok": True, "levels": levels, "render": render}


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


Section = namedtuple("Section", "tick level tempo")  # start tick, microseconds per beat
Pulse = namedtuple("Pulse", "on off notes velocity level")  # on/off in ticks


class Plan:
    """Sections (one per level segment), pulses and the end, in ticks; `seconds(tick)` is
    the tempo map, exact (integer microseconds) up to the final division."""

    def __init__(self, sections, pulses, end):
        self.sections, self.pulses, self.end = sections, pulses, end
        self._ticks = [s.tick for s in sections]
        self._at, acc = [], 0  # tempo-map time at each section's start, microseconds x TPB
        for i, s in enumerate(sections):
            self._at.append(acc)
            acc += ((sections[i + 1].tick if i + 1 < len(sections) else end) - s.tick) * s.tempo

    def seconds(self, tick):
        if not self.sections:
            return 0.0
        i = max(bisect_right(self._ticks, tick) - 1, 0)
        s = self.sections[i]
        return (self._at[i] + (tick - s.tick) * s.tempo) / (TICKS_PER_BEAT * 1_000_000)

    @property
    def duration(self):
        return self.seconds(self.end)


def plan(segs, smap):
    """The score of [(level, seconds)]: each segment a section at its level's tempo, a pulse
    of the level's chord on each beat (held `render.gate` of a beat, cut at the section's
    end). A section's length in ticks is chosen so that its end, in the tempo map's
    seconds, is the nearest tick to the segment's real end: rounding does not add up over
    a long render (every section at least one tick)."""
    gate = max(1, round(smap.get("render", {}).get("gate", 0.6) * TICKS_PER_BEAT))
    sections, pulses = [], []
    tick = at = 0  # at: the tempo-map time of `tick`, in microseconds x TICKS_PER_BEAT
    t = 0.0
    for level, dur in segs:
        spec = smap["levels"][level]
        tempo = tempo_us(spec["tempo_bpm"])
        t += dur
        n = max(1, round((t * 1_000_000 * TICKS_PER_BEAT - at) / tempo))
        sections.append(Section(tick, level, tempo))
        if spec["notes"] and spec["velocity"] > 0:
            for on in range(tick, tick + n, TICKS_PER_BEAT):
                pulses.append(
                    Pulse(on, min(on + gate, tick + n), spec["notes"], spec["velocity"], level)
                )
        tick, at = tick + n, at + n * tempo
    return Plan(sections, pulses, tick)


def _track(name, timeline, end):
    import mido  # only a process that writes MIDI pays for it (a loop without sinks never does)

    """A MIDI track from [(tick, order, message)]: sorted, delta times, ended at `end`."""
    track = mido.MidiTrack([mido.MetaMessage("track_name", name=name, time=0)])
    now = 0
    for tick, _, msg in sorted(timeline, key=lambda x: (x[0], x[1])):
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=end - now))
    return track


def render_midi(segs, smap):
    import mido

    score = plan(segs, smap)
    conductor, notes = [], []
    for s in score.sections:
        conductor.append((s.tick, 0, mido.MetaMessage("set_tempo", tempo=s.tempo)))
        conductor.append((s.tick, 1, mido.MetaMessage("marker", text=s.level)))
        program = smap["levels"][s.level]["program"]
        notes.append((s.tick, 1, mido.Message("program_change", program=program)))
    for p in score.pulses:
        for n in p.notes:
            notes.append((p.on, 2, mido.Message("note_on", note=n, velocity=p.velocity)))
            notes.append((p.off, 0, mido.Message("note_off", note=n, velocity=0)))
    mid = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    mid.tracks.append(_track("Safety Music levels", conductor, score.end))
    mid.tracks.append(_track("Safety Music", notes, score.end))
    return mid


def render_wav(segs, smap, sample_rate=None):
    import numpy as np  # only a process that writes WAV pays for it (~15 MB)

    sr = sample_rate or smap.get("render", {}).get("sample_rate", 22050)
    score = plan(segs, smap)
    out = np.zeros(round(score.duration * sr), dtype=np.float64)
    for p in score.pulses:
        i0 = round(score.seconds(p.on) * sr)
        n = round(score.seconds(p.off) * sr) - i0
        if n <= 0:
            continue
        dur = n / sr
        tt = np.arange(n) / sr
        env = np.minimum(1.0, tt / 0.01) * np.exp(-3.0 * tt / max(dur, 1e-3))
        chord = sum(
            np.sin(2 * np.pi * note_hz(x) * tt) + 0.2 * np.sin(4 * np.pi * note_hz(x) * tt)
            for x in p.notes
        )
        seg = out[i0 : i0 + n]
        seg += (p.velocity / 127.0) * env[: len(seg)] * chord[: len(seg)] / len(p.notes)
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
