"""Alertmanager's webhook payload -> alert events (logs/alerts.jsonl), and their deduplication.

Pure logic of the alert receiver (lumen/alert_server.py serves it, tools/alert_receiver.py
runs it); it reads no socket and writes no file, except `Seen.rebuild`, which reads the
tail of the log it is given.

- `parse_payload(body)`: the bytes of a POST -> (payload, None), or (None, (reason,
  message)) with a reason of `BAD_REASONS`; never raises. A payload is Alertmanager's
  webhook JSON, version 4 (schemas/alertmanager_webhook_v4.json): `version`, `groupKey`,
  `status`, `receiver`, `alerts` [{status, labels, annotations, startsAt, endsAt,
  generatorURL, fingerprint}], and the group's labels and annotations. A body nested
  deeper than MAX_DEPTH (Alertmanager's is 4 deep) is a `json` reject before anything
  walks it.
- `to_events(payload, ts)`: one event per alert (schemas/alert_event_v1.json, the contract
  of logs/alerts.jsonl): {ts, status, alertname, severity, summary, fingerprint, starts_at,
  ends_at, labels, receiver, group_key}. `alertname` and `severity` are those labels,
  `summary` that annotation ("" when absent); `ends_at` is the endsAt of a resolved alert,
  null while it fires (Alertmanager's endsAt of a firing alert is only a timeout).
- `key(event)`: (fingerprint, status, starts_at). Alertmanager re-sends an alert every
  repeat_interval and with every change of its group; one key is one line: one `firing`
  line per firing episode (startsAt), one `resolved` line when it resolves.
- `Seen`: the keys written, bounded (the least recently seen go first), rebuilt on start
  from the newest lines of the log (and of `<log>.1` after a rotation), so a restart does
  not log again what Alertmanager re-sends.

What it does not do: store alerts in the database or push them to the live page (the API
does that from the log), or decide what an alert sounds like (the page and OSC receivers).
"""

from collections import OrderedDict

import orjson

from . import events, recent, timefmt, vocab

WEBHOOK_SCHEMA = "alertmanager_webhook_v4.json"
EVENT_SCHEMA = "alert_event_v1.json"
WEBHOOK_VERSION = "4"
# Why a request was not a notification (the `reason` label of the bad-requests counter):
# the body's (as lumen.events names a bad line), then the HTTP layer's.
BAD_REASONS = (
    "oversize",  # over max_body_bytes (413)
    "utf8",  # not UTF-8
    "json",  # not JSON, or nested deeper than the parser allows
    "not_object",  # JSON, but not an object
    "version",  # an object whose `version` is not "4"
    "schema",  # not the webhook's shape (schemas/alertmanager_webhook_v4.json)
    "framing",  # a broken request: bad Content-Length, chunked body, head too large
    "timeout",  # not complete within request_timeout_s (a client that trickles)
    "method",  # not a POST to the webhook's path, nor a GET of a page (405)
    "path",  # no such path (404)
)
MAX_MESSAGE = 300  # a reject's message is cut here: it may quote the offending value
# Alertmanager's payload is 4 levels deep (root, alerts, an alert, its labels); a body
# nested deeper than this is refused before anything walks it.
MAX_DEPTH = 32


def _cut(text):
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _depth_over(obj, limit):
    """Whether `obj` (parsed JSON) nests containers more than `limit` deep; no recursion."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if type(node) is dict else node
        stack.extend((c, depth + 1) for c in children if type(c) in (dict, list))
    return False


def parse_payload(body):
    """(payload, None) or (None, (reason, message)); never raises."""
    try:
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            try:
                bytes(body).decode("utf-8")
            except UnicodeDecodeError as u:
                return None, ("utf8", f"body is not UTF-8 (byte {u.start})")
            return None, ("json", _cut(f"body is not JSON: {e}"))
        if type(obj) is not dict:
            return None, ("not_object", f"expected a JSON object, got {type(obj).__name__}")
        if _depth_over(obj, MAX_DEPTH):
            return None, ("json", f"body is nested deeper than {MAX_DEPTH} levels")
        if obj.get("version") != WEBHOOK_VERSION:
            got = _cut(orjson.dumps(obj.get("version")).decode())
            return None, ("version", f'webhook version {got}: this receiver reads version "4"')
        err = events.Validator.named(WEBHOOK_SCHEMA).error(obj)
        if err:
            return None, ("schema", _cut(f"not an Alertmanager webhook payload: {err}"))
        return obj, None
    except RecursionError:  # deep nesting that slipped past the parser's own limit
        return None, ("json", "body is nested too deeply")


def _ends_at(alert):
    ends = alert.get("endsAt")
    if alert["status"] != vocab.RESOLVED or not ends or (timefmt.parse(ends) or 0) <= 0:
        return None  # firing, or Go's zero time (0001-01-01T00:00:00Z): no end
    return ends


def to_events(payload, ts):
    """The events of a valid payload (parse_payload's), stamped `ts` (RFC 3339 text)."""
    out = []
    for a in payload["alerts"]:
        labels, notes = a["labels"], a.get("annotations") or {}
        out.append(
            {
                "ts": ts,
                "status": a["status"],
                "alertname": labels.get("alertname", ""),
                "severity": labels.get("severity", ""),
                "summary": notes.get("summary", ""),
                "fingerprint": a["fingerprint"],
                "starts_at": a["startsAt"],
                "ends_at": _ends_at(a),
                "labels": labels,
                "receiver": payload["receiver"],
                "group_key": payload["groupKey"],
            }
        )
    return out


def key(event):
    return (event["fingerprint"], event["status"], event["starts_at"])


class Seen:
    """The keys written, at most `max_keys`; `add` and `hit` make a key the most recent."""

    def __init__(self, max_keys):
        self.max_keys = max_keys
        self._keys = OrderedDict()

    def __len__(self):
        return len(self._keys)

    def __contains__(self, k):
        return k in self._keys

    def hit(self, k):
        """True if `k` was seen (it stays, as the most recent), else False."""
        if k in self._keys:
            self._keys.move_to_end(k)
            return True
        return False

    def add(self, k):
        self._keys[k] = None
        self._keys.move_to_end(k)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)

    def rebuild(self, log, scan_factor=4):
        """Add the keys of the newest valid lines of `log` (then `<log>.1`), at most
        `max_keys` of them, reading at most `scan_factor * max_keys` lines. Returns
        (lines read, bad lines skipped)."""
        validator = events.Validator.named(EVENT_SCHEMA)
        found, lines, bad = [], 0, 0
        wanted = set()
        for raw in recent.newest_first(log, rotated=1):
            if len(wanted) >= self.max_keys or lines >= scan_factor * self.max_keys:
                break
            if not raw.strip():
                continue
            lines += 1
            ev, err = events.parse(raw, validator)
            if err:
                bad += 1
                continue
            k = key(ev)
            if k not in wanted:
                wanted.add(k)
                found.append(k)
        for k in reversed(found):  # oldest first: the newest end up the most recent
            self.add(k)
        return lines, bad
