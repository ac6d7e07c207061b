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
from datetime import datetime, timezone

import pytest

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
