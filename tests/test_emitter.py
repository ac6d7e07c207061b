"""RMB emitter: valid events, safety gates, batching by batch_size/flush_ms, profiles,
stdin/replay sources with quarantine, graceful stop, iteration numbers across restarts."""

import json
import random
import signal
import subprocess

import jsonschema
import pytest

from lumen import config
from lumen.timefmt import seconds as parse_ts
from lumen.windows import EventWindow
from lumen.emitter import Emitter
from lumen.gates import gate
from lumen.simulate import EventFactory
from conftest import CONFIG_RMB, EMITTER, PY, ROOT, wait_until
from conftest import run_emitter as emit  # emit(cwd, *args): CompletedProcess, output captured

SCHEMA = json.loads((ROOT / "schemas/rmb_event_v1.json").read_text())


def read_events(cwd):
    path = cwd / "logs/rmb_events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def reference_validator():
    # The reference implementation (python-jsonschema), independent of the fast validator.
    return jsonschema.Draft7Validator(SCHEMA, format_checker=jsonschema.FormatChecker())


@pytest.mark.parametrize("profile", ["seed", "steady", "spike"])
def test_every_emitted_event_is_valid_v1(workdir, profile):
    r = emit(workdir, "--profile", profile, "--count", 2000, "--unthrottled", "--seed", 1)
    assert r.returncode == 0, r.stderr
    evts = read_events(workdir)
    assert len(evts) == 2000
    v = reference_validator()
    for e in evts:
        v.validate(e)
    assert [e["trace"]["iter"] for e in evts] == list(range(2000))


def test_gates_turn_out_of_band_events_into_rollbacks(workdir):
    r = emit(workdir, "--profile", "seed", "--count", 3000, "--unthrottled", "--seed", 5)
    assert r.returncode == 0
    evts = read_events(workdir)
    gates = config.load(CONFIG_RMB, env={})["safety_gates"]
    out_of_band = [
        e
        for e in evts
        if e["resonance_v3"]["residual_entropy"] > 0.85
        or e["resonance_v3"]["risk_band"] in gates["risk_band_block"]
        or abs(e["resonance_v3"]["phase_diff"]) > gates["phase_diff_abs_max"]
    ]
    assert len(out_of_band) > 100  # the seed profile's U(0.05, 0.9) crosses 0.85 ~6 % of the time
    assert all(e["event_type"] == "rollback" for e in out_of_band)
    # In-band events keep their own types.
    assert {e["event_type"] for e in evts if e not in out_of_band} == {
        "observe",
        "decide",
        "commit",
        "rollback",
    }


def test_residual_max_env_lowers_the_gate(workdir):
    r = emit(
        workdir,
        "--profile",
        "steady",
        "--count",
        500,
        "--unthrottled",
        "--seed",
        2,
        env={"RESIDUAL_MAX": "0.3"},
    )
    assert r.returncode == 0
    assert all(e["event_type"] == "rollback" for e in read_events(workdir))


@pytest.mark.parametrize(
    "field, value", [("phase_diff", 3.05), ("residual_entropy", 0.9), ("risk_band", "RISK")]
)
def test_gate_function_each_gate(field, value):
    gates = {"residual_entropy_max": 0.85, "risk_band_block": ["RISK"], "phase_diff_abs_max": 3.0}
    evt = EventFactory("steady", random.Random(1), "ns", "sha256", "h").make(
        1, "2025-01-01T00:00:00Z"
    )
    evt["event_type"] = "commit"
    assert gate(evt, gates) is None and evt["event_type"] == "commit"
    evt["resonance_v3"][field] = value
    assert gate(evt, gates) == field.replace("risk_band", "risk_band")
    assert evt["event_type"] == "rollback"


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _emitter(workdir, batch_size, flush_ms):
    cfg = config.load(
        CONFIG_RMB,
        env={},
        overrides={
            "loop.batch_size": batch_size,
            "loop.flush_ms": flush_ms,
            "paths.queue": str(workdir / "q.jsonl"),
        },
    )
    clock = FakeClock()
    return Emitter(cfg, clock=clock), clock


def _events(n):
    f = EventFactory("steady", random.Random(9), "rmb/v17", "sha256", "h")
    return [f.make(i, "2025-11-01T00:00:00Z") for i in range(n)]


def test_batch_size_shapes_writes(workdir):
    em, clock = _emitter(workdir, batch_size=20, flush_ms=500)
    q = workdir / "q.jsonl"
    for i, e in enumerate(_events(100)):
        em.offer(e)
        written = q.read_text().count("\n") if q.exists() else 0
        assert written == (i + 1) // 20 * 20  # whole batches only, nothing in between
    assert em.writer.batches_written == 5


def test_flush_ms_flushes_a_partial_batch(workdir):
    em, clock = _emitter(workdir, batch_size=20, flush_ms=500)
    q = workdir / "q.jsonl"
    for e in _events(3):
        em.offer(e)
        clock.t += 0.1
    em.maybe_flush()
    assert not q.exists()  # oldest pending event is 0.3 s old: not due yet
    assert em.due() == pytest.approx(0.2)
    clock.t = 0.5
    em.maybe_flush()
    assert q.read_text().count("\n") == 3
    assert em.writer.batches_written == 1 and em.due() is None


@pytest.mark.parametrize(
    "argv, error",
    [
        ([], None),
        (["--source", "replay"], "--source replay needs --replay FILE"),
        (["--source", "replay", "--replay", "f.jsonl"], None),
        (["--sim-start", "2026-01-01T00:00:00Z"], None),
        (["--sim-start", "yesterday"], "--sim-start 'yesterday' is not an RFC 3339 time"),
        (
            ["--sim-start", "9999-12-31T23:59:59Z"],
            "--sim-start '9999-12-31T23:59:59Z' is in the future: every event would be a "
            "ts_future reject (more than 300 s ahead)",
        ),
    ],
)
def test_usage_error(argv, error):
    from lumen.emitter import build_parser, usage_error

    assert usage_error(build_parser().parse_args(argv)) == error


def test_run_lines_in_process_gates_and_quarantines(workdir):
    import io
    import threading
    from lumen.emitter import build_parser
    from lumen.emit_sources import run_lines

    em, _ = _emitter(workdir, batch_size=100, flush_ms=60000)
    good = (ROOT / "tests/fixtures/rmb_sample.json").read_bytes().strip()
    hot = json.loads(good)
    hot["resonance_v3"]["residual_entropy"] = 0.95
    stream = io.BytesIO(b"\n".join([good, b"", b"not json", json.dumps(hot).encode()]) + b"\n")
    run_lines(em, build_parser().parse_args([]), stream, threading.Event(), "mem")
    em.finish()
    assert em.counters() == {
        "emitted": 2,
        "gated": 1,
        "dropped": 0,
        "write_errors": 0,
        "pending": 0,
        "rejected": 1,
    }
    evts = [json.loads(x) for x in (workdir / "q.jsonl").read_text().splitlines()]
    assert [e["event_type"] for e in evts] == ["observe", "rollback"]
    (rej,) = (workdir / "logs/rejects/rmb_input.jsonl").read_text().splitlines()
    assert json.loads(rej)["reason"] == "json" and json.loads(rej)["offset"] == len(good) + 2


def test_run_sim_stops_where_rfc3339_ends(workdir, capsys):
    """A simulated clock run past 9999-12-31T23:59:59Z stops (one line), never a traceback."""
    import threading
    from lumen.emitter import build_parser
    from lumen.emit_sources import run_sim

    em, _ = _emitter(workdir, batch_size=7, flush_ms=60000)
    hz = em.cfg["loop"]["hz"]
    argv = ["--count", "100000", "--seed", "1", "--unthrottled"]
    args = build_parser().parse_args(argv + ["--sim-start", "9999-12-31T23:59:00Z"])
    assert run_sim(em, args, em.cfg, threading.Event(), 0) == int(59 * hz) + 1
    em.finish()
    assert "year 9999" in capsys.readouterr().err


def test_run_sim_in_process_on_a_simulated_clock(workdir):
    import threading
    from lumen.emitter import build_parser
    from lumen.emit_sources import run_sim

    em, _ = _emitter(workdir, batch_size=7, flush_ms=60000)
    args = build_parser().parse_args(
        [
            "--count",
            "50",
            "--seed",
            "1",
            "--profile",
            "seed",
            "--unthrottled",
            "--sim-start",
            "2026-01-01T00:00:00Z",
        ]
    )
    assert run_sim(em, args, em.cfg, threading.Event(), 100) == 150
    em.finish()
    evts = [json.loads(x) for x in (workdir / "q.jsonl").read_text().splitlines()]
    assert [e["trace"]["iter"] for e in evts] == list(range(100, 150))
    ts = [parse_ts(e["ts"]) for e in evts]
    assert ts[1] - ts[0] == pytest.approx(1 / em.cfg["loop"]["hz"])
    out_of_band = [
        e
        for e in evts
        if e["resonance_v3"]["residual_entropy"] > 0.85
        or abs(e["resonance_v3"]["phase_diff"]) > 3.0
    ]
    assert em.gated == len(out_of_band) > 0
    assert all(e["event_type"] == "rollback" for e in out_of_band)
    assert em.save_unwritten() == 0


def test_run_in_process_writes_state_stats_and_exit_code(workdir, capsys):
    from lumen.emitter import build_parser, run

    args = build_parser().parse_args(["--count", "20", "--unthrottled", "--name", "em_test"])
    cfg = config.load(CONFIG_RMB, env={})
    assert run(args, cfg) == 0 and run(args, cfg) == 0
    assert [e["trace"]["iter"] for e in read_events(workdir)] == list(range(40))
    assert json.loads((workdir / "logs/.state/em_test.json").read_text()) == {"next_iter": 40}
    assert (workdir / "logs/.state/em_test.stats").exists()
    assert not (workdir / "run/em_test.pid").exists()
    assert capsys.readouterr().out.count("[rmb] emitted 20 events") == 2
    args = build_parser().parse_args(["--source", "replay", "--replay", "missing.jsonl"])
    assert run(args, cfg) == 2


def test_real_run_writes_batches_not_lines(workdir):
    # 40 events at 200 Hz with batch_size 10: the file grows in steps of 10 lines.
    r = emit(workdir, "--count", 40, "--hz", 200, "--batch-size", 10, "--flush-ms", 10000)
    assert r.returncode == 0
    assert len(read_events(workdir)) == 40
    assert b"emitted 40 events" in r.stdout


def test_steady_profile_meets_section_9_slos_over_10_simulated_minutes(workdir):
    # 10 minutes at 5 Hz = 3000 events, stamped on a simulated clock: runs in about a second.
    r = emit(
        workdir,
        "--profile",
        "steady",
        "--count",
        3000,
        "--unthrottled",
        "--seed",
        11,
        "--sim-start",
        "2026-01-01T00:00:00Z",
    )
    assert r.returncode == 0, r.stderr
    evts = read_events(workdir)
    ts = [parse_ts(e["ts"]) for e in evts]
    assert ts[-1] - ts[0] == pytest.approx(599.8)
    w = EventWindow(600)
    for t, e in zip(ts, evts):
        w.add(t, e["resonance_v3"]["residual_entropy"], e["event_type"] == "rollback")
    assert w.count == 3000
    assert w.ratio() <= 0.05
    assert w.stddev() <= 0.03


def test_spike_profile_breaks_the_rollback_slo(workdir):
    r = emit(workdir, "--profile", "spike", "--count", 1000, "--unthrottled", "--seed", 11)
    assert r.returncode == 0, r.stderr
    evts = read_events(workdir)
    ratio = sum(e["event_type"] == "rollback" for e in evts) / len(evts)
    assert ratio > 0.10


def test_seed_makes_runs_reproducible(tmp_path):
    def content(d):
        d.mkdir()
        emit(d, "--profile", "seed", "--count", 200, "--unthrottled", "--seed", 42)
        return [(e["event_type"], e["resonance_v3"], e["memory_bridge"]) for e in read_events(d)]

    assert content(tmp_path / "a") == content(tmp_path / "b")


def test_namespace_and_hasher_come_from_config(workdir, tmp_path):
    import hashlib
    import yaml

    cfg = yaml.safe_load(CONFIG_RMB.read_text())
    cfg["memory_bridge"] = {"slot_namespace": "custom/ns", "value_hasher": "blake2b"}
    p = tmp_path / "rmb_v17.yaml"
    p.write_text(yaml.safe_dump(cfg))
    subprocess.run(
        [
            PY,
            str(EMITTER),
            "--config",
            str(p),
            "--count",
            "5",
            "--unthrottled",
            "--profile",
            "seed",
        ],
        cwd=workdir,
        check=True,
        capture_output=True,
    )
    for e in read_events(workdir):
        mb = e["memory_bridge"]
        assert mb["slot_id"].startswith("custom/ns/slot-")
        assert mb["value_hash"] == hashlib.blake2b(f"v{e['trace']['iter']}".encode()).hexdigest()


def test_stdin_source_validates_and_quarantines(workdir):
    good = (ROOT / "tests/fixtures/rmb_sample.json").read_bytes().strip()
    hot = json.loads(good)
    hot["resonance_v3"]["residual_entropy"] = 0.95  # valid, but out of band
    lines = [good, b"not json", b'{"ts": "x"}', b"\xff\xfe", json.dumps(hot).encode(), b"[1]"]
    r = emit(workdir, "--source", "stdin", input=b"\n".join(lines) + b"\n")
    assert r.returncode == 0, r.stderr
    evts = read_events(workdir)
    assert len(evts) == 2
    assert evts[0]["event_type"] == "observe" and evts[1]["event_type"] == "rollback"
    rejects = [
        json.loads(x) for x in (workdir / "logs/rejects/rmb_input.jsonl").read_text().splitlines()
    ]
    assert [x["reason"] for x in rejects] == ["json", "schema", "utf8", "not_object"]
    assert rejects[0]["line"] == "not json" and rejects[2]["line_b64"] == "//4="
    assert rejects[1]["offset"] == len(good) + 1 + len(b"not json") + 1
    assert b"4 rejected" in r.stdout


def test_replay_source(workdir):
    src = workdir / "src.jsonl"
    emit(workdir, "--count", 50, "--unthrottled", "--queue", src)
    r = emit(workdir, "--source", "replay", "--replay", src)
    assert r.returncode == 0
    assert read_events(workdir) == [json.loads(x) for x in src.read_text().splitlines()]
    r = emit(workdir, "--source", "replay", "--replay", workdir / "missing.jsonl")
    assert r.returncode == 2 and b"missing.jsonl" in r.stderr


def test_sigterm_flushes_and_exits_0(procs, workdir):
    p = procs.start(
        EMITTER, "--config", CONFIG_RMB, "--hz", 50, "--batch-size", 1000, "--flush-ms", 60000
    )
    wait_until(lambda: (workdir / "run/rmb_emitter.pid").exists(), what="pid file")
    import time

    t0 = time.monotonic()  # at 50 Hz, half a second leaves ~25 events pending in the batch
    wait_until(lambda: time.monotonic() - t0 > 0.5, what="events to be pending")
    assert not (workdir / "logs/rmb_events.jsonl").exists()  # all pending in the batch
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    n = len(read_events(workdir))
    assert n > 5 and f"emitted {n} events".encode() in out
    assert not (workdir / "run/rmb_emitter.pid").exists()


def test_iterations_continue_across_restarts(workdir):
    emit(workdir, "--count", 10, "--unthrottled")
    emit(workdir, "--count", 10, "--unthrottled")
    assert [e["trace"]["iter"] for e in read_events(workdir)] == list(range(20))


def test_help_and_bad_flags(workdir):
    r = emit(workdir, "--help")
    assert r.returncode == 0 and b"--profile" in r.stdout
    r = emit(workdir, "--profile", "wild")
    assert r.returncode == 2
    r = emit(workdir, "--sim-start", "yesterday")
    assert r.returncode == 2 and b"--sim-start" in r.stderr


def test_a_queue_locked_by_another_process_does_not_hang_the_emitter(procs, workdir):
    import fcntl
    import time

    log = workdir / "logs/rmb_events.jsonl"
    log.parent.mkdir(parents=True)
    holder = open(log, "a")
    fcntl.flock(holder, fcntl.LOCK_EX)  # a foreign process holding the lock
    try:
        p = procs.start(EMITTER, "--config", CONFIG_RMB, "--hz", 50, "--batch-size", 5)
        wait_until(lambda: (workdir / "run/rmb_emitter.pid").exists(), what="pid file")
        t0 = time.monotonic()
        wait_until(lambda: time.monotonic() - t0 > 0.5, what="events to pile up")
        p.send_signal(signal.SIGTERM)  # answered although the queue stays locked
        out, err = p.communicate(timeout=30)
    finally:
        holder.close()
    assert p.returncode == 1
    assert b"could not be appended" in err
    (side,) = (workdir / "logs").glob("rmb_events.jsonl.unwritten.*")
    n = len(side.read_text().splitlines())
    assert n >= 5 and f"emitted {n} events".encode() in out  # nothing lost: all in the side file
