"""Time windows on event timestamps: ratios, stddev, expiry, undefined when empty."""

import statistics

import pytest

from lumen.timefmt import seconds as parse_ts
from lumen.windows import CounterWindow, EventWindow


def test_parse_ts_forms():
    assert parse_ts("1970-01-01T00:01:00Z") == 60.0
    assert parse_ts("1970-01-01T01:00:00+01:00") == 0.0
    assert parse_ts("1970-01-01t00:00:30z") == 30.0
    assert parse_ts("2016-12-31T23:59:60Z") == parse_ts("2017-01-01T00:00:00Z")
    for bad in ("1970-01-01T00:00:30", "1970-01-01 00:00:30Z", "2023-02-29T00:00:00Z"):
        with pytest.raises(ValueError):  # no zone, no T, no such day: not RFC 3339
            parse_ts(bad)


def test_event_window_ratio_and_expiry():
    w = EventWindow(600)
    assert w.ratio() is None and w.stddev() is None
    for i in range(100):
        w.add(1000 + i, 0.4, rollback=(i < 5))
    assert w.ratio() == pytest.approx(0.05)
    # 700 s later the old burst is out of the window; only the new events count.
    for i in range(10):
        w.add(1800 + i, 0.5, rollback=False)
    assert w.count == 10 and w.ratio() == 0.0


def test_event_window_stddev_matches_statistics():
    import random

    rng = random.Random(3)
    vals = [rng.gauss(0.4, 0.02) for _ in range(500)]
    w = EventWindow(1e9)
    for i, v in enumerate(vals):
        w.add(i, v)
    assert w.stddev() == pytest.approx(statistics.pstdev(vals), rel=1e-6)
    assert w.mean() == pytest.approx(statistics.mean(vals))


def test_counter_window_uses_deltas_not_sums():
    w = CounterWindow(300)
    # cumulative totals: 10 000 events, 1 000 rollbacks before the window ...
    w.add(0, 10_000, 1_000)
    w.add(100, 10_000, 1_000)
    # ... then 1 000 events with 20 rollbacks inside the window
    w.add(400, 11_000, 1_020)
    assert w.ratio() == pytest.approx(20 / 1000)
    assert w.deltas() == (1000, 20)


def test_counter_window_empty_and_reset():
    w = CounterWindow(300)
    assert w.ratio() is None
    w.add(0, 50, 5)
    assert w.ratio() is None
    w.add(10, 50, 5)
    assert w.ratio() is None  # no events in the window: undefined, not 0
    w.add(20, 10, 1)  # counter reset (exporter restarted without history)
    assert w.ratio() == pytest.approx(0.1)
