"""Memory bridge: committed ops only, in order; replay gives the same state; get/slot CLI."""

import json
import os
import sqlite3
import subprocess

from conftest import CONFIG_RMB, PY, ROOT

BRIDGE = ROOT / "rmb/bridge_v17.py"


def bridge(cwd, *args):
    return subprocess.run(
        [PY, str(BRIDGE), "--config", str(CONFIG_RMB), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def event(i, etype, op, key, slot="rmb/v17/slot-1", vh="deadbeef"):
    e = json.loads((ROOT / "tests/fixtures/rmb_sample.json").read_text())
    e["event_type"] = etype
    e["trace"]["iter"] = i
    e["memory_bridge"].update(op=op, key=key, slot_id=slot, value_hash=vh)
    return json.dumps(e)


def write(cwd, lines, name="logs/rmb_events.jsonl"):
    p = cwd / name
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a") as f:
        f.write("".join(x + "\n" for x in lines))


def state(cwd):
    db = sqlite3.connect(cwd / "data/rmb_bridge.db")
    return dict(db.execute("SELECT key, value_hash FROM kv").fetchall())


def test_only_committed_ops_apply_in_order(workdir):
    write(
        workdir,
        [
            event(0, "commit", "UPSERT", "a", vh="aaaaaaaa"),
            event(1, "rollback", "UPSERT", "b", vh="bbbbbbbb"),  # rolled back: not applied
            event(2, "observe", "UPSERT", "c", vh="cccccccc"),  # only observed: not applied
            event(3, "commit", "UPSERT", "d", vh="dddddddd"),
            event(4, "commit", "DELETE", "d"),
            event(5, "commit", "UPSERT", "a", vh="a2a2a2a2"),
            "not json",
        ],
    )
    r = bridge(workdir, "apply")
    assert r.returncode == 0, r.stderr
    assert "applied 3 upserts, 1 deletes (1 lines rejected)" in r.stdout
    assert state(workdir) == {"a": "a2a2a2a2"}
    r = bridge(workdir, "get", "a")
    assert json.loads(r.stdout)["value_hash"] == "a2a2a2a2"
    r = bridge(workdir, "get", "d")
    assert r.returncode == 1 and "'d'" in r.stderr
    r = bridge(workdir, "slot", "rmb/v17/slot-1")
    assert r.stdout.splitlines() == ["a\ta2a2a2a2"]


def test_incremental_apply_equals_rebuild_across_rotation(workdir):
    subprocess.run(
        [
            PY,
            str(ROOT / "rmb/rmb_emitter.py"),
            "--config",
            str(CONFIG_RMB),
            "--count",
            "3000",
            "--unthrottled",
            "--quiet",
            "--seed",
            "4",
        ],
        cwd=workdir,
        check=True,
        timeout=60,
    )
    assert bridge(workdir, "apply").returncode == 0
    os.rename(workdir / "logs/rmb_events.jsonl", workdir / "logs/rmb_events.jsonl.1")
    subprocess.run(
        [
            PY,
            str(ROOT / "rmb/rmb_emitter.py"),
            "--config",
            str(CONFIG_RMB),
            "--count",
            "2000",
            "--unthrottled",
            "--quiet",
            "--seed",
            "5",
        ],
        cwd=workdir,
        check=True,
        timeout=60,
    )
    assert bridge(workdir, "apply").returncode == 0
    again = bridge(workdir, "apply")
    assert "applied 0 upserts, 0 deletes" in again.stdout
    incremental = state(workdir)
    assert len(incremental) > 1000
    r = bridge(workdir, "rebuild")
    assert r.returncode == 0 and "rmb_events.jsonl.1" in r.stdout
    assert state(workdir) == incremental


def test_apply_events_get_slot_in_process(tmp_path):
    from lumen import bridge as core

    db = core.open_store(str(tmp_path / "s.db"))
    evts = [
        json.loads(event(i, *x))
        for i, x in enumerate(
            [
                ("commit", "UPSERT", "a", "rmb/v17/slot-1", "aaaaaaaa"),
                ("decide", "UPSERT", "b", "rmb/v17/slot-1", "bbbbbbbb"),
                ("commit", "UPSERT", "c", "rmb/v17/slot-2", "cccccccc"),
                ("commit", "DELETE", "c"),
                ("commit", "DELETE", "never-there"),
            ]
        )
    ]
    with db:
        assert core.apply_events(db, evts) == (2, 2)
    assert core.size(db) == 1
    assert core.get(db, "a") == {
        "key": "a",
        "slot_id": "rmb/v17/slot-1",
        "value_hash": "aaaaaaaa",
        "ts": evts[0]["ts"],
        "iter": 0,
    }
    assert core.get(db, "c") is None
    assert core.slot_keys(db, "rmb/v17/slot-1") == [("a", "aaaaaaaa")]
    assert core.slot_keys(db, "rmb/v17/slot-2") == []


def test_rebuild_from_drops_the_store_and_starts_at_the_oldest_file(tmp_path):
    from lumen import bridge as core

    store, queue, offsets = str(tmp_path / "s.db"), str(tmp_path / "q.jsonl"), tmp_path / "off"
    core.open_store(store).close()
    offsets.mkdir()
    (offsets / f"{core.CONSUMER}.json").write_text("{}")
    assert core.rebuild_from(store, queue, str(offsets)) == queue  # no rotated file: the live one
    assert not os.path.exists(store) and not (offsets / f"{core.CONSUMER}.json").exists()
    for n in (1, 2):
        open(f"{queue}.{n}", "w").close()
    assert core.rebuild_from(store, queue, str(offsets)) == f"{queue}.2"
