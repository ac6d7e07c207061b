"""Exactly-once output for a consumer that derives lines from a stream (merge, evidence.map).

Each output line carries `source` {stream, fp, offset}: the input line it came from, named
by that line's own file. The consumer writes and fsyncs its output first and moves its
checkpoint after, recording there where the output ended (`out_position`). A crash in
between replays input from the older checkpoint; on start the consumer reads its output
from the recorded position to the end (rotated output files included) and learns, per
input file, the newest offset already written: input lines at or before it are skipped.
Without a recorded position (no checkpoint, or one from an older version) it reads the
whole output still on disk. The output itself is the proof of what was done.
"""

import orjson

from .tail import Tailer, position_of


def out_position(out_path):
    """Where the output ends now: goes into the consumer's checkpoint state."""
    return position_of(out_path)


def written_since(out_path, since, streams=None):
    """{(stream, fp): newest offset} of the output lines after position `since` (None: all
    of the output on disk). `streams` limits which `source.stream` values count (a set;
    None counts every line, e.g. outputs whose `source` names no stream)."""
    t = Tailer(out_path, "resume", start=since or {}, log=lambda msg: None)
    done = {}
    try:
        while True:
            batch = t.poll()
            if not batch:
                break
            for _, raw in batch:
                try:
                    src = orjson.loads(raw)["source"]
                    key, off = (src.get("stream"), src["fp"]), int(src["offset"])
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                    continue  # not a line of ours (another writer shares the file)
                if streams is not None and key[0] not in streams:
                    continue
                if off > done.get(key, -1):
                    done[key] = off
    finally:
        t.close()
    return done


def already_done(done, stream, pos):
    """True when the input line at `pos` (fp, offset) is covered by the output."""
    return done.get((stream, pos.fp), -1) >= pos.offset
