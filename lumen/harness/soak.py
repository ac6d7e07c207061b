"""make soak: the whole stack under load, faults and bad input, checked for loss.

In a scratch directory, on ephemeral ports: `make up` starts every process; the emitter is
replaced by one writing N events (default 200 000) at `--rate` events/s; meanwhile a
seeded fault driver, bounded in time,
  - SIGKILLs each consumer (exporter, safety loop, merge, URE loop, URE exporter,
    ingester) at random moments, several times each; supervisord restarts it;
  - rotates the logs with `make logs.rotate` (real logrotate, rename), and a few times
    with copytruncate, as a foreign logrotate would;
  - injects bad lines of every reject kind (not JSON, invalid UTF-8 also inside a string,
    1 000-deep nesting, not an object, truncated, oversize, schema-invalid, a space for the
    `T`, stamped 2099) and torn fragments (no newline, as a writer killed mid line leaves)
    through a second writer;
and 16 clients keep requesting /metrics, /metrics_ure and the API.
At the end it reports, per stage, events expected / seen / lost / duplicated / rejected,
and exits 1 on any loss or duplication of a valid event, rejects that differ from the
bad lines on disk, any 5xx, or a process that did not come back.

Expected = every valid event that reached disk (live files, rotated copies, compressed
ones): logrotate's copytruncate can drop lines between its copy and its truncate before
any reader sees them. Stages that keep only counters (exporter, safety loop, URE) are
checked by count; merge and ingest by event identity. `--break-checkpoint` moves one
consumer's checkpoint forward while it is down (a tailer that skips lines): the soak must
then fail, which tests/test_soak.py checks.

The entry is tools/soak.py (its flags: run(args) reads them); the fault driver is
lumen.harness.faults, the clients and hogs lumen.harness.load, the counting
lumen.harness.verdict.
"""

import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lumen import CONFIGS, ROOT, ctl
from lumen.harness import free_port, make, verdict
from lumen.harness.faults import Driver
from lumen.harness.load import Clients, Hogs

CONSUMERS = ["rmb_exporter", "safety_music", "ure_merge", "ure_loop", "ure_exporter", "ingest"]
T0 = time.monotonic()


def say(msg):
    print(f"[soak] {time.monotonic() - T0:6.1f}s {msg}", file=sys.stderr, flush=True)


def run(args):
    """The soak of `args` (tools/soak.py's flags, --duration filled in): 0 PASS, 1 FAIL."""
    with Hogs(args.hog or "", Path(args.dir or tempfile.gettempdir())):
        return _run(args)


def _start_emitter(args, env):
    """Replace `make up`'s emitter by one writing args.events at args.rate.

    A bounded run: startsecs 0, or supervisord would take an emitter that finishes its
    count within startsecs for a failed start and run it again (writing the count twice)."""
    ctl.stop("rmb_emitter")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "lumen.ctl",
            "start",
            "rmb_emitter",
            "--startsecs",
            "0",
            "--",
            sys.executable,
            "-u",
            str(ROOT / "rmb/rmb_emitter.py"),
            "--config",
            str(CONFIGS / "rmb_v17.yaml"),
            "--hz",
            str(args.rate),
            "--count",
            str(args.events),
            "--batch-size",
            "100",
            "--flush-ms",
            "50",
            "--seed",
            str(args.seed),
            "--name",
            "rmb_emitter",
        ],
        env=env,
        capture_output=True,
        text=True,
    )


def fault_plan(args, rng):
    """The seeded list of (action, argument) the driver carries out."""
    plan = [("kill", c) for c in CONSUMERS for _ in range(args.kills)]
    plan += [("rotate", False)] * args.rotations + [("rotate", True)] * args.copytruncates
    plan += [("inject", None)] * args.bad_lines
    rng.shuffle(plan)
    if args.break_checkpoint:
        for k in (6, 3, 0):  # early, while the emitter writes; it counts only when the
            plan.insert(k, ("break", "ingest"))  # ingester is reading the live file
    return plan


def _run(args):
    cwd = Path(args.dir or tempfile.mkdtemp(prefix="lumen-soak-")).resolve()
    cwd.mkdir(parents=True, exist_ok=True)
    os.chdir(cwd)
    rng = random.Random(args.seed)
    names = ("RMB_EXPORTER_PORT", "URE_EXPORTER_PORT", "API_PORT", "ALERT_RECEIVER_PORT")
    ports = {k: free_port() for k in names}
    env = dict(os.environ, **{k: str(v) for k, v in ports.items()})
    print(
        f"[soak] {args.events} events at {args.rate}/s in {cwd}"
        + (f", beside {args.hog} hogs" if args.hog else ", no hogs"),
        flush=True,
    )
    r = make(cwd, env, "up")
    say("stack up")
    if r.returncode != 0:
        print(f"[soak] make up failed: {r.stderr}", file=sys.stderr)
        return 1
    failures = []
    try:
        out = _start_emitter(args, env)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return 1
        urls = [
            f"http://127.0.0.1:{ports['RMB_EXPORTER_PORT']}/metrics",
            f"http://127.0.0.1:{ports['URE_EXPORTER_PORT']}/metrics_ure",
            f"http://127.0.0.1:{ports['API_PORT']}/api/rmb:last",
            f"http://127.0.0.1:{ports['API_PORT']}/api/summary?window=1h",
            f"http://127.0.0.1:{ports['API_PORT']}/api/rmb?limit=50&risk=SAFE",
        ]
        drv = Driver(cwd, env, rng, Path("logs/rmb_events.jsonl"))
        plan = fault_plan(args, rng)
        print(
            f"[soak] seed {args.seed}, fault plan ({len(plan)} actions; replay with the same "
            f"--seed and sizes): "
            + " ".join(f"{a}:{x}" if x not in (None, False) else a for a, x in plan),
            flush=True,
        )
        gap = args.duration / max(1, len(plan))
        # Each kill waits for the restarted process to be healthy, so the plan needs more
        # than its sleeps; the bound only stops a driver that is stuck.
        t_end = time.monotonic() + 2 * args.duration + 60 * len(plan)
        with Clients(urls) as clients:
            for action, arg in plan:
                if time.monotonic() > t_end:
                    failures.append("fault driver ran out of time")
                    break
                time.sleep(rng.uniform(0.3, 1.7) * gap)
                drv.do(action, arg)
            say(f"fault plan done ({len(plan)} actions)")
            emitter = ctl.read_pid("rmb_emitter")
            deadline = time.monotonic() + max(120, 3 * args.events / args.rate)
            while emitter and ctl.pid_alive(emitter) and time.monotonic() < deadline:
                time.sleep(0.2)
            say("emitter done")
            # The URE loop writes for ever, so the v2 log never ends: its readers are
            # checked after `make down`, when they have drained and written checkpoints.
            behind = verdict.caught_up(Path("logs/rmb_events.jsonl"))
            if behind:
                failures.append(f"stuck behind the RMB log (no progress for 180 s): {behind}")
            say("consumers caught up")
        for name in CONSUMERS + ["api"]:
            if ctl.running_pid(name) is None:
                failures.append(f"{name} is not running at the end")
        make(cwd, env, "down")  # every consumer writes its final checkpoint
        say("stack down")
        # ------------------------------------------------------------ the verdict
        table, expected, bad_on_disk = verdict.judge(failures)
        # 503 is a server shedding load (its connection cap), not an error; any other 5xx is.
        fivexx = sum(v for k, v in clients.status.items() if k >= 500 and k != 503)
        if fivexx:
            failures.append(f"{fivexx} responses were 5xx")
        failures += drv.not_back
        if args.break_checkpoint:
            print(f"[soak] checkpoint broken on purpose: {drv.corrupted}")
        print(
            f"[soak] emitted {args.events}, valid on disk {expected} "
            f"(copytruncate may drop some), bad lines on disk {bad_on_disk} "
            f"(injected {sum(drv.injected.values())}: {dict(drv.injected)})"
        )
        print(
            f"[soak] kills {dict(drv.kills)}; rotations {dict(drv.rotations)}; "
            f"requests {dict(clients.status)}, {clients.errors} refused during restarts"
        )
        verdict.print_table(table)
    finally:
        make(cwd, env, "down")
    for f in failures:
        print(f"[soak] FAIL {f}")
    print(f"[soak] RESULT = {'FAIL' if failures else 'PASS'}")
    return 1 if failures else 0
