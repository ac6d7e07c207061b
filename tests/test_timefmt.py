"""lumen.timefmt.parse's fast path (the minute looked up, only seconds, fraction and zone
read) gives exactly what the full parser gives: the same float, or None, for generated
timestamps and for hostile text that shares a cached minute."""

import math

from hypothesis import given, settings, strategies as st

from lumen import timefmt

MINUTES = ["2026-12-03T22:29", "2016-12-31T23:59", "0000-01-01T00:00", "9999-12-31t23:59"]
SECONDS = st.one_of(
    st.integers(0, 99).map(lambda s: f"{s:02d}"),
    st.sampled_from(["60", "6", "5x", "٣٣", "+1", " 1", ""]),
)
FRACTIONS = st.one_of(
    st.just(""),
    st.text("0123456789", min_size=0, max_size=12).map(lambda d: "." + d),
    st.sampled_from([".", ".٣", ".12a", ". 1", ".1e3", ".１２", ".١٢٣٤٥٦", ".12345６", ".1234 5"]),
)
ZONES = st.one_of(
    st.sampled_from(["Z", "z", "+00:00", "-00:00", "+05:30", "-12:00", "+23:59"]),
    st.tuples(st.sampled_from("+-"), st.integers(0, 99), st.integers(0, 99)).map(
        lambda z: f"{z[0]}{z[1]:02d}:{z[2]:02d}"
    ),
    st.sampled_from(["", "+0000", "+00", "UTC", " Z", "Z ", "+00:00\n", "Zz", "+٠٠:٠٠"]),
)


def same(a, b):
    return (a is None and b is None) or (
        a is not None and b is not None and (a == b or (math.isnan(a) and math.isnan(b)))
    )


def check(ts):
    want = timefmt._parse(ts) if isinstance(ts, str) else None
    first = timefmt.parse(ts)  # may fill the minute cache
    again = timefmt.parse(ts)  # may take the fast path
    assert same(first, want) and same(again, want), (ts, first, again, want)
    if want is not None:
        assert type(first) is float and type(again) is float


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(MINUTES), SECONDS, FRACTIONS, ZONES)
def test_fast_path_agrees_with_the_full_parser(minute, sec, frac, zone):
    for m in MINUTES:  # every minute cached, so the fast path is the one tried
        timefmt.parse(m + ":00Z")
    check(f"{minute}:{sec}{frac}{zone}")


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=40))
def test_any_text_agrees(text):
    timefmt.parse("2026-12-03T22:29:00Z")
    check(text)
    check("2026-12-03T22:29" + text)


@settings(max_examples=500, deadline=None)
@given(st.datetimes(timezones=st.timezones()))
def test_generated_datetimes_agree(dt):
    check(dt.isoformat())
    check(dt.isoformat().replace("+00:00", "Z"))


def test_known_values():
    assert timefmt.parse("1970-01-01T00:00:00Z") == 0.0
    assert timefmt.parse("1970-01-01T00:01:00.25+00:01") == 0.25
    # the same minute again: the fast path
    assert timefmt.parse("1970-01-01T00:01:30.5-00:30") == 60 + 30.5 + 1800
    assert timefmt.parse("2016-12-31T23:59:60Z") == timefmt.parse("2017-01-01T00:00:00Z")
    assert timefmt.parse("2025-01-01T24:00:00Z") is None
    assert timefmt.parse("2025-01-01T23:59:59.1234567891Z") is None  # 10 digits
    assert timefmt.parse("2025-01-01T23:59:59.123456789Z") == timefmt.parse(
        "2025-01-01T23:59:59.123456Z"
    )
    assert timefmt.parse(None) is None and timefmt.parse(5) is None


def test_the_cache_is_bounded():
    for i in range(timefmt._MINUTES_MAX + 10):
        d, m = divmod(i, 1440)
        timefmt.parse(f"2030-01-{1 + d % 28:02d}T{m // 60:02d}:{m % 60:02d}:00Z")
    assert len(timefmt._MINUTES) <= timefmt._MINUTES_MAX
