"""The bench's floors: each stage's work stripped to its unavoidable parts, run in the bench
process on the stage's own data, timed the same way. Each returns a rate (per second).

- emitter(d, n, batch): the emitter's event dicts (lumen.simulate.EventFactory, the same
  profile, seed and config), a wall-clock `ts` each, `orjson.dumps`, and one `os.write`
  of N joined lines to a file in `d` per `batch` events (no gates, no validation, no lock);
- decode(log): the exporter's msgspec typed decode (lumen.decoders.RmbEventV1) of every
  line, read from the file in 1 MiB chunks, nothing counted;
- roundtrip(log, out): `orjson.loads` + `orjson.dumps` of every line, one write per 1 MiB
  chunk read (the merge's parse and write, without mapping, validation or fsync);
- executemany(rmb_log, v2_log, db): the rows ingest stores from both logs, into a new
  SQLite file with lumen.storage's schema (tables, indexes, WAL, synchronous=NORMAL), by
  `executemany` of the store's INSERT, 5 000 rows per transaction; only the inserts and
  commits are timed (the rows are built from orjson-parsed lines beforehand, per batch).
The bare HTTP server (the API's floor) is bare_http; a bare interpreter's peak RSS (the
long-running processes' floor) is rss.bare_python. NOTES says all of it in the table.
"""

import os
import random
import socket
import time
from datetime import datetime, timezone

import msgspec
import orjson

from lumen import CONFIGS, config, storage, tail, timefmt, vocab
from lumen.simulate import EventFactory
from lumen.decoders import RmbEventV1

PER_TRANSACTION = 5000
NOTES = (
    "Floors (same data, same run, in the bench process):",
    "- emitter: the same event dicts (lumen.simulate, same profile and seed) with a "
    "wall-clock ts, `orjson.dumps`, one `os.write` per N events (N = the stage's batch "
    "size) to a file; no gates, no validation, no lock.",
    "- exporter catch-up: msgspec typed decode (lumen.decoders) of every line of the "
    "log, read in 1 MiB chunks; nothing counted.",
    "- merge: `orjson.loads` + `orjson.dumps` of every line, one write per 1 MiB chunk; "
    "no mapping, no validation, no fsync.",
    "- ingest: the rows of both logs `executemany`'d into a new SQLite file with "
    "lumen/storage.py's schema (tables, indexes, WAL), 5 000 rows per transaction; only "
    "the inserts and commits are timed.",
    "- API: a bare stdlib ThreadingHTTPServer (HTTP/1.1 keep-alive) answering a fixed "
    "body as long as the API's /api/rmb:last answer, driven by the same client "
    "(16 keep-alive connections on one selector loop).",
    "- peak RSS: VmHWM of a bare `python -c 'import time; time.sleep(..)'`.",
)


def chunks(path, size=1 << 20):
    """(offset of the first line, [complete lines without their newline]) per `size`
    bytes read from the file at `path`."""
    rest, pos = b"", 0
    with open(path, "rb") as f:
        while data := f.read(size):
            data = rest + data
            cut = data.rfind(b"\n") + 1
            rest = data[cut:]
            if cut:
                yield pos, data[: cut - 1].split(b"\n")
                pos += cut


def emitter(d, n, batch):
    cfg = config.load(CONFIGS / "rmb_v17.yaml", "rmb_v17")
    mb = cfg["memory_bridge"]
    factory = EventFactory(
        "steady", random.Random(1), mb["slot_namespace"], mb["value_hasher"], socket.gethostname()
    )
    make, dumps, now, utc = factory.make, orjson.dumps, datetime.now, timezone.utc
    nl = orjson.OPT_APPEND_NEWLINE
    fd = os.open(os.path.join(d, "floor_events.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        t0 = time.perf_counter()
        buf = []
        for i in range(n):
            buf.append(dumps(make(i, now(utc).isoformat()), option=nl))
            if len(buf) >= batch:
                os.write(fd, b"".join(buf))
                buf.clear()
        if buf:
            os.write(fd, b"".join(buf))
        return n / (time.perf_counter() - t0)
    finally:
        os.close(fd)


def decode(log):
    dec = msgspec.json.Decoder(RmbEventV1).decode
    n = 0
    t0 = time.perf_counter()
    for _, lines in chunks(log):
        for line in lines:
            dec(line)
        n += len(lines)
    return n / (time.perf_counter() - t0)


def roundtrip(log, out):
    loads, dumps, nl = orjson.loads, orjson.dumps, orjson.OPT_APPEND_NEWLINE
    n = 0
    with open(out, "wb", buffering=0) as f:
        t0 = time.perf_counter()
        for _, lines in chunks(log):
            f.write(b"".join([dumps(loads(x), option=nl) for x in lines]))
            n += len(lines)
        return n / (time.perf_counter() - t0)


def _rmb(e):
    r3 = e["resonance_v3"]
    return {
        "ts": e["ts"],
        "entity_id": e["entity_id"],
        "residual": r3["residual_entropy"],
        "phase": r3["phase_diff"],
        "risk": r3["risk_band"],
        "event_type": e["event_type"],
    }


def _ure(e):
    loop = e.get("loop") or {}
    return {
        "ts": e["ts"],
        "residual": e["phase_field"]["residual_entropy"],
        "harmony": e["harmony_index"],
        "coherence": e["coherence_level"],
        "action": e.get("auto_reg_action", vocab.NO_ACTION),
        "entity_id": e["entity_id"],
        "hz": loop.get("hz"),
        "batch_size": loop.get("batch_size"),
    }


def _insert(db, sql, rows):
    t0 = time.perf_counter()
    with db:
        db.executemany(sql, rows)
    return time.perf_counter() - t0


def executemany(rmb_log, v2_log, db_path, host="bench"):
    """Rows per second inserted (both logs); the file at `db_path` must not exist."""
    db = storage.connect(db_path)
    try:
        storage.migrate(db, host)
        spent, stored = 0.0, 0
        for table, log, build in (("rmb", rmb_log, _rmb), ("ure", v2_log, _ure)):
            cols = storage.COLUMNS[table]
            sql = (
                f"INSERT OR IGNORE INTO {table} ({', '.join(cols)}, host) "
                f"VALUES ({', '.join('?' * (len(cols) + 1))})"
            )
            fp = tail.position_of(log)["fp"]
            batch = []
            for off, lines in chunks(log):
                for line in lines:
                    v = build(orjson.loads(line))
                    v.update(t=timefmt.parse(v["ts"]), src_fp=fp, src_offset=off)
                    batch.append(tuple(v.get(c) for c in cols) + (host,))
                    off += len(line) + 1
                    if len(batch) >= PER_TRANSACTION:
                        spent += _insert(db, sql, batch)
                        stored += len(batch)
                        batch = []
            if batch:
                spent += _insert(db, sql, batch)
                stored += len(batch)
        return stored / spent
    finally:
        db.close()
