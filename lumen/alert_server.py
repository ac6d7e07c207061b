"""The alert receiver's server: Alertmanager's webhook in, logs/alerts.jsonl and OSC out.

`Receiver(cfg)` holds the state of tools/alert_receiver.py (which serves it with
lumen.proc.run_server):
- `post(path, query, body)`: a POST to `receiver.path` is one notification. A body that is
  not one (lumen.alerts.parse_payload) is 400 with the project's JSON error, counted by
  reason; a valid one becomes its events (lumen.alerts.to_events), stamped with the receive
  time. Events already written (same (fingerprint, status, starts_at), lumen.alerts.Seen)
  are counted as duplicates and skipped; the new ones are appended to the log in one locked
  write and fsynced (lumen.jsonl.append_lines) before the 200, so Alertmanager's retry is
  the only redelivery. A write that fails is 503 (Alertmanager retries), with what landed
  kept as written; nothing is buffered here, the retry carries it.
- each new line also goes out as an OSC message when `osc.enabled`: `address_firing` or
  `address_resolved` with [alertname, severity, summary] (strings, cut to OSC_MAX_CHARS).
  A failed send is counted and said once on stderr (once again when sending works again);
  it never fails the request.
- `app(method, path, query)`: GET `/` a landing text, `/healthz`, `/metrics` (its own
  registry: lumen.exporters.registry); `on_error(status)`: the HTTP layer's own error
  answers (413, 408, ...), counted as bad requests.

It reads nothing but the log's tail on start (lumen.alerts.Seen.rebuild); it does not store
alerts in the database or push them to the page (the API reads the log).
"""

import sys
import threading
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest

from . import alerts, jsonl, lock, timefmt, vocab
from .exporters import registry, version
from .httpserve import JSON_TYPE, METRICS_CONTENT_TYPE
from .proc import first_line, warn_retry

OSC_MAX_CHARS = 1000  # each string argument: a message stays far below a UDP datagram
TEXT = "text/plain; charset=utf-8"
# The HTTP layer's own error answers, as bad-request reasons.
HTTP_REASONS = {
    413: "oversize",
    408: "timeout",
    **dict.fromkeys((400, 411, 414, 431), "framing"),
}
ALERT_ARGS = ("alertname", "severity", "summary")  # the OSC message's arguments


def _json(status, obj):
    return status, [("Content-Type", JSON_TYPE)], jsonl.dumps(obj)


def _error(status, message):
    return _json(status, {"ok": False, "error": message, "status": status})


class OscOut:
    """OSC over UDP (python-osc): one message per new alert line; never raises."""

    def __init__(self, host, port, address_firing, address_resolved):
        from pythonosc.udp_client import SimpleUDPClient

        self.client = SimpleUDPClient(host, port)
        self.where = f"{host}:{port}"
        self.address = {vocab.FIRING: address_firing, vocab.RESOLVED: address_resolved}
        self.sent = self.errors = 0
        self._failing = False

    def send(self, event):
        args = [event[k].replace("\0", "")[:OSC_MAX_CHARS] for k in ALERT_ARGS]
        try:
            self.client.send_message(self.address[event["status"]], args)
        except Exception as e:  # noqa: BLE001 - OSC is a side channel: count, say once, go on
            self.errors += 1
            if not self._failing:
                self._failing = True
                print(
                    f"[alerts] warning: OSC to {self.where} failed: {first_line(e)} "
                    "(counted in alert_receiver_osc_errors_total; said once)",
                    file=sys.stderr,
                    flush=True,
                )
            return
        self.sent += 1
        if self._failing:
            self._failing = False
            print(f"[alerts] OSC to {self.where} works again", file=sys.stderr, flush=True)


class Receiver:
    """One per log (a second process on the same log is lock.Busy: their dedupe would
    disagree); `rebuilt` is (lines read back, bad lines skipped) from the log's tail."""

    def __init__(self, cfg, name="alert_receiver"):
        self.name, self.path, self.log = name, cfg["receiver"]["path"], cfg["log"]
        log = Path(self.log)
        lock.hold(log.parent / ".offsets" / f"{log.name}.writer.lock", f"a receiver of {log}")
        self.seen = alerts.Seen(cfg["dedupe"]["max_keys"])
        self.rebuilt = self.seen.rebuild(self.log)  # (lines read, bad lines skipped)
        o = cfg["osc"]
        self.osc = None
        if o["enabled"]:
            self.osc = OscOut(o["host"], o["port"], o["address_firing"], o["address_resolved"])
        self.lock = threading.Lock()  # a notification's dedupe, write and counters
        self._bad_lock = threading.Lock()  # never held long: the selector thread counts too
        self.payloads = self.duplicates = self.write_errors = 0
        self.lines = dict.fromkeys(vocab.ALERT_STATUSES, 0)
        self.bad = dict.fromkeys(alerts.BAD_REASONS, 0)
        self.registry = registry(self)
        self.landing = (
            f"Lumen {version()} alert receiver ({name}): POST Alertmanager's webhook to "
            f"{self.path}; alerts are logged to {self.log}. Metrics: /metrics; health: "
            "/healthz.\n"
        ).encode()

    # ---------------------------------------------------------------- HTTP
    def _count_bad(self, reason):
        with self._bad_lock:
            self.bad[reason] += 1

    def on_error(self, status):
        reason = HTTP_REASONS.get(status)
        if reason:
            self._count_bad(reason)

    def app(self, method, path, query):
        if path == "/metrics":
            return 200, [("Content-Type", METRICS_CONTENT_TYPE)], generate_latest(self.registry)
        if path == "/healthz":
            return _json(200, {"ok": True})
        if path == "/":
            return 200, [("Content-Type", TEXT)], self.landing
        if path == self.path:
            self._count_bad("method")
            st, hd, body = _error(405, f"method not allowed: POST Alertmanager's webhook to {path}")
            return st, hd + [("Allow", "POST")], body
        self._count_bad("path")
        return _error(404, f"no such path; Alertmanager's webhook goes to POST {self.path}")

    def post(self, path, query, body):
        if path != self.path:
            self._count_bad("path")
            return _error(404, f"no such path; Alertmanager's webhook goes to POST {self.path}")
        payload, err = alerts.parse_payload(body)
        if err:
            self._count_bad(err[0])
            return _error(400, err[1])
        with self.lock:
            self.payloads += 1
            return self._take(alerts.to_events(payload, timefmt.now()))

    def _take(self, evs):
        """Write the events not seen yet (under the lock); the answer."""
        new, keys = [], set()
        for ev in evs:
            k = alerts.key(ev)
            if self.seen.hit(k) or k in keys:
                self.duplicates += 1
                continue
            keys.add(k)
            new.append(ev)
        try:
            if new:
                Path(self.log).parent.mkdir(parents=True, exist_ok=True)  # as JsonlWriter does
            jsonl.append_lines(self.log, [jsonl.dumps(ev) for ev in new], fsync=True)
        except OSError as e:
            self.write_errors += 1
            self._written(new[: getattr(e, "lines", 0)])  # PartialWrite: these landed
            warn_retry("[alerts]", self.write_errors, f"cannot write {self.log}: {first_line(e)}")
            return _error(503, f"cannot write {self.log} now ({first_line(e)}); retry")
        self._written(new)
        return _json(200, {"ok": True, "written": len(new), "duplicates": len(evs) - len(new)})

    def _written(self, evs):
        for ev in evs:
            self.seen.add(alerts.key(ev))
            self.lines[ev["status"]] += 1
            if self.osc is not None:
                self.osc.send(ev)

    # ---------------------------------------------------------------- metrics
    def collect(self):
        with self._bad_lock:
            bad = dict(self.bad)
        with self.lock:
            lines = dict(self.lines)
            plain = (
                ("payloads", "Valid Alertmanager notifications received.", self.payloads),
                ("duplicates", "Alerts skipped: their line was written already.", self.duplicates),
                ("write_errors", "Notifications answered 503: the log could not be written.",
                 self.write_errors),
                ("osc_messages", "OSC messages sent.", self.osc.sent if self.osc else 0),
                ("osc_errors", "OSC messages that could not be sent.",
                 self.osc.errors if self.osc else 0),
            )  # fmt: skip
            keys = len(self.seen)
        for name, text, value in plain:
            yield CounterMetricFamily(f"alert_receiver_{name}_total", text, value)
        c = CounterMetricFamily(
            "alert_receiver_lines", f"Lines written to {self.log}, by status.", labels=["status"]
        )
        for status, n in lines.items():
            c.add_metric([status], n)
        yield c
        c = CounterMetricFamily(
            "alert_receiver_bad_requests", "Requests refused, by reason.", labels=["reason"]
        )
        for reason, n in bad.items():
            c.add_metric([reason], n)
        yield c
        yield GaugeMetricFamily(
            "alert_receiver_dedupe_keys", "(fingerprint, status, startsAt) keys remembered.", keys
        )
