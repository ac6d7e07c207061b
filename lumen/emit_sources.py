"""The RMB emitter's sources: what feeds an `Emitter` (lumen.emitter) its events.

`run_sim` paces simulated events (lumen.simulate) at `loop.hz`, or flat out with
`--unthrottled`, stamped on the wall clock or on a simulated one (`--sim-start`);
`run_lines` reads one JSON event per line from stdin or a replay file on a reader thread,
quarantining lines that are not valid events. Both stop at `--count`, `--duration` or the
stop event (SIGTERM), and flush through the emitter's `due`/`maybe_flush` while they wait.
They write nothing themselves: the emitter gates, validates and appends.
"""

import queue
import random
import socket
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

from . import events, timefmt
from .simulate import EventFactory


def _wall_ts():
    return timefmt.now()


LAST_TS = 253402300799.0  # 9999-12-31T23:59:59Z, the last second RFC 3339 can write


def run_sim(em, args, cfg, stop, start_iter):
    """Offer simulated events at `loop.hz` (or flat out) until count/duration/stop;
    returns the next iteration number."""
    hz = cfg["loop"]["hz"]
    period = 1.0 / hz
    rng = random.Random(args.seed)
    mb = cfg["memory_bridge"]
    factory = EventFactory(
        args.profile, rng, mb["slot_namespace"], mb["value_hasher"], socket.gethostname()
    )
    sim0 = last_n = None
    if args.sim_start:
        sim_s = timefmt.seconds(args.sim_start)
        sim0 = datetime.fromtimestamp(sim_s, timezone.utc)
        last_n = (LAST_TS - sim_s) / period  # past it, a timestamp is not RFC 3339 any more
    t0 = time.monotonic()
    end = t0 + args.duration if args.duration else None
    next_t = t0
    i = start_iter
    n = 0
    while not stop.is_set():
        if args.count is not None and n >= args.count:
            break
        now = time.monotonic()
        if end is not None and now >= end:
            break
        # Sleep only when a millisecond or more ahead of schedule: at high rates a wait per
        # event would cost more than the event (events then go out in small bursts).
        if not args.unthrottled and now < next_t - (0.001 if period < 0.001 else 0.0):
            d = em.due()
            wait = next_t - now if d is None else min(next_t - now, max(d, 0))
            if end is not None:
                wait = min(wait, end - now)
            stop.wait(wait)
            em.maybe_flush()
            continue
        if last_n is not None and n > last_n:
            print("[rmb] the simulated clock reached the year 9999: stopping", file=sys.stderr)
            break
        ts = (sim0 + timedelta(seconds=n * period)).isoformat() if sim0 else _wall_ts()
        em.offer(factory.make(i, ts))
        i += 1
        n += 1
        next_t += period
        if next_t < now - 1.0:  # fell far behind (suspended?): do not burst to catch up
            next_t = now
        em.maybe_flush()
    return i


def _lines_from(stream, out, stop):
    for line in stream:
        out.put(line)
        if stop.is_set():
            break
    out.put(None)


def run_lines(em, args, stream, stop, source_name):
    """Feed lines (bytes) from `stream` through parse -> gates -> writer."""
    q = queue.Queue(maxsize=10000)
    threading.Thread(target=_lines_from, args=(stream, q, stop), daemon=True).start()
    validator = em.validator
    offset = 0
    n = 0
    while not stop.is_set():
        if args.count is not None and n >= args.count:
            break
        d = em.due()
        try:
            line = q.get(timeout=0.2 if d is None else max(d, 0.001))
        except queue.Empty:
            em.maybe_flush()
            continue
        if line is None:
            break
        raw = line.rstrip(b"\r\n")
        here, offset = offset, offset + len(line)
        if not raw.strip():
            continue
        evt, err = events.parse(raw, validator, now=time.time())
        if err:
            em.rejects.add(err[0], err[1], source_name, here, raw)
        else:
            em.offer(evt)
            n += 1
        em.maybe_flush()
