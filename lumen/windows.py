"""Time windows measured on event timestamps, not line counts.

- `EventWindow(span_s)`: per-event values in the last `span_s` seconds of event time:
  count, rollbacks, rollback ratio, mean and population stddev, in O(1) per event.
- `BucketWindow(span_s)`: event and rollback counts in one-second buckets of event time,
  small enough to save in a checkpoint (at most span_s buckets) so a restart keeps it.
- `CounterWindow(span_s)`: samples of cumulative counters; the ratio over the window is
  delta(rollbacks) / delta(events), what Prometheus' `increase()` gives, never a sum of
  cumulative totals.
A window with no data answers None ("undefined"), never 0.
"""

import math
from collections import deque


class EventWindow:
    def __init__(self, span_s):
        self.span_s = float(span_s)
        self._buf = deque()  # (t, value, is_rollback)
        # Sums of (value - shift), shift being the first value seen: keeps the variance
        # free of cancellation when values are close together (the usual case).
        self._shift = None
        self._sum = self._sumsq = 0.0
        self._rollbacks = 0
        self.newest = None

    def add(self, t, value, rollback=False):
        if self.newest is None or t > self.newest:
            self.newest = t
        if self._shift is None:
            self._shift = value
        self._buf.append((t, value, rollback))
        d = value - self._shift
        self._sum += d
        self._sumsq += d * d
        self._rollbacks += bool(rollback)
        self.expire(self.newest)

    def expire(self, now):
        """Drop events older than `now - span_s` (now: newest event time, or a clock)."""
        cut = now - self.span_s
        buf = self._buf
        while buf and buf[0][0] < cut:
            _, v, rb = buf.popleft()
            d = v - self._shift
            self._sum -= d
            self._sumsq -= d * d
            self._rollbacks -= bool(rb)
        if not buf:
            self._sum = self._sumsq = 0.0

    @property
    def count(self):
        return len(self._buf)

    @property
    def rollbacks(self):
        return self._rollbacks

    def ratio(self):
        return self._rollbacks / len(self._buf) if self._buf else None

    def mean(self):
        return self._shift + self._sum / len(self._buf) if self._buf else None

    def stddev(self):
        n = len(self._buf)
        if n < 2:
            return None
        var = self._sumsq / n - (self._sum / n) ** 2
        return math.sqrt(var) if var > 0 else 0.0


class CounterWindow:
    def __init__(self, span_s):
        self.span_s = float(span_s)
        self._samples = deque()  # (t, events_total, rollbacks_total)

    def add(self, t, events_total, rollbacks_total):
        self._samples.append((t, events_total, rollbacks_total))
        self.expire(t)

    def expire(self, now):
        """Drop samples older than the window; keep one at or before its start, so the
        delta spans the whole window. Called without a new sample, the window still ages."""
        cut = now - self.span_s
        while len(self._samples) > 1 and self._samples[1][0] <= cut:
            self._samples.popleft()

    def deltas(self):
        if len(self._samples) < 2:
            return None
        t0, e0, r0 = self._samples[0]
        t1, e1, r1 = self._samples[-1]
        if e1 < e0 or r1 < r0:  # counter reset: count from zero, as increase() does
            e0 = r0 = 0
        return e1 - e0, r1 - r0

    def ratio(self):
        d = self.deltas()
        if d is None or d[0] <= 0:
            return None
        return d[1] / d[0]


class BucketWindow:
    """Counts (and optionally value sums) in one-second buckets of event time.

    Each bucket holds [events, rollbacks, values, sum, sumsq]; sums are of (value - 0.5),
    values being in [0, 1], which keeps the variance free of cancellation. The state is
    at most span_s small lists, so it goes into a checkpoint whole."""

    SHIFT = 0.5

    def __init__(self, span_s, buckets=None):
        self.span_s = float(span_s)
        self._b = {}
        for k, v in (buckets or {}).items():
            v = list(v) + [0, 0.0, 0.0][: max(0, 5 - len(v))]
            self._b[int(k)] = v

    def add(self, t, rollback=False, value=None):
        b = self._b.get(int(t))
        if b is None:
            b = self._b[int(t)] = [0, 0, 0, 0.0, 0.0]
        b[0] += 1
        b[1] += bool(rollback)
        if value is not None:
            d = value - self.SHIFT
            b[2] += 1
            b[3] += d
            b[4] += d * d

    def expire(self, now):
        cut = now - self.span_s
        # A new dict rather than deletions: a dict keeps its largest size, and after a
        # catch-up through millions of seconds every later pass would walk that table.
        if any(k + 1 <= cut for k in self._b):
            self._b = {k: v for k, v in self._b.items() if k + 1 > cut}

    def counts(self):
        ev = rb = 0
        for b in self._b.values():
            ev += b[0]
            rb += b[1]
        return ev, rb

    def ratio(self):
        ev, rb = self.counts()
        return rb / ev if ev else None

    def _moments(self):
        n = s = ss = 0.0
        for b in self._b.values():
            n += b[2]
            s += b[3]
            ss += b[4]
        return n, s, ss

    def mean(self):
        n, s, _ = self._moments()
        return self.SHIFT + s / n if n else None

    def stddev(self):
        n, s, ss = self._moments()
        if n < 2:
            return None
        var = ss / n - (s / n) ** 2
        return math.sqrt(var) if var > 0 else 0.0

    def to_state(self):
        return {str(k): v for k, v in self._b.items()}
