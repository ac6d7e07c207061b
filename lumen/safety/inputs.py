"""Safety Music inputs: the residual entropy and the windowed rollback ratio, per tick.

Both inputs have the same face: `update(now)` -> (residual, ratio, window_events,
window_rollbacks), `previous` (the final level saved at the last commit), `commit(previous)`,
`close()` and `last_tick_bytes`. `inputs.source` in configs/safety_music_v17.yaml picks one:

- `LogInput` (`log`, the default): the RMB event log through the shared tailer (consumer
  `safety_music`). A tick reads only the bytes appended since the last tick, so its cost
  does not grow with the log. The ratio is rollbacks/events among events whose *timestamps*
  fall in the last `window_s` seconds (one-second buckets, saved in the checkpoint across
  restarts).
- `MetricsInput` (`metrics`): the exporter's /metrics; the ratio is
  delta(rmb_rollback_total) / delta(rmb_events_total) over `window_s` of scrapes, as
  Prometheus' increase() computes.

No event in the window means the ratio is undefined (None), and so is its level.
"""

from lumen import checkpoint, vocab
from lumen.consumer import Consumer
from lumen.windows import BucketWindow, CounterWindow

CONSUMER = "safety_music"


class LogInput:
    """Residual and windowed ratio from the event log, reading only new bytes."""

    def __init__(self, path, window_s, offsets_dir="logs/.offsets", rejects_dir="logs/rejects"):
        self.consumer = Consumer(
            path, CONSUMER, "rmb_event_v1.json", "rmb_events", offsets_dir, rejects_dir
        )
        st = self.consumer.state or {}
        self.window = BucketWindow(window_s, st.get("window"))
        self.residual = st.get("residual")
        self.previous = st.get("previous")
        self.last_tick_bytes = 0

    @property
    def tailer(self):
        return self.consumer.tailer

    def _add(self, ev, pos):
        self.window.add(pos.t, ev["event_type"] == vocab.ROLLBACK)
        self.residual = ev["resonance_v3"]["residual_entropy"]

    def update(self, now, max_polls=64):
        before = self.consumer.bytes_read
        self.consumer.poll(self._add, max_polls, now)  # bounded; a backlog: caught up over ticks
        self.last_tick_bytes = self.consumer.bytes_read - before  # only what was appended
        self.window.expire(now)
        ev_n, rb_n = self.window.counts()
        return self.residual, (rb_n / ev_n if ev_n else None), ev_n, rb_n

    def commit(self, previous):
        self.consumer.commit(
            {"window": self.window.to_state(), "residual": self.residual, "previous": previous}
        )

    def close(self):
        self.consumer.close()


class MetricsInput:
    """Residual and windowed ratio from the exporter's /metrics (counter deltas)."""

    def __init__(self, url, window_s, state_path="logs/.offsets/safety_music_metrics.json"):
        import requests

        self.session = requests.Session()
        self.url = url
        self.window = CounterWindow(window_s)
        self.state_path = state_path
        st = checkpoint.load_json(state_path) or {}
        self.previous = st.get("previous")
        self.residual = None
        self.scrape_errors = 0
        self.last_tick_bytes = 0

    def update(self, now):
        from prometheus_client.parser import text_string_to_metric_families
        import requests

        try:
            text = self.session.get(self.url, timeout=1.0).text
            vals = {}
            for fam in text_string_to_metric_families(text):
                for s in fam.samples:
                    if not s.labels:
                        vals[s.name] = s.value
            self.window.add(now, vals["rmb_events_total"], vals["rmb_rollback_total"])
            self.residual = vals["rmb_residual_entropy_last"] if vals["rmb_events_total"] else None
        except (requests.RequestException, KeyError, ValueError):
            self.scrape_errors += 1  # inputs stay as they were; the ratio window ages
        self.window.expire(now)  # ages even while scrapes fail: a long outage is undefined
        d = self.window.deltas()
        ev_n, rb_n = (int(d[0]), int(d[1])) if d else (0, 0)
        return self.residual, (rb_n / ev_n if ev_n > 0 else None), ev_n, rb_n

    def commit(self, previous):
        try:
            checkpoint.save_json(self.state_path, {"previous": previous})
        except OSError:  # a full disk: the previous level is only for `changed`; next tick
            pass

    def close(self):
        self.session.close()
