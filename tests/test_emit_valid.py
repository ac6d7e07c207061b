"""The simulated source is valid by construction, so the emitter writes its events without
classifying them again (stdin and replay lines still are): hypothesis over the profiles,
seeds, safety gates, clocks (simulated and wall), rates, iteration numbers, namespaces,
hashers and hosts, every line run_sim writes is an event to every reader (the typed fast
path, the compiled schema and the reference python-jsonschema). The shortcuts of the hot
loop are checked against what they replace: the samplers against random.Random.gauss and
the blueprint's distributions, the clocks' text against datetime.isoformat() of a
timedelta, chunks flat out against one event at a time."""

import json
import random
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from unittest import mock

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from lumen import config, vocab
from lumen.emit_sources import (
    FLAT_OUT_BATCH,
    next_iter,
    run_sim,
    sim_clock,
    stamper,
    wall_clock,
)
from lumen.emitter import Emitter, build_parser
from lumen.events import MAX_FUTURE_S, Classifier, Validator
from lumen.simulate import PROFILES, sampler
from lumen.timefmt import parse as parse_ts
from conftest import CONFIG_RMB, ROOT

SCHEMA = json.loads((ROOT / "schemas/rmb_event_v1.json").read_text())
REFERENCE = jsonschema.Draft7Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
TYPED = Classifier("rmb_event_v1.json", typed=True)
COMPILED = Validator.named("rmb_event_v1.json")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
SLOW = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

GATES = st.fixed_dictionaries(
    {
        "residual_entropy_max": st.floats(0, 1),
        "risk_band_block": st.lists(st.sampled_from(vocab.RISK_BANDS), unique=True),
        "phase_diff_abs_max": st.floats(0, 3.1416),
    }
)
# Any start a run accepts: from year 1 up to the readers' future bound.
STARTS = st.datetimes(
    min_value=datetime(1, 1, 1),
    max_value=datetime(2030, 1, 1),
    timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-11, minutes=-30))]),
)
RATES = st.floats(0.001, 1e6) | st.sampled_from([5.0, 3.0, 7.0, 1000.0])


def _cfg(queue, hz, batch_size, gates, ns, hasher):
    cfg = config.load(
        CONFIG_RMB,
        env={},
        overrides={
            "loop.hz": hz,
            "loop.batch_size": batch_size,
            "loop.flush_ms": 60000,
            "paths.queue": str(queue),
        },
    )
    cfg["safety_gates"] = gates
    cfg["memory_bridge"] = {"slot_namespace": ns, "value_hasher": hasher}
    return cfg


def _run(d, argv, cfg, host="host", start_iter=0):
    args = build_parser().parse_args(argv)
    em = Emitter(cfg)
    em.rejects.path = Path(d) / "rejects.jsonl"
    with mock.patch("lumen.emit_sources.socket.gethostname", return_value=host):
        nxt = run_sim(em, args, cfg, threading.Event(), start_iter)
    em.finish()
    q = Path(cfg["paths"]["queue"])
    lines = q.read_bytes().splitlines() if q.exists() else []
    return em, nxt, lines


@SLOW
@given(
    profile=st.sampled_from(PROFILES),
    seed=st.integers(0, 2**64),
    gates=GATES,
    start=st.none() | STARTS,
    hz=RATES,
    start_iter=st.integers(0, 200) | st.integers(0, 2**63 - 1000),
    ns=st.text(min_size=1, max_size=20),
    host=st.text(max_size=20),
    hasher=st.sampled_from(["sha256", "sha1", "blake2b", "md5"]),
    count=st.integers(1, 300),
    batch_size=st.integers(1, 50),
)
def test_every_simulated_line_is_an_event_to_every_reader(
    profile, seed, gates, start, hz, start_iter, ns, host, hasher, count, batch_size
):
    argv = ["--count", str(count), "--profile", profile, "--seed", str(seed), "--unthrottled"]
    if start is not None:
        argv += ["--sim-start", start.isoformat()]
    with tempfile.TemporaryDirectory() as d:
        cfg = _cfg(Path(d) / "q.jsonl", hz, batch_size, gates, ns, hasher)
        em, nxt, lines = _run(d, argv, cfg, host, start_iter)
        now = time.time()
        rejected = [json.loads(x) for x in em.rejects._pending] + (
            [json.loads(x) for x in em.rejects.path.read_bytes().splitlines()]
            if em.rejects.path.exists()
            else []
        )
    assert nxt == start_iter + count
    assert em.emitted == len(lines) and len(lines) + len(rejected) == count
    # Only a simulated clock can run past the readers' bound: those are ts_future rejects.
    assert all(r["reason"] == "ts_future" for r in rejected)
    assert start is not None or not rejected
    iters = []
    for raw in lines:
        ev, t, err = TYPED.classify(raw, now)
        assert err is None, (err, raw)
        obj = json.loads(raw)
        assert COMPILED.is_valid(obj)
        REFERENCE.validate(obj)
        r3 = obj["resonance_v3"]
        if (
            abs(r3["phase_diff"]) > gates["phase_diff_abs_max"]
            or r3["risk_band"] in gates["risk_band_block"]
            or r3["residual_entropy"] > gates["residual_entropy_max"]
        ):
            assert obj["event_type"] == vocab.ROLLBACK  # the gates were applied
        assert obj["trace"]["host"] == host and obj["memory_bridge"]["slot_id"].startswith(ns)
        iters.append(obj["trace"]["iter"])
    assert iters == list(range(start_iter, start_iter + len(lines)))
    for r in rejected:
        assert parse_ts(json.loads(r["line"])["ts"]) > now - 60 + MAX_FUTURE_S


def _reference_sample(profile, rng):
    """The profiles' draws as the blueprint's sampler made them, one rng call at a time."""

    def clamp(x, lo, hi):
        return lo if x < lo else hi if x > hi else x

    if profile == "seed":
        return rng.uniform(0.05, 0.9), rng.uniform(-3.0, 3.0), rng.choice(vocab.EVENT_TYPES), False
    if profile in ("steady", "jitter", "rollbacks"):
        residual = clamp(rng.gauss(0.40, 0.08 if profile == "jitter" else 0.01), 0.0, 1.0)
        phase = clamp(rng.gauss(0.0, 0.3), -3.0, 3.0)
        r = rng.random()
        etype = (
            vocab.ROLLBACK
            if r < (0.12 if profile == "rollbacks" else 0.01)
            else vocab.COMMIT
            if r < 0.40
            else vocab.DECIDE
            if r < 0.60
            else vocab.OBSERVE
        )
        return residual, phase, etype, rng.random() < 0.05
    return (
        rng.uniform(0.80, 0.98),
        rng.uniform(-3.1, 3.1),
        rng.choice(vocab.EVENT_TYPES),
        rng.random() < 0.05,
    )


@settings(deadline=None, max_examples=50)
@given(profile=st.sampled_from(PROFILES), seed=st.integers(0, 2**64), primed=st.booleans())
def test_samplers_draw_what_random_gauss_and_the_blueprint_draw(profile, seed, primed):
    a, b = random.Random(seed), random.Random(seed)
    if primed:  # a gauss deviate already cached: the sampler takes random.gauss's own path
        a.gauss(), b.gauss()
    draw = sampler(profile, b)
    for _ in range(2000):
        assert repr(draw()) == repr(_reference_sample(profile, a))
    assert a.getstate() == b.getstate()


@settings(deadline=None, max_examples=300)
@given(start=STARTS, hz=RATES, data=st.data())
def test_simulated_clock_writes_what_isoformat_of_a_timedelta_writes(start, hz, data):
    period = 1.0 / hz
    ts_of, t_of, last_n = sim_clock(start.isoformat(), period)
    sim0 = datetime.fromtimestamp(parse_ts(start.isoformat()), timezone.utc)
    ns = data.draw(st.lists(st.integers(0, int(last_n)), min_size=1, max_size=50))
    ns += [0, 1, int(last_n)]
    ns += data.draw(st.lists(st.integers(0, min(int(last_n), 10**7)), max_size=50))
    for n in ns:
        want = (sim0 + timedelta(seconds=n * period)).isoformat()
        assert ts_of(n) == want
        assert abs(t_of(n) - parse_ts(want)) < 1e-3 + 1e-12 * n * period


# Rates and events where round(n * period * 1e6) is not timedelta's microsecond (a float
# product within 2**-11 of a half): the clock must ask timedelta there.
NEAR_HALF = [
    (2.366994301925761, 17122928),
    (8.949042483448276, 72895627),
    (7.549021018453325, 37271244),
    (8.869818487162497, 34782485),
]


@pytest.mark.parametrize("hz, n", NEAR_HALF)
def test_simulated_clock_near_a_half_microsecond(hz, n):
    period = 1.0 / hz
    ts_of, _, _ = sim_clock("2025-11-01T00:00:00Z", period)
    sim0 = datetime(2025, 11, 1, tzinfo=timezone.utc)
    assert round(n * period * 1e6) != timedelta(seconds=n * period) // timedelta(microseconds=1)
    assert ts_of(n) == (sim0 + timedelta(seconds=n * period)).isoformat()


@pytest.mark.parametrize("us", [0, 1, 999_999, 1_000_000, -1, -1_000_001, 253402300799_999_998])
def test_stamper_writes_what_isoformat_writes(us):
    stamp = stamper()
    assert stamp(us) == (EPOCH + timedelta(microseconds=us)).isoformat()
    assert stamp(us + 1) == (EPOCH + timedelta(microseconds=us + 1)).isoformat()


@given(st.integers(-(10**16), 253402300799_999_999))
def test_stamper_any_instant(us):
    assert stamper()(us) == (EPOCH + timedelta(microseconds=us)).isoformat()


def test_wall_clock_is_the_time_now():
    before = time.time()
    ts = wall_clock()(0)
    assert before - 1e-3 <= parse_ts(ts) <= time.time() + 1e-3
    assert ts.endswith("+00:00")


@settings(deadline=None, max_examples=15)
@given(
    profile=st.sampled_from(PROFILES),
    seed=st.integers(0, 2**32),
    start=STARTS,
    batch=st.integers(1, 40),
)
def test_flat_out_chunks_write_what_one_event_at_a_time_writes(profile, seed, start, batch):
    """Flat out, events are built CHUNK at a time; paced, one at a time. Same bytes."""
    base = ["--count", "700", "--profile", profile, "--seed", str(seed)]
    base += ["--sim-start", start.isoformat()]
    gates = {"residual_entropy_max": 0.85, "risk_band_block": ["RISK"], "phase_diff_abs_max": 3.0}
    out = []
    for flat in (True, False):
        with tempfile.TemporaryDirectory() as d:
            cfg = _cfg(Path(d) / "q.jsonl", 1e6, batch, gates, "rmb/v17", "sha256")
            em, _, lines = _run(d, base + (["--unthrottled"] if flat else []), cfg)
            out.append((lines, em.gated))
    assert out[0] == out[1] and len(out[0][0]) == 700


def test_flat_out_writes_big_batches_and_paced_runs_keep_batch_size(workdir):
    gates = config.load(CONFIG_RMB, env={})["safety_gates"]
    argv = ["--count", "3500", "--seed", "1", "--sim-start", "2025-11-01T00:00:00Z"]
    cfg = _cfg(workdir / "flat.jsonl", 5, 20, gates, "rmb/v17", "sha256")
    em, _, lines = _run(workdir, argv + ["--unthrottled"], cfg)
    assert len(lines) == 3500 and em.writer.batches_written == -(-3500 // FLAT_OUT_BATCH)
    cfg = _cfg(workdir / "paced.jsonl", 1e6, 20, gates, "rmb/v17", "sha256")
    em, _, lines = _run(workdir, argv, cfg)
    assert len(lines) == 3500 and em.writer.batches_written == 3500 // 20


def test_a_simulated_clock_past_the_future_bound_is_quarantined(workdir):
    """Events stamped more than MAX_FUTURE_S ahead of the wall are ts_future rejects, as
    the readers would make them, counted and kept in the quarantine; the rest written."""
    gates = config.load(CONFIG_RMB, env={})["safety_gates"]
    start = datetime.fromtimestamp(time.time() - 100, timezone.utc).isoformat()
    cfg = _cfg(workdir / "q.jsonl", 5, 20, gates, "rmb/v17", "sha256")
    argv = ["--count", "3000", "--seed", "1", "--unthrottled", "--sim-start", start]
    em, nxt, lines = _run(workdir, argv, cfg)
    n_ok = len(lines)
    # 5 Hz from 100 s ago: about (100 + 300) * 5 events are within the bound
    assert 1990 <= n_ok <= 2100 and nxt == 3000
    assert em.rejects.counts == {"ts_future": 3000 - n_ok}
    rej = [json.loads(x) for x in (workdir / "rejects.jsonl").read_bytes().splitlines()]
    assert [json.loads(r["line"])["trace"]["iter"] for r in rej] == list(range(n_ok, 3000))
    assert all(r["reason"] == "ts_future" and r["source"] == "emitter" for r in rej)


@pytest.mark.parametrize(
    "state, want, said",
    [
        ({}, 0, False),
        ({"next_iter": 41}, 41, False),
        ({"next_iter": -3}, 0, True),
        ({"next_iter": "7"}, 0, True),
        ({"next_iter": True}, 0, True),
        ({"next_iter": 2.0}, 0, True),
        ({"next_iter": 1 << 63}, 0, True),
    ],
)
def test_next_iter_from_the_state_file(state, want, said, capsys):
    assert next_iter(state) == want
    assert ("not an iteration number" in capsys.readouterr().err) == said


def test_lines_held_in_memory_take_their_own_size(workdir):
    """While a batch waits (a full disk keeps up to max_pending lines), each line costs
    its bytes, not an encoder's buffer (orjson's own bytes keep ~4 KB each)."""
    import tracemalloc

    gates = config.load(CONFIG_RMB, env={})["safety_gates"]
    cfg = _cfg(workdir / "q.jsonl", 5, 10**6, gates, "rmb/v17", "sha256")
    args = build_parser().parse_args(["--count", "3000", "--seed", "1", "--unthrottled"])
    em = Emitter(cfg)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        run_sim(em, args, cfg, threading.Event(), 0)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(em.writer) == 3000 and not (workdir / "q.jsonl").exists()
    size = sum(map(len, em.writer._buf))
    assert held < 1.5 * size, (held, size)
