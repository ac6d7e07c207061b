"""SLO policies (blueprint section 15) evaluated over time windows of event timestamps.

A policy names a metric whose suffix is its window (`rollback_ratio_10m`,
`residual_entropy_last_stddev_10m`), a threshold the value must not exceed, and the
`action_on_violation`. Verdicts: PASS, FAIL, or NO_DATA when the window holds fewer than
`min_events` events (not enough data is its own verdict, never a PASS).
Pure: events in, verdicts out. Reading the stream is `lumen.recent.recent_events`.
"""

import re
from dataclasses import dataclass

from .events import MAX_FUTURE_S
from .windows import EventWindow

_METRIC = re.compile(
    r"^(rollback_ratio|residual_entropy_last_stddev|residual_stddev)_(\d+)([smh])$"
)
_UNIT = {"s": 1, "m": 60, "h": 3600}


def window_s(metric):
    m = _METRIC.match(metric)
    if not m:
        raise ValueError(f"unknown SLO metric {metric!r}")
    return int(m.group(2)) * _UNIT[m.group(3)]


def measure(metric, win: EventWindow):
    kind = _METRIC.match(metric).group(1)
    return win.ratio() if kind == "rollback_ratio" else win.stddev()


@dataclass
class Verdict:
    id: str
    metric: str
    value: float | None
    threshold: float
    status: str  # PASS | FAIL | NO_DATA
    action: str
    events: int

    def line(self):
        if self.status == "NO_DATA":
            return f"{self.id} {self.metric}: NO DATA ({self.events} events in the window)  NO_DATA"
        op = "<=" if self.status == "PASS" else ">"
        s = f"{self.id} {self.metric} = {self.value:.4f} {op} {self.threshold:g}  {self.status}"
        return s + (f"  action: {self.action}" if self.status == "FAIL" else "")


def windows_for(policies, events, now):
    """One window per distinct window length: the events with now - span <= t <= now +
    MAX_FUTURE_S, fed (t, residual, is_rollback) tuples. Membership depends on `now` only,
    never on which event came first or is newest, so any order of the same events gives
    the same verdicts, from the log (slo.report) or from the store (/api/slo)."""
    wins = {}
    for p in policies:
        span = window_s(p["evaluate"]["metric"])
        # The window is fixed by `now` below; the EventWindow only does the sums.
        wins.setdefault(span, EventWindow(float("inf")))
    for span, w in wins.items():
        hi = now + MAX_FUTURE_S
        for t, residual, rollback in sorted(e for e in events if now - span <= e[0] <= hi):
            w.add(t, residual, rollback)
    return wins


def evaluate(policies, events, now, min_events=2):
    """Verdicts for `policies` over `events` ((t, residual, is_rollback), any order)."""
    wins = windows_for(policies, list(events), now)
    out = []
    for p in policies:
        ev = p["evaluate"]
        w = wins[window_s(ev["metric"])]
        value = measure(ev["metric"], w) if w.count >= max(min_events, 2) else None
        if value is None:
            status = "NO_DATA"
        else:
            status = "PASS" if value <= ev["threshold"] else "FAIL"
        out.append(
            Verdict(
                p["id"],
                ev["metric"],
                value,
                ev["threshold"],
                status,
                ev["action_on_violation"],
                w.count,
            )
        )
    return out


def overall(verdicts):
    if any(v.status == "FAIL" for v in verdicts):
        return "FAIL"
    if any(v.status == "NO_DATA" for v in verdicts):
        return "NO_DATA"
    return "PASS"
