"""Issue 12, process level: the real exporters, ingester, Safety Music loop, merge and URE
loop on ephemeral ports in a temp dir.

1. hostile lines never stop a process, and restarts count nothing twice;
2. one definition of an event: edge timestamps get one verdict in every stage, and every
   stage counts the same events and the same rejects;
3. a one-shot merge beside the merge follower hands over (no duplicate v2 line, the
   follower's PID file intact); a second follower is refused;
4. a rotated file's unterminated line keeps its own file; a conflicting stored row is
   counted and quarantined;
5. events stamped far ahead are rejects everywhere; /api/slo is slo.report's maths;
6. a writer process never extends a torn line;
8. the URE loop's rollback ratio is over RMB events only.
"""

import copy
import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
from collections import Counter
from datetime import datetime, timezone

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import CONFIG_RMB, PY, ROOT, fingerprint, free_port, pid_alive, wait_until

RMB_EXPORTER = ROOT / "exporters/rmb_exporter_v17.py"
URE_EXPORTER = ROOT / "exporters/ure_exporter_v18.py"
INGEST = ROOT / "tools/storage/ingest_tail_v18.py"
SAFETY = ROOT / "safety/safety_music_loop.py"
MERGE = ROOT / "tools/merge_rmb_safety_v2.py"
URE_LOOP = ROOT / "ure/ure_loop_v18.py"
API = ROOT / "api/read_only.py"
EMITTER = ROOT / "rmb/rmb_emitter.py"
TRACKA = ROOT / "tools/tracka_v17.py"
CONFIG_URE = ROOT / "configs/ure_v18.yaml"
CONFIG_API = ROOT / "configs/api_v18.yaml"
CONFIG_SAFETY = ROOT / "configs/safety_music_v17.yaml"
SAMPLE = json.loads((ROOT / "tests/fixtures/rmb_sample.json").read_text())
RMB_LOG = "logs/rmb_events.jsonl"
V2_LOG = "logs/resonance_events_v2.jsonl"
SAFETY_LOG = "logs/safety_music_events.jsonl"
T2099 = "2099-01-01T00:00:00Z"
WAIT = 60  # seconds: every wait has this deadline (a busy 2-core box)

HOSTILE = [
    b'{"entity_id":"\xff\xfe"}',
    b'{"x": ' + b"[" * 1000 + b"]" * 1000 + b"}",
    b"[" * 100_000 + b"]" * 100_000,
]


# ------------------------------------------------------------------------ helpers
def iso(t):
    return datetime.fromtimestamp(t, timezone.utc).isoformat()


def rmb_event(ts, event_type="observe", residual=0.5, i=0, entity="x"):
    e = copy.deepcopy(SAMPLE)
    e["ts"] = ts if isinstance(ts, str) else iso(ts)
    e["event_type"] = event_type
    e["entity_id"] = entity
    e["resonance_v3"]["residual_entropy"] = residual
    e["trace"]["iter"] = i
    return e


def line(e):
    return json.dumps(e).encode()


def append(path, lines):
    """Append raw lines (newline added) the way a foreign writer would; returns the offset
    of each line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    offs = []
    with open(path, "ab") as f:
        pos = f.seek(0, os.SEEK_END)
        for x in lines:
            offs.append(pos)
            f.write(x + b"\n")
            pos += len(x) + 1
    return offs


def fp_of(data):
    return fingerprint(data)


def read_jsonl(path):
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    out = []
    for x in data[: data.rfind(b"\n") + 1].splitlines():
        try:
            out.append(json.loads(x))
        except ValueError:
            pass
    return out


def rejects(cwd, stream="rmb_events"):
    return read_jsonl(cwd / f"logs/rejects/{stream}.jsonl")


def reasons_of(cwd, consumer, stream="rmb_events"):
    return Counter(r["reason"] for r in rejects(cwd, stream) if r["consumer"] == consumer)


def checkpoint_monitor(cwd, name):
    try:
        ck = json.loads((cwd / f"logs/.offsets/{name}.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return ((ck.get("state") or {}).get("monitor")) or {}


def answers(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def scrape(port, path="/metrics"):
    try:
        r = requests.get(f"http://127.0.0.1:{port}{path}", timeout=5)
    except requests.RequestException:
        return {}
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[s.name + (json.dumps(s.labels, sort_keys=True) if s.labels else "")] = s.value
    return out


def labelled(m, name, **fixed):
    """{label value: sample} of metric `name`, for the one free label (others fixed)."""
    out = {}
    for k, v in m.items():
        if not k.startswith(name + "{"):
            continue
        labels = json.loads(k[len(name) :])
        if all(labels.get(a) == b for a, b in fixed.items()):
            free = [x for x in labels if x not in fixed]
            out[labels[free[0]]] = v
    return out


def nonzero(d):
    return {k: v for k, v in d.items() if v}


def start_http(procs, script, config, *extra):
    port = free_port()
    p = procs.start(script, "--config", config, "--port", port, "--host", "127.0.0.1", *extra)
    wait_until(
        lambda: p.poll() is not None or answers(port), timeout=WAIT, what=f"{script.name} to listen"
    )
    assert p.poll() is None, p.stderr.read().decode()
    return p, port


def run(cwd, script, *args, timeout=120):
    return subprocess.run(
        [PY, str(script), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def db_rows(cwd, sql="SELECT COUNT(*) FROM rmb", args=()):
    p = cwd / "data/lumen.db"
    if not p.exists():
        return None
    db = sqlite3.connect(f"{p.as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return None
    finally:
        db.close()


def v2_from(cwd, stream="rmb"):
    return [e for e in read_jsonl(cwd / V2_LOG) if (e.get("source") or {}).get("stream") == stream]


def safety_out(cwd):
    return [e for e in read_jsonl(cwd / SAFETY_LOG) if e.get("loop") == "safety.music.v17"]


def stop(p):
    p.send_signal(signal.SIGTERM)
    return p.wait(timeout=30)


def safety_event(t, level="CALM"):
    return {
        "ts": iso(t),
        "loop": "safety.music.v17",
        "levels": {"residual": level, "rollback_ratio": "CALM", "final": level},
        "inputs": {"residual_entropy": 0.4, "rollback_ratio": 0.0},
    }


# ------------------------------------------------------- 1. hostile lines, restarts
@pytest.mark.timeout(300)
def test_hostile_lines_never_stop_a_process_and_restarts_count_nothing_twice(procs, workdir):
    log = workdir / RMB_LOG
    now = time.time()
    before = [line(rmb_event(now - 60 + i, i=i)) for i in range(10)]
    after = [
        line(rmb_event(now - 40 + i, "rollback" if i < 2 else "observe", i=10 + i))
        for i in range(10)
    ]
    append(log, before)
    bad_offsets = append(log, HOSTILE)
    append(log, after)
    consumers = ("rmb_exporter", "ure_exporter_rmb", "ingest_rmb", "safety_music", "merge_rmb")

    def start_all():
        exp, p1 = start_http(procs, RMB_EXPORTER, CONFIG_RMB)
        uexp, p2 = start_http(procs, URE_EXPORTER, CONFIG_URE)
        return {
            "rmb_exporter": (exp, p1),
            "ure_exporter": (uexp, p2),
            "ingest": (procs.start(INGEST, "--config", CONFIG_API), None),
            "safety": (procs.start(SAFETY, "--config", CONFIG_SAFETY, "--hz", 20), None),
            "merge": (procs.start(MERGE, "--config", CONFIG_URE, "--follow"), None),
        }

    def all_counted(n, ps):
        def check():
            m1 = scrape(ps["rmb_exporter"][1])
            m2 = scrape(ps["ure_exporter"][1], "/metrics_ure")
            out = safety_out(workdir)
            got = {
                "rmb_exporter": m1.get("rmb_events_total"),
                "rmb_exporter_rejects": sum(labelled(m1, "rmb_rejects_total").values()),
                "ure_exporter": m2.get("ure_rmb_events_total"),
                "ure_exporter_rejects": sum(
                    labelled(m2, "ure_exporter_rejects_total", stream="rmb").values()
                ),
                "ingest": (db_rows(workdir) or [[None]])[0][0],
                "safety": out[-1]["inputs"]["window_events"] if out else None,
                "merge": len(v2_from(workdir)),
            }
            want = dict.fromkeys(got, n)
            want["rmb_exporter_rejects"] = want["ure_exporter_rejects"] = 3
            # the quarantine is written before each checkpoint: wait for all of it too
            quarantined = {c: sum(reasons_of(workdir, c).values()) for c in consumers}
            check.last = (got, quarantined)
            return got == want and quarantined == dict.fromkeys(consumers, 3)

        return check

    ps = start_all()
    check = all_counted(20, ps)
    try:
        wait_until(check, timeout=WAIT, what="every process to count 20 events, 3 rejects")
    except AssertionError:
        exited = {k: p.poll() for k, (p, _) in ps.items() if p.poll() is not None}
        raise AssertionError(f"{check.last}; exited: {exited}") from None
    for name, (p, _) in ps.items():
        assert p.poll() is None, (name, p.stderr.read().decode()[-2000:])
    for c in consumers:  # each hostile line quarantined once, at its own offset
        assert sorted(r["offset"] for r in rejects(workdir) if r["consumer"] == c) == bad_offsets
    ck = checkpoint_monitor(workdir, "safety_music")
    assert ck["valid"] == 20 and sum(ck["rejects"].values()) == 3

    # Restart every process: all come back, nothing is counted or quarantined again.
    for name, (p, _) in ps.items():
        assert stop(p) == 0, (name, p.stderr.read().decode()[-2000:])
    ps = start_all()
    append(log, [line(rmb_event(time.time(), i=20))])
    check = all_counted(21, ps)
    try:
        wait_until(check, timeout=WAIT, what="every restarted process to count 21 events")
    except AssertionError:
        raise AssertionError(str(check.last)) from None
    for name, (p, _) in ps.items():
        assert p.poll() is None, (name, p.stderr.read().decode()[-2000:])
    assert len({(e["source"]["fp"], e["source"]["offset"]) for e in v2_from(workdir)}) == 21


# ------------------------------------------- 2. one definition of an event, every stage
def lower_iso(t):
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dt%H:%M:%S.%fz")


def space_iso(t):
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def run_every_stage(cwd, procs, n_lines):
    """Run each stage over logs/rmb_events.jsonl; returns {stage: (valid, reject reasons)}
    plus the merged v2 lines and stored rows."""
    exp, port = start_http(procs, RMB_EXPORTER, CONFIG_RMB)
    uexp, uport = start_http(procs, URE_EXPORTER, CONFIG_URE)
    r = run(cwd, INGEST, "--config", CONFIG_API, "--once")
    assert r.returncode == 0, r.stderr
    r = run(cwd, MERGE, "--config", CONFIG_URE)
    assert r.returncode == 0, r.stderr
    r = run(cwd, SAFETY, "--config", CONFIG_SAFETY, "--hz", 20, "--ticks", 3)
    assert r.returncode == 0, r.stderr

    def read_all():
        m, u = scrape(port), scrape(uport, "/metrics_ure")
        lines = sum(labelled(m, "rmb_log_lines_total").values())
        ulines = sum(labelled(u, "ure_exporter_log_lines_total", stream="rmb").values())
        quarantined = sum(reasons_of(cwd, "rmb_exporter").values()) + sum(
            reasons_of(cwd, "ure_exporter_rmb").values()
        )
        return (
            lines == ulines == n_lines
            and quarantined == 2 * (n_lines - m["rmb_events_total"])
            and (m, u)
        )

    m, u = wait_until(read_all, timeout=WAIT, what=f"the exporters to read {n_lines} lines")
    assert exp.poll() is None and uexp.poll() is None
    mon = checkpoint_monitor(cwd, "safety_music")
    rows = db_rows(cwd, "SELECT ts, t FROM rmb")
    return {
        "exporter": (m["rmb_events_total"], nonzero(labelled(m, "rmb_rejects_total"))),
        "ure_exporter": (
            u["ure_rmb_events_total"],
            nonzero(labelled(u, "ure_exporter_rejects_total", stream="rmb")),
        ),
        "ingest": (len(rows), dict(reasons_of(cwd, "ingest_rmb"))),
        "merge": (len(v2_from(cwd)), dict(reasons_of(cwd, "merge_rmb"))),
        "safety": (mon.get("valid"), nonzero(mon.get("rejects", {}))),
    }, rows


@pytest.mark.timeout(240)
def test_edge_timestamps_get_one_verdict_in_every_stage(procs, workdir):
    now = time.time()
    good = ["2016-12-31T23:59:60Z", "2025-11-01t00:00:00z", lower_iso(now - 5)]
    bad = ["2025-11-01 00:00:00Z", space_iso(now - 4)]
    normal = [iso(now - 30 + i) for i in range(5)]
    append(
        workdir / RMB_LOG, [line(rmb_event(ts, i=i)) for i, ts in enumerate(normal + good + bad)]
    )
    stages, rows = run_every_stage(workdir, procs, len(normal + good + bad))
    for stage, (valid, reasons) in stages.items():
        assert (valid, reasons) == (8, {"schema": 2}), (stage, valid, reasons)
    # Stored and merged as written, at the one parser's time (the leap second is the next
    # minute's first instant).
    stored = dict(rows)
    assert stored["2016-12-31T23:59:60Z"] == 1483228800.0
    assert stored["2025-11-01t00:00:00z"] == 1761955200.0
    assert not set(bad) & set(stored)
    assert {e["ts"] for e in v2_from(workdir)} == set(normal + good)
    # The Safety Music window holds the current events, lowercase one included.
    assert safety_out(workdir)[-1]["inputs"]["window_events"] == len(normal) + 1


@pytest.mark.timeout(240)
def test_every_stage_counts_the_same_events_and_rejects(procs, workdir):
    now = time.time()
    lines = [
        line(rmb_event(now - 100 + i, "rollback" if i % 7 == 0 else "observe", i=i))
        for i in range(20)
    ]
    over = rmb_event(now - 10)
    over["padding"] = "x" * (1 << 20)
    schema_bad = rmb_event(now - 9)
    schema_bad["resonance_v3"]["residual_entropy"] = 7
    lines += [
        line(rmb_event("2016-12-31T23:59:60Z", i=100)),
        line(rmb_event("2025-11-01t00:00:00z", i=101)),
        line(rmb_event(lower_iso(now - 8), "rollback", i=102)),
        line(over),  # oversize
        b"\xff\xfe\xfa not utf-8",  # utf8
        b'{"entity_id":"\xff\xfe"}',  # utf8, inside a string
        b'{"x": ' + b"[" * 1000 + b"]" * 1000 + b"}",  # schema (valid JSON, deep)
        b"not json at all",  # json
        b"[1, 2, 3]",  # not_object
        line(schema_bad),  # schema
        line(rmb_event("2025-11-01 00:00:00Z", i=103)),  # schema: not RFC 3339
        line(rmb_event(T2099, "rollback", i=104)),  # ts_future
        line(rmb_event(T2099, "observe", i=105)),  # ts_future
    ]
    append(workdir / RMB_LOG, lines)
    want = (23, {"oversize": 1, "utf8": 2, "json": 1, "not_object": 1, "schema": 3, "ts_future": 2})
    stages, _ = run_every_stage(workdir, procs, len(lines))
    for stage, got in stages.items():
        assert got == want, (stage, got)


# ------------------------------------------------ 3. merge: one-shot beside the follower
@pytest.mark.timeout(300)
def test_one_shot_merge_beside_the_follower_hands_over(procs, workdir):
    log = workdir / RMB_LOG
    now = time.time()
    total = 0

    def more(n):
        nonlocal total
        append(
            log, [line(rmb_event(now - 200 + (total + i) * 0.01, i=total + i)) for i in range(n)]
        )
        total += n

    more(200)
    append(
        workdir / SAFETY_LOG, [json.dumps(safety_event(now - 100 + i)).encode() for i in range(10)]
    )
    follower = procs.start(MERGE, "--config", CONFIG_URE, "--follow")
    pidfile = workdir / "run/ure_merge.pid"
    wait_until(
        lambda: (
            follower.poll() is not None
            or (pidfile.exists() and pidfile.read_text().strip() == str(follower.pid))
        ),
        timeout=WAIT,
        what="the follower's PID file",
    )
    assert follower.poll() is None, follower.stderr.read().decode()
    for _ in range(3):  # three rounds: one-shots racing each other and new events
        shots = [procs.start(MERGE, "--config", CONFIG_URE) for _ in range(3)]
        for _ in range(5):
            more(40)
        for s in shots:
            out, err = (x.decode() for x in s.communicate(timeout=WAIT))
            assert s.returncode == 0, err
            assert "nothing to do here" in out and "already running" in out, out + err
            assert f"pid {follower.pid}" in out, out
            assert err == "", err
    wait_until(
        lambda: len(v2_from(workdir)) >= total,
        timeout=WAIT,
        what=f"the follower to merge {total} events",
    )
    more(30)  # the follower still follows
    wait_until(
        lambda: len(v2_from(workdir)) >= total,
        timeout=WAIT,
        what=f"the follower to merge {total} events",
    )
    lines = read_jsonl(workdir / V2_LOG)
    sources = Counter(
        (e["source"]["stream"], e["source"]["fp"], e["source"]["offset"]) for e in lines
    )
    dupes = {k: n for k, n in sources.items() if n > 1}
    assert not dupes, f"{len(dupes)} v2 lines merged more than once"
    assert sum(k[0] == "rmb" for k in sources) == total
    assert sum(k[0] == "safety" for k in sources) == 10
    assert [e["trace"]["iter"] for e in lines if e["source"]["stream"] == "rmb"] == list(
        range(total)
    )
    # The follower is alive and its PID file still names it; no one-shot left one behind.
    assert follower.poll() is None
    assert pidfile.read_text().strip() == str(follower.pid)
    assert not (workdir / "run/merge_v2.pid").exists()
    # A second follower is refused: exit 2, one line naming the running one.
    r = run(workdir, MERGE, "--config", CONFIG_URE, "--follow", timeout=WAIT)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and f"pid {follower.pid}" in r.stderr, r.stderr
    assert pidfile.read_text().strip() == str(follower.pid) and pid_alive(follower.pid)
    assert stop(follower) == 0
    assert not pidfile.exists()


# ------------------------------------------------------------------- 4. positions
def test_a_rotated_files_unterminated_line_is_counted_with_its_own_file(workdir):
    logs = workdir / "logs"
    now = time.time()
    evs = [line(rmb_event(now - 50 + i, i=i)) for i in range(3)]
    torn = line(rmb_event(now - 40, i=3))[:57]  # the writer died mid-line, then rotation
    rotated = b"".join(x + b"\n" for x in evs) + torn
    logs.mkdir()
    (logs / "rmb_events.jsonl.1").write_bytes(rotated)
    (logs / "rmb_events.jsonl").write_bytes(b"")
    r = run(workdir, INGEST, "--config", CONFIG_API, "--once")
    assert r.returncode == 0, r.stderr
    assert db_rows(workdir)[0][0] == 3
    recs = [x for x in rejects(workdir) if x["consumer"] == "ingest_rmb"]
    assert len(recs) == 1, recs  # counted, not silently dropped
    assert recs[0]["reason"] == "json" and recs[0]["line"] == torn.decode()
    assert recs[0]["source"] == fp_of(rotated) and recs[0]["offset"] == len(rotated) - len(torn)
    # Every stored row names the rotated file too.
    assert {fp for (fp,) in db_rows(workdir, "SELECT src_fp FROM rmb")} == {fp_of(rotated)}
    # Again: nothing new, nothing quarantined twice.
    r = run(workdir, INGEST, "--config", CONFIG_API, "--once")
    assert r.returncode == 0, r.stderr
    assert db_rows(workdir)[0][0] == 3 and len(rejects(workdir)) == 1


def test_a_conflicting_stored_row_is_counted_and_quarantined(workdir):
    now = time.time()
    evs = [line(rmb_event(now - 50 + i, i=i, residual=0.25)) for i in range(3)]
    offs = append(workdir / RMB_LOG, evs)
    fp = fp_of((workdir / RMB_LOG).read_bytes())
    r = run(workdir, ROOT / "tools/storage/sqlite_init_v17_18.py", "--config", CONFIG_API)
    assert r.returncode == 0, r.stderr
    db = sqlite3.connect(workdir / "data/lumen.db")
    with db:  # a different payload already stored at the second line's identity
        db.execute(
            "INSERT INTO rmb (ts, entity_id, residual, phase, risk, t, src_fp, "
            "src_offset, event_type) VALUES (?, 'other', 0.99, 0.0, 'RISK', ?, ?, ?, "
            "'rollback')",
            (iso(now - 49), now - 49, fp, offs[1]),
        )
    db.close()
    r = run(workdir, INGEST, "--config", CONFIG_API, "--once")
    assert r.returncode == 0, r.stderr
    assert db_rows(
        workdir, "SELECT src_offset, entity_id, residual FROM rmb ORDER BY src_offset"
    ) == [(offs[0], "x", 0.25), (offs[1], "other", 0.99), (offs[2], "x", 0.25)]
    recs = [x for x in rejects(workdir) if x["consumer"] == "ingest_rmb"]
    assert [(x["reason"], x["source"], x["offset"]) for x in recs] == [("conflict", fp, offs[1])]
    ((ck,),) = db_rows(workdir, "SELECT ck FROM offsets WHERE consumer = 'ingest_rmb'")
    mon = json.loads(ck)["state"]["monitor"]
    assert mon["rejects"] == {"conflict": 1} and mon["valid"] == 2
    # Replaying the log (offsets lost) stores nothing new and meets the same conflict only.
    db = sqlite3.connect(workdir / "data/lumen.db")
    with db:
        db.execute("DELETE FROM offsets")
    db.close()
    r = run(workdir, INGEST, "--config", CONFIG_API, "--once")
    assert r.returncode == 0, r.stderr
    assert db_rows(workdir)[0][0] == 3
    assert {(x["reason"], x["offset"]) for x in rejects(workdir)} == {("conflict", offs[1])}


def test_a_conflict_is_quarantined_once_when_its_transaction_is_retried(workdir):
    """The disk refuses the quarantine file once while a batch with a conflict commits:
    the batch is retried, and the conflict is still one reject, not two."""
    from lumen import config
    from lumen.ingest import Ingester

    now = time.time()
    offs = append(workdir / RMB_LOG, [line(rmb_event(now - 50 + i, i=i)) for i in range(3)])
    fp = fp_of((workdir / RMB_LOG).read_bytes())
    ing = Ingester(config.load(CONFIG_API, env={"LUMEN_DB": "data/lumen.db"}))
    try:
        with ing.store.transaction():
            ing.store.db.execute(
                "INSERT INTO rmb (ts, entity_id, residual, phase, risk, t, src_fp, src_offset, "
                "event_type, host) VALUES (?, 'other', 0.99, 0.0, 'RISK', ?, ?, ?, 'rollback', ?)",
                (iso(now - 49), now - 49, fp, offs[1], ing.store.host),
            )
        consumer = ing.parts[0][1]
        flush, failed = consumer.rejects.flush, []

        def full_once():
            if not failed:
                failed.append(1)
                raise OSError(28, "No space left on device")
            flush()

        consumer.rejects.flush = full_once
        ing.step()  # the quarantine write fails: the transaction is undone, the batch kept
        assert failed and ing.write_errors == 1
        while ing.step():
            pass
        assert ing.conflicts == 1 and ing.inserted == 2
    finally:
        ing.close()
    recs = [x for x in rejects(workdir) if x["consumer"] == "ingest_rmb"]
    assert [(x["reason"], x["offset"]) for x in recs] == [("conflict", offs[1])]
    ((ck,),) = db_rows(workdir, "SELECT ck FROM offsets WHERE consumer = 'ingest_rmb'")
    mon = json.loads(ck)["state"]["monitor"]
    assert mon["rejects"] == {"conflict": 1} and mon["valid"] == 2


# ------------------------------------------------------------------ 5. time bounds
@pytest.mark.timeout(300)
def test_events_stamped_far_ahead_are_rejects_in_every_stage(procs, workdir):
    now = time.time()
    normal = [line(rmb_event(now - 60 + i, residual=0.5, i=i)) for i in range(40)]
    future = [line(rmb_event(T2099, "rollback", residual=0.95, i=100 + i)) for i in range(30)]
    append(workdir / RMB_LOG, normal[:20] + future + normal[20:])
    # The exporter: counted as ts_future rejects, not as rollbacks or the newest event.
    exp, port = start_http(procs, RMB_EXPORTER, CONFIG_RMB)
    m = wait_until(
        lambda: (lambda m: sum(labelled(m, "rmb_log_lines_total").values()) == 70 and m)(
            scrape(port)
        ),
        timeout=WAIT,
        what="the exporter to read 70 lines",
    )
    assert m["rmb_events_total"] == 40
    assert nonzero(labelled(m, "rmb_rejects_total")) == {"ts_future": 30}
    assert m["rmb_rollback_total"] == 0
    assert m["rmb_last_event_timestamp_seconds"] < time.time() + 300
    # Safety Music: no ALERT from rollbacks that have not happened.
    r = run(workdir, SAFETY, "--config", CONFIG_SAFETY, "--hz", 20, "--ticks", 3)
    assert r.returncode == 0, r.stderr
    out = safety_out(workdir)
    assert len(out) == 3
    assert all(
        e["levels"]["final"] != "ALERT" and e["inputs"]["window_rollbacks"] == 0 for e in out
    ), out[-1]
    assert out[-1]["inputs"]["window_events"] == 40
    # Merge drops them; the URE loop, even handed 2099 rollbacks in v2 directly, does not
    # downgrade on them.
    r = run(workdir, MERGE, "--config", CONFIG_URE)
    assert r.returncode == 0, r.stderr
    assert len(v2_from(workdir)) == 40 and "30 rejected" in r.stdout, r.stdout
    v2_future = []
    for i in range(30):
        v = dict(v2_from(workdir)[0])
        v.update(
            ts=T2099,
            rmb={"event_type": "rollback", "group": "build_core"},
            source={"stream": "elsewhere", "fp": "f", "offset": i},
        )
        v2_future.append(json.dumps(v).encode())
    append(workdir / V2_LOG, v2_future)
    r = run(workdir, URE_LOOP, "--config", CONFIG_URE, "--ticks", 3)
    assert r.returncode == 0, r.stderr
    ure = [e for e in read_jsonl(workdir / V2_LOG) if e["trace"]["loop_id"] == "ure.v18"]
    assert len(ure) == 3
    assert all("DOWNGRADE_OBSERVE" not in e["actions"] for e in ure), ure[0]["observed"]
    assert ure[0]["observed"]["rollback_ratio_10m"] == 0.0
    assert ure[0]["observed"]["events_10m"] == 40
    assert checkpoint_monitor(workdir, "ure_loop")["rejects"].get("ts_future") == 30
    # Storage and the API: the newest RMB row is the newest real event, not a 2099 one.
    r = run(workdir, INGEST, "--config", CONFIG_API, "--once")
    assert r.returncode == 0, r.stderr
    assert db_rows(workdir, "SELECT COUNT(*) FROM rmb WHERE ts = ?", (T2099,))[0][0] == 0
    api, aport = start_http(procs, API, CONFIG_API)
    last = requests.get(f"http://127.0.0.1:{aport}/api/rmb:last", timeout=5).json()
    assert last["ts"] == json.loads(normal[-1])["ts"], last


@pytest.mark.timeout(240)
def test_api_slo_is_slo_reports_maths(procs, workdir):
    from lumen import config, slo

    now = time.time()
    evs = []
    for i in range(150):  # the last 500 s: a few rollbacks, a spread of residuals
        evs.append(
            rmb_event(
                now - 500 + i * 3,
                "rollback" if i % 19 == 0 else "observe",
                residual=0.4 + (i % 5) * 0.01,
                i=i,
            )
        )
    for i in range(10):  # ahead of the clock, but inside the 300 s every stage allows
        evs.append(rmb_event(now + 70 + i * 15, "rollback", residual=0.7, i=200 + i))
    evs += [rmb_event(T2099, "rollback", residual=0.9, i=300 + i) for i in range(5)]
    append(workdir / RMB_LOG, [line(e) for e in evs])
    r = run(workdir, INGEST, "--config", CONFIG_API, "--once")
    assert r.returncode == 0, r.stderr
    api, port = start_http(procs, API, CONFIG_API)
    policies = config.load(ROOT / "configs/resonance_v3.policy.yaml", "resonance_v3.policy")[
        "policies"
    ]
    got = requests.get(f"http://127.0.0.1:{port}/api/slo", timeout=5).json()
    t_query = time.time()
    data = [
        (
            datetime.fromisoformat(e["ts"]).timestamp(),
            e["resonance_v3"]["residual_entropy"],
            e["event_type"] == "rollback",
        )
        for e in evs
    ]
    want = slo.evaluate(policies, data, t_query, 100)
    assert [v["events"] for v in got["verdicts"]] == [v.events for v in want] == [160, 160]
    assert [(v["id"], v["status"]) for v in got["verdicts"]] == [(v.id, v.status) for v in want]
    for a, b in zip(got["verdicts"], want):
        assert a["value"] == pytest.approx(b.value, rel=1e-12, abs=1e-15)
    assert got["result"] == slo.overall(want)
    # slo.report itself (tracka_v17.py slo) over the log says the same.
    r = run(workdir, TRACKA, "slo", "--stream", RMB_LOG, "--wait", 0)
    assert r.returncode == {"PASS": 0, "FAIL": 1, "NO_DATA": 3}[got["result"]], r.stderr
    assert "160 events in the last 600s" in r.stdout, r.stdout
    for v in got["verdicts"]:
        op = "<=" if v["status"] == "PASS" else ">"
        assert f"{v['id']} {v['metric']} = {v['value']:.4f} {op}" in r.stdout, r.stdout
    assert f"RESULT = {got['result']}" in r.stdout


# ---------------------------------------- 6. a writer process after a torn line
def test_the_emitter_never_extends_a_torn_line(workdir):
    from lumen.consumer import Consumer

    log = workdir / RMB_LOG
    torn = line(rmb_event(time.time() - 5))[:61]
    log.parent.mkdir(parents=True)
    log.write_bytes(line(rmb_event(time.time() - 6)) + b"\n" + torn)  # a writer died mid-line
    r = subprocess.run(
        [
            PY,
            str(EMITTER),
            "--config",
            str(CONFIG_RMB),
            "--count",
            "5",
            "--unthrottled",
            "--quiet",
            "--name",
            "emit",
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert r.returncode == 0, r.stderr
    raw = log.read_bytes().split(b"\n")
    assert raw[1] == torn and raw[-1] == b"" and len(raw) == 8
    c = Consumer(log, "check", "rmb_event_v1.json", "rmb_events")
    while c.poll(lambda ev, pos: None):
        pass
    c.commit()
    c.close()
    assert (c.valid, dict(c.rejected)) == (6, {"json": 1})


# --------------------------------------------------- 8. the URE ratio: RMB events only
def test_ure_rollback_ratio_is_over_rmb_events_only(workdir):
    from lumen import config

    limit = config.load(CONFIG_URE, "ure_v18")["slo"]["rollback_ratio_10m_max"]
    assert 3 / 70 <= limit < 3 / 50  # diluted by 20 Safety ticks it would pass
    now = time.time()
    append(
        workdir / RMB_LOG,
        [
            line(
                rmb_event(
                    now - 120 + i, "rollback" if i in (5, 25, 45) else "observe", residual=0.5, i=i
                )
            )
            for i in range(50)
        ],
    )
    append(
        workdir / SAFETY_LOG, [json.dumps(safety_event(now - 100 + i)).encode() for i in range(20)]
    )
    r = run(workdir, MERGE, "--config", CONFIG_URE)
    assert r.returncode == 0, r.stderr
    v2 = read_jsonl(workdir / V2_LOG)
    safety_v2 = [e for e in v2 if e["entity_id"] == "lumen.safety"]
    assert len(v2) == 70 and len(safety_v2) == 20 and not any("rmb" in e for e in safety_v2)
    r = run(workdir, URE_LOOP, "--config", CONFIG_URE, "--ticks", 2)
    assert r.returncode == 0, r.stderr
    ure = [e for e in read_jsonl(workdir / V2_LOG) if e["trace"]["loop_id"] == "ure.v18"]
    assert len(ure) == 2
    assert ure[0]["observed"]["rollback_ratio_10m"] == 0.06
    assert ure[0]["observed"]["events_10m"] == 50
    assert ure[0]["auto_reg_action"] == "DOWNGRADE_OBSERVE"
    assert "DOWNGRADE_OBSERVE" in ure[0]["actions"]
    assert "DOWNGRADE_OBSERVE" in r.stdout
