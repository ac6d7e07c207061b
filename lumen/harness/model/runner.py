"""The model check's runs: one plan against a fresh stack, a greedy shrinker, and the loop
over seeds that tools/model_check.py prints.

Run holds one run's state: the processes (procs.Proc, one per PROCS key) and the model
(valid events, rejects by reason, the pending fragment ...). execute() starts every
process, does each step (actions.Actions), then checks (oracle.Oracle): the final check,
SIGTERM everything (exit 0 each), the checkpoints, a start of everything again and one more
check (a restart must not count anything twice). run() wraps it in a scratch directory and
turns a ModelFailure into (False, seconds, a message with the seed, the step and the plan).
"""

import json
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from lumen.harness import free_port
from lumen.harness.model.actions import Actions
from lumen.harness.model.oracle import Oracle
from lumen.harness.model.plan import KNOWN_SEQUENCES, PROCS, make_plan, plan_text
from lumen.harness.model.procs import PY, ModelFailure, Proc, clean_env, tail


class Run(Actions, Oracle):
    def __init__(
        self, seed, plan, cwd, tag=None, timeout=30.0, verbose=False, say=print, known=False
    ):
        self.seed, self.plan, self.cwd = seed, plan, Path(cwd)
        self.known = known or not KNOWN_SEQUENCES  # False: steer clear of KNOWN_SEQUENCES
        self.tag = tag or f"mc{seed}"
        self.timeout, self.verbose, self.say = timeout, verbose, say
        self.env = clean_env()
        self.port = free_port()
        self.procs = {k: Proc(k, self.cwd, self.env, self.port) for k in PROCS}
        # the model
        self.valid = []  # entity_ids of valid events, in append order
        self.rejects = Counter()  # reason -> lines (ended ones)
        self.fragment = False  # the live RMB log ends in a torn line
        self.fresh = False  # readers may not know the live file by its first line
        self.serial = 0  # numbers events and bad lines
        self.step_no = 0
        self.checks = 0
        self.notes = Counter()
        self.v2_archive = Counter()  # merged RMB events in v2 files logrotate deleted
        self.down = set()  # processes a running-only check leaves out

    # -------------------------------------------------------------- helpers
    def p(self, rel):
        return self.cwd / rel

    def next(self):
        self.serial += 1
        return self.serial

    def start_all(self):
        down = [pr for pr in self.procs.values() if not pr.alive()]
        for pr in down:
            pr.killed = False
            pr.start()
        for pr in down:
            self._ready(pr)

    def _ready(self, pr):
        try:
            pr.wait_ready(self.timeout)
        except ModelFailure:
            if pr.key == "exporter" and pr.p.poll() == 1 and "port" in tail(pr.log).lower():
                pr.port = self.port = free_port()  # the port was taken meanwhile
                pr.start()
                pr.wait_ready(self.timeout)
                return
            raise

    def check_alive(self):
        for pr in self.procs.values():
            if pr.p is not None and pr.p.poll() is not None and not pr.killed:
                raise ModelFailure(
                    f"{pr.key} died on its own (exit {pr.p.returncode}):\n{tail(pr.log)}"
                )

    def do(self, w):
        op, args = w[0], w[1:]
        getattr(self, "op_" + op.replace(".", "_"))(*args)

    # ---------------------------------------------------------------- main
    def execute(self):
        t0 = time.monotonic()
        self.start_all()
        for i, w in enumerate(self.plan, 1):
            self.step_no = i
            ts = time.monotonic()
            try:
                self.do(w)
            except ModelFailure:
                raise
            except Exception as e:  # noqa: BLE001 - the driver's own trouble, with the step
                raise ModelFailure(
                    f"step {i} ({' '.join(w)}) raised {type(e).__name__}: {e}"
                ) from e
            if self.verbose and w[0] != "check":
                self.say(f"[model] step {i}: {' '.join(w)} ({time.monotonic() - ts:.2f}s)")
        self.step_no = len(self.plan) + 1
        self.quiesce("final check")
        # SIGTERM: each process checkpoints and exits 0; the checkpoints agree too.
        for pr in self.procs.values():
            pr.p.send_signal(signal.SIGTERM)
        for pr in self.procs.values():
            try:
                rc = pr.p.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                raise ModelFailure(
                    f"{pr.key} did not stop within {self.timeout:.0f}s of SIGTERM:\n{tail(pr.log)}"
                ) from None
            if rc != 0:
                raise ModelFailure(f"{pr.key} exited {rc} on SIGTERM:\n{tail(pr.log)}")
            pr.killed = True
        self.quiesce("checkpoints after SIGTERM", stopped=True)
        # Started again from their checkpoints: nothing is counted twice.
        self.quiesce("after a restart of everything")
        return time.monotonic() - t0

    def cleanup(self):
        for pr in self.procs.values():
            pr.cleanup()


def run(seed, plan, workdir=None, timeout=30.0, verbose=False, keep=False, say=print, known=False):
    """Run one plan in a fresh directory. Returns (ok, seconds, message)."""
    cwd = Path(workdir or tempfile.mkdtemp(prefix=f"lumen-model-{seed}-")).resolve()
    cwd.mkdir(parents=True, exist_ok=True)
    r = Run(seed, plan, cwd, timeout=timeout, verbose=verbose, say=say, known=known)
    t0 = time.monotonic()
    ok, msg = True, ""
    try:
        r.execute()
        msg = f"{len(r.valid)} valid events, rejects {r.expected()}, {r.checks} checks" + (
            f", {dict(r.notes)}" if r.notes else ""
        )
    except ModelFailure as e:
        ok = False
        step = r.step_no
        where = (
            f"at step {step}: {' '.join(plan[step - 1])}"
            if 0 < step <= len(plan)
            else "after the plan"
            if step
            else "while starting"
        )
        msg = (
            f"FAIL seed {seed} {where}\n{e}\n"
            f"  model: {len(r.valid)} valid events, rejects {r.expected()}"
            f"{', a fragment pending' if r.fragment else ''}\n"
            f"  steps run: {plan_text(plan[:step])}\n"
            f"  process logs: {cwd / 'proc'}"
        )
        keep = True
    finally:
        r.cleanup()
        if not keep:
            shutil.rmtree(cwd, ignore_errors=True)
    return ok, time.monotonic() - t0, msg


def shrink(seed, plan, timeout, say, known=False):
    """A shorter plan that still fails (greedy: drop chunks, then single steps)."""

    def fails(p):
        ok, _, _ = run(seed, p, timeout=timeout, known=known)
        return not ok

    n = max(1, len(plan) // 2)
    while n >= 1:
        i = 0
        while i < len(plan):
            cand = plan[:i] + plan[i + n :]
            if cand and fails(cand):
                plan = cand
                say(f"[model] shrunk to {len(plan)} steps: {plan_text(plan)}")
            else:
                i += n
        n //= 2
    return plan


def run_seeds(
    seeds,
    steps,
    timeout,
    fixed=None,
    long=False,
    known=False,
    workdir=None,
    verbose=False,
    shrink_failures=False,
    script="tools/model_check.py",
):
    """tools/model_check.py's run: each seed's plan (or the `fixed` one), a line a seed, a
    replay command (`script` --plan ...) for a failure, and the RESULT line. 0 or 1."""
    failed = []
    for seed in seeds:
        plan = fixed if fixed is not None else make_plan(seed, steps, long, known)
        print(f"[model] seed {seed}, {len(plan)} steps: {plan_text(plan)}", flush=True)
        where = Path(workdir) / f"seed-{seed}" if workdir and len(seeds) > 1 else workdir
        ok, dt, msg = run(seed, plan, where, timeout, verbose, keep=bool(workdir), known=known)
        print(f"[model] seed {seed}: {'PASS' if ok else 'FAIL'} in {dt:.1f}s: {msg}", flush=True)
        if not ok:
            failed.append(seed)
            print(f"[model] replay: {PY} {script} --plan {json.dumps(plan_text(plan))}", flush=True)
            if shrink_failures:
                small = shrink(seed, plan, timeout, lambda m: print(m, flush=True), known)
                print(
                    f"[model] seed {seed}: shortest failing plan found "
                    f"({len(small)} steps): {plan_text(small)}",
                    flush=True,
                )
    verdict = f"FAIL (seeds {', '.join(map(str, failed))})" if failed else "PASS"
    print(
        f"[model] RESULT = {verdict} ({len(seeds)} seed{'s' if len(seeds) != 1 else ''}, "
        f"{steps if fixed is None else len(fixed)} steps each)"
    )
    return 1 if failed else 0
