"""Storage and read-only API: init/migrate, exactly-once ingest under kill -9, every
endpoint and parameter good and bad, no writes, OpenAPI valid and fuzzed, health."""

import json
import random
import signal
import sqlite3
import subprocess
import time

import pytest
import requests

from lumen.api.app import Api
from lumen import config, storage
from conftest import CONFIG_RMB, PY, ROOT, emit, free_port, run_make, wait_until

CONFIG_API = ROOT / "configs/api_v18.yaml"
INGEST = ROOT / "tools/storage/ingest_tail_v18.py"
API = ROOT / "api/read_only.py"


def rows(cwd, table="rmb"):
    db = sqlite3.connect(cwd / "data/lumen.db")
    try:
        return db.execute(f"SELECT COUNT(*), COUNT(DISTINCT src_offset) FROM {table}").fetchone()
    finally:
        db.close()


def test_db_init_twice_and_migration_from_v1(workdir):
    r = run_make(workdir, "db.init")
    assert (
        "[sqlite] init ok" in r.stdout and f"schema v{storage.SCHEMA_VERSION} (created)" in r.stdout
    )
    assert "up to date" in run_make(workdir, "db.init").stdout
    # A database made by schema v1 is migrated, keeping its rows.
    old = workdir / "old.db"
    db = sqlite3.connect(old)
    db.executescript(storage.MIGRATIONS[0])
    db.execute("PRAGMA user_version = 1")
    db.execute(
        "INSERT INTO rmb (ts, entity_id, residual, phase, risk, t, src_fp, src_offset) "
        "VALUES ('2025-01-01T00:00:00Z', 'x', 0.1, 0.2, 'SAFE', 0, 'fp', 0)"
    )
    db.commit()
    db.close()
    r = run_make(workdir, "db.init", env={"LUMEN_DB": str(old), "LUMEN_HOST_ID": "old-host"})
    assert "migrated from v1" in r.stdout
    db = sqlite3.connect(old)
    assert db.execute("SELECT event_type, host FROM rmb").fetchall() == [("observe", "old-host")]
    # ... and its host is listed with its newest row (schema v7 fills them in once).
    assert db.execute("SELECT host, rmb_ts, rmb_t, ure_t FROM hosts").fetchall() == [
        ("old-host", "2025-01-01T00:00:00Z", 0.0, None)
    ]
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_events_written_before_the_ingester_starts_are_stored(workdir):
    emit(workdir, 1500)
    r = run_make(workdir, "db.backfill")
    assert r.returncode == 0, r.stderr
    assert rows(workdir) == (1500, 1500)
    assert "stored 0 new rows" in run_make(workdir, "db.backfill").stdout


def test_kill_9_at_random_points_leaves_exactly_one_row_per_event(workdir, procs):
    rng = random.Random(7)
    n = 30000
    emitter = procs.start(
        ROOT / "rmb/rmb_emitter.py",
        "--config",
        CONFIG_RMB,
        "--count",
        n,
        "--hz",
        6000,
        "--batch-size",
        50,
        "--flush-ms",
        20,
        "--quiet",
    )
    run_make(workdir, "db.init")
    kills = 0
    while emitter.poll() is None and kills < 8:
        ing = procs.start(INGEST, "--config", CONFIG_API, "--name", f"ingest{kills}")
        deadline = time.monotonic() + rng.uniform(0.3, 1.2)
        wait_until(lambda: time.monotonic() > deadline, timeout=5, what="a random moment")  # noqa: B023
        ing.send_signal(signal.SIGKILL)
        ing.wait(timeout=10)
        kills += 1
    assert emitter.wait(timeout=60) == 0
    assert kills >= 3
    r = subprocess.run(
        [PY, str(INGEST), "--config", str(CONFIG_API), "--once"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert rows(workdir) == (n, n)
    db = sqlite3.connect(workdir / "data/lumen.db")
    iters = {
        json.loads(x)["trace"]["iter"]
        for x in (workdir / "logs/rmb_events.jsonl").read_text().splitlines()
    }
    assert len(iters) == n
    assert db.execute("SELECT COUNT(DISTINCT ts) FROM rmb").fetchone()[0] == n


@pytest.fixture
def api(workdir, procs):
    """A live API on a free port over a database holding 300 RMB and 50 URE rows."""
    emit(workdir, 300, "--profile", "seed", "--seed", "3")
    v2 = workdir / "logs/resonance_events_v2.jsonl"
    with open(v2, "w") as f:
        for i in range(50):
            f.write(
                json.dumps(
                    {
                        "ts": f"2026-01-01T00:00:{i:02d}Z",
                        "entity_id": "lumen.ure" if i % 2 else "lumen.core",
                        "phase_field": {
                            "phase_diff": 0.0,
                            "residual_entropy": 0.4,
                            "risk_band": "SAFE",
                        },
                        "harmony_index": 0.9,
                        "coherence_level": 0.8,
                        "auto_reg_action": "RAISE_HZ" if i % 5 == 0 else "NONE",
                        "trace": {"loop_id": "ure.v18", "iter": i, "host": "h", "ver": "v1.8"},
                    }
                )
                + "\n"
            )
    assert run_make(workdir, "db.backfill").returncode == 0
    port = free_port()
    p = procs.start(API, "--config", CONFIG_API, "--port", port)
    wait_until(lambda: (workdir / "run/api.pid").exists() or p.poll() is not None, what="api")
    assert p.poll() is None
    return f"http://127.0.0.1:{port}", workdir


def get(base, path, **params):
    return requests.get(base + path, params=params, timeout=5)


def test_last_endpoints_match_section_41(api):
    base, cwd = api
    last = json.loads((cwd / "logs/rmb_events.jsonl").read_text().splitlines()[-1])
    r = get(base, "/api/rmb:last")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert r.json() == {
        "ts": last["ts"],
        "residual": last["resonance_v3"]["residual_entropy"],
        "phase": last["resonance_v3"]["phase_diff"],
        "risk": last["resonance_v3"]["risk_band"],
    }
    assert get(base, "/api/ure:last").json() == {
        "ts": "2026-01-01T00:00:49Z",
        "residual": 0.4,
        "harmony": 0.9,
        "coherence": 0.8,
        "action": "NONE",
    }
    assert get(base, "/api/ure:last", entity="lumen.core").json()["ts"] == "2026-01-01T00:00:48Z"
    assert get(base, "/api/ure:last", entity="nobody").json() == {}


def test_list_paging_covers_every_row_once(api):
    base, cwd = api
    seen, cursor = [], None
    while True:
        params = {"limit": 40}
        if cursor:
            params["cursor"] = cursor
        body = get(base, "/api/rmb", **params).json()
        seen += [i["ts"] for i in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 300 and len(set(seen)) == 300
    assert seen == sorted(seen, reverse=True)


def test_list_filters(api):
    base, _ = api
    items = get(base, "/api/rmb", limit=10000, risk="RISK").json()["items"]
    assert items and all(i["risk"] == "RISK" for i in items)
    items = get(base, "/api/ure", limit=100, action="RAISE_HZ").json()["items"]
    assert len(items) == 10 and all(i["action"] == "RAISE_HZ" for i in items)
    items = get(
        base,
        "/api/ure",
        limit=100,
        since="2026-01-01T00:00:10Z",
        until="2026-01-01T00:00:19Z",
        entity="lumen.ure",
    ).json()["items"]
    assert [i["ts"][-3:] for i in items] == ["19Z", "17Z", "15Z", "13Z", "11Z"]
    assert (
        get(
            base, "/api/ure", since="2026-01-01T00:00:30+00:00", until="2026-01-01T00:00:20Z"
        ).json()["items"]
        == []
    )


def test_summary_counts_and_ratio(api):
    base, cwd = api
    evts = [json.loads(x) for x in (cwd / "logs/rmb_events.jsonl").read_text().splitlines()]
    body = get(base, "/api/summary", window="1h").json()
    rb = sum(e["event_type"] == "rollback" for e in evts)
    assert body["window_s"] == 3600
    assert body["rmb"]["events"] == 300 and body["rmb"]["rollbacks"] == rb
    assert body["rmb"]["rollback_ratio"] == pytest.approx(rb / 300)
    assert body["ure"]["events"] == 0  # the URE rows are from 2026-01-01, outside the hour
    assert get(base, "/api/summary", window="99999d").json()["window_s"] == 30 * 86400


@pytest.mark.parametrize(
    "path, params, needle",
    [
        ("/api/rmb", {"limit": "0"}, "limit"),
        ("/api/rmb", {"limit": "10001"}, "limit"),
        ("/api/rmb", {"limit": "ten"}, "limit"),
        ("/api/rmb", {"since": "yesterday"}, "since"),
        ("/api/rmb", {"until": "2025-01-01T00:00:00"}, "until"),  # no zone
        ("/api/rmb", {"risk": "DANGER"}, "risk"),
        ("/api/ure", {"action": "PANIC"}, "action"),
        ("/api/rmb", {"cursor": "abc"}, "cursor"),
        ("/api/rmb", {"entity": "x" * 201}, "entity"),
        ("/api/rmb", {"colour": "red"}, "unknown parameter colour"),
        ("/api/rmb", {"limit": ["1", "2"]}, "given 2 times"),
        ("/api/summary", {"window": "ten minutes"}, "window"),
        ("/api/summary", {"window": "0m"}, "window"),
        ("/api/rmb:last", {"limit": "1"}, "unknown parameter"),
        ("/healthz", {"x": "1"}, "unknown parameter"),
    ],
)
def test_bad_parameters_are_400_with_a_json_error(api, path, params, needle):
    base, _ = api
    r = get(base, path, **params)
    assert r.status_code == 400
    body = r.json()
    assert body["ok"] is False and body["status"] == 400 and needle in body["error"]
    assert "Traceback" not in r.text


def test_unknown_path_wrong_method_and_no_writes(api):
    base, cwd = api
    r = get(base, "/api/nothing")
    assert r.status_code == 404 and r.json()["status"] == 404
    before = rows(cwd)
    for method in ("POST", "PUT", "DELETE", "PATCH", "TRACE"):
        r = requests.request(method, base + "/api/rmb", data=b'{"ts": "x"}', timeout=5)
        assert r.status_code == 405 and "GET" in r.headers["Allow"]
    assert rows(cwd) == before
    r = requests.get(base + "/api/rmb?entity=" + "x" * 5000, timeout=5)
    assert r.status_code == 414
    # The connection itself refuses writes.
    cfg = config.load(CONFIG_API, env={"LUMEN_DB": str(cwd / "data/lumen.db")})
    with Api(cfg).reader() as db:
        with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|query_only"):
            db.execute("DELETE FROM rmb")


def test_healthz_and_missing_database(api, workdir, procs):
    base, _ = api
    body = get(base, "/healthz").json()
    assert (
        body["ok"] is True
        and body["db"] == "ok"
        and body["schema_version"] == storage.SCHEMA_VERSION
    )
    assert body["ingest"]["rmb"]["bytes_behind"] == 0
    emit(workdir, 10)
    assert get(base, "/healthz").json()["ingest"]["rmb"]["bytes_behind"] > 0
    port = free_port()
    procs.start(
        API,
        "--config",
        CONFIG_API,
        "--port",
        port,
        "--name",
        "api2",
        env={"LUMEN_DB": "data/missing.db"},
    )
    wait_until(lambda: (workdir / "run/api2.pid").exists(), what="api2")
    r = requests.get(f"http://127.0.0.1:{port}/api/rmb:last", timeout=5)
    assert r.status_code == 503 and "make db.init" in r.json()["error"]
    assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 503


def test_openapi_document_is_valid(api):
    from openapi_spec_validator import validate

    base, _ = api
    doc = get(base, "/openapi.json").json()
    validate(doc)
    assert {
        "/api/rmb:last",
        "/api/ure:last",
        "/api/rmb",
        "/api/ure",
        "/api/summary",
        "/healthz",
    } <= set(doc["paths"])


def test_fuzz_finds_no_server_error_and_no_schema_break(api):
    base, _ = api
    r = subprocess.run(
        [
            str(ROOT / ".venv/bin/schemathesis"),
            "--config-file",
            str(ROOT / "tests/schemathesis.toml"),
            "run",
            f"{base}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            "60",
            "--generation-deterministic",
            "--request-timeout",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:]
    assert "passed" in r.stdout


def test_api_binds_loopback_by_default():
    cfg = config.load(CONFIG_API, env={})
    assert cfg["api"]["host"] == "127.0.0.1" and cfg["api"]["port"] == 8088


def test_health_once(workdir, procs):
    env = {
        "RMB_EXPORTER_PORT": str(free_port()),
        "URE_EXPORTER_PORT": str(free_port()),
        "API_PORT": str(free_port()),
    }
    r = run_make(workdir, "health", "ONCE=1", env=env)
    assert r.returncode != 0
    assert r.stdout.count("DOWN") == 3 and len(r.stdout.strip().splitlines()) == 3
    procs.start(ROOT / "exporters/rmb_exporter_v17.py", "--config", CONFIG_RMB, env=env)
    procs.start(
        ROOT / "exporters/ure_exporter_v18.py", "--config", ROOT / "configs/ure_v18.yaml", env=env
    )
    run_make(workdir, "db.init")
    procs.start(API, "--config", CONFIG_API, env=env)
    wait_until(lambda: len(list((workdir / "run").glob("*.pid"))) == 3, what="three servers")
    r = run_make(workdir, "health", "ONCE=1", env=env)
    assert r.returncode == 0, r.stdout
    assert r.stdout.count(" 200 ") == 3


def test_series_buckets(api):
    base, cwd = api
    body = get(base, "/api/series", window="1h", step="60s").json()
    assert body["step_s"] == 60 and body["window_s"] == 3600
    assert sum(b["events"] for b in body["rmb"]) == 300
    rb = sum(
        json.loads(x)["event_type"] == "rollback"
        for x in (cwd / "logs/rmb_events.jsonl").read_text().splitlines()
    )
    assert sum(b["rollbacks"] for b in body["rmb"]) == rb
    assert get(base, "/api/series", window="30d", step="5s").json()["step_s"] == 1296
    assert get(base, "/api/series", step="soon").status_code == 400
    slo = get(base, "/api/slo").json()
    assert slo["result"] in ("PASS", "FAIL", "NO_DATA") and len(slo["verdicts"]) == 2
