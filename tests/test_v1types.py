"""The msgspec types of lumen.v1types never accept what schemas/rmb_event_v1.json rejects,
and agree with it on generated valid and broken events (hypothesis)."""
import copy
import json

import orjson
from hypothesis import given, settings, strategies as st

from lumen.consumer import Consumer
from lumen.events import Validator
from lumen.v1types import DECODERS, DecodeError
from conftest import ROOT

# The authority in production: the compiled JSON Schema validator, formats checked.
REF = Validator.named("rmb_event_v1.json")
DEC = DECODERS["rmb_event_v1.json"]
BASE = json.loads((ROOT / "tests/fixtures/rmb_sample.json").read_text())

PATHS = [("ts",), ("entity_id",), ("group",), ("event_type",), ("resonance_v3", "phase_diff"),
         ("resonance_v3", "residual_entropy"), ("resonance_v3", "creative_band"),
         ("resonance_v3", "risk_band"), ("memory_bridge", "slot_id"), ("memory_bridge", "op"),
         ("memory_bridge", "key"), ("memory_bridge", "value_hash"), ("trace", "loop_id"),
         ("trace", "iter"), ("trace", "host"), ("resonance_v3",), ("trace",)]
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(-5, 5, allow_nan=False),
    st.text(max_size=12), st.sampled_from([
        "2025-11-01T00:00:00Z", "2025-11-01T00:00:00", "2025-11-01", "2025-11-01T25:00:00Z",
        "2025-11-01T00:00:00.123456+09:00", "2025-11-01 00:00:00Z", "deadbeef", "DEADBEEF",
        "abc", "", "RISK", "LOW", "rollback", "UPSERT", "observer", 3.1416, 3.1417, -3.1416,
        1.0, 0.0, 1.0000001, -0.0, 7.0]),
    st.dictionaries(st.text(max_size=5), st.integers(-99, 99), max_size=2),
    st.lists(st.integers(-99, 99), max_size=2))


def verdicts(evt):
    raw = orjson.dumps(evt)
    try:
        DEC.decode(raw)
        fast = True
    except DecodeError:
        fast = False
    return fast, REF.is_valid(evt)


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
    assert not (fast and not ref), evt


def test_agree_on_the_emitters_events(workdir):
    import subprocess
    import sys
    subprocess.run([sys.executable, str(ROOT / "rmb/rmb_emitter.py"), "--config",
                    str(ROOT / "configs/rmb_v17.yaml"), "--count", "3000", "--unthrottled",
                    "--profile", "seed", "--quiet"], cwd=workdir, check=True)
    for line in (workdir / "logs/rmb_events.jsonl").read_bytes().splitlines():
        assert verdicts(orjson.loads(line)) == (True, True)


def test_schema_valid_events_the_types_turn_down_still_count(workdir):
    # An integral float as trace.iter is an integer to JSON Schema, not to msgspec.
    evt = copy.deepcopy(BASE)
    evt["trace"]["iter"] = 5.0
    assert verdicts(evt) == (False, True)
    log = workdir / "q.jsonl"
    log.write_bytes(orjson.dumps(evt) + b"\n" + orjson.dumps(BASE) + b"\n")
    seen = []
    c = Consumer(log, "t", "rmb_event_v1.json", "rmb_events", typed=True)
    c.poll(lambda ev, off: seen.append(ev.resonance_v3.risk_band))
    assert seen == ["SAFE", "SAFE"] and c.valid == 2 and not c.rejected
