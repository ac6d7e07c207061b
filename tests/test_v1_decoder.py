"""The typed fast path (lumen.events.Classifier(typed=True), built on the msgspec types of
lumen.v1_decoder) never accepts what schemas/rmb_event_v1.json rejects, and agrees with it on
generated valid and broken events (hypothesis). The raw decoder alone does not check `ts`
(the Classifier does, with lumen.timefmt): verdicts always go through the Classifier."""

import copy
import json

import orjson
from hypothesis import given, settings, strategies as st

from lumen.consumer import Consumer
from lumen.events import Classifier, Validator
from lumen.v1_decoder import DECODERS, DecodeError
from conftest import ROOT

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
