"""Ticks at a rate, without bursts: the loops' one timing mechanism (Safety Music, URE).

`Ticker(period_s).wait(stop)` sleeps on `stop` (a threading.Event) until the next tick is
due: one period after the previous one was due, so the rate holds however long a tick
takes; or at once when that moment has passed (a busy machine, a suspended process), so a
late tick is not made up by firing the missed ones back to back. The period may change at
each wait (the URE loop adapts its rate). The clock is a parameter, so tests run it fake.
"""

import time


class Ticker:
    def __init__(self, period_s, clock=time.monotonic):
        self.period_s, self.clock = period_s, clock
        self.due = clock()  # the tick about to run

    def wait(self, stop, period_s=None):
        """Sleep until the next tick is due; False when `stop` was set meanwhile."""
        if period_s is not None:
            self.period_s = period_s
        now = self.clock()
        self.due = max(self.due + self.period_s, now)
        return not stop.wait(self.due - now)
