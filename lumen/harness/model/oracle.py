"""The model check's oracle: every stage of the stack compared with the model.

Oracle is a mixin of runner.Run (which holds the model: `valid`, `rejects`, `v2_archive`,
and the processes). quiesce() brings the processes up and polls until every stage agrees
with the model twice in a row, or raises ModelFailure with every difference after the
bounded wait. What each stage is compared by (valid events by identity, rejects by
reason, gap bytes) is listed in the package docstring (lumen.harness.model, which
tools/model_check.py --help prints): one cmp_<stage> method a stage, exporter (its /metrics
and its checkpoint), safety, merge (the v2 log), ingest (data/lumen.db, read-only) and
quarantine (logs/rejects/).
"""

import gzip
import json
import sqlite3
import time
import urllib.request
from collections import Counter

from lumen.harness.model.lines import QUARANTINE, RMB_LOG, V2_LOG, log_files, read_lines, rmb_ids
from lumen.harness.model.procs import CONSUMER, ModelFailure


class Oracle:
    def expected(self):
        return dict(sorted((r, n) for r, n in self.rejects.items() if n))

    def quiesce(self, why, stopped=False, running_only=False):
        """Bring every process up (unless `stopped`, or `running_only`: then only the
        running ones are checked), then poll until each stage agrees with the model twice
        in a row; ModelFailure with the numbers after the timeout."""
        t0 = time.monotonic()
        if not stopped:
            self.check_alive()
            if not running_only:
                self.start_all()
        down = {k for k, pr in self.procs.items() if not pr.alive()} if running_only else set()
        deadline = t0 + self.timeout
        agreed = 0
        while True:
            if not stopped:
                self.check_alive()
            diffs = self.compare(stopped, down)
            if not diffs:
                agreed += 1
                if agreed >= 2:
                    break
            else:
                agreed = 0
                if time.monotonic() > deadline:
                    raise ModelFailure(
                        f"{why}: after {self.timeout:.0f}s the stages still "
                        "differ from the model:\n  " + "\n  ".join(diffs)
                    )
            time.sleep(0.1)
        self.checks += 1
        try:  # every reader has read a line of the live file: they know it by it
            with open(self.p(RMB_LOG), "rb") as f:
                if b"\n" in f.read(1 << 16) and not down:
                    self.fresh = False
        except FileNotFoundError:
            pass
        if self.verbose:
            self.say(
                f"[model] step {self.step_no}: {why} ok in "
                f"{time.monotonic() - t0:.2f}s ({len(self.valid)} valid, "
                f"rejects {self.expected()})"
            )

    def compare(self, stopped=False, down=()):
        """Every stage's differences from the model (stages of processes in `down` left
        out); [] when all agree."""
        diffs = []
        self.down = set(down)
        for stage in ("exporter", "safety", "merge", "ingest", "quarantine"):
            if stage in self.down:
                continue
            try:
                diffs += getattr(self, "cmp_" + stage)(stopped)
            except (
                OSError,
                ValueError,
                KeyError,
                TypeError,
                EOFError,
                sqlite3.Error,
                gzip.BadGzipFile,
            ) as e:
                diffs.append(f"{stage}: not readable yet ({type(e).__name__}: {e})")
        return diffs

    def _counts(self, stage, valid, rejects, gap=0):
        out = []
        want_v, want_r = len(self.valid), self.expected()
        rejects = {r: n for r, n in sorted(rejects.items()) if n}
        if valid != want_v:
            out.append(f"{stage}: {valid} valid events (model {want_v})")
        if rejects != want_r:
            out.append(f"{stage}: rejects {rejects} (model {want_r})")
        if gap:
            out.append(f"{stage}: {gap} bytes counted as lost (gap_bytes; model 0)")
        return out

    def _monitor(self, name):
        try:
            ck = json.loads(self.p(f"logs/.offsets/{name}.json").read_text())
        except FileNotFoundError:  # has read nothing yet
            return {}
        return ((ck.get("state") or {}).get("monitor")) or {}

    def cmp_exporter(self, stopped):
        mon = self._monitor("rmb_exporter")
        diffs = self._counts(
            "exporter (checkpoint)",
            mon.get("valid", 0),
            mon.get("rejects", {}),
            mon.get("gap_bytes", 0),
        )
        if stopped:
            return diffs
        url = f"http://127.0.0.1:{self.procs['exporter'].port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        total, rej, gap = None, {}, 0
        for ln in text.splitlines():
            if ln.startswith("rmb_events_total "):
                total = int(float(ln.split()[1]))
            elif ln.startswith('rmb_rejects_total{reason="'):
                reason = ln.split('"')[1]
                rej[reason] = int(float(ln.rsplit(" ", 1)[1]))
            elif ln.startswith("rmb_log_gap_bytes_total "):
                gap = int(float(ln.split()[1]))
        if total is None:
            raise ValueError("no rmb_events_total in /metrics")
        return self._counts("exporter", total, rej, gap) + diffs

    def cmp_safety(self, stopped):
        mon = self._monitor("safety_music")
        return self._counts(
            "safety", mon.get("valid", 0), mon.get("rejects", {}), mon.get("gap_bytes", 0)
        )

    def _v2_events(self):
        out = []
        for f in reversed(log_files(self.cwd, V2_LOG)):
            for raw in read_lines(f):
                out.append(json.loads(raw))
        return out

    def cmp_merge(self, stopped):
        mon = self._monitor("merge_rmb")
        diffs = self._counts(
            "merge (merge_rmb)",
            mon.get("valid", 0),
            mon.get("rejects", {}),
            mon.get("gap_bytes", 0),
        )
        evs = self._v2_events()
        rmb = Counter(rmb_ids(evs))
        rmb.update(self.v2_archive)
        diffs += self._identity("merge (v2 log)", rmb)
        srcs = Counter(
            (s.get("stream"), s.get("fp"), s.get("offset"))
            for s in (e.get("source") for e in evs)
            if s
        )
        dup = {k: n for k, n in srcs.items() if n > 1}
        if dup:
            diffs.append(
                f"merge (v2 log): {len(dup)} sources merged more than once, e.g. {next(iter(dup))}"
            )
        return diffs

    def _identity(self, stage, seen):
        want = set(self.valid)
        missing = [i for i in self.valid if i not in seen]
        dups = {i: n for i, n in seen.items() if n > 1}
        extra = [i for i in seen if i not in want]
        out = []
        if missing:
            out.append(f"{stage}: {len(missing)} valid events missing, e.g. {missing[:3]}")
        if dups:
            out.append(
                f"{stage}: {len(dups)} events more than once, e.g. {sorted(dups.items())[:3]}"
            )
        if extra:
            out.append(f"{stage}: {len(extra)} events the model does not have, e.g. {extra[:3]}")
        return out

    def cmp_ingest(self, stopped):
        db = self.p("data/lumen.db")
        if not db.exists():
            raise FileNotFoundError(db)
        c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            rows = Counter(
                dict(c.execute("SELECT entity_id, COUNT(*) FROM rmb GROUP BY entity_id"))
            )
            ure = Counter(
                dict(
                    c.execute(
                        "SELECT entity_id, COUNT(*) FROM ure WHERE entity_id LIKE ? "
                        "GROUP BY entity_id",
                        (f"{self.tag}-%",),
                    )
                )
            )
            cks = dict(c.execute("SELECT consumer, ck FROM offsets"))
        finally:
            c.close()
        diffs = self._identity("ingest (table rmb)", rows)
        if "merge" not in self.down:  # the ure table is what the merge wrote
            diffs += self._identity("ingest (table ure)", ure)
        mon = ((json.loads(cks.get("ingest_rmb", "{}")).get("state") or {}).get("monitor")) or {}
        diffs += self._counts(
            "ingest (ingest_rmb)",
            mon.get("valid", 0),
            mon.get("rejects", {}),
            mon.get("gap_bytes", 0),
        )
        mon = ((json.loads(cks.get("ingest_ure", "{}")).get("state") or {}).get("monitor")) or {}
        if mon.get("rejects") and any(mon["rejects"].values()):
            diffs.append(
                f"ingest (ingest_ure): rejects {mon['rejects']} in the v2 log (model none)"
            )
        if mon.get("gap_bytes"):
            diffs.append(f"ingest (ingest_ure): {mon['gap_bytes']} gap bytes in the v2 log")
        return diffs

    def cmp_quarantine(self, stopped):
        recs = {}
        for raw in read_lines(self.p(QUARANTINE)):
            r = json.loads(raw)
            key = (r["consumer"], r["source"], r["offset"])
            if key in recs and recs[key] != r["reason"]:
                return [f"quarantine: {key} quarantined as {recs[key]} and as {r['reason']}"]
            recs[key] = r["reason"]
        diffs = []
        want = self.expected()
        for stage, name in CONSUMER.items():
            if stage in self.down:
                continue
            got = dict(
                sorted(Counter(reason for (c, _, _), reason in recs.items() if c == name).items())
            )
            if got != want:
                diffs.append(f"quarantine ({name}): {got} (model {want})")
        return diffs
