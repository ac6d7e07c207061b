"""Safety Music render: a stretch of the event channel -> `<out>.wav` and `<out>.mid`.

`collect` reads logs/safety_music_events.jsonl (the config's `output.channel`) from its
end back to the start of the stretch, so its cost follows the stretch, not the file;
lines that are not valid safety music events are skipped and counted. `render` turns the
final levels into segments and renders them with the sound bridge map
(configs/midi_map_v18.json, lumen/safety/sound.py): the MIDI file has a Set Tempo (the
level's tempo) at each level change on its conductor track, and the WAV sounds the same
notes at the seconds that tempo map gives them. Used by safety/safety_music_render.py
(make safety.music.render). It does not change the event channel.
"""

import sys

import orjson

from lumen import events
from lumen.recent import newest_first
from lumen.safety import sound
from lumen.timefmt import seconds as parse_ts


def collect(channel, t_from, t_to, validator):
    """([(unix_ts, final_level)] in time order between t_from and t_to, bad line count)."""
    out, bad = [], 0
    for raw in newest_first(channel):
        if not raw.strip():
            continue
        try:
            e = orjson.loads(raw)
            ok = type(e) is dict and validator.is_valid(e)
        except orjson.JSONDecodeError:
            ok = False
        if not ok:
            bad += 1
            continue
        t = parse_ts(e["ts"])
        if t < t_from - 60:
            break
        if t_from <= t <= t_to:
            out.append((t, e["levels"]["final"]))
    out.reverse()
    return out, bad


def render(cfg, t_from, t_to, out):
    """Write `<out>.mid` and `<out>.wav` and print a summary line: exit code 0, or 1 (and
    nothing written) when the stretch holds no event."""
    channel = cfg["output"]["channel"]
    smap = sound.config_map(cfg)
    evs, bad = collect(channel, t_from, t_to, events.Validator.named("safety_music_event_v1.json"))
    if not evs:
        print(
            f"error: no safety music events in {channel} between the given times", file=sys.stderr
        )
        return 1
    segs = sound.segments(evs, 1.0 / cfg["loop"]["hz"])
    sound.render_midi(segs, smap).save(f"{out}.mid")
    samples, sr = sound.render_wav(segs, smap)
    sound.write_wav(f"{out}.wav", samples, sr)
    counts = {}
    for lv, d in segs:
        counts[lv] = counts.get(lv, 0) + d
    print(
        f"[safety.render] {len(evs)} events, {sum(counts.values()):.1f}s ("
        + ", ".join(f"{k} {v:.1f}s" for k, v in counts.items())
        + f") -> {out}.wav, "
        f"{out}.mid" + (f"; {bad} bad lines skipped" if bad else "")
    )
    return 0
