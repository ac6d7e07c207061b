#!/usr/bin/env python3
"""safety.music.render: turn a stretch of logs/safety_music_events.jsonl into .wav and .mid.

Takes the events of the last `--minutes` (default 2) of event time, or `--from/--to`
(RFC 3339), renders them with the sound bridge map (configs/midi_map_v18.json) and writes
`<out>.wav` and `<out>.mid` (default logs/safety_music_render). The channel is read from
its end back to the start of the stretch. Lines that are not safety music events are
skipped and counted. Exit 1 when the stretch holds no event.
"""
import argparse
import sys
import time

import orjson

from lumen import ROOT, events
from lumen.recent import newest_first
from lumen.proc import cli_main
from lumen.timefmt import seconds as parse_ts
from safety import sound
from safety.safety_music_loop import _resolve, load_config


def collect(channel, t_from, t_to, validator):
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs/safety_music_v17.yaml"))
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--from", dest="t_from", help="start (RFC 3339); default now - minutes")
    ap.add_argument("--to", dest="t_to", help="end (RFC 3339); default now")
    ap.add_argument("--out", default="logs/safety_music_render", help="output path prefix")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    try:
        t_to = parse_ts(args.t_to) if args.t_to else time.time()
        t_from = parse_ts(args.t_from) if args.t_from else t_to - args.minutes * 60
    except ValueError as e:
        print(f"error: --from/--to: {e}", file=sys.stderr)
        return 2
    smap = sound.load_map(_resolve(cfg["output"].get("sound_bridge", "configs/midi_map_v18.json")))
    evs, bad = collect(cfg["output"]["channel"], t_from, t_to,
                       events.Validator.named("safety_music_event_v1.json"))
    if not evs:
        print(f"error: no safety music events in {cfg['output']['channel']} between the "
              f"given times", file=sys.stderr)
        return 1
    segs = sound.segments(evs, 1.0 / cfg["loop"]["hz"])
    sound.render_midi(segs, smap).save(f"{args.out}.mid")
    samples, sr = sound.render_wav(segs, smap)
    sound.write_wav(f"{args.out}.wav", samples, sr)
    counts = {}
    for lv, d in segs:
        counts[lv] = counts.get(lv, 0) + d
    print(f"[safety.render] {len(evs)} events, {sum(counts.values()):.1f}s ("
          + ", ".join(f"{k} {v:.1f}s" for k, v in counts.items()) + f") -> {args.out}.wav, "
          f"{args.out}.mid" + (f"; {bad} bad lines skipped" if bad else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
