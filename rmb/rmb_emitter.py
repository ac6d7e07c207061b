#!/usr/bin/env python3
"""RMB emitter: appends schema-valid v1 events to `paths.queue` under the safety gates.

Blueprint section 5. Reads configs/rmb_v17.yaml (schema: configs/schemas/rmb_v17.schema.json).
Writes `logs/rmb_events.jsonl` (the configured queue) and, for bad input lines,
`logs/rejects/rmb_input.jsonl`.

Sources (`--source`):
  sim     (default) seeded simulated events, `--profile seed|steady|spike`, at `loop.hz`
  stdin   one JSON event per line from standard input (a real producer feeding the bridge)
  replay  the events of `--replay FILE`, in order, as fast as they can be validated
Every event passes the safety gates (an out-of-band event becomes a `rollback`) and is
validated against schemas/rmb_event_v1.json before it is written; an input line that is not
a valid event is quarantined and counted, never written to the queue.

Writes are batched: a batch is appended (one locked write) when it holds `loop.batch_size`
events or its oldest event is `loop.flush_ms` old. When the queue cannot be written (disk
full, I/O error) the emitter keeps going: up to `loop.max_pending` (default 100 000) events
wait in memory and are written when space returns; beyond that new events are dropped and
counted. Its counters (emitted, dropped, write errors, pending) are kept in
`logs/.state/<name>.stats`, a fixed-size file rewritten in place (no new disk space
needed), which the RMB exporter serves as `rmb_emitter_*`. `--count`/`--duration` bound a run;
`--unthrottled` drops the `hz` pacing (benchmarks); `--sim-start TS` stamps events on a
simulated clock (TS + i/hz) instead of the wall clock, so ten minutes of stream can be
produced in a second. SIGTERM/SIGINT flush the batch and exit 0.

Departures from the blueprint: a batch per flush instead of a file open per event; the
config's batch_size, flush_ms and value_hasher are honoured; iteration numbers continue
across restarts (`logs/.state/<name>.json`).
"""
import argparse
import os
import queue
import random
import socket
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

from lumen import ROOT, checkpoint, config, events
from lumen.jsonl import JsonlWriter, dumps
from lumen.statsfile import StatsFile
from lumen.proc import Lifecycle, cli_main
from lumen.rejects import Rejects
from rmb.profiles import PROFILES, EventFactory, gate

STATE_DIR = "logs/.state"


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs/rmb_v17.yaml"), help="config file (YAML)")
    ap.add_argument("--source", choices=("sim", "stdin", "replay"), default="sim")
    ap.add_argument("--replay", metavar="FILE", help="file of v1 events for --source replay")
    ap.add_argument("--profile", choices=PROFILES, default="steady")
    ap.add_argument("--seed", type=int, help="seed of the simulated source (default: random)")
    ap.add_argument("--count", type=int, help="stop after this many events")
    ap.add_argument("--duration", type=float, help="stop after this many seconds")
    ap.add_argument("--unthrottled", action="store_true", help="ignore loop.hz: emit flat out")
    ap.add_argument("--sim-start", metavar="TS",
                    help="simulated clock: event i is stamped TS + i/hz (RFC 3339)")
    ap.add_argument("--hz", type=float, help="override loop.hz")
    ap.add_argument("--batch-size", type=int, help="override loop.batch_size")
    ap.add_argument("--flush-ms", type=int, help="override loop.flush_ms")
    ap.add_argument("--queue", help="override paths.queue")
    ap.add_argument("--name", default="rmb_emitter", help="process name (PID file run/NAME.pid)")
    ap.add_argument("--quiet", action="store_true")
    return ap


class Emitter:
    """Gates, validates, batches and writes events; owns the counters a run reports."""

    def __init__(self, cfg, validator=None, rejects=None, clock=time.monotonic, stats=None):
        self.cfg = cfg
        self.gates = cfg["safety_gates"]
        self.batch_size = cfg["loop"]["batch_size"]
        self.flush_s = cfg["loop"]["flush_ms"] / 1000.0
        self.writer = JsonlWriter(cfg["paths"]["queue"],
                                  max_pending=cfg["loop"].get("max_pending", 100_000))
        self.classifier = events.Classifier("rmb_event_v1.json", typed=True)
        self.validator = validator or self.classifier.validator
        self.wall = time.time
        self.rejects = rejects or Rejects("rmb_input", "rmb_emitter")
        self.clock = clock
        self.emitted = 0
        self.gated = 0
        self._first_at = None
        self.stats = stats or StatsFile(None)

    def offer(self, evt):
        """Gate, validate and buffer one event; False if it was rejected instead."""
        if gate(evt, self.gates):
            self.gated += 1
        line = dumps(evt)
        # What every consumer will decide about this line, decided here first (ts_future
        # included), so the queue only ever gets lines the readers count as events.
        _, _, err = self.classifier.classify(line[:-1], self.wall())
        if err:
            self.rejects.add(err[0], err[1], "emitter", -1, line[:-1])
            return False
        if not self.writer.add_line(line):
            return False  # memory full while the queue cannot be written: counted as dropped
        if self._first_at is None:
            self._first_at = self.clock()
        self.emitted += 1
        if len(self.writer) >= self.batch_size:
            self.flush()
        return True

    def due(self):
        """Seconds until the pending batch must be flushed (None when nothing is pending)."""
        if self._first_at is None:
            return None
        return self._first_at + self.flush_s - self.clock()

    def maybe_flush(self):
        d = self.due()
        if d is not None and d <= 0:
            self.flush()

    @property
    def dropped(self):
        return self.writer.dropped

    def flush(self):
        """Write the pending batch. A queue that cannot be written (disk full, I/O error,
        locked by someone else) is reported once, and the batch kept in bounded memory for
        the next try (the loop keeps answering SIGTERM meanwhile); a short write never
        leaves a torn line (lumen.jsonl)."""
        try:
            self.rejects.flush()
        except OSError:  # the same full disk: the rejects stay pending with the batch
            pass
        if self.writer.try_flush("[rmb]"):
            self._first_at = None
        else:
            self._first_at = self.clock()
        self.stats.write(self.counters())

    def counters(self):
        return {"emitted": self.emitted, "gated": self.gated, "dropped": self.writer.dropped,
                "write_errors": self.writer.write_errors, "pending": len(self.writer),
                "rejected": self.rejects.total}

    def finish(self, wait_s=3.0):
        """At exit: flush, retrying for up to `wait_s` while the disk is full."""
        deadline = time.monotonic() + wait_s
        self.flush()
        while len(self.writer) and time.monotonic() < deadline:
            time.sleep(self.writer.retry_s)
            self.flush()

    def save_unwritten(self):
        """At exit, events that could not be written go to a side file; if even that
        fails, the count lost is said. Returns the exit status (1 when anything is left)."""
        if not len(self.writer):
            return 0
        n, side = len(self.writer), f"{self.writer.path}.unwritten.{os.getpid()}"
        try:
            with open(side, "ab") as f:
                f.write(b"".join(self.writer._buf))
            print(f"error: {n} events could not be appended to {self.writer.path}; "
                  f"saved to {side}", file=sys.stderr, flush=True)
        except OSError as e:
            print(f"error: {n} events could not be appended to {self.writer.path} nor saved "
                  f"to {side} ({e.strerror or e}): they are lost", file=sys.stderr, flush=True)
        return 1


def _wall_ts():
    return datetime.now(timezone.utc).isoformat()


def run_sim(em, args, cfg, stop, start_iter):
    hz = cfg["loop"]["hz"]
    period = 1.0 / hz
    rng = random.Random(args.seed)
    mb = cfg["memory_bridge"]
    factory = EventFactory(args.profile, rng, mb["slot_namespace"], mb["value_hasher"],
                           socket.gethostname())
    sim0 = None
    if args.sim_start:
        sim0 = datetime.fromisoformat(args.sim_start.replace("Z", "+00:00"))
        if sim0.tzinfo is None:
            sim0 = sim0.replace(tzinfo=timezone.utc)
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


def main(argv=None):
    args = build_parser().parse_args(argv)
    cfg = config.load(args.config, "rmb_v17", overrides={
        "loop.hz": args.hz, "loop.batch_size": args.batch_size, "loop.flush_ms": args.flush_ms,
        "paths.queue": args.queue})
    if args.source == "replay" and not args.replay:
        print("error: --source replay needs --replay FILE", file=sys.stderr)
        return 2
    if args.sim_start:
        try:
            datetime.fromisoformat(args.sim_start.replace("Z", "+00:00"))
        except ValueError:
            print(f"error: --sim-start {args.sim_start!r} is not an RFC 3339 time",
                  file=sys.stderr)
            return 2
    em = Emitter(cfg, stats=StatsFile(f"{STATE_DIR}/{args.name}.stats"))
    state = checkpoint.load_json(f"{STATE_DIR}/{args.name}.json") or {}
    with Lifecycle(args.name) as life:
        life.ready()
        if not args.quiet:
            print(f"[rmb] emitting to {cfg['paths']['queue']} (source={args.source}"
                  + (f", profile={args.profile}, hz={cfg['loop']['hz']:g}"
                     if args.source == "sim" else "") + ")", flush=True)
        t0 = time.monotonic()
        try:
            if args.source == "sim":
                state["next_iter"] = run_sim(em, args, cfg, life.stop,
                                             state.get("next_iter", 0))
            elif args.source == "stdin":
                run_lines(em, args, sys.stdin.buffer, life.stop, "stdin")
            else:
                try:
                    f = open(args.replay, "rb")
                except OSError as e:
                    print(f"error: --replay {args.replay}: {e.strerror}", file=sys.stderr)
                    return 2
                with f:
                    run_lines(em, args, f, life.stop, str(args.replay))
        finally:
            em.finish()
            unwritten = em.save_unwritten()
            if args.source == "sim":
                try:
                    checkpoint.save_json(f"{STATE_DIR}/{args.name}.json", state)
                except OSError as e:  # a full disk: iterations restart from the last save
                    print(f"[rmb] warning: state not saved ({e.strerror or e})",
                          file=sys.stderr, flush=True)
        dt = time.monotonic() - t0
        em.stats.write(em.counters())
        if not args.quiet:
            rej = em.rejects.total
            print(f"[rmb] emitted {em.emitted} events ({em.gated} gated to rollback, "
                  f"{rej} rejected" + (f", {em.dropped} dropped" if em.dropped else "")
                  + f") in {dt:.2f}s", flush=True)
    return 1 if unwritten else 0


if __name__ == "__main__":
    raise SystemExit(cli_main(main))
