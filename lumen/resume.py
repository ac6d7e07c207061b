"""Exactly-once output for a consumer that derives lines from a stream.

A consumer writes its output lines first and moves its checkpoint after, so a crash in
between would replay the same input. Each output line carries `source` {stream, fp,
offset} naming the input line it came from; on start the consumer reads its output from
the end (lumen.backscan) to find the newest source per stream, and skips input lines at or
before it. The output itself is the proof of what was done.
"""
import orjson

from .backscan import reverse_lines


def newest_sources(out_path, streams, max_lines=1_000_000):
    """{stream: (fp, offset)} of the newest output line derived from each stream.

    `streams` is a set of names, or {None} for outputs whose `source` has no stream."""
    found = {}
    for n, raw in enumerate(reverse_lines(out_path)):
        if n >= max_lines or len(found) == len(streams):
            break
        try:
            src = orjson.loads(raw)["source"]
            stream = src.get("stream")
            if stream in streams and stream not in found:
                found[stream] = (src["fp"], src["offset"])
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            continue  # a line that is not ours (another writer shares the file)
    return found


def already_done(done, fp, offset):
    """True when the input line (fp, offset) is covered by the newest output `done`."""
    return done is not None and fp == done[0] and offset <= done[1]
