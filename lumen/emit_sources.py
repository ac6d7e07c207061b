"""The RMB emitter's sources: what feeds an `Emitter` (lumen.emitter) its events.

`run_sim` builds simulated events (lumen.simulate) at `loop.hz`, or flat out with
`--unthrottled`, stamped on the wall clock or on a simulated one (`--sim-start`), gates
and encodes them; they are valid by construction (tests/test_emit_valid.py proves it over
the profiles, seeds, gates and clocks), so they are not classified again, except that an
event a simulated clock stamps past the readers' `ts_future` bound is quarantined as the
readers would. Flat out, events are built in chunks and written in batches of at least
FLAT_OUT_BATCH (still within `loop.flush_ms`); the pacing, the stop and the flush checks
are made once per chunk. `run_lines` reads one JSON event per line from stdin or a replay
file on a reader thread: outside data, validated line by line (lumen.emitter.offer), bad
lines quarantined. Both stop at `--count`, `--duration` or the stop event (SIGTERM), and
flush through the emitter's `due`/`maybe_flush` while they wait. They write nothing
themselves: the emitter batches and appends.
"""

import queue
import random
import socket
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import orjson

from . import events, timefmt
from .gates import gate
from .simulate import EventFactory

LAST_TS = 253402300799.0  # 9999-12-31T23:59:59Z, the last second RFC 3339 can write
CHUNK = 256  # events built between two checks of the clock, the stop event and the batch
FLAT_OUT_BATCH = 1000  # the least batch of an --unthrottled run (a write per 20 events
# would cost more than the events); flush_ms still bounds how long an event waits
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
US = timedelta(microseconds=1)
# Below 2**43 us (101 days from --sim-start), x * 1e6 as a float is within 2**-11 of the
# exact microseconds of x, so where it is more than 0.49 from a half, round() gives what
# timedelta(seconds=x) does (it rounds x's exact microseconds, to within 1e-10, to the
# nearest, ties to even); elsewhere ts_of asks timedelta itself.
EXACT_US = float(2**43)


def stamper():
    """`stamp(us)`: the RFC 3339 text of `us` microseconds since the epoch, exactly as
    `datetime.isoformat()` writes it in UTC (timefmt.format), its date and time of day
    made once per second instead of once per event."""
    last_s, head = None, ""

    def stamp(us):
        nonlocal last_s, head
        s, u = divmod(us, 1_000_000)
        if s != last_s:
            last_s, head = s, (EPOCH + timedelta(seconds=s)).isoformat()[:19]
        return f"{head}.{u:06d}+00:00" if u else head + "+00:00"

    return stamp


def sim_clock(sim_start, period):
    """(ts_of, t_of, last_n) of a simulated clock: event n's ts text is sim_start +
    n * period (as `(start + timedelta(seconds=n * period)).isoformat()` writes it), t_of(n)
    about its Unix seconds, and past event last_n a ts is not RFC 3339 any more."""
    sim_s = timefmt.seconds(sim_start)
    start_us = (datetime.fromtimestamp(sim_s, timezone.utc) - EPOCH) // US
    stamp = stamper()

    def ts_of(n):
        x = n * period
        y = x * 1e6
        if y < EXACT_US:
            c = round(y)
            if -0.49 < y - c < 0.49:  # not near a half: the microsecond timedelta rounds to
                return stamp(start_us + c)
        return stamp(start_us + timedelta(seconds=x) // US)

    return ts_of, lambda n: sim_s + n * period, (LAST_TS - sim_s) / period


def wall_clock():
    """ts_of(n): the wall clock's time as RFC 3339 text (timefmt.now), whatever n."""
    stamp, now_ns = stamper(), time.time_ns

    def ts_of(_n):
        return stamp(now_ns() // 1000)

    return ts_of


MAX_ITER = 1 << 63  # trace.iter stays a 64-bit integer, as every reader decodes it


def next_iter(state):
    """The iteration to continue from, kept in the state file; a value that is not one
    (the file edited by hand) is said once and iterations start again from 0: the
    simulated events are written unvalidated, valid by construction only from a valid
    start."""
    i = state.get("next_iter", 0) if isinstance(state, dict) else None
    if type(i) is int and 0 <= i < MAX_ITER:
        return i
    print(
        f"[rmb] warning: next_iter {i!r} in the state file is not an iteration number: "
        "starting from 0",
        file=sys.stderr,
        flush=True,
    )
    return 0


def run_sim(em, args, cfg, stop, start_iter):
    """Build, gate and hand simulated events to the emitter at `loop.hz` (or flat out, in
    chunks) until count/duration/stop; returns the next iteration number."""
    hz = cfg["loop"]["hz"]
    period = 1.0 / hz
    rng = random.Random(args.seed)
    mb = cfg["memory_bridge"]
    make = EventFactory(
        args.profile, rng, mb["slot_namespace"], mb["value_hasher"], socket.gethostname()
    ).make
    gates, dumps = em.gates, orjson.dumps
    if args.sim_start:
        ts_of, t_of, last_n = sim_clock(args.sim_start, period)
    else:
        ts_of, t_of, last_n = wall_clock(), None, None
    flat = args.unthrottled
    if flat:
        em.batch_size = max(em.batch_size, FLAT_OUT_BATCH)
    t0 = time.monotonic()
    end = t0 + args.duration if args.duration else None
    next_t = t0
    i = start_iter
    n = 0
    while not stop.is_set():
        k = CHUNK if flat else 1
        if args.count is not None:
            k = min(k, args.count - n)
            if k <= 0:
                break
        now = time.monotonic()
        if end is not None and now >= end:
            break
        # Sleep only when a millisecond or more ahead of schedule: at high rates a wait per
        # event would cost more than the event (events then go out in small bursts).
        if not flat and now < next_t - (0.001 if period < 0.001 else 0.0):
            d = em.due()
            wait = next_t - now if d is None else min(next_t - now, max(d, 0))
            if end is not None:
                wait = min(wait, end - now)
            stop.wait(wait)
            em.maybe_flush()
            continue
        if last_n is not None:
            k = min(k, int(last_n) - n + 1)  # event n is stamped if n <= last_n
            if k <= 0:
                print("[rmb] the simulated clock reached the year 9999: stopping", file=sys.stderr)
                break
        room = em.batch_size - len(em.writer)
        if room > 0:
            k = min(k, room)  # a chunk ends where the batch does
        lines = []
        for m in range(n, n + k):
            evt = make(i, ts_of(m))  # stamped as it is made: wall-clock stamps keep apart
            if gate(evt, gates):
                em.gated += 1
            # + b"\n", not OPT_APPEND_NEWLINE: orjson's own bytes keep ~4 KB each, and
            # a batch held through a full disk would take 4 KB a line
            lines.append(dumps(evt) + b"\n")
            i += 1
        if t_of is not None and t_of(n + k - 1) > time.time() + events.MAX_FUTURE_S - 1.0:
            lines = em.reject_future(lines, time.time())
        em.take(lines)
        n += k
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
