"""Issue 13.6: power loss. No checkpoint runs ahead of the data it vouches for.

A power loss is simulated in-process: os.fsync, os.replace and os.rename are wrapped by a
recorder that keeps each file's bytes as they were at its last fsync, and a rename as
durable only once its directory is fsynced (lumen.checkpoint.write_atomic: fsync the temp
file, rename, fsync the directory). A seeded crash is raised right after the k-th of those
operations; then every output file and checkpoint is taken back to its last fsynced state
(never fsynced: gone). The input is durable (it is another machine's), and it is rotated by
the real logrotate (`make logs.rotate`) while the consumer is down. Then the consumer
restarts and finishes: every input event must be in the output exactly once. For the
merge (lumen/merge.Merger) and evidence.map (tools/evidence_mapper_v17.run).

For ingest (tools/storage/ingest_tail_v18.py, a real process): the offsets row and the rows
are one transaction (a SIGKILL between the offsets write and COMMIT leaves neither), and
under SIGKILLs at random points and power losses (the database taken back to an earlier
committed state, WAL and all) every valid event is one row.
"""

import gzip
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import PY, ROOT, run_make, wait_until, require_tool
from lumen.jsonl import append_lines, dumps
from lumen.simulate import EventFactory

pytestmark = pytest.mark.timeout(120)

LOG = "logs/rmb_events.jsonl"
V2 = "logs/resonance_events_v2.jsonl"
BUNDLES = "logs/evidence_bundle.jsonl"
BASE_T = 1_767_225_600  # 2026-01-01T00:00:00Z


# ------------------------------------------------------------------ helpers
class Stream:
    """Valid v1 events numbered 0, 1, 2 ... (trace.iter) appended as the emitter does."""

    def __init__(self, workdir, seed=6):
        self.path = Path(workdir) / LOG
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.factory = EventFactory("steady", random.Random(seed), "rmb/v17", "sha256", "t13")
        self.n = 0

    def append(self, count, batch=100):
        lines = []
        for i in range(self.n, self.n + count):
            ts = datetime.fromtimestamp(BASE_T + i / 1000, timezone.utc).isoformat()
            lines.append(dumps(self.factory.make(i, ts)))
        for k in range(0, len(lines), batch):
            append_lines(self.path, lines[k : k + batch])
        self.n += count


def need_logrotate():
    require_tool("logrotate")


def rotate(workdir):
    r = run_make(workdir, "logs.rotate")
    assert r.returncode == 0, r.stdout + r.stderr


def all_lines(workdir, name):
    """The JSON lines of `name` and its rotated files (.N, .N.gz), oldest first."""
    logs = Path(workdir) / "logs"
    files = sorted(
        logs.glob(Path(name).name + ".*"),
        key=lambda p: -int(p.name[len(Path(name).name) + 1 :].split(".")[0]),
    )
    out = []
    for p in [*files, logs / Path(name).name]:
        if not p.exists():
            continue
        data = gzip.open(p).read() if p.suffix == ".gz" else p.read_bytes()
        out += [json.loads(x) for x in data.splitlines() if x.strip()]
    return out


class Crash(BaseException):
    """The power went: raised from inside a recorded fsync/rename, caught by nothing."""


class PowerLoss:
    """Records what is durable: per file, its bytes at its last fsync; renames once their
    directory is fsynced. `rewind(paths)` takes those files back to it."""

    def __init__(self, monkeypatch, tracked):
        self.tracked = [os.path.realpath(p) for p in tracked]
        self.real = {"fsync": os.fsync, "replace": os.replace, "rename": os.rename}
        self.synced = {}  # path -> bytes at its last fsync (or as of the last rewind)
        self.pending = []  # (dir, src, dst): renames not durable yet
        self.ops = 0
        self.crash_at = None
        self.crashes = 0
        monkeypatch.setattr(os, "fsync", self.fsync)
        monkeypatch.setattr(os, "replace", self.replace)
        monkeypatch.setattr(os, "rename", self.rename)
        self.settle()

    def arm(self, k):
        self.ops, self.crash_at = 0, k

    def disarm(self):
        self.crash_at = None

    def _tick(self):
        self.ops += 1
        if self.crash_at is not None and self.ops >= self.crash_at:
            self.crash_at = None
            self.crashes += 1
            raise Crash(f"power lost after operation {self.ops}")

    def fsync(self, fd):
        fd = fd if isinstance(fd, int) else fd.fileno()
        self.real["fsync"](fd)
        path = os.readlink(f"/proc/self/fd/{fd}")
        if os.path.isdir(path):
            keep = []
            for d, src, dst in self.pending:
                if d != path:
                    keep.append((d, src, dst))
                elif src in self.synced:
                    self.synced[dst] = self.synced.pop(src)
                else:  # a file never fsynced renamed over dst: its bytes are unknown
                    self.synced[dst] = b""
            self.pending = keep
        else:
            self.synced[path] = os.pread(fd, os.fstat(fd).st_size, 0)
        self._tick()

    def _renamed(self, real, src, dst, **kw):
        real(src, dst, **kw)
        src, dst = os.path.realpath(src), os.path.realpath(dst)
        self.pending.append((os.path.dirname(dst), src, dst))
        self._tick()

    def replace(self, src, dst, **kw):
        self._renamed(self.real["replace"], src, dst, **kw)

    def rename(self, src, dst, **kw):
        self._renamed(self.real["rename"], src, dst, **kw)

    def rewind(self):
        """The power loss: every tracked file back to its durable bytes, or gone."""
        for p in self.tracked:
            if p in self.synced:
                with open(p, "wb") as f:
                    f.write(self.synced[p])
            elif os.path.exists(p):
                os.unlink(p)
        self.pending = []
        self.settle()

    def settle(self):
        """What is on disk now is durable (after a rewind, a rotation, a clean stop)."""
        self.synced = {}
        for p in self.tracked:
            if os.path.exists(p):
                with open(p, "rb") as f:
                    self.synced[p] = f.read()


def close_merger(m):
    for _, consumer, _ in m.inputs:
        consumer.close()


# ------------------------------------------------------------------ merge.v2
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_merge_power_loss_at_random_points_with_rotations_exactly_once(workdir, monkeypatch, seed):
    need_logrotate()
    from lumen.merge import Merger

    paths = {"v2_log": V2, "v1_rmb": LOG, "v1_safe": "logs/safety_music_events.jsonl"}
    rng = random.Random(seed)
    s = Stream(workdir)
    s.append(150)
    pl = PowerLoss(
        monkeypatch, [V2, "logs/.offsets/merge_rmb.json", "logs/.offsets/merge_safety.json"]
    )
    rotations = replayed = 0
    for rnd in range(5):
        pl.arm(rng.randint(1, 14))  # ~4 operations per step: output fsync, temp fsync,
        m = Merger(paths, host="h")  # rename, directory fsync
        try:
            for _ in range(12):
                m.step()
                s.append(rng.randint(10, 60))
        except Crash:
            pass
        finally:
            close_merger(m)
            replayed += m.skipped
        pl.disarm()
        pl.rewind()
        if rnd % 2 == 0 or rng.random() < 0.3:  # logrotate runs while the merge is down
            rotate(workdir)
            rotations += 1
            pl.settle()
    assert pl.crashes >= 3
    assert rotations >= 3 and list((workdir / "logs").glob("rmb_events.jsonl.*.gz"))
    m = Merger(paths, host="h")
    m.run()
    replayed += m.skipped
    print(
        f"seed {seed}: {pl.crashes} power losses, {rotations} rotations, {s.n} events, "
        f"{replayed} replayed input lines skipped as already merged"
    )
    v2 = all_lines(workdir, V2)
    iters = sorted(x["trace"]["iter"] for x in v2 if x["source"]["stream"] == "rmb")
    assert iters == list(range(s.n))  # every RMB event once
    src = [(x["source"]["fp"], x["source"]["offset"]) for x in v2]
    assert len(set(src)) == len(src)
    assert replayed > 0  # some losses fell between the output and the checkpoint


# --------------------------------------------------------------- evidence.map
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_evidence_map_power_loss_at_random_points_with_rotations_exactly_once(
    workdir, monkeypatch, seed
):
    need_logrotate()
    from lumen.evidence import run

    rng = random.Random(seed)
    s = Stream(workdir)
    pl = PowerLoss(monkeypatch, [BUNDLES, "logs/.offsets/evidence_mapper.json"])
    for rnd in range(6):
        s.append(rng.randint(100, 3000))  # up to ~1.3 MB: several reads per run
        pl.arm(rng.randint(1, 8))
        try:
            run(LOG, BUNDLES)
        except Crash:
            pass
        pl.disarm()
        pl.rewind()
        if rnd % 2 == 0:
            rotate(workdir)  # the queue rotates while it is down
    assert pl.crashes >= 3
    run(LOG, BUNDLES)
    bundles = [json.loads(x) for x in (workdir / BUNDLES).read_bytes().splitlines()]
    assert sorted(b["trace"]["iter"] for b in bundles) == list(range(s.n))


def test_evidence_map_lost_checkpoint_after_a_rotation_maps_600_events_once(workdir):
    need_logrotate()
    from lumen.evidence import run

    s = Stream(workdir)
    s.append(500)
    assert run(LOG, BUNDLES)[0] == 500
    rotate(workdir)
    s.append(100)
    assert run(LOG, BUNDLES)[0] == 100
    (workdir / "logs/.offsets/evidence_mapper.json").unlink()  # the checkpoint is lost
    mapped, skipped, _ = run(LOG, BUNDLES)
    bundles = [json.loads(x) for x in (workdir / BUNDLES).read_bytes().splitlines()]
    assert len(bundles) == 600  # was 1 100: the first file mapped again
    assert sorted(b["trace"]["iter"] for b in bundles) == list(range(600))
    assert (mapped, skipped) == (0, 600)


def test_quarantined_lines_survive_a_power_loss_like_their_counters(workdir, monkeypatch):
    from lumen.evidence import run

    s = Stream(workdir)
    s.append(50)
    append_lines(s.path, [b'{"not": "an event"}\n', b"not json\n"])
    s.append(50)
    rejects = "logs/rejects/rmb_events.jsonl"
    pl = PowerLoss(monkeypatch, [BUNDLES, "logs/.offsets/evidence_mapper.json", rejects])
    assert run(LOG, BUNDLES)[2] == 2
    pl.rewind()  # the power goes after a clean run
    ck = json.loads((workdir / "logs/.offsets/evidence_mapper.json").read_text())
    assert sum(ck["state"]["monitor"]["rejects"].values()) == 2
    assert (workdir / rejects).exists()  # now: gone, the counters say 2
    assert len((workdir / rejects).read_bytes().splitlines()) == 2


# --------------------------------------------------------------------- ingest
def api_config(workdir, batch_lines):
    import yaml

    cfg = yaml.safe_load((ROOT / "configs/api_v18.yaml").read_text())
    (workdir / "data").mkdir(exist_ok=True)
    cfg["db"] = str(workdir / "data/lumen.db")
    cfg["ingest"]["batch_lines"] = batch_lines
    path = workdir / "api.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


CRASH_IN_TRANSACTION = """
import os, signal, sys
from lumen import config, storage
from lumen.ingest import Ingester
orig = storage.OffsetStore.save
def save(self, ck):
    orig(self, ck)           # the offsets row is written, inside the open transaction
    os.kill(os.getpid(), signal.SIGKILL)   # ... and the process dies before COMMIT
storage.OffsetStore.save = save
ing = Ingester(config.load(sys.argv[1], "api_v18"))
while ing.step():
    pass
"""


def rmb_rows(db_path):
    db = sqlite3.connect(db_path)
    try:
        return db.execute(
            "SELECT count(*), count(DISTINCT ts), count(DISTINCT src_fp || ':' "
            "|| src_offset) FROM rmb"
        ).fetchone()
    finally:
        db.close()


def offsets_row(db_path, consumer="ingest_rmb"):
    db = sqlite3.connect(db_path)
    try:
        row = db.execute("SELECT ck FROM offsets WHERE consumer = ?", (consumer,)).fetchone()
        return None if row is None else json.loads(row[0])
    finally:
        db.close()


def snapshot(db, to):
    """A consistent copy of the database as committed now (SQLite's online backup)."""
    src, dst = sqlite3.connect(db), sqlite3.connect(to)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def ingest_once(workdir, cfg):
    r = subprocess.run(
        [PY, "-u", str(ROOT / "tools/storage/ingest_tail_v18.py"), "--config", str(cfg), "--once"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return r


def test_ingest_offsets_and_rows_are_one_transaction(workdir):
    cfg = api_config(workdir, 5000)
    db = workdir / "data/lumen.db"
    s = Stream(workdir)
    s.append(400)
    ingest_once(workdir, cfg)
    assert rmb_rows(db) == (400, 400, 400)
    before = offsets_row(db)
    assert before is not None and before["offset"] == s.path.stat().st_size
    s.append(300)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    r = subprocess.run(
        [PY, "-c", CRASH_IN_TRANSACTION, str(cfg)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == -signal.SIGKILL, r.stderr  # died inside the transaction
    assert rmb_rows(db) == (400, 400, 400)  # nothing of the batch
    assert offsets_row(db) == before  # and the old position
    ingest_once(workdir, cfg)
    assert rmb_rows(db) == (700, 700, 700)


def test_ingest_sigkill_and_power_loss_at_random_points_exactly_once(workdir, procs):
    """Rounds of: events appended, the real ingester started, then either SIGKILL at a
    random moment, or a power loss: the database taken back to a snapshot taken at a
    random moment (a committed state: SQLite WAL with synchronous=NORMAL loses the newest
    transactions, whole), while everything outside the database stays."""
    cfg = api_config(workdir, 97)
    db = workdir / "data/lumen.db"
    rng = random.Random(13)
    s = Stream(workdir)
    losses = kills = 0
    for rnd in range(6):
        s.append(rng.randint(300, 1500))
        snap = None
        if rnd == 0 or (rnd % 2 == 0 and db.exists()):
            snap = workdir / f"snap{rnd}.db"
            if db.exists() and rnd == 0:
                snapshot(db, snap)
        (workdir / "run/ingest.pid").unlink(missing_ok=True)
        p = procs.start(ROOT / "tools/storage/ingest_tail_v18.py", "--config", cfg)
        wait_until(
            lambda: (workdir / "run/ingest.pid").exists() or p.poll() is not None,  # noqa: B023
            timeout=30,
            what="ingester ready",
        )
        assert p.poll() is None, p.communicate()[1].decode()
        if snap is not None:  # power loss
            if rnd:  # a committed state, any moment
                time.sleep(rng.uniform(0, 0.3))
                snapshot(db, snap)
            wait_until(lambda: rmb_rows(db)[0] == s.n, timeout=60, what="ingester to catch up")
            time.sleep(rng.uniform(0.2, 0.4))  # ... and to checkpoint, wherever
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=30)
            for suffix in ("", "-wal", "-shm"):  # the newest transactions are lost
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            if snap.exists():
                shutil.copyfile(snap, db)
            losses += s.n - (rmb_rows(db)[0] if db.exists() else 0)
        else:  # SIGKILL at a random point
            time.sleep(rng.uniform(0, 0.4))
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=30)
            kills += 1
    assert losses > 0 and kills == 3  # rows the power losses took back
    ingest_once(workdir, cfg)
    assert rmb_rows(db) == (s.n, s.n, s.n)
    db_ = sqlite3.connect(db)
    ts = [r[0] for r in db_.execute("SELECT ts FROM rmb ORDER BY src_fp, src_offset")]
    db_.close()
    want = sorted(
        datetime.fromtimestamp(BASE_T + i / 1000, timezone.utc).isoformat() for i in range(s.n)
    )
    assert sorted(ts) == want
