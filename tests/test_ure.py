"""v1.8 URE: merge exactly once (twice, after a crash, across rotation), v2 validity; the
loop regulates on upstream only; smoke.v18; exporter equals the newest loop event;
the 37.10 rollback plan."""

import json
import os
import shutil
import signal
import subprocess
import time
from datetime import datetime, timezone

import jsonschema
import pytest
import requests

from lumen import config
from lumen.ure import UreLoop
from conftest import PY, ROOT, emit, pid_alive, pids_in, run_make, wait_until

CONFIG_URE = ROOT / "configs/ure_v18.yaml"
MERGE = ROOT / "tools/merge_rmb_safety_v2.py"
V2 = json.loads((ROOT / "schemas/resonance_event_v2.json").read_text())


def merge(cwd, *extra):
    return subprocess.run(
        [PY, str(MERGE), "--config", str(CONFIG_URE), *extra],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def v2_lines(cwd):
    p = cwd / "logs/resonance_events_v2.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


def safety_events(cwd, n):
    p = cwd / "logs/safety_music_events.jsonl"
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a") as f:
        for i in range(n):
            lv = ["CALM", "TENSE", "ALERT"][i % 3]
            f.write(
                json.dumps(
                    {
                        "ts": datetime.now(timezone.utc).isoformat(),
                        "loop": "safety.music.v17",
                        "levels": {"residual": lv, "rollback_ratio": "CALM", "final": lv},
                        "inputs": {"residual_entropy": 0.4, "rollback_ratio": 0.0},
                    }
                )
                + "\n"
            )


def test_merge_twice_appends_nothing_and_every_line_is_v2(workdir):
    emit(workdir, 1000)
    safety_events(workdir, 30)
    with open(workdir / "logs/rmb_events.jsonl", "ab") as f:
        f.write(b"not json\n")
    r = merge(workdir)
    assert r.returncode == 0, r.stderr
    assert "1000 rmb + 30 safety events" in r.stdout and "1 rejected" in r.stdout
    r = merge(workdir)
    assert "0 rmb + 0 safety events" in r.stdout
    lines = v2_lines(workdir)
    assert len(lines) == 1030
    v = jsonschema.Draft7Validator(V2, format_checker=jsonschema.FormatChecker())
    for e in lines:
        v.validate(e)
    harmony = {e["safety"]["level"]: e["harmony_index"] for e in lines if "safety" in e}
    assert harmony == {"CALM": 0.6, "TENSE": 0.45, "ALERT": 0.4}


def test_merge_after_a_crash_mid_file_neither_loses_nor_duplicates(workdir):
    emit(workdir, 200000, "--batch-size", "1000")
    p = subprocess.Popen(
        [PY, str(MERGE), "--config", str(CONFIG_URE), "--follow"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        v2 = workdir / "logs/resonance_events_v2.jsonl"
        wait_until(
            lambda: v2.exists() and v2.stat().st_size > 5_000_000,
            timeout=60,
            what="merge to be part-way",
        )
        p.send_signal(signal.SIGKILL)  # no chance to flush or checkpoint
        p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
    assert len(v2_lines(workdir)) < 200000
    # The crash may have left the checkpoint behind the output: the output itself says
    # what was done, so nothing is merged twice. Make it worse: lose the checkpoint too.
    (workdir / "logs/.offsets/merge_rmb.json").unlink(missing_ok=True)
    r = merge(workdir)
    assert r.returncode == 0, r.stderr
    lines = v2_lines(workdir)
    offsets = [e["source"]["offset"] for e in lines]
    assert len(lines) == 200000 and len(set(offsets)) == 200000
    assert [e["trace"]["iter"] for e in lines] == list(range(200000))


def test_merge_across_rotation(workdir):
    emit(workdir, 300)
    merge(workdir)
    emit(workdir, 50)  # written, not yet merged, then rotated away
    os.rename(workdir / "logs/rmb_events.jsonl", workdir / "logs/rmb_events.jsonl.1")
    emit(workdir, 70)
    r = merge(workdir)
    assert "120 rmb" in r.stdout
    assert [e["trace"]["iter"] for e in v2_lines(workdir)] == list(range(420))


def upstream(cwd, residuals, start=None, loop_id="ure.merge"):
    """Append merged RMB events as v2 (or, with loop_id ure.v18, fake own events)."""
    t = time.time() if start is None else start
    p = cwd / "logs/resonance_events_v2.jsonl"
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a") as f:
        for i, r in enumerate(residuals):
            ev = {
                "ts": datetime.fromtimestamp(t + i * 0.01, timezone.utc).isoformat(),
                "entity_id": "lumen.core" if loop_id != "ure.v18" else "lumen.ure",
                "phase_field": {"phase_diff": 0.0, "residual_entropy": r, "risk_band": "SAFE"},
                "harmony_index": 0.5,
                "coherence_level": 0.5,
                "auto_reg_action": "NONE",
                "trace": {"loop_id": loop_id, "iter": i, "host": "t", "ver": "v1.8-pre"},
            }
            if loop_id != "ure.v18":
                ev["rmb"] = {"event_type": "observe", "group": "build_core"}
            f.write(json.dumps(ev) + "\n")


def cfg():
    return config.load(CONFIG_URE, env={})


def test_low_residual_raises_hz_to_max(workdir):
    c = cfg()
    upstream(workdir, [0.2] * 40)
    loop = UreLoop(c)
    seen = [loop.tick()["auto_reg_action"] for _ in range(6)]
    assert loop.hz == c["loop"]["hz_max"]
    assert seen[:3] == ["RAISE_HZ"] * 3 and "RAISE_HZ" not in seen[3:]


def test_high_residual_lowers_hz_to_min(workdir):
    c = cfg()
    upstream(workdir, [0.9] * 40)
    loop = UreLoop(c)
    seen = [loop.tick()["auto_reg_action"] for _ in range(6)]
    assert loop.hz == c["loop"]["hz_min"]
    assert seen[:3] == ["LOWER_HZ"] * 3


def test_noisy_input_reduces_batch_to_min(workdir):
    c = cfg()
    upstream(workdir, [0.3, 0.7] * 50)  # mean 0.5 (no hz change), stddev 0.2
    loop = UreLoop(c)
    evts = [loop.tick() for _ in range(4)]
    assert [e["auto_reg_action"] for e in evts[:2]] == ["REDUCE_BATCH"] * 2
    assert loop.bsz == c["loop"]["batch_min"]
    assert evts[-1]["harmony_index"] == 0.0  # 1 - 8 * 0.2 < 0
    assert evts[-1]["coherence_level"] == pytest.approx(1.0)


def test_own_events_never_change_the_input(workdir):
    upstream(workdir, [0.4] * 20)
    loop = UreLoop(cfg())
    first = loop.tick()
    upstream(workdir, [0.99] * 50, loop_id="ure.v18")  # echoes claiming a huge residual
    later = [loop.tick() for _ in range(5)]
    assert all(e["phase_field"]["residual_entropy"] == pytest.approx(0.4) for e in later)
    assert all(e["auto_reg_action"] == "NONE" for e in later)
    assert loop.own_seen >= 50 + 1
    assert first["self_regulation_score"] == 1.0


def test_no_upstream_writes_nothing(workdir):
    loop = UreLoop(cfg())
    assert loop.tick() is None
    assert v2_lines(workdir) == []


@pytest.fixture
def stack(workdir, private_stack):
    return workdir, private_stack(ports=("URE_EXPORTER_PORT", "RMB_EXPORTER_PORT"))


def test_smoke_v18_and_exporter_matches_newest_loop_event(stack):
    cwd, env = stack
    emit(cwd, 200)
    r = run_make(cwd, "smoke.v18", env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("[smoke.v18] OK")
    assert "[ure.verify] OK" in r.stdout
    port = env["URE_EXPORTER_PORT"]
    run_make(cwd, "trackD.stop", env=env)  # freeze the log, then compare

    def matches():
        newest = [e for e in v2_lines(cwd) if e["trace"]["loop_id"] == "ure.v18"][-1]
        txt = requests.get(f"http://127.0.0.1:{port}/metrics_ure", timeout=5).text
        m = dict(
            x.split(" ", 1)
            for x in txt.splitlines()
            if x and not x.startswith("#") and "{" not in x
        )
        return (
            float(m["ure_residual_entropy_last"]) == newest["phase_field"]["residual_entropy"]
            and float(m["ure_harmony_index"]) == newest["harmony_index"]
            and float(m["ure_coherence_level"]) == newest["coherence_level"]
            and float(m["ure_loop_hz"]) == newest["loop"]["hz"]
            and float(m["ure_self_regulation_score"]) == newest["self_regulation_score"]
            and float(m["ure_rmb_events_total"]) == 200
        )

    wait_until(matches, timeout=20, what="exporter to show the newest loop event")


def test_ure_verify_fails_on_a_bad_line(workdir):
    upstream(workdir, [0.4] * 3)
    assert run_make(workdir, "ure.verify").returncode == 0
    with open(workdir / "logs/resonance_events_v2.jsonl", "a") as f:
        f.write('{"ts": "2025-01-01T00:00:00Z", "entity_id": "x"}\n')
    r = run_make(workdir, "ure.verify")
    assert r.returncode != 0 and "[ure.verify] FAIL" in r.stdout


def test_tune_v18_uses_upstream_window(workdir):
    upstream(workdir, [0.3, 0.7] * 100)
    upstream(workdir, [0.5] * 100, loop_id="ure.v18")
    r = run_make(workdir, "tune.v18")
    assert "[tune.v18] residual.stddev_10m=0.2000 (upstream events=200)" in r.stdout
    assert "SUGGEST: LOWER_HZ & REDUCE_BATCH" in r.stdout


def test_rollback_plan_37_10(stack, tmp_path):
    cwd, env = stack
    scrape = tmp_path / "scrape.yml"
    shutil.copy(ROOT / "ops/prometheus/scrape.yml", scrape)
    env = dict(env, SCRAPE_FILE=str(scrape))
    emit(cwd, 50)
    assert run_make(cwd, "trackD.start", "ure.exporter", env=env).returncode == 0
    d_pids = {k: v for k, v in pids_in(cwd / "run").items() if k.startswith("ure_")}
    assert set(d_pids) == {"ure_merge", "ure_loop", "ure_exporter"}
    r = run_make(cwd, "rollback.v17", env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "RESULT = ROLLED_BACK" in r.stdout
    assert not any(pid_alive(p) for p in d_pids.values())
    import yaml

    jobs = [j["job_name"] for j in yaml.safe_load(scrape.read_text())["scrape_configs"]]
    assert jobs == ["rmb_v17", "alert_receiver"]
    alive = {k for k, v in pids_in(cwd / "run").items() if pid_alive(v)}
    assert {"rmb_exporter", "rmb_emitter", "safety_music"} <= alive
    r = run_make(cwd, "switch.v18", env=env, timeout=120)
    assert r.returncode == 0 and "RESULT = SWITCHED" in r.stdout
    jobs = [j["job_name"] for j in yaml.safe_load(scrape.read_text())["scrape_configs"]]
    assert jobs == ["rmb_v17", "ure_v18", "alert_receiver"]


def test_a_quiet_input_keeps_its_resume_point_near_the_end_of_the_output(workdir):
    """With no Safety Music events at all, merge_safety's checkpoint still follows the end
    of the v2 log (within merge.RESCAN_BYTES), so a restart does not read the whole
    output again to learn what that input had merged."""
    from lumen import merge as merge_mod

    emit(workdir, 20000, "--batch-size", "1000")
    r = merge(workdir)
    assert r.returncode == 0 and "20000 rmb + 0 safety events" in r.stdout, r.stderr
    size = (workdir / "logs/resonance_events_v2.jsonl").stat().st_size
    assert size > merge_mod.RESCAN_BYTES  # else there is nothing to show
    cps = {
        name: json.loads((workdir / f"logs/.offsets/{name}.json").read_text())
        for name in ("merge_rmb", "merge_safety")
    }
    for name, cp in cps.items():
        out = cp["state"]["user"]["out"]
        assert size - out["offset"] <= merge_mod.RESCAN_BYTES, (name, out, size)
    assert merge(workdir).stdout.startswith("[merge] resonance_events_v2.jsonl appended: 0 rmb")
