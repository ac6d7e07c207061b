"""The fast path (lumen.events.Classifier, built on the msgspec types of lumen.decoders)
never accepts what schemas/rmb_event_v1.json or resonance_event_v2.json rejects, and agrees
with the schema path on generated valid and broken events and on hostile bytes (hypothesis):
the same verdict, reason, `ts` and event, for dicts and for typed events. The raw decoder
alone does not check `ts` (the Classifier does, with lumen.timefmt): verdicts always go
through the Classifier."""

import copy
import json

import orjson
from hypothesis import given, settings, strategies as st

from lumen.consumer import Consumer
from lumen.events import Classifier, Validator
from lumen.decoders import DECODERS, DecodeError, to_dict as DECODERS_TO_DICT
from conftest import ROOT, emit

# The authority in production: the compiled JSON Schema validator, formats checked.
REF = Validator.named("rmb_event_v1.json")
DEC = DECODERS["rmb_event_v1.json"]
# The fast path as every stage runs it; a reader's clock after every 4-digit year, so the
# ts_future bound (not the schema's business) never decides a verdict here.
FAST = Classifier("rmb_event_v1.json", typed=True)
NOW_FAR = 1e12
BASE = json.loads((ROOT / "tests/fixtures/rmb_sample.json").read_text())

PATHS = [
    ("ts",),
    ("entity_id",),
    ("group",),
    ("event_type",),
    ("resonance_v3", "phase_diff"),
    ("resonance_v3", "residual_entropy"),
    ("resonance_v3", "creative_band"),
    ("resonance_v3", "risk_band"),
    ("memory_bridge", "slot_id"),
    ("memory_bridge", "op"),
    ("memory_bridge", "key"),
    ("memory_bridge", "value_hash"),
    ("trace", "loop_id"),
    ("trace", "iter"),
    ("trace", "host"),
    ("resonance_v3",),
    ("trace",),
]
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10**6),
    st.floats(-5, 5, allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(
        [
            "2025-11-01T00:00:00Z",
            "2025-11-01T00:00:00",
            "2025-11-01",
            "2025-11-01T25:00:00Z",
            "2025-11-01T00:00:00.123456+09:00",
            "2025-11-01 00:00:00Z",
            "deadbeef",
            "DEADBEEF",
            "abc",
            "",
            "RISK",
            "LOW",
            "rollback",
            "UPSERT",
            "observer",
            3.1416,
            3.1417,
            -3.1416,
            1.0,
            0.0,
            1.0000001,
            -0.0,
            7.0,
        ]
    ),
    st.dictionaries(st.text(max_size=5), st.integers(-99, 99), max_size=2),
    st.lists(st.integers(-99, 99), max_size=2),
)


def verdicts(evt):
    """(accepted by the typed Classifier, valid per the schema)."""
    ev, t, err = FAST.classify(orjson.dumps(evt), NOW_FAR)
    return err is None, REF.is_valid(evt)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PATHS), VALUES, st.booleans()), max_size=3))
def test_fast_types_never_accept_what_the_schema_rejects(mutations):
    evt = copy.deepcopy(BASE)
    for path, value, delete in mutations:
        node = evt
        for k in path[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                break
        else:
            if delete:
                node.pop(path[-1], None)
            else:
                node[path[-1]] = value
    fast, ref = verdicts(evt)
    assert not (fast and not ref), ("the fast path accepted a schema-invalid event", evt)
    assert fast == ref, ("the Classifier turned down a schema-valid event", evt)


def test_agree_on_the_emitters_events(workdir):
    import subprocess
    import sys

    subprocess.run(
        [
            sys.executable,
            str(ROOT / "rmb/rmb_emitter.py"),
            "--config",
            str(ROOT / "configs/rmb_v17.yaml"),
            "--count",
            "3000",
            "--unthrottled",
            "--profile",
            "seed",
            "--quiet",
        ],
        cwd=workdir,
        check=True,
    )
    for line in (workdir / "logs/rmb_events.jsonl").read_bytes().splitlines():
        assert verdicts(orjson.loads(line)) == (True, True)


def test_schema_valid_events_the_types_turn_down_still_count(workdir):
    # An integral float as trace.iter is an integer to JSON Schema, not to msgspec: the raw
    # decoder turns it down, the Classifier's schema path accepts it.
    evt = copy.deepcopy(BASE)
    evt["trace"]["iter"] = 5.0
    try:
        DEC.decode(orjson.dumps(evt))
        raw_decoder = True
    except DecodeError:
        raw_decoder = False
    assert raw_decoder is False
    assert verdicts(evt) == (True, True)
    log = workdir / "q.jsonl"
    log.write_bytes(orjson.dumps(evt) + b"\n" + orjson.dumps(BASE) + b"\n")
    seen = []
    c = Consumer(log, "t", "rmb_event_v1.json", "rmb_events", typed=True)
    c.poll(lambda ev, pos: seen.append(ev.resonance_v3.risk_band))
    assert seen == ["SAFE", "SAFE"] and c.valid == 2 and not c.rejected


# -- every path, every schema: one verdict for any bytes --------------------------------
V1, V2 = "rmb_event_v1.json", "resonance_event_v2.json"
BASE_V2 = {
    "ts": "2026-12-03T00:00:00.200000+00:00",
    "entity_id": "lumen.core",
    "phase_field": {"phase_diff": -0.7, "residual_entropy": 0.39, "risk_band": "SAFE"},
    "harmony_index": 0.5,
    "coherence_level": 0.5,
    "auto_reg_action": "NONE",
    "trace": {"loop_id": "ure.merge", "ver": "v1.8-pre", "iter": 1, "host": "vm"},
    "rmb": {"event_type": "decide", "group": "design_core"},
    "source": {"stream": "rmb", "fp": "1b99e19f99c0752e6718db5e", "offset": 438},
}
BASE_URE = {  # the URE loop's own tick
    **{k: v for k, v in BASE_V2.items() if k not in ("rmb", "source")},
    "entity_id": "lumen.ure",
    "trace": {"loop_id": "ure.v18", "iter": 7, "host": "vm", "ver": "v1.8"},
    "actions": ["LOWER_HZ", "REDUCE_BATCH"],
    "loop": {"hz": 4, "batch_size": 12},
    "self_regulation_score": 0.75,
    "observed": {"events_10m": 3000, "residual_std_10m": 0.04, "rollback_ratio_10m": None},
}
PATHS_V2 = [
    ("ts",),
    ("entity_id",),
    ("phase_field", "phase_diff"),
    ("phase_field", "residual_entropy"),
    ("phase_field", "risk_band"),
    ("harmony_index",),
    ("coherence_level",),
    ("auto_reg_action",),
    ("trace", "loop_id"),
    ("trace", "iter"),
    ("trace", "host"),
    ("trace", "ver"),
    ("phase_field",),
    ("trace",),
    ("rmb",),
    ("rmb", "event_type"),
    ("source", "offset"),
    ("loop", "hz"),
    ("observed", "residual_std_10m"),
    ("actions",),
    ("self_regulation_score",),
    ("extra",),
]
CLASSIFIERS = {
    schema: (
        Classifier(schema, fast=False),  # the reference: the schema path alone
        Classifier(schema),  # dicts, fast path first
        Classifier(schema, typed=True),  # objects, fast path first
    )
    for schema in (V1, V2)
}


def one_verdict(schema, raw):
    """Every classifier of `schema` gives the reference's verdict, `ts` and event."""
    ref, fast, typed = CLASSIFIERS[schema]
    want = ref.classify(raw, NOW_FAR)
    got = fast.classify(raw, NOW_FAR)
    assert got[2] == want[2] and got[1] == want[1], (raw, got, want)
    assert got[0] == want[0], (raw, "the fast path's dict differs", got[0], want[0])
    ev, t, err = typed.classify(raw, NOW_FAR)
    assert (err, t) == (want[2], want[1]), (raw, err, want)
    if err is None:  # the typed event has the reference's values under the same names
        assert ev.ts == want[0]["ts"] and ev.trace.iter == want[0]["trace"]["iter"]
    return want


def mutate(base, mutations):
    evt = copy.deepcopy(base)
    for path, value, delete in mutations:
        node = evt
        for k in path[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                break
        else:
            if delete:
                node.pop(path[-1], None)
            else:
                node[path[-1]] = value
    return evt


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from([BASE_V2, BASE_URE]),
    st.lists(st.tuples(st.sampled_from(PATHS_V2), VALUES, st.booleans()), max_size=3),
)
def test_v2_fast_path_agrees_with_the_schema(base, mutations):
    evt = mutate(base, mutations)
    want = one_verdict(V2, orjson.dumps(evt))
    assert (want[2] is None) == Validator.named(V2).is_valid(evt), evt


# Raw JSON text for a property: what a hostile writer can put in a line that no dict holds.
HOSTILE = [
    b'"\xff"',  # invalid UTF-8 inside a string
    b'"\xed\xa0\x80"',  # an encoded surrogate
    b'"\\ud800"',  # an escaped lone surrogate
    b"1e400",  # out of a double's range
    b"-1e400",
    b"123456789012345678901234567890",
    b"[" * 1100 + b"]" * 1100,  # deeper than the parsers go
    b"[" * 900 + b"]" * 900,
    b'{"a":' * 600 + b"1" + b"}" * 600,
    b"NaN",
    b"null",
    b'"\\u0000"',
    b'"a\x00"',  # a raw control character
    b"01",
    b"1.",
    b'"\xc3\xa9"',
    b"0.5",
    b'"SAFE"',
    b"true",
]
SAFETY_EVENT = {
    "ts": "2026-12-03T00:00:01Z",
    "loop": "safety.music.v17",
    "levels": {"residual": "TENSE", "rollback_ratio": "CALM", "final": "TENSE"},
    "inputs": {"residual_entropy": 0.6, "rollback_ratio": 0.0},
}
KEYS = [b"extra", b"ts", b"entity_id", b"trace", b"rmb", b"source", b"iter", b"hz"]


@st.composite
def hostile_lines(draw):
    schema = draw(st.sampled_from([V1, V2]))
    base = orjson.dumps(draw(st.sampled_from([BASE] if schema == V1 else [BASE_V2, BASE_URE])))
    raw = base
    for _ in range(draw(st.integers(1, 3))):
        key, value = draw(st.sampled_from(KEYS)), draw(st.sampled_from(HOSTILE))
        # into the top-level object, or into the first nested object after a chosen brace
        braces = [i for i, c in enumerate(raw) if c == ord("{")]
        at = draw(st.sampled_from(braces)) + 1
        raw = raw[:at] + b'"' + key + b'":' + value + b"," + raw[at:]
    if draw(st.booleans()):  # or bytes flipped anywhere
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([draw(st.integers(0, 255))]) + raw[i + 1 :]
    return schema, raw


@settings(max_examples=1500, deadline=None)
@given(hostile_lines())
def test_hostile_bytes_get_one_verdict_on_every_path(case):
    schema, raw = case
    one_verdict(schema, raw)


def test_hostile_extras_are_rejected_on_every_path():
    # msgspec skips an undeclared property without checking it; the types declare every
    # property, so these take the schema path and get its verdict.
    for schema, base in ((V1, BASE), (V2, BASE_V2)):
        good = orjson.dumps(base)
        for value, reason in ((b'"\xff"', "utf8"), (b"1e400", "json"), (b"[" * 1100, "json")):
            raw = good[:-1] + b',"y":' + value + b"}"
            assert one_verdict(schema, raw)[2][0] == reason, (schema, value)


def test_lumens_own_v2_lines_take_the_fast_path(workdir):
    """The merge's and the URE loop's lines decode on the fast path (a writer adding a
    property the types do not declare would silently fall back to the slow one)."""
    import subprocess
    import sys

    from lumen import config
    from lumen.ure import UreLoop

    emit(workdir, 300, "--profile", "spike")
    ure_cfg = ROOT / "configs/ure_v18.yaml"
    merge = [sys.executable, str(ROOT / "tools/merge_rmb_safety_v2.py"), "--config"]
    subprocess.run([*merge, str(ure_cfg)], cwd=workdir, check=True, capture_output=True)
    safety = workdir / "logs/safety_music_events.jsonl"
    safety.write_bytes(orjson.dumps(SAFETY_EVENT) + b"\n")
    subprocess.run([*merge, str(ure_cfg)], cwd=workdir, check=True, capture_output=True)
    loop = UreLoop(config.load(ure_cfg, env={}))
    ticks = [loop.tick() for _ in range(3)]
    loop.commit()
    assert all(ticks)
    lines = (workdir / "logs/resonance_events_v2.jsonl").read_bytes().splitlines()
    assert len(lines) == 300 + 1 + 3
    for line in lines:
        ev = DECODERS[V2].decode(line)  # raises if the types turn the line down
        assert orjson.loads(line) == DECODERS_TO_DICT(ev)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PATHS), VALUES, st.booleans()), max_size=3))
def test_merge_maps_fast_path_events_to_valid_v2_events(mutations):
    """lumen.merge skips validating the v2 event it builds from an event of the fast path's
    types: valid by construction, shown here over generated events (boundary values of
    every bounded field included in VALUES)."""
    from lumen.decoders import RmbEventV1
    from lumen.v2map import rmb_to_v2

    ev, t, err = CLASSIFIERS[V1][2].classify(orjson.dumps(mutate(BASE, mutations)), NOW_FAR)
    if err is None and type(ev) is RmbEventV1:
        v2 = rmb_to_v2(ev, "host", {"stream": "rmb", "fp": "f", "offset": 0})
        assert Validator.named(V2).error(v2) is None, v2
