"""Read the newest lines of a log first: for reports over the last N minutes.

A windowed report (slo.report, tune.suggest, kpi.snapshot) needs only the tail of the
log, so it reads backwards from the end in chunks and stops once it has passed the start
of its window: the cost grows with the window, not with the file. The rotated file
`<name>.1` is read next when the window reaches back past the live file's first line.

This is not a consumer: it keeps no checkpoint and quarantines nothing (the consumers
do); it counts the bad lines it meets so a report can say so.
"""

import os

CHUNK = 1 << 20


def reverse_lines(path, chunk=CHUNK):
    """Complete lines of `path`, newest first (a trailing partial line is skipped)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        pos = os.fstat(fd).st_size
        rest = b""
        partial = True  # until the last newline is found, bytes belong to a partial line
        while pos > 0:
            n = min(chunk, pos)
            pos -= n
            data = os.pread(fd, n, pos) + rest
            if partial:
                nl = data.rfind(b"\n")
                if nl < 0:
                    rest = b""
                    continue
                data = data[:nl]
                partial = False
            lines = data.split(b"\n")
            rest = lines[0]  # may continue in the previous chunk
            for line in reversed(lines[1:]):
                yield line
        if not partial:
            yield rest
    finally:
        os.close(fd)


def newest_first(path, rotated=1, chunk=CHUNK):
    """Lines of the live file, then of `<path>.1` ... `<path>.<rotated>`, newest first."""
    yield from reverse_lines(path, chunk)
    for i in range(1, rotated + 1):
        yield from reverse_lines(f"{path}.{i}", chunk)


def recent_events(path, span_s, now, validator, slack_s=60.0, rotated=1):
    """Valid events with `now - span_s <= ts <= now + MAX_FUTURE_S`, newest first, and
    statistics.

    Reading stops at the first valid event older than `now - span_s - slack_s`: lines are
    appended in roughly time order, and the slack absorbs writers whose clocks or batches
    interleave. Returns (events, stats) where events are (t, event) pairs and stats holds
    lines_scanned, bad_lines, newest (Unix time of the newest event seen, or None).
    """
    from .events import MAX_FUTURE_S, parse
    from . import timefmt

    # Events stamped up to MAX_FUTURE_S ahead still count (writers' clocks differ); beyond
    # that they are `ts_future` rejects, as in every consumer.
    lo, hi, stop_at = now - span_s, now + MAX_FUTURE_S, now - span_s - slack_s
    out = []
    stats = {"lines_scanned": 0, "bad_lines": 0, "newest": None}
    for raw in newest_first(path, rotated):
        if not raw.strip():
            continue
        stats["lines_scanned"] += 1
        evt, err = parse(raw, validator, now=now, max_future_s=MAX_FUTURE_S)
        if err:
            stats["bad_lines"] += 1
            continue
        t = timefmt.parse(evt["ts"])
        if stats["newest"] is None or t > stats["newest"]:
            stats["newest"] = t
        if t < stop_at:
            break
        if lo <= t <= hi:
            out.append((t, evt))
    return out, stats
