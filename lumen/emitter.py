"""The RMB emitter's core: gate, validate, batch and append v1 events (blueprint section 5).

The entry point rmb/rmb_emitter.py parses the flags (`build_parser`), loads
configs/rmb_v17.yaml and calls `run(args, cfg)`. Writes the configured queue
(`paths.queue`, `logs/rmb_events.jsonl`), `logs/rejects/rmb_input.jsonl` for bad input
lines, and `logs/.state/<name>.json` (iteration numbers) and `<name>.stats` (counters).

Sources (`--source`, lumen.emit_sources):
  sim     (default) seeded simulated events (lumen.simulate), `--profile seed|steady|spike`,
          at `loop.hz`
  stdin   one JSON event per line from standard input (a real producer feeding the bridge)
  replay  the events of `--replay FILE`, in order, as fast as they can be validated
Every event passes the safety gates (lumen.gates: an out-of-band event becomes a
`rollback`). Events from stdin and replay (outside data) are classified as every reader
will classify them (schemas/rmb_event_v1.json, ts_future) before they are written; an
input line that is not a valid event is quarantined and counted, never written to the
queue. Simulated events are valid by construction (tests/test_emit_valid.py proves it
over the profiles, seeds, gates and clocks) and are not classified again; those a
simulated clock stamps past the readers' future bound are quarantined as `ts_future`.

Writes are batched: a batch is appended (one locked write) when it holds `loop.batch_size`
events or its oldest event is `loop.flush_ms` old. When the queue cannot be written (disk
full, I/O error) the emitter keeps going: up to `loop.max_pending` (default 100 000) events
wait in memory and are written when space returns; beyond that new events are dropped and
counted. Its counters (emitted, dropped, write errors, pending) are kept in
`logs/.state/<name>.stats`, a fixed-size file rewritten in place (no new disk space
needed), which the RMB exporter serves as `rmb_emitter_*`. `--count`/`--duration` bound a run;
`--unthrottled` drops the `hz` pacing (benchmarks) and writes batches of at least 1000
events (`flush_ms` still bounds an event's wait); `--sim-start TS` stamps events on a
simulated clock (TS + i/hz) instead of the wall clock, so ten minutes of stream can be
produced in a second. SIGTERM/SIGINT flush the batch and exit 0. At exit, events that could
not be written go to `<queue>.unwritten.<pid>` and the exit status is 1.

Departures from the blueprint: a batch per flush instead of a file open per event; the
config's batch_size, flush_ms and value_hasher are honoured; iteration numbers continue
across restarts (`logs/.state/<name>.json`). This module does not read the queue back:
consumers (exporter, bridge, merge) tail it through lumen.consumer.
"""

import argparse
import os
import sys
import time

import orjson

from . import CONFIGS, checkpoint, config, events, timefmt
from .emit_sources import next_iter, run_lines, run_sim
from .gates import gate
from .jsonl import JsonlWriter, dumps
from .proc import Lifecycle
from .rejects import Rejects
from .simulate import PROFILES
from .statsfile import StatsFile

STATE_DIR = "logs/.state"


def build_parser(description=None):
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--config", default=str(CONFIGS / "rmb_v17.yaml"), help="config file (YAML)")
    ap.add_argument("--source", choices=("sim", "stdin", "replay"), default="sim")
    ap.add_argument("--replay", metavar="FILE", help="file of v1 events for --source replay")
    ap.add_argument("--profile", choices=PROFILES, default="steady")
    ap.add_argument("--seed", type=int, help="seed of the simulated source (default: random)")
    ap.add_argument("--count", type=int, help="stop after this many events")
    ap.add_argument("--duration", type=float, help="stop after this many seconds")
    ap.add_argument(
        "--unthrottled",
        action="store_true",
        help="ignore loop.hz: emit flat out, in batches of at least 1000 events",
    )
    ap.add_argument(
        "--sim-start", metavar="TS", help="simulated clock: event i is stamped TS + i/hz (RFC 3339)"
    )
    ap.add_argument("--hz", type=float, help="override loop.hz")
    ap.add_argument("--batch-size", type=int, help="override loop.batch_size")
    ap.add_argument("--flush-ms", type=int, help="override loop.flush_ms")
    ap.add_argument("--queue", help="override paths.queue")
    ap.add_argument("--name", default="rmb_emitter", help="process name (PID file run/NAME.pid)")
    ap.add_argument("--quiet", action="store_true")
    return ap


def usage_error(args):
    """What is wrong with a combination of flags argparse cannot check, or None."""
    if args.source == "replay" and not args.replay:
        return "--source replay needs --replay FILE"
    if args.sim_start:
        t = timefmt.parse(args.sim_start)
        if t is None:
            return f"--sim-start {args.sim_start!r} is not an RFC 3339 time"
        if t > time.time() + events.MAX_FUTURE_S:
            return (
                f"--sim-start {args.sim_start!r} is in the future: every event would be "
                f"a ts_future reject (more than {events.MAX_FUTURE_S:g} s ahead)"
            )
    return None


class Emitter:
    """Gates, validates, batches and writes events; owns the counters a run reports."""

    def __init__(self, cfg, validator=None, rejects=None, clock=time.monotonic, stats=None):
        self.cfg = cfg
        self.gates = cfg["safety_gates"]
        self.batch_size = cfg["loop"]["batch_size"]
        self.flush_s = cfg["loop"]["flush_ms"] / 1000.0
        self.writer = JsonlWriter(
            cfg["paths"]["queue"], max_pending=cfg["loop"].get("max_pending", 100_000)
        )
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
        """Gate, validate and buffer one event from outside (stdin, replay); False if it
        was rejected instead."""
        if gate(evt, self.gates):
            self.gated += 1
        line = dumps(evt)
        # What every consumer will decide about this line, decided here first (ts_future
        # included), so the queue only ever gets lines the readers count as events.
        _, _, err = self.classifier.classify(line[:-1], self.wall())
        if err:
            self.rejects.add(err[0], err[1], "emitter", -1, line[:-1])
            return False
        return self.take([line]) == 1

    def take(self, lines):
        """Buffer encoded lines that are valid events (checked by `offer`, or built valid
        by the simulator: tests/test_emit_valid.py proves it), flushing the batch when it
        is full. Lines beyond the memory bound are dropped and counted while the queue
        cannot be written. Returns how many were taken."""
        n = self.writer.add_lines(lines)
        if n:
            if self._first_at is None:
                self._first_at = self.clock()
            self.emitted += n
            if len(self.writer) >= self.batch_size:
                self.flush()
        return n

    def reject_future(self, lines, now):
        """The lines a reader at `now` would take, the others quarantined as ts_future
        rejects: a simulated clock can run ahead of the wall."""
        keep = []
        for line in lines:
            ts = orjson.loads(line)["ts"]
            err = events.judge_future(timefmt.parse(ts), now, events.MAX_FUTURE_S)
            if err:
                self.rejects.add(err[0], err[1], "emitter", -1, line[:-1])
            else:
                keep.append(line)
        return keep

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
        return {
            "emitted": self.emitted,
            "gated": self.gated,
            "dropped": self.writer.dropped,
            "write_errors": self.writer.write_errors,
            "pending": len(self.writer),
            "rejected": self.rejects.total,
        }

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
            print(
                f"error: {n} events could not be appended to {self.writer.path}; saved to {side}",
                file=sys.stderr,
                flush=True,
            )
        except OSError as e:
            print(
                f"error: {n} events could not be appended to {self.writer.path} nor saved "
                f"to {side} ({e.strerror or e}): they are lost",
                file=sys.stderr,
                flush=True,
            )
        return 1


def run(args, cfg):
    """One emitter process: run the chosen source under a Lifecycle (PID file, SIGTERM),
    then flush, save what could not be written and the iteration state; returns the exit
    status (0, 1 when events are left unwritten, 2 when the replay file cannot be read)."""
    em = Emitter(cfg, stats=StatsFile(f"{STATE_DIR}/{args.name}.stats"))
    state = checkpoint.load_json(f"{STATE_DIR}/{args.name}.json") or {}
    with Lifecycle(args.name) as life:
        life.ready()
        if not args.quiet:
            print(
                f"[rmb] emitting to {cfg['paths']['queue']} (source={args.source}"
                + (
                    f", profile={args.profile}, hz={cfg['loop']['hz']:g}"
                    if args.source == "sim"
                    else ""
                )
                + ")",
                flush=True,
            )
        t0 = time.monotonic()
        try:
            if args.source == "sim":
                state["next_iter"] = run_sim(em, args, cfg, life.stop, next_iter(state))
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
                    print(
                        f"[rmb] warning: state not saved ({e.strerror or e})",
                        file=sys.stderr,
                        flush=True,
                    )
        dt = time.monotonic() - t0
        em.stats.write(em.counters())
        if not args.quiet:
            rej = em.rejects.total
            print(
                f"[rmb] emitted {em.emitted} events ({em.gated} gated to rollback, "
                f"{rej} rejected"
                + (f", {em.dropped} dropped" if em.dropped else "")
                + f") in {dt:.2f}s",
                flush=True,
            )
    return 1 if unwritten else 0


def from_argv(argv=None, description=None):
    """The emitter run by its command line (rmb/rmb_emitter.py, and metrics.fake.v17 in
    process): parse, load the config with the flag overrides, check, run; the exit status."""
    args = build_parser(description).parse_args(argv)
    cfg = config.load(
        args.config,
        "rmb_v17",
        overrides={
            "loop.hz": args.hz,
            "loop.batch_size": args.batch_size,
            "loop.flush_ms": args.flush_ms,
            "paths.queue": args.queue,
        },
    )
    err = usage_error(args)
    if err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return run(args, cfg)
