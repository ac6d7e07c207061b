"""The stores' batched insert, SQLite (rows go PER_STATEMENT to an INSERT, the rest one by
one, the host a literal of the statements) and PostgreSQL (binary COPY, the columns' types
read from the database; a replay through the staging table). Whatever the batch size and
mix, each adds exactly the new identities, says which stored ones differ (a conflict), and
stores every column as given (ints in float columns, NULLs), under its host (quotes
included)."""

import os
import random
import sqlite3

import pytest

from lumen import storage
from lumen.harness import pgserver
from conftest import unavailable

COLS = storage.COLUMNS["rmb"]


def _row(i, fp="fp-a", residual=0.25):
    t = 1_760_000_000 + i / 5
    return (
        f"2025-10-09T08:53:{i % 60:02d}Z",
        f"e{i % 3}",
        residual,
        -0.5,
        "SAFE",
        t,
        fp,
        i * 100,
        "observe",
    )


@pytest.fixture(scope="module")
def pg():
    try:
        pgserver.bindir()
    except pgserver.Unavailable as e:
        unavailable(f"PostgreSQL is required: {e}")
    with pgserver.PgServer() as server:
        yield server


class Kind:
    """One store kind: `open(host)` a store on this test's database, `stored(sql)` rows."""

    def __init__(self, kind, tmp_path, request):
        self.kind = kind
        if kind == "sqlite":
            self.url = tmp_path / "s.db"
        else:
            server = request.getfixturevalue("pg")
            self.url = server.create_db(f"s_{abs(hash(request.node.name)) % 10**9}_{os.getpid()}")

    def open(self, host):
        if self.kind == "sqlite":
            return storage.SqliteStore(self.url, host)
        from lumen import pgstore

        return pgstore.PgStore(self.url, host)

    def stored(self, sql=None):
        sql = sql or f"SELECT {', '.join(COLS)}, host FROM rmb ORDER BY src_fp, src_offset"
        if self.kind == "sqlite":
            db = sqlite3.connect(self.url)
            try:
                return db.execute(sql).fetchall()
            finally:
                db.close()
        import psycopg

        with psycopg.connect(self.url) as c:
            return [tuple(r) for r in c.execute(sql).fetchall()]


@pytest.fixture(params=["sqlite", "postgres"])
def kind(request, tmp_path):
    return Kind(request.param, tmp_path, request)


@pytest.mark.parametrize("n", [1, storage.PER_STATEMENT - 1, storage.PER_STATEMENT, 123, 5000])
def test_a_batch_of_any_size_stores_every_row_as_given(kind, n):
    store = kind.open("it's-me")  # a quote in the host id
    rows = [_row(i) for i in range(n)]
    with store.transaction():
        assert store.insert("rmb", rows) == (n, set())
    store.close()
    assert kind.stored() == [r + ("it's-me",) for r in rows]


def test_replayed_rows_add_nothing_and_differing_ones_are_conflicts(kind):
    store = kind.open("h")
    first = [_row(i) for i in range(123)] + [_row(i, fp="fp-b") for i in range(7)]
    with store.transaction():
        assert store.insert("rmb", first) == (130, set())
    # The replay of a stretch of both files, three of its rows with another payload, and
    # new rows after it; shuffled, so conflicts fall in and out of whole statements.
    changed = {(f"fp-{x}", i * 100) for x, i in [("a", 100), ("a", 122), ("b", 3)]}
    again = [
        _row(i, residual=0.9 if ("fp-a", i * 100) in changed else 0.25) for i in range(90, 200)
    ]
    again += [_row(i, fp="fp-b", residual=0.9 if i == 3 else 0.25) for i in range(0, 60)]
    random.Random(4).shuffle(again)
    with store.transaction():
        added, differ = store.insert("rmb", again)
    assert added == (200 - 123) + (60 - 7)
    assert differ == changed
    store.close()
    stored = kind.stored()
    assert len(stored) == 130 + added
    assert len({(r[6], r[7]) for r in stored}) == len(stored)
    # The first payload stays where they differ.
    assert all(r[2] == 0.25 for r in stored)


def test_an_identity_twice_in_one_batch_is_stored_once(kind):
    store = kind.open("h")
    rows = [_row(i) for i in range(60)]
    rows[55] = _row(3, residual=0.7)  # the same identity as row 3, another payload
    with store.transaction():
        added, differ = store.insert("rmb", rows)
    store.close()
    assert added == 59 and differ == {("fp-a", 300)}


def test_newest_row_is_the_latest_t(kind):
    store = kind.open("h")
    rows = [_row(i) for i in range(200)]
    random.Random(1).shuffle(rows)
    with store.transaction():
        store.insert("rmb", rows)
        store.note_newest("rmb", rows)
    store.close()
    newest = kind.stored("SELECT rmb_t, rmb_ts FROM hosts WHERE host = 'h'")
    assert newest == [(_row(199)[5], _row(199)[0])]


def test_numbers_and_nulls_keep_their_columns_types(kind):
    """A number the schema allows as an integer lands in a float column as that number;
    a missing loop rate and batch are NULL (the URE table)."""
    store = kind.open("h")
    cols = storage.COLUMNS["ure"]
    rows = [
        (
            "2025-11-01T00:00:00Z",
            0,
            1,
            0.5,
            "NONE",
            "lumen.ure",
            1_761_955_200,
            "fp",
            0,
            None,
            None,
        ),
        (
            "2025-11-01T00:00:01Z",
            0.25,
            0.5,
            1,
            "NONE",
            "lumen.ure",
            1_761_955_201.5,
            "fp",
            9,
            5,
            20,
        ),
    ]
    with store.transaction():
        assert store.insert("ure", rows) == (2, set())
    with store.transaction():  # the same rows again: a replay, equal, no conflict
        assert store.insert("ure", rows) == (0, set())
    store.close()
    got = kind.stored(f"SELECT {', '.join(cols)} FROM ure ORDER BY src_offset")
    assert got == rows
    assert [type(v) for v in got[0][1:4]] == [float, float, float]
    assert type(got[1][9]) is float and type(got[1][10]) is int


# `loop` is outside the v2 schema: a writer may put any JSON value there.
LOOPS = [
    ({"hz": 4.5, "batch_size": 12}, 4.5, 12),
    ({"hz": 5, "batch_size": 20.0}, 5.0, 20),
    ({"hz": "fast", "batch_size": 2.5}, None, None),
    ({"hz": 1e308, "batch_size": 2**63}, 1e308, None),
    ({}, None, None),
    (5, None, None),
    ([1, 2], None, None),
    ("loop", None, None),
    (None, None, None),
    (True, None, None),
]


def test_any_loop_value_of_a_v2_line_is_stored_not_a_crash(workdir):
    """A v2 event's `loop` that is not an object (a number, a list, text) once stopped the
    ingester with a traceback on that line; its rate and batch are NULL instead."""
    import json
    import subprocess

    from conftest import PY, ROOT

    logs = workdir / "logs"
    logs.mkdir()
    with open(logs / "resonance_events_v2.jsonl", "w") as f:
        for i, (loop, _, _) in enumerate(LOOPS):
            ev = {
                "ts": f"2026-01-01T00:00:{i:02d}Z",
                "entity_id": "lumen.ure",
                "phase_field": {"phase_diff": 0.0, "residual_entropy": 0.4, "risk_band": "SAFE"},
                "harmony_index": 0.9,
                "coherence_level": 0.8,
                "trace": {"loop_id": "ure.v18", "iter": i, "host": "h", "ver": "v1.8"},
                "loop": loop,
            }
            f.write(json.dumps(ev) + "\n")
    r = subprocess.run(
        [PY, str(ROOT / "tools/storage/ingest_tail_v18.py"), "--once"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    db = sqlite3.connect(workdir / "data/lumen.db")
    got = db.execute("SELECT hz, batch_size FROM ure ORDER BY ts").fetchall()
    db.close()
    assert got == [(hz, batch) for _, hz, batch in LOOPS]
