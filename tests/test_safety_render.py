"""The Safety Music render's tempo map (issue 16, point 8): `safety.music.render` writes a
Set Tempo on the MIDI conductor track at each level change, with the tempo the sound
bridge map gives the level, and the WAV sounds the MIDI's notes at the seconds the MIDI's
own tempo map gives them. A bad map is one line and exit 2.

The input is fixed: safety music events at a fixed time in the past, CALM -> ALERT ->
TENSE -> CALM, with seeded lengths and seeded jitter on the timestamps (so level changes
fall between ticks), rendered with --from/--to: nothing depends on the clock.
"""

import json
import random
import subprocess
import wave
from datetime import datetime, timezone

import mido
import numpy as np
import pytest

from lumen.safety import sound
from conftest import PY, ROOT

RENDER = ROOT / "safety/safety_music_render.py"
LOOP = ROOT / "safety/safety_music_loop.py"
CONFIG = ROOT / "configs/safety_music_v17.yaml"
SMAP = json.loads((ROOT / "configs/midi_map_v18.json").read_text())
CHANNEL = "logs/safety_music_events.jsonl"
T0 = 1_700_000_000.0  # a fixed start, in the past
TICK_S = 0.5  # the shipped loop.hz is 2
LEVELS = ("CALM", "ALERT", "TENSE", "CALM")


def iso(t):
    return datetime.fromtimestamp(t, timezone.utc).isoformat()


def seeded_events(seed=16):
    """[(unix ts, level)]: LEVELS in turn, 11 to 40 events each, 0.5 s apart +- 40 ms."""
    rng = random.Random(seed)
    out, t = [], T0
    for level in LEVELS:
        for _ in range(rng.randint(11, 40)):
            out.append((t, level))
            t += TICK_S + rng.uniform(-0.04, 0.04)
    return out


def write_events(path, evs):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for t, lv in evs:
            e = {
                "ts": iso(t),
                "loop": "safety.music.v17",
                "levels": {"residual": lv, "rollback_ratio": lv, "final": lv},
            }
            f.write(json.dumps(e) + "\n")


def true_changes(evs):
    """[(seconds from the start, level)] where the level changes, and the total: each
    event lasts until the next (gaps here are < 2 ticks), the last one tick."""
    changes = [
        (t - evs[0][0], lv) for i, (t, lv) in enumerate(evs) if i == 0 or evs[i - 1][1] != lv
    ]
    return changes, evs[-1][0] + TICK_S - evs[0][0]


def tempo_of(level):
    return round(60_000_000 / SMAP["levels"][level]["tempo_bpm"])


class TempoMap:
    """The tempo map of a parsed MIDI file, written out here as an independent oracle:
    set_tempo events of the conductor track (abs tick, microseconds per beat)."""

    def __init__(self, mid):
        self.tpb = mid.ticks_per_beat
        self.tempos, tick = [], 0
        for msg in mid.tracks[0]:
            tick += msg.time
            if msg.type == "set_tempo":
                self.tempos.append((tick, msg.tempo))

    def seconds(self, tick):
        s, prev_tick, tempo = 0.0, 0, 500_000  # the SMF default before any set_tempo
        for t, tp in self.tempos:
            if t >= tick:
                break
            s += (t - prev_tick) * tempo / (self.tpb * 1e6)
            prev_tick, tempo = t, tp
        return s + (tick - prev_tick) * tempo / (self.tpb * 1e6)

    def tick_s(self, tick):
        """The length of one tick at `tick`, in seconds."""
        tempo = [tp for t, tp in self.tempos if t <= tick][-1]
        return tempo / (self.tpb * 1e6)


def abs_events(track):
    tick = 0
    for msg in track:
        tick += msg.time
        yield tick, msg


def read_wav(path):
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16), w.getframerate()


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """The seeded events rendered by the real entry point: (events, MidiFile, samples, sr)."""
    d = tmp_path_factory.mktemp("render")
    evs = seeded_events()
    write_events(d / CHANNEL, evs)
    r = subprocess.run(
        [PY, str(RENDER), "--config", str(CONFIG), "--from", iso(T0 - 1), "--to", iso(T0 + 3600)],
        cwd=d,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert f"{len(evs)} events" in r.stdout, r.stdout
    mid = mido.MidiFile(d / "logs/safety_music_render.mid")
    x, sr = read_wav(d / "logs/safety_music_render.wav")
    return evs, mid, x, sr


def test_a_set_tempo_at_each_level_change_on_the_conductor_track(rendered):
    evs, mid, _, _ = rendered
    assert mid.type == 1 and len(mid.tracks) == 2
    tm = TempoMap(mid)
    changes, _ = true_changes(evs)
    assert [lv for _, lv in changes] == list(LEVELS)
    # One set_tempo per level segment, the map's tempo for that level, nowhere else.
    assert [tp for _, tp in tm.tempos] == [tempo_of(lv) for lv in LEVELS]
    assert [tp for _, tp in tm.tempos] == [1_000_000, 357_143, 555_556, 1_000_000]
    assert not [m for m in mid.tracks[1] if m.type == "set_tempo"]
    # Each at the tick where the level changes: the nearest tick, in the file's own tempo
    # map, to the real time of the change (so half a tick of the tempo before it at most).
    assert tm.tempos[0][0] == 0
    for (tick, _), (t, _) in zip(tm.tempos[1:], changes[1:]):
        assert abs(tm.seconds(tick) - t) <= tm.tick_s(tick - 1) / 2 + 1e-9, (tick, t)
    # The markers name the levels at the same ticks; the program changes follow them.
    markers = [(t, m.text) for t, m in abs_events(mid.tracks[0]) if m.type == "marker"]
    assert markers == [(tick, lv) for (tick, _), lv in zip(tm.tempos, LEVELS)]
    programs = [(t, m.program) for t, m in abs_events(mid.tracks[1]) if m.type == "program_change"]
    want = [(tick, SMAP["levels"][lv]["program"]) for (tick, _), lv in zip(tm.tempos, LEVELS)]
    assert programs == want


def test_midi_and_wav_last_as_long_as_the_events(rendered):
    evs, mid, x, sr = rendered
    tm = TempoMap(mid)
    ends = {sum(m.time for m in tr) for tr in mid.tracks}  # both tracks end at the same tick
    assert len(ends) == 1
    total = tm.seconds(ends.pop())
    _, expected = true_changes(evs)
    last_tick = tm.tick_s(tm.tempos[-1][0])
    assert abs(total - len(x) / sr) <= last_tick  # the WAV, within a tick
    assert abs(total - expected) <= last_tick / 2 + 1e-9  # the events, the nearest tick
    assert mid.length == pytest.approx(total, abs=1e-6)  # mido's own reading agrees


def _notes(mid):
    """[(on tick, off tick, note, velocity)] of the note track, in order."""
    out, held = [], {}
    for tick, m in abs_events(mid.tracks[1]):
        if m.type == "note_on" and m.velocity > 0:
            held[m.note] = (tick, m.velocity)
        elif m.type in ("note_off", "note_on"):
            on, vel = held.pop(m.note)
            out.append((on, tick, m.note, vel))
    assert not held
    return sorted(out)


def test_each_note_sounds_in_the_wav_at_its_midi_seconds(rendered):
    evs, mid, x, sr = rendered
    tm = TempoMap(mid)
    notes = _notes(mid)
    pulses = sorted({(on, off) for on, off, _, _ in notes})
    onsets = [tm.seconds(on) for on, _ in pulses]
    # The MIDI's pulses are the plan the WAV render follows, at the same seconds.
    score = sound.plan(sound.segments(evs, TICK_S), SMAP)
    assert [(p.on, p.off) for p in score.pulses] == pulses
    assert [score.seconds(p.on) for p in score.pulses] == pytest.approx(onsets, abs=1e-9)
    # Every pulse holds the level's chord at its velocity, one pulse a beat.
    by_tick = {}
    for on, _, note, vel in notes:
        by_tick.setdefault(on, set()).add((note, vel))
    level_at = {}
    for on, _ in pulses:
        level_at[on] = LEVELS[max(i for i, (t, _) in enumerate(tm.tempos) if t <= on)]
        spec = SMAP["levels"][level_at[on]]
        assert by_tick[on] == {(n, spec["velocity"]) for n in spec["notes"]}
    # Density follows the level: consecutive pulses of one level are one beat apart.
    for (a, _), (b, _) in zip(pulses, pulses[1:]):
        if level_at[a] == level_at[b] and tm.seconds(b) - tm.seconds(a) < 2:
            beat = 60 / SMAP["levels"][level_at[a]]["tempo_bpm"]
            assert tm.seconds(b) - tm.seconds(a) == pytest.approx(beat, abs=1e-5)
    # The WAV: silent outside the MIDI's notes (one tick either side) ...
    sounding = np.zeros(len(x), dtype=bool)
    for on, off in pulses:
        pad = tm.tick_s(on)
        a, b = int((tm.seconds(on) - pad) * sr), int((tm.seconds(off) + pad) * sr)
        sounding[max(0, a) : b + 1] = True
    assert not np.any(x[~sounding]), "sound where the MIDI has no note"
    # ... sounding in each note ...
    for on, off in pulses:
        a, b = tm.seconds(on), tm.seconds(off)
        if b - a < 0.01:
            continue  # a pulse cut short by a level change
        assert np.max(np.abs(x[int((a + 0.004) * sr) : int((b - 0.004) * sr)])) > 300, (a, b)
    # ... and each note after a silence starts at its MIDI onset (a tick and 1 ms at most).
    checked = 0
    for (_, prev_off), (on, _) in zip(pulses, pulses[1:]):
        gap_from = tm.seconds(prev_off) + tm.tick_s(prev_off)
        if tm.seconds(on) - gap_from < 0.01:
            continue  # a pulse cut at a level change runs into the next one
        i = int(gap_from * sr)
        first = (i + np.flatnonzero(x[i:])[0]) / sr
        assert -tm.tick_s(on) <= first - tm.seconds(on) <= tm.tick_s(on) + 0.001, (on, first)
        checked += 1
    assert checked >= len(pulses) - len(LEVELS)


def test_rounding_to_ticks_does_not_add_up_over_a_long_render():
    """600 level changes at seeded uneven times over about 17 minutes: every Set Tempo is
    still within half a tick of its real time, and so is the end."""
    rng = random.Random(8)
    segs, lv = [], "CALM"
    for _ in range(600):
        lv = rng.choice([x for x in ("CALM", "TENSE", "ALERT", "UNDEFINED") if x != lv])
        segs.append((lv, rng.uniform(0.3, 3.1)))
    mid = sound.render_midi(segs, SMAP)
    tm = TempoMap(mid)
    assert [tp for _, tp in tm.tempos] == [tempo_of(lv) for lv, _ in segs]
    t = 0.0
    for (tick, _), (_, dur) in zip(tm.tempos, segs):
        assert abs(tm.seconds(tick) - t) <= tm.tick_s(max(tick - 1, 0)) / 2 + 1e-9, (tick, t)
        t += dur
    end = sum(m.time for m in mid.tracks[0])
    assert abs(tm.seconds(end) - t) <= tm.tick_s(end) / 2 + 1e-9
    x, sr = sound.render_wav(segs, SMAP)
    assert abs(len(x) / sr - tm.seconds(end)) <= 1 / sr


BAD_MAPS = [
    ("tempo_zero", ("CALM", "tempo_bpm", 0), "levels.CALM.tempo_bpm"),
    ("tempo_text", ("ALERT", "tempo_bpm", "fast"), "levels.ALERT.tempo_bpm"),
    ("tempo_huge", ("TENSE", "tempo_bpm", 1e9), "levels.TENSE.tempo_bpm"),
    ("note_200", ("TENSE", "notes", [62, 200]), "levels.TENSE.notes"),
    ("velocity_neg", ("CALM", "velocity", -1), "levels.CALM.velocity"),
    ("program_float", ("ALERT", "program", 1.5), "levels.ALERT.program"),
    ("no_undefined", ("UNDEFINED", None, None), "levels.UNDEFINED"),
    ("not_json", None, "not readable"),
]


@pytest.mark.parametrize("name,change,key", BAD_MAPS, ids=[b[0] for b in BAD_MAPS])
def test_a_bad_map_is_one_line_and_exit_2(workdir, name, change, key):
    smap = json.loads(json.dumps(SMAP))
    path = workdir / "maps/bad.json"
    path.parent.mkdir()
    if change is None:
        path.write_text("{not json")
    else:
        level, k, v = change
        if k is None:
            del smap["levels"][level]
        else:
            smap["levels"][level][k] = v
        path.write_text(json.dumps(smap))
    conf = workdir / "safety.yaml"
    conf.write_text(CONFIG.read_text().replace("configs/midi_map_v18.json", str(path)))
    write_events(workdir / CHANNEL, seeded_events()[:30])
    args = ["--from", iso(T0 - 1), "--to", iso(T0 + 3600)]
    for script, extra in ((RENDER, args), (LOOP, ["--ticks", "1"])):
        r = subprocess.run(
            [PY, str(script), "--config", str(conf), *extra],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=60,
        )
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, (script.name, r.stderr)
        assert str(path) in lines[0] and key in lines[0], lines[0]
    assert not (workdir / "logs/safety_music_render.mid").exists()
    assert not (workdir / "logs/safety_music_render.wav").exists()
