"""The model check's actions: one method `op_<step>` a plan step, doing it to the real
stack and updating the model of what is on disk.

Actions is a mixin of runner.Run, which holds the state these methods read and write:
the processes (`procs`, lumen.harness.model.procs.Proc), the model (`valid` entity_ids in
append order, `rejects` by reason, a pending torn line `fragment`, `fresh`: the readers
may not know the live file by its first line yet, `v2_archive`: merged events in v2
files logrotate deleted), and the checks (`quiesce`, from oracle.Oracle).

Only this driver writes logs/rmb_events.jsonl, one action at a time, so the model knows
exactly what is on disk. Rotations keep KEEP rotated files, deleting the oldest as
logrotate's `rotate KEEP` does, after a check (nothing unread is deleted).
"""

import gzip
import json
import os
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

from lumen.harness.model.lines import (
    RMB_LOG,
    SAFETY_LOG,
    V2_LOG,
    bad_line,
    dumps,
    read_lines,
    rmb_ids,
    valid_event,
)
from lumen.harness.model.plan import FRAGMENT_REASON, KINDS, PROCS
from lumen.harness.model.procs import CONSUMER, ModelFailure, tail
from lumen.jsonl import append_lines

KEEP = 5  # rotated files kept (logrotate's `rotate 5`)


class Actions:
    def _append(self, lines):
        append_lines(self.p(RMB_LOG), [x + b"\n" for x in lines])
        if self.fragment:  # append_lines ended it: one line of its own
            self.rejects[FRAGMENT_REASON] += 1
            self.fragment = False

    def op_append(self, n, kinds=None):
        n = int(n)
        evs = []
        for _ in range(n):
            k = self.next()
            evs.append(dumps(valid_event(k, self.tag)))
            self.valid.append(f"{self.tag}-{k}")
        bad = kinds[1:].split(",") if kinds else []
        for j, kind in enumerate(bad):
            evs.insert((j + 1) * len(evs) // (len(bad) + 1), bad_line(kind, self.next(), self.tag))
        self._append(evs)
        for kind in bad:
            self.rejects[KINDS[kind]] += 1

    def op_reject(self, kind):
        self._append([bad_line(kind, self.next(), self.tag)])
        self.rejects[KINDS[kind]] += 1

    def op_fragment(self):
        live = self.p(RMB_LOG)
        if not live.exists() or live.stat().st_size == 0:
            self.fresh = True  # the file's first line is torn: no fingerprint yet
        k = self.next()
        frag = dumps(valid_event(k, f"{self.tag}-torn"))[: 40 + k % 60]
        fd = os.open(self.p(RMB_LOG), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, frag)
        finally:
            os.close(fd)
        self.fragment = True  # a second fragment extends the first: still one line

    def _rotated(self, name, i):
        plain, gz = self.p(f"{name}.{i}"), self.p(f"{name}.{i}.gz")
        return [x for x in (plain, gz) if x.exists()]

    def _shift(self, name):
        """.i -> .i+1 (plain and .gz), newest last; the one past KEEP is deleted (after a
        check: every reader has drained it)."""
        if self._rotated(name, KEEP):
            self.quiesce("before retention deletes " + f"{name}.{KEEP}")
            for x in self._rotated(name, KEEP):
                x.unlink()
        for i in range(KEEP - 1, 0, -1):
            for x in self._rotated(name, i):
                gz = ".gz" if x.name.endswith(".gz") else ""
                x.rename(self.p(f"{name}.{i + 1}{gz}"))

    def _settle_fresh(self, what, running_only=False):
        """KNOWN_SEQUENCES: before rotating a `fresh` live file, the readers read it (all
        of them, or those running: one that is down finds its place on restart)."""
        if self.fresh and not self.known:
            self.quiesce(f"before {what} (a fresh live file)", running_only=running_only)

    def op_rotate(self, mode):
        live = self.p(RMB_LOG)
        if not live.exists():
            self.notes["rotate skipped (no file)"] += 1
            return
        self._settle_fresh("rotate", running_only=True)
        self._shift(RMB_LOG)
        live.rename(self.p(RMB_LOG + ".1"))
        if self.fragment:  # the last line of a file that will not grow
            self.rejects[FRAGMENT_REASON] += 1
            self.fragment = False
        self.fresh = mode == "create"
        if mode == "create":
            live.touch()

    def op_copytruncate(self):
        live = self.p(RMB_LOG)
        if not live.exists() or live.stat().st_size == 0:
            self.notes["copytruncate skipped (empty)"] += 1
            return
        if not self.known and b"\n" not in live.read_bytes()[: 1 << 16]:
            self.notes["copytruncate skipped (KNOWN_SEQUENCES: only a torn line)"] += 1
            return
        self._settle_fresh("copytruncate")
        self._shift(RMB_LOG)
        # Nothing else writes the RMB log, so no line can land between copy and truncate.
        shutil.copyfile(live, self.p(RMB_LOG + ".1"))
        os.truncate(live, 0)
        if self.fragment:
            self.rejects[FRAGMENT_REASON] += 1
            self.fragment = False
        self.fresh = True

    def op_compress(self, i):
        src = self.p(f"{RMB_LOG}.{i}")
        if not src.exists():
            self.notes["compress skipped"] += 1
            return
        with open(src, "rb") as f, gzip.open(self.p(f"{RMB_LOG}.{i}.gz"), "wb") as g:
            shutil.copyfileobj(f, g)
        src.unlink()

    def op_logrotate(self):
        exe = shutil.which("logrotate")
        if exe is None:
            self.notes["logrotate skipped (not installed)"] += 1
            return
        names = (SAFETY_LOG, V2_LOG)
        oldest = self._rotated(V2_LOG, KEEP)
        if any(self._rotated(n, KEEP) for n in names):
            self.quiesce("before logrotate deletes old files")
        # logrotate deletes <log>.KEEP(.gz) when it rotates: keep what the v2 one held.
        kept = [
            (os.stat(x).st_ino, Counter(rmb_ids(json.loads(raw) for raw in read_lines(x))), x)
            for x in oldest
        ]
        conf = self.p("run/logrotate.conf")
        conf.parent.mkdir(exist_ok=True)
        conf.write_text(
            "".join(
                f"{self.p(n)} {{\n  daily\n  rotate {KEEP}\n  missingok\n  notifempty\n"
                "  nocreate\n  compress\n  delaycompress\n}\n"
                for n in names
            )
        )
        r = subprocess.run(
            [exe, "-f", "-s", str(self.p("run/logrotate.state")), str(conf)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if r.returncode != 0:
            raise ModelFailure(f"logrotate failed: {r.stderr.strip()[:500]}")
        for ino, ids, x in kept:
            try:
                if os.stat(x).st_ino == ino:
                    continue  # not rotated (an empty log): still there
            except FileNotFoundError:
                pass
            self.v2_archive.update(ids)

    def op_kill(self, key, delay_ms, restart=None):
        pr = self.procs[key]
        if not pr.alive():
            self.notes["kill skipped (down)"] += 1
            return
        time.sleep(int(delay_ms) / 1000)
        pr.killed = True
        pr.kill9()
        if restart:
            pr.killed = False
            pr.start()
            self._ready(pr)

    def op_restart(self, key):
        pr = self.procs[key]
        if pr.alive():
            return
        pr.killed = False
        pr.start()
        self._ready(pr)

    def _run_once(self, key, argv, tag, timeout=60):
        p, log = self.procs[key].spawn(argv, tag)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise ModelFailure(f"{tag} did not exit within {timeout}s:\n{tail(log)}") from None
        return p.returncode, Path(log).read_text(errors="replace")

    def op_merge_once(self):
        follower = self.procs["merge"]
        running = follower.alive()
        argv = follower.argv()[:-1]  # without --follow
        rc, out = self._run_once("merge", argv, f"merge.once.{self.step_no}")
        if rc != 0 or (running and "nothing to do here" not in out):
            raise ModelFailure(
                f"merge one-shot (follower {'running' if running else 'down'}): "
                f"exit {rc}, expected 0 and a hand-over:\n{out[-800:]}"
            )

    def _duplicate(self, key):
        """Start `key` again: if it runs, the copy must exit 2 naming it; else it runs."""
        pr = self.procs[key]
        if not pr.alive():
            pr.killed = False
            pr.start()
            self._ready(pr)
            return
        rc, out = self._run_once(key, pr.argv(), f"{key}.dup.{self.step_no}")
        if rc != 2 or f"pid {pr.p.pid}" not in out:
            raise ModelFailure(
                f"a second {key} while pid {pr.p.pid} runs: exit {rc}, "
                f"expected 2 naming pid {pr.p.pid}:\n{out[-800:]}"
            )
        if not pr.alive():
            raise ModelFailure(f"{key} died when a second one was started:\n{tail(pr.log)}")

    def op_merge_follow(self):
        self._duplicate("merge")

    def op_ingest_once(self):
        ing = self.procs["ingest"]
        running = ing.alive()
        rc, out = self._run_once(
            "ingest",
            ing.argv() + ["--once", "--name", "ingest_once"],
            f"ingest.once.{self.step_no}",
        )
        if rc != 0 or (running and "nothing to do here" not in out):
            raise ModelFailure(
                f"ingest --once (follower {'running' if running else 'down'}): "
                f"exit {rc}, expected 0 and a hand-over:\n{out[-800:]}"
            )

    def op_up(self):
        for key in PROCS:
            self._duplicate(key)

    def op_check(self):
        self.quiesce("check")

    def op_break(self, key):
        """Not generated: a broken reader (its checkpoint moved back one line while it is
        down, so it reads that line twice), to show that the model notices it."""
        self.quiesce("before breaking a checkpoint")
        pr = self.procs[key]
        pr.killed = True
        pr.kill9()
        path = self.p(f"logs/.offsets/{CONSUMER[key]}.json")
        ck = json.loads(path.read_text())
        st = os.stat(self.p(RMB_LOG))
        if (ck.get("dev"), ck.get("ino")) != (st.st_dev, st.st_ino):
            raise ModelFailure("break: the checkpoint is not in the live file")
        back = ck["offset"]
        with open(self.p(RMB_LOG), "rb") as f:
            data = f.read()
        prev = data.rfind(b"\n", 0, max(0, back - 1)) + 1
        if back == 0 or prev >= back:
            raise ModelFailure("break: no line before the checkpoint to re-read")
        ck["offset"] = prev
        path.write_text(json.dumps(ck))
        pr.killed = False
        pr.start()
        self._ready(pr)
