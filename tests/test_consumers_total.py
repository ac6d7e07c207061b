"""Every stage takes every valid line: what the schemas leave open (properties they do not
name, `inputs` fields they do not constrain) can hold any JSON value, and no stage may
crash on it. Generated schema-valid v2 and Safety Music events with arbitrary extras go
through each stage's own handling (the URE exporter's stats and exposition, the URE loop's
observation, ingest's rows, merge's mapping); and a consumer whose handler raises on a
line quarantines that line as `internal` and reads on."""

import copy
import json

import orjson
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from lumen import storage
from lumen.consumer import Consumer, Pos
from lumen.events import Validator
from lumen.stats import SafetyStats, UreStats
from lumen.v2map import safety_to_v2

V2 = Validator.named("resonance_event_v2.json")
SAFETY = Validator.named("safety_music_event_v1.json")
POS = Pos("fp", 0, 1.7e9)

JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**63),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=6),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
BASE_V2 = {
    "ts": "2026-12-03T00:00:00Z",
    "entity_id": "lumen.ure",
    "phase_field": {"phase_diff": 0.1, "residual_entropy": 0.4, "risk_band": "SAFE"},
    "harmony_index": 0.5,
    "coherence_level": 0.5,
    "auto_reg_action": "NONE",
    "trace": {"loop_id": "ure.v18", "iter": 1, "host": "h", "ver": "v1.8"},
}
V2_OPEN = ["loop", "actions", "self_regulation_score", "observed", "rmb", "source", "safety", "x"]
BASE_SAFETY = {
    "ts": "2026-12-03T00:00:00Z",
    "loop": "safety.music.v17",
    "levels": {"residual": "CALM", "rollback_ratio": "TENSE", "final": "TENSE"},
}
SAFETY_OPEN = ["inputs", "changed", "previous", "x"]


def with_extras(base, keys, data):
    ev = copy.deepcopy(base)
    for key in data.draw(st.lists(st.sampled_from(keys), max_size=4, unique=True)):
        ev[key] = data.draw(JSON)
    return ev


def render(*collectors):
    reg = CollectorRegistry(auto_describe=False)

    class C:
        def collect(self):
            for c in collectors:
                yield from c

    reg.register(C())
    return generate_latest(reg)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(st.data())
def test_any_valid_v2_event_is_taken_by_every_v2_stage(data):
    ev = with_extras(BASE_V2, V2_OPEN, data)
    ev["trace"]["loop_id"] = data.draw(st.sampled_from(["ure.v18", "ure.merge", "other"]))
    if data.draw(st.booleans()):
        ev["loop"] = {"hz": data.draw(JSON), "batch_size": data.draw(JSON)}
    assume(V2.is_valid(ev))
    ev = orjson.loads(orjson.dumps(ev))  # as a reader gets it
    stats = UreStats()
    stats.add(ev, POS)
    render(stats.families())  # the scrape renders whatever was stored
    UreStats(json.loads(json.dumps(stats.to_state()))).families()  # and after a restart
    storage.ure_row(ev, POS)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(st.data())
def test_any_valid_safety_event_is_taken_by_every_safety_stage(data):
    ev = with_extras(BASE_SAFETY, SAFETY_OPEN, data)
    if data.draw(st.booleans()):
        ev["inputs"] = data.draw(
            st.dictionaries(st.sampled_from(["residual_entropy", "rollback_ratio", "q"]), JSON)
        )
    assume(SAFETY.is_valid(ev))
    stats = SafetyStats()
    stats.add(ev, POS)
    render(stats.families())
    storage.safety_row(ev, POS)
    v2 = safety_to_v2(ev, "h", {"stream": "safety", "fp": "f", "offset": 0}, 0)
    assert V2.error(v2) is None  # merge would quarantine it otherwise: check it is valid


def test_the_ure_loop_observes_any_valid_v2_event(workdir):
    from lumen import config
    from lumen.ure import UreLoop
    from conftest import ROOT

    loop = UreLoop(config.load(ROOT / "configs/ure_v18.yaml", env={}))

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
    @given(st.data())
    def observe(data):
        ev = with_extras(BASE_V2, V2_OPEN, data)
        ev["trace"]["loop_id"] = "ure.merge"
        assume(V2.is_valid(ev))
        loop._add(orjson.loads(orjson.dumps(ev)), POS)

    observe()
    loop.commit()


def test_a_handler_that_raises_on_a_line_quarantines_it_and_reads_on(workdir):
    log = workdir / "q.jsonl"
    lines = [dict(BASE_V2, entity_id=f"e{i}") for i in range(5)]
    log.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    seen = []

    def handler(ev, pos):
        if ev["entity_id"] == "e2":
            raise KeyError("a field this stage trusted")
        seen.append(ev["entity_id"])

    c = Consumer(log, "t", "resonance_event_v2.json", "resonance_events_v2")
    assert c.poll(handler) == 5
    c.commit()
    c.close()
    assert seen == ["e0", "e1", "e3", "e4"]
    assert c.valid == 4 and dict(c.rejected) == {"internal": 1}
    recs = [json.loads(x) for x in (workdir / "logs/rejects/resonance_events_v2.jsonl").open()]
    assert [r["reason"] for r in recs] == ["internal"]
    assert (
        "KeyError" in recs[0]["detail"]
        and recs[0]["offset"] == len(orjson.dumps(lines[0]) + b"\n") * 2
    )
