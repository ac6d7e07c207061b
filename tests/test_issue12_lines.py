"""Issue 12, line level: what a line is, decided once (lumen.events.Classifier, lumen.timefmt).

- a hostile line is a counted reject, never an exception (point 1);
- one definition of an event: the typed fast path, the untyped path and the JSON Schema
  (the `jsonschema` library with lumen.timefmt as its date-time checker) agree, and
  timefmt agrees with an independent RFC 3339 grammar and with datetime (point 2);
- a rotated file's unterminated last line carries that file's fingerprint (point 4);
- SLO verdicts do not depend on the order of the events (point 5);
- a writer never extends a fragment a dead writer left (point 6).
The process-level halves of these points are in tests/test_issue12_ops.py.
"""

import copy
import json
import math
import os
import random
import re
from datetime import datetime

import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, assume, example, given, settings, strategies as st

from lumen import events, jsonl, slo
from lumen.consumer import Consumer
from conftest import ROOT, fingerprint

SCHEMA = "rmb_event_v1.json"
BASE = json.loads((ROOT / "tests/fixtures/rmb_sample.json").read_text())
NOW_FAR = 1e12  # a reader's clock after every 4-digit year: nothing is ts_future
HYP = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def classifier(typed=False, **kw):
    return events.Classifier(SCHEMA, typed=typed, **kw)


def event_bytes(**changes):
    e = copy.deepcopy(BASE)
    e.update(changes)
    return orjson.dumps(e)


def fp_of_first_line(data):
    return fingerprint(data)


# ------------------------------------------------------------------ 1. totality
HOSTILE = [
    b'{"entity_id":"\xff\xfe"}',  # invalid UTF-8 inside a string
    b'{"x": ' + b"[" * 1000 + b"]" * 1000 + b"}",  # deep, but within orjson's limit
    b"[" * 100_000 + b"]" * 100_000,  # far past any limit
    b'{"x":' * 5000 + b"1" + b"}" * 5000,  # deep objects
    b'{"ts": "\\ud800"}',  # a lone surrogate escape
    b'{"ts": "\xed\xa0\x80"}',  # a surrogate encoded as UTF-8
    b'{"x": NaN}',
    b'{"x": Infinity}',
    b'{"x": -Infinity}',
    b'{"x": 1e999}',
    b'{"trace": {"iter": 1' + b"0" * 5000 + b"}}",  # a huge integer
    b"\x00" * 64,
    b"",
    b" ",
    b"\n",
    b"{",
    b"}",
    b"null",
    b"[]",
    b'"text"',
    b"1",
    BASE["ts"].encode(),
    event_bytes(ts="2025-11-01T00:00:00Z")[:-1],  # a torn event
    event_bytes(ts="2025-11-01T00:00:00Z").replace(b'"x"', b'"\xc3\x28"'),
    b"\xef\xbb\xbf" + event_bytes(ts="2025-11-01T00:00:00Z"),  # a BOM
]


def nested(depth, kind):
    open_, close = {"list": (b"[", b"]"), "obj": (b'{"a":', b"}")}[kind]
    return open_ * depth + b"0" + close * depth


GARBAGE = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(HOSTILE),
    st.builds(nested, st.integers(1, 3000), st.sampled_from(["list", "obj"])),
    st.builds(
        lambda d, k: b'{"ts": "2025-11-01T00:00:00Z", "x": ' + nested(d, k) + b"}",
        st.integers(1, 3000),
        st.sampled_from(["list", "obj"]),
    ),
    st.builds(
        lambda n: b'{"trace": {"iter": ' + n.encode() + b"}}",
        st.from_regex(r"-?[0-9]{1,400}(\.[0-9]{1,50})?([eE][+-]?[0-9]{1,5})?", fullmatch=True),
    ),
    st.builds(
        lambda w: event_bytes().replace(b'"observe"', w),
        st.sampled_from(
            [
                b"NaN",
                b"Infinity",
                b"-Infinity",
                b"1e400",
                b'"\\ud800"',
                b'"\\udfff\\ud800"',
                b'"\xff"',
                b'"\xed\xb0\x80"',
            ]
        ),
    ),
    # a valid event with random bytes spliced in somewhere
    st.builds(
        lambda pos, junk: (lambda b: b[: pos % (len(b) + 1)] + junk + b[pos % (len(b) + 1) :])(
            event_bytes()
        ),
        st.integers(0, 10_000),
        st.binary(min_size=1, max_size=8),
    ),
)


def _check_shape(out):
    assert isinstance(out, tuple) and len(out) == 3, out
    ev, t, err = out
    if err is None:
        assert ev is not None and isinstance(t, float) and math.isfinite(t)
    else:
        assert ev is None and t is None
        reason, detail = err
        assert reason in events.REASONS and isinstance(detail, str)


@settings(HYP, max_examples=400)
@given(GARBAGE)
@example(HOSTILE[0])
@example(HOSTILE[1])
@example(HOSTILE[2])
def test_classify_never_raises_on_garbage(raw):
    validator = events.Validator.named(SCHEMA)
    ev, err = events.parse(raw, validator)  # the one-off form: total too
    assert (ev is None) != (err is None)
    if err:
        assert err[0] in events.REASONS
    for now in (None, 0.0, NOW_FAR):
        for typed in (False, True):
            _check_shape(classifier(typed).classify(raw, now))


def test_hostile_lines_are_rejects_and_the_next_line_counts(workdir):
    """Through a consumer: each hostile line is one reject, the good line after them is valid."""
    log = workdir / "q.jsonl"
    good = event_bytes(ts="2025-11-01T00:00:00Z")
    lines = [x for x in HOSTILE if x.strip() and b"\n" not in x]
    log.write_bytes(b"".join(x + b"\n" for x in lines) + good + b"\n")
    for typed in (False, True):
        c = Consumer(
            log, f"c{typed}", SCHEMA, "rmb_events", workdir / "off", workdir / "rej", typed=typed
        )
        seen = []
        while c.poll(lambda ev, pos: seen.append(ev)):  # noqa: B023 (called inside poll)
            pass
        c.commit()
        c.close()
        assert len(seen) == 1 and c.valid == 1
        assert sum(c.rejected.values()) == len(lines), dict(c.rejected)


def test_a_failing_validator_becomes_reason_internal(workdir, monkeypatch):
    def boom(obj):
        raise RuntimeError("validator exploded")

    c = classifier(fast=False)  # the schema path alone
    monkeypatch.setattr(c.validator, "is_valid", boom)
    ev, t, err = c.classify(event_bytes(), NOW_FAR)
    assert ev is None and t is None and err[0] == "internal" and "validator exploded" in err[1]
    # A consumer meeting it counts it, quarantines it and carries on (lines with a property
    # the fast path's types do not declare are judged on the schema path).
    log = workdir / "q.jsonl"
    log.write_bytes(event_bytes(extra=1) + b"\n" + event_bytes(extra=2) + b"\n")
    cons = Consumer(log, "boom", SCHEMA, "rmb_events", workdir / "off", workdir / "rej")
    monkeypatch.setattr(cons.classifier.validator, "is_valid", boom)
    assert cons.poll(lambda ev, pos: None) == 2
    cons.commit()
    cons.close()
    assert cons.valid == 0 and dict(cons.rejected) == {"internal": 2}
    recs = [json.loads(x) for x in (workdir / "rej/rmb_events.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in recs] == ["internal", "internal"]
    # The typed fast path has its own decoder: whatever it raises, the slow path gives the
    # one verdict (here: a valid event, as the untyped classifier says).
    monkeypatch.undo()
    typed = classifier(typed=True)

    def decoder_boom(raw):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(typed, "_fast", decoder_boom)
    ev, t, err = typed.classify(event_bytes(), NOW_FAR)
    assert err is None and ev is not None and ev.trace.loop_id
    assert t == classifier().classify(event_bytes(), NOW_FAR)[1]


# The typed fast path and the untyped one agree on hostile lines too (msgspec refusing
# bad UTF-8 or depth hands the line to the one slow-path verdict).
@pytest.mark.parametrize(
    "raw",
    [
        b'{"entity_id":"\xff\xfe"}',
        b'{"ts": "\xed\xa0\x80"}',
        b'{"x": ' + b"[" * 1024 + b"]" * 1024 + b"}",
        b'{"x":' * 2000 + b"1" + b"}" * 2000,
    ],
    ids=["utf8-in-string", "utf8-surrogate", "deep-1024-in-object", "deep-objects"],
)
def test_typed_and_untyped_agree_on_hostile_lines(raw):
    assert classifier(typed=True).classify(raw, NOW_FAR) == classifier().classify(raw, NOW_FAR)


@pytest.mark.parametrize("depth", [255, 1000])
def test_deep_but_parseable_json_is_a_line_reason_not_internal(depth):
    raw = b'{"x": ' + b"[" * depth + b"]" * depth + b"}"
    for typed in (False, True):
        assert classifier(typed).classify(raw, NOW_FAR)[2][0] in ("json", "schema")


# ------------------------------------------------------- 2. one definition of ts
_GRAMMAR = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


def rfc3339_reference(s):
    """RFC 3339 section 5.6 date-time, written from the RFC (not from lumen.timefmt):
    leap second 60 allowed, T/Z in either case, a zone required; fraction digits capped at
    9 (what lumen documents; more is not a time any clock writes)."""
    m = _GRAMMAR.fullmatch(s)
    if not m:
        return False
    y, mo, d, h, mi, sec = (int(m.group(i)) for i in range(1, 7))
    if m.group(7) and len(m.group(7)) > 10:
        return False
    leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    mdays = [31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    if not (1 <= mo <= 12 and 1 <= d <= mdays[mo - 1] and h <= 23 and mi <= 59 and sec <= 60):
        return False
    if m.group(9) and (int(m.group(10)) > 23 or int(m.group(11)) > 59):
        return False
    return True


@st.composite
def valid_ts(draw, leap_ok=True, min_year=0):
    y = draw(st.integers(min_year, 9999))
    mo = draw(st.integers(1, 12))
    leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    mdays = [31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    d = draw(st.integers(1, mdays[mo - 1]))
    h, mi = draw(st.integers(0, 23)), draw(st.integers(0, 59))
    sec = draw(st.integers(0, 60 if leap_ok else 59))
    frac = draw(st.one_of(st.just(""), st.from_regex(r"\.[0-9]{1,9}", fullmatch=True)))
    zone = draw(
        st.one_of(
            st.sampled_from(["Z", "z", "+00:00", "-00:00"]),
            st.builds(
                lambda sign, oh, om: f"{sign}{oh:02d}:{om:02d}",
                st.sampled_from("+-"),
                st.integers(0, 23),
                st.integers(0, 59),
            ),
        )
    )
    t = draw(st.sampled_from("Tt"))
    return f"{y:04d}-{mo:02d}-{d:02d}{t}{h:02d}:{mi:02d}:{sec:02d}{frac}{zone}"


NEAR_MISSES = [
    (r"[Tt]", " "),
    (r"[Tt]", ""),
    (r"(Z|z|[+-]\d\d:\d\d)$", ""),
    (r":(\d\d)$", r"\1"),
    (r"^\d{4}", "10000"),
    (r"^\d{4}", "99"),
    (r"-\d\d-", "-13-"),
    (r"-\d\d-", "-00-"),
    (r"-(\d\d)[Tt]", "-32T"),
    (r"-(\d\d)[Tt]", "-00T"),
    (r"^\d{4}-\d\d-\d\d", "2023-02-29"),
    (r"^\d{4}-\d\d-\d\d", "2024-02-30"),
    (r"^\d{4}-\d\d-\d\d", "1900-02-29"),
    (r"[Tt]\d\d", "T24"),
    (r"[Tt](\d\d):\d\d", r"T\1:60"),
    (r"[Tt](\d\d:\d\d):\d\d", r"T\1:61"),
    (r"(Z|z)$", "+24:00"),
    (r"(Z|z)$", "+01:60"),
    (r"(Z|z)$", "+0100"),
    (r"(Z|z)$", "+01"),
    (r"(Z|z)$", "UTC"),
    (r"(Z|z)$", "Z "),
    (r"$", "\n"),
    (r"^", " "),
    (r"(Z|z)$", "ZZ"),
    (r":(\d\d)(Z|z|[+-])", r":\1.\2"),
    (r":(\d\d)(Z|z|[+-])", r":\1,5\2"),
    (r":(\d\d)(Z|z|[+-])", r":\1.1234567890\2"),
    (r"^2", "\u0662"),
    (r"-", "/"),
    (r"[Tt]", "\u0054\u0301"),
    (r"(Z|z)$", "+00:00:00"),
    (r"(Z|z)$", "-0"),
]


@st.composite
def near_miss(draw):
    s = draw(valid_ts())
    pat, rep = draw(st.sampled_from(NEAR_MISSES))
    return re.sub(pat, rep, s, count=1)


TS = st.one_of(
    valid_ts(),
    near_miss(),
    st.text(max_size=30),
    st.from_regex(
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}"
        r"(\.[0-9]{0,10})?([Zz]|[+-][0-9]{2}:?[0-9]{2})?",
        fullmatch=True,
    ),
    st.sampled_from(
        [
            "2016-12-31T23:59:60Z",
            "2025-11-01t00:00:00z",
            "2025-11-01 00:00:00Z",
            "2025-11-01T00:00:00",
            "2025-11-01",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:60Z",
            "2025-11-01T00:00:00.123456789+09:00",
        ]
    ),
)


@settings(HYP, max_examples=800)
@given(TS)
@example("2016-12-31T23:59:60Z")
@example("2025-11-01t00:00:00z")
@example("2025-11-01 00:00:00Z")
def test_timefmt_is_rfc3339_and_nothing_else(s):
    from lumen import timefmt

    ok = rfc3339_reference(s)
    assert timefmt.is_datetime(s) is ok, s
    t = timefmt.parse(s)
    assert (t is not None) is ok, (s, t)
    if ok:
        assert type(t) is float and math.isfinite(t)


def _parse_ts(ts):
    """lumen.timefmt.seconds (the raising form): None for ValueError."""
    from lumen.timefmt import seconds

    try:
        return seconds(ts)
    except ValueError:
        return None


def offset_minutes_over_59(s):
    m = _GRAMMAR.fullmatch(s)
    return bool(m and m.group(9) and int(m.group(11)) > 59)


@pytest.mark.parametrize("zone", ["+00:60", "-00:60", "+00:99", "+01:75"])
def test_offset_minutes_over_59_are_not_a_time(zone):
    from lumen import timefmt

    s = "2025-11-01T00:00:00" + zone
    assert not rfc3339_reference(s)
    assert timefmt.parse(s) is None and not timefmt.is_datetime(s)


def test_timefmt_edge_forms():
    for p in (_parse_ts, "timefmt"):  # the name the stages used, and the one parser now
        if p == "timefmt":
            from lumen import timefmt

            p = timefmt.parse
        assert p("2016-12-31T23:59:60Z") == p("2017-01-01T00:00:00Z") > p("2016-12-31T23:59:59Z")
        assert p("2025-11-01t00:00:00z") == p("2025-11-01T00:00:00Z") == 1761955200.0
        assert p("2025-11-01T09:00:00+09:00") == p("2025-11-01T00:00:00Z")
        for bad in (
            "2025-11-01 00:00:00Z",
            "2025-11-01T00:00:00",
            "2025-02-29T00:00:00Z",
            "2025-11-01T24:00:00Z",
            "2025-11-01T00:00:61Z",
            "",
        ):
            assert p(bad) is None, (p, bad)
    for bad in (None, 1761955200, b"x"):
        assert timefmt.parse(bad) is None and timefmt.is_datetime(bad) is True


@settings(HYP, max_examples=500)
@given(valid_ts(leap_ok=False, min_year=1))
def test_timefmt_parse_equals_fromisoformat(s):
    norm = s.upper()
    if norm.endswith("Z"):
        norm = norm[:-1] + "+00:00"
    m = re.search(r"\.(\d+)", norm)
    if m and len(m.group(1)) > 6:  # datetime keeps microseconds: compare within them
        ref = datetime.fromisoformat(norm.replace(m.group(0), "." + m.group(1)[:6]))
        exact = False
    else:
        ref = datetime.fromisoformat(norm)
        exact = True
    try:
        want = ref.timestamp()
    except (OverflowError, ValueError):  # an offset pushing year 1 / 9999 out of range
        assume(False)

    def check(got):
        assert got is not None, s
        if exact:
            assert got == want, (s, got, want)
        else:
            assert abs(got - want) <= max(1e-6, 4 * math.ulp(want)), (s, got, want)

    check(_parse_ts(s))  # the name every stage called before issue 12, now delegating
    from lumen import timefmt

    check(timefmt.parse(s))


def test_the_case_of_t_and_z_never_changes_the_value():
    from lumen import timefmt

    s = "2025-11-01T00:00:00.9999999Z"
    assert timefmt.parse(s) == timefmt.parse(s[:-1] + "z") == timefmt.parse(s.lower())


@settings(HYP, max_examples=500)
@given(valid_ts())
def test_the_case_of_t_and_z_never_changes_the_value_to_microseconds(s):
    a, b, c = _parse_ts(s.upper()), _parse_ts(s.lower()), _parse_ts(s)
    assert None not in (a, b, c), s
    if re.search(r"\.\d{7}", s):
        assert abs(a - b) <= max(1e-6, 4 * math.ulp(a)) and abs(a - c) <= max(1e-6, 4 * math.ulp(a))
    else:
        assert a == b == c, s


def _oracle():
    """The contract as the `jsonschema` library reads it, date-time being lumen.timefmt."""
    from lumen import timefmt

    fc = jsonschema.FormatChecker(formats=())
    fc.checks("date-time")(timefmt.is_datetime)
    return jsonschema.Draft7Validator(events.load_schema(SCHEMA), format_checker=fc)


ORACLE = None


@settings(HYP, max_examples=800)
@given(TS)
@example("2016-12-31T23:59:60Z")
@example("2025-11-01t00:00:00z")
@example("2025-11-01 00:00:00Z")
@example("2025-11-01T00:00:00")
def test_typed_fast_path_never_accepts_what_the_schema_rejects(s):
    global ORACLE
    ORACLE = ORACLE or _oracle()
    evt = copy.deepcopy(BASE)
    evt["ts"] = s
    raw = orjson.dumps(evt)
    fast = classifier(typed=True).classify(raw, NOW_FAR)
    slow = classifier().classify(raw, NOW_FAR)
    schema_ok = ORACLE.is_valid(evt)
    if not schema_ok:
        assert fast[2] is not None, (s, "typed path accepted a schema-invalid event")
    assert (fast[2] is None) is schema_ok is (slow[2] is None), s
    # The same classification either way: verdict, reason, detail, and the time.
    assert (fast[1], fast[2]) == (slow[1], slow[2]), s
    if schema_ok:
        assert fast[0].ts == slow[0]["ts"] == s


@pytest.mark.parametrize(
    "ts,ok",
    [
        ("2016-12-31T23:59:60Z", True),
        ("2025-11-01t00:00:00z", True),
        ("2025-11-01 00:00:00Z", False),
    ],
)
def test_edge_timestamps_one_verdict(ts, ok):
    raw = event_bytes(ts=ts)
    verdicts = {
        (typed, c.classify(raw, NOW_FAR)[2] is None)
        for typed in (False, True)
        for c in [classifier(typed)]
    }
    assert verdicts == {(False, ok), (True, ok)}
    assert _oracle().is_valid(json.loads(raw)) is ok
    if not ok:
        for typed in (False, True):
            assert classifier(typed).classify(raw, NOW_FAR)[2][0] == "schema"


def test_ts_future_is_relative_to_the_readers_clock():
    raw = event_bytes(ts="2099-01-01T00:00:00Z")
    t99 = 4070908800.0
    for typed in (False, True):
        c = classifier(typed)
        assert c.classify(raw, t99 - 301)[2][0] == "ts_future"
        assert c.classify(raw, t99 - 300)[2] is None
        assert classifier(typed, clock=lambda: t99 - 1000).classify(raw)[2][0] == "ts_future"
    ev, err = events.parse(raw, events.Validator.named(SCHEMA), now=t99 - 301)
    assert ev is None and err[0] == "ts_future"


# ------------------------------------------------------------ 4. positions
def test_rotated_fragment_carries_the_rotated_files_fp(workdir):
    from lumen.tail import Tailer

    logs = workdir / "logs"
    logs.mkdir()
    good = event_bytes(ts="2025-11-01T00:00:00Z")
    rotated = good + b"\n" + good + b"\n" + good[:40]  # a writer died mid-line
    (logs / "q.jsonl.1").write_bytes(rotated)
    (logs / "q.jsonl").write_bytes(b"")  # the live file: empty
    t = Tailer(logs / "q.jsonl", "t", workdir / "off")
    got = []
    for _ in range(20):
        b = t.poll()
        if b:
            got.append((b.fp, list(b)))
    t.close()
    lines = [(fp, off, raw) for fp, batch in got for off, raw in batch]
    fp1 = fp_of_first_line(rotated)
    assert [(fp, off) for fp, off, _ in lines] == [
        (fp1, 0),
        (fp1, len(good) + 1),
        (fp1, 2 * len(good) + 2),
    ]
    assert lines[-1][2] == good[:40]
    # A rotated file that is nothing but a fragment: known by its partial content.
    (logs / "r.jsonl.1").write_bytes(good[:50])
    (logs / "r.jsonl").write_bytes(b"")
    c = Consumer(logs / "r.jsonl", "r", SCHEMA, "rmb_events", workdir / "off", workdir / "rej")
    seen = []
    for _ in range(20):
        c.poll(lambda ev, pos: seen.append(pos))
    c.commit()
    c.close()
    assert seen == [] and dict(c.rejected) == {"json": 1}
    rec = json.loads((workdir / "rej/rmb_events.jsonl").read_text())
    assert rec["source"] == fp_of_first_line(good[:50]) and rec["offset"] == 0
    assert rec["line"] == good[:50].decode()


def test_positions_name_their_own_file_across_rotation(workdir):
    log = workdir / "q.jsonl"
    a, b = event_bytes(entity_id="a"), event_bytes(entity_id="b")
    log.write_bytes(a + b"\n" + a + b"\n")
    os.rename(log, f"{log}.1")
    log.write_bytes(b + b"\n")
    c = Consumer(log, "p", SCHEMA, "rmb_events", workdir / "off", workdir / "rej")
    pos = []
    for _ in range(10):
        c.poll(lambda ev, p: pos.append((ev["entity_id"], p.fp, p.offset)))
    c.close()
    f1, f2 = fp_of_first_line(a + b"\n"), fp_of_first_line(b + b"\n")
    assert pos == [("a", f1, 0), ("a", f1, len(a) + 1), ("b", f2, 0)]


# ------------------------------------------------------ 5. order independence
POLICIES = [
    {
        "id": "ROLL",
        "evaluate": {
            "metric": "rollback_ratio_10m",
            "threshold": 0.05,
            "action_on_violation": "downgrade",
        },
    },
    {
        "id": "RES",
        "evaluate": {
            "metric": "residual_entropy_last_stddev_10m",
            "threshold": 0.03,
            "action_on_violation": "reduce",
        },
    },
    {
        "id": "ROLL5",
        "evaluate": {
            "metric": "rollback_ratio_5m",
            "threshold": 0.1,
            "action_on_violation": "downgrade",
        },
    },
]
NOW = 1_800_000_000.0


@settings(HYP, max_examples=300)
@given(
    st.lists(
        st.tuples(
            st.floats(NOW - 900, NOW + 600, allow_nan=False),
            st.floats(0, 1, allow_nan=False),
            st.booleans(),
        ),
        min_size=0,
        max_size=60,
    ),
    st.randoms(use_true_random=False),
)
@example(
    [(NOW - 100, 0.3, False), (NOW + 200, 0.9, True), (NOW - 550, 0.31, False)], random.Random(1)
)
def test_slo_verdicts_do_not_depend_on_event_order(evts, rnd):
    want = slo.evaluate(POLICIES, evts, NOW)
    for _ in range(3):
        shuffled = list(evts)
        rnd.shuffle(shuffled)
        assert slo.evaluate(POLICIES, shuffled, NOW) == want
    assert slo.evaluate(POLICIES, sorted(evts, reverse=True), NOW) == want
    # Membership is [now - span, now + 300]: beyond that an event never counts.
    assert slo.evaluate(POLICIES, evts + [(NOW + 301, 1.0, True)] * 5, NOW) == want


# ------------------------------------------- 6. writers end a dead writer's fragment
def test_append_after_a_fragment_starts_a_new_line(workdir):
    log = workdir / "q.jsonl"
    good = event_bytes(ts="2025-11-01T00:00:00Z")
    log.write_bytes(good + b"\n" + good[:33])  # a writer died mid-line
    jsonl.append_lines(log, [good + b"\n", good + b"\n"])
    c = Consumer(log, "w", SCHEMA, "rmb_events", workdir / "off", workdir / "rej")
    seen = []
    while c.poll(lambda ev, pos: seen.append(ev)):
        pass
    c.commit()
    c.close()
    assert (c.valid, dict(c.rejected)) == (3, {"json": 1})
    assert log.read_bytes() == good + b"\n" + good[:33] + b"\n" + good + b"\n" + good + b"\n"
    rec = json.loads((workdir / "rej/rmb_events.jsonl").read_text())
    assert rec["line"] == good[:33].decode()
    # A file that ends properly gets no extra newline; an empty file neither.
    jsonl.append_lines(log, [good + b"\n"])
    assert log.read_bytes().endswith(good + b"\n" + good + b"\n" + good + b"\n")
    assert b"\n\n" not in log.read_bytes()
    fresh = workdir / "fresh.jsonl"
    jsonl.append_lines(fresh, [good + b"\n"])
    assert fresh.read_bytes() == good + b"\n"
