"""The soak's verdict: what every stage counted against what reached disk.

Run in the soak's scratch directory. Expected = every valid event in any file of the RMB
log (live, rotated, compressed), judged as every stage judges it (lumen.events.parse), so
lines that logrotate's copytruncate dropped between its copy and its truncate are not
expected. Stages that keep only counters (exporter, safety loop, URE exporter) are read
from the monitor in their checkpoints and checked by count; merge (the v2 log) and ingest
(table rmb of data/lumen.db) by event identity. Every stage's rejects must equal the bad
lines on disk.

caught_up() waits, while the stack runs, until every reader of the RMB log has
checkpointed the end of the live file (or one is stuck: no progress for 180 s).
"""

import gzip
import json
import os
import sqlite3
import time
from collections import Counter
from pathlib import Path

from lumen import events

CHECKPOINTS = {  # stage -> consumer checkpoints whose monitor counts its reads
    "rmb_exporter": ["rmb_exporter"],
    "safety_music": ["safety_music"],
    "ure_loop": ["ure_loop"],
    "ure_exporter": ["ure_exporter_rmb"],
}
RMB_READERS = ("rmb_exporter", "safety_music", "ure_exporter_rmb", "merge_rmb", "ingest_rmb")


def on_disk(logdir, stem, validator, key, now=None):
    """(key(event) of each valid event, bad lines) in every file of a stream: live, .N and
    .N.gz, judged as every stage judges them (events.parse, ts_future against `now`). Only
    the keys are kept: millions of event dicts would not fit in memory."""
    good, bad = [], 0
    now = time.time() if now is None else now
    for p in sorted(logdir.glob(stem + "*")):
        if p.name.endswith(".tmp"):
            continue
        data = gzip.open(p).read() if p.suffix == ".gz" else p.read_bytes()
        for raw in data.split(b"\n"):
            if not raw.strip():
                continue
            ev, err = events.parse(raw, validator, now=now)
            if err:
                bad += 1
            else:
                good.append(key(ev))
    return good, bad


def unread_after_checkpoint(name):
    """Whole lines of a consumer's live file after its checkpoint (0 when the checkpoint is
    not in the live file: then every line counts as one it should have read)."""
    ck = checkpoint(name)
    path = Path(ck.get("path", ""))
    try:
        if not ck or os.stat(path).st_ino != ck.get("ino"):
            return 0
        with open(path, "rb") as f:
            f.seek(ck["offset"])
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except OSError:
        return 0


def checkpoint(name):
    """A consumer's checkpoint (ingest: the offsets table of the store; {} if none there)."""
    if name.startswith("ingest_"):
        with sqlite3.connect("data/lumen.db", timeout=30) as db:
            row = db.execute("SELECT ck FROM offsets WHERE consumer = ?", (name,)).fetchone()
        return json.loads(row[0]) if row else {}
    return json.loads(Path(f"logs/.offsets/{name}.json").read_text())


def monitor(name):
    """(valid, rejected) counted by a consumer, from its checkpoint (ingest: the offsets
    table of the store)."""
    ck = checkpoint(name)
    mon = (ck.get("state") or {}).get("monitor") or {}
    return mon.get("valid", 0), sum((mon.get("rejects") or {}).values())


def position(name):
    """(dev, ino, offset) of a consumer's checkpoint (ingest: the offsets table)."""
    try:
        ck = checkpoint(name)
    except FileNotFoundError:
        ck = {}
    return ck.get("dev"), ck.get("ino"), ck.get("offset")


def caught_up(log, stall_s=180, cap_s=4 * 3600):
    """Wait until every reader of the RMB log has checkpointed the end of the live file
    (nothing is written any more). A slow reader on a loaded machine is waited for as long
    as it makes progress; one whose position has not moved for `stall_s` is stuck. Returns
    the names still behind when it gives up ([] when all caught up)."""
    deadline = time.monotonic() + cap_s
    seen, moved = {}, time.monotonic()
    behind = list(RMB_READERS)
    while time.monotonic() < deadline:
        st = os.stat(log)
        end = (st.st_dev, st.st_ino, st.st_size)
        now = {n: position(n) for n in RMB_READERS}
        behind = [n for n in RMB_READERS if now[n] != end]
        if not behind:
            return []
        if now != seen:
            seen, moved = now, time.monotonic()
        elif time.monotonic() - moved > stall_s:
            return behind
        time.sleep(1.0)
    return behind


def judge(failures):
    """After `make down` (every consumer has written its final checkpoint): the table,
    one (stage, expected, seen, lost, dup, rejected, check) row a stage; each loss,
    duplicate or rejects count that differs from the bad lines on disk is appended to
    `failures`. Returns (table, valid events on disk, bad lines on disk)."""
    v1 = events.Validator.named("rmb_event_v1.json")
    v2v = events.Validator.named("resonance_event_v2.json")
    good, bad_on_disk = on_disk(
        Path("logs"),
        "rmb_events.jsonl",
        v1,
        lambda e: (e["trace"]["iter"], e["ts"], e["resonance_v3"]["residual_entropy"]),
    )
    iters = Counter(k[0] for k in good)
    expected = len(iters)
    v2, _ = on_disk(
        Path("logs"),
        "resonance_events_v2.jsonl",
        v2v,
        lambda e: ((e.get("source") or {}).get("stream"), e["trace"]["iter"]),
    )
    table = []

    def stage(name, seen, lost, dup, rejected, note=""):
        table.append((name, expected, seen, lost, dup, rejected, note))
        if lost or dup:
            failures.append(f"{name}: {lost} lost, {dup} duplicated")

    for name in ("rmb_exporter", "safety_music", "ure_exporter"):
        seen, rej = monitor(CHECKPOINTS[name][0])
        stage(
            name, seen, max(0, expected - seen), 0, rej, "count (can exceed: copytruncate window)"
        )
        if rej != bad_on_disk:
            failures.append(f"{name}: {rej} rejects, {bad_on_disk} bad lines on disk")
    merged = Counter(it for stream, it in v2 if stream == "rmb")
    m_seen, m_rej = monitor("merge_rmb")
    stage(
        "ure_merge",
        sum(merged.values()),
        len(set(iters) - set(merged)),
        sum(c - 1 for c in merged.values() if c > 1),
        m_rej,
        "by event identity",
    )
    if m_rej != bad_on_disk:
        failures.append(f"ure_merge: {m_rej} rejects, {bad_on_disk} bad lines on disk")
    u_seen, _ = monitor("ure_loop")
    # The v2 log is also written by the URE loop itself and by the merge while `make down`
    # stops them one by one: lines after the loop's final checkpoint are unread, not lost.
    u_expected = len(v2) - unread_after_checkpoint("ure_loop")
    table.append(
        (
            "ure_loop (v2 log)",
            u_expected,
            u_seen,
            max(0, u_expected - u_seen),
            max(0, u_seen - u_expected),
            0,
            "count of v2 lines up to its checkpoint",
        )
    )
    if u_seen != u_expected:
        failures.append(f"ure_loop: read {u_seen} of {u_expected} v2 lines up to its checkpoint")
    with sqlite3.connect(Path("data/lumen.db")) as c:
        rows = Counter(c.execute("SELECT ts, residual FROM rmb").fetchall())
    keys = Counter(k[1:] for k in good)
    i_seen, i_rej = monitor("ingest_rmb")
    stage(
        "ingest (rmb rows)",
        sum(rows.values()),
        len(set(keys) - set(rows)),
        sum(c - 1 for c in rows.values() if c > 1),
        i_rej,
        "by event identity",
    )
    if i_rej != bad_on_disk:
        failures.append(f"ingest: {i_rej} rejects, {bad_on_disk} bad lines on disk")
    return table, expected, bad_on_disk


def print_table(table):
    print(
        f"{'stage':<20} {'expected':>9} {'seen':>9} {'lost':>6} {'dup':>6} {'rejected':>9}  check"
    )
    for name, exp, seen, lost, dup, rej, note in table:
        print(f"{name:<20} {exp:>9} {seen:>9} {lost:>6} {dup:>6} {rej:>9}  {note}")
