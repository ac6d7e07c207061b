"""GET /api/stream: server-sent events (text/event-stream) of what the store receives, for
the live page. Reads the store (through lumen/api/hub.py and the API's read-only pool);
writes nothing. It holds no thread while it waits: it yields lumen.httpserve.Wait, and
the hub wakes it.

Events, each with `id:` (the position just after it: one opaque cursor over the RMB,
Safety Music and alert rows) and `data:` one line of JSON:

    hello   on connect: {now, cursor, host, resumed, retry_ms, heartbeat_s, max_duration_s}
            (with `retry:`, the client's reconnect delay)
    rmb     a new RMB row, as an item of /api/rmb
    level   the final Safety Music level of a host changed: {ts, level, previous, host}
    alert   a stored alert, as an item of /api/alerts (its row id included)
    slo     the SLO verdicts, as /api/slo: on connect, and when the answer changes
    reset   {reason, cursor}: rows were missed beyond what a reconnect replays (or the
            store went back); reload the lists, the stream goes on from `cursor`

A reconnect with the `Last-Event-ID` header (EventSource sends it; `?last_event_id=` for
clients that cannot set it; the header wins) gets every row after that cursor, each
once: from the hub's memory, or read from the store when it is older, at most
`replay_max` rows, else `reset`. A comment (`: ping`) is sent after `heartbeat_s` of
silence, with the cursor as `id:` when rows were passed silently (another host's rows,
unchanged levels), so a reconnect does not replay them. `host=ID`: only that host's rows.

Bounds: at most `max_streams` open (more: 503 with Retry-After); each ends cleanly after
`max_duration_s` (the client reconnects with its Last-Event-ID); a client that does not
take a piece within the request deadline is cut by lumen.httpserve, freeing its slot.
"""

import re
import threading
import time

from lumen import timefmt
from lumen.api import hub as hubs
from lumen.api.queries import BadRequest, check_known, parse_entity, single
from lumen.httpserve import Wait

DEFAULTS = {
    "max_streams": 64,
    "max_duration_s": 300,
    "heartbeat_s": 15,
    "retry_ms": 3000,
    "replay_max": 5000,
    "poll_s": 0.5,
    "slo_every_s": 5,
}
HEADERS = [
    ("Content-Type", "text/event-stream; charset=utf-8"),
    ("Cache-Control", "no-cache"),
    ("X-Accel-Buffering", "no"),  # a proxy (nginx) passes each event on at once
]
CURSOR = re.compile(r"^(\d{1,18})\.(\d{1,18})\.(\d{1,18})$")
REPLAY_BATCH = 500  # rows read from the store at a time by a replay


def limits(api_cfg):
    """The api.stream settings of a config, defaults filled in."""
    return {**DEFAULTS, **(api_cfg.get("stream") or {})}


def encode_cursor(pos):
    return "%d.%d.%d" % pos


def parse_cursor(v, name):
    m = CURSOR.match(v)
    if not m:
        raise BadRequest(f"{name} must be an id this stream sent (N.N.N)")
    return tuple(int(x) for x in m.groups())


class Busy(Exception):
    """max_streams are open: a 503, with Retry-After (`retry_after`, seconds)."""

    def __init__(self, limits):
        self.retry_after = max(1, -(-limits["retry_ms"] // 1000))
        super().__init__(
            f"too many open streams ({limits['max_streams']}); retry in {self.retry_after} s, "
            "or poll the list endpoints"
        )


def open_stream(hub, query, headers, limits):
    """(status, headers, body) of GET /api/stream, the body a Stream. Bad parameters raise
    BadRequest; max_streams open, Busy."""
    check_known(query, {"host", "last_event_id"})
    host = parse_entity(single(query, "host"), "host")
    given, name = (headers.get("Last-Event-ID") if headers else None), "Last-Event-ID"
    if not given:
        given, name = single(query, "last_event_id"), "last_event_id"
    cursor = parse_cursor(given, name) if given else None
    stream = Stream(hub, host, limits)
    try:
        hub.subscribe(stream)
    except hubs.Full:
        raise Busy(limits) from None
    try:
        stream.start(cursor)
    except BaseException:
        stream.close()
        raise
    return 200, HEADERS, stream


class Stream:
    """One client's events: an iterator of bytes (and Waits) for lumen.httpserve."""

    def __init__(self, hub, host, limits):
        self.hub, self.host, self.limits = hub, host, limits
        now = time.monotonic()
        self.end = now + limits["max_duration_s"]
        self.last = now  # the last bytes sent
        self.due = self.end  # when the hub must wake it even if nothing happens
        self.cursor = self.sent_id = None
        self.seq = self.epoch = 0
        self.prev = {}  # a replay's last level of each host
        self.replaying, self.replayed = False, 0  # reading from the store, behind the hub
        self.started = self.closed = False
        self.resumed = False
        self.reset = None  # why a reset event is due
        self.slo_sent = None
        self._lock = threading.Lock()
        self._waker, self._dirty = None, False

    # ------------------------------------------------------------ set-up
    def start(self, cursor):
        """Where the stream begins: after `cursor` (a reconnect, replaying at most
        replay_max rows, else a reset), else at the newest rows."""
        seq, pos, _, self.epoch = self.hub.state()
        self.cursor, self.seq = pos, seq
        if cursor is None:
            return
        with self.hub.reader() as db:
            top = hubs.newest_ids(db)
            if any(c > t for c, t in zip(cursor, top)):
                return self._reset("the cursor is ahead of the store (a replaced database?)", top)
            budget = limit = self.limits["replay_max"]
            for table, c, t in zip(hubs.TABLES, cursor, top):
                if c < t:
                    budget -= hubs.count_after(db, table, c, t, budget + 1)
                    if budget < 0:
                        return self._reset(f"more than {limit} rows missed", top)
        self.cursor, self.seq, self.resumed, self.replaying = cursor, 0, True, True

    def _reset(self, reason, top=None):
        """Go on from the newest rows (`top`, else the hub's position); say so first."""
        seq, pos, _, self.epoch = self.hub.state()
        self.cursor, self.seq, self.reset, self.prev = top or pos, seq, reason, {}
        if top is not None and any(t < p for t, p in zip(top, pos)):
            self.cursor = hubs.later(top, pos)

    # ------------------------------------------------------------ the iterator
    def __iter__(self):
        return self

    def __next__(self):
        if self.closed:
            raise StopIteration
        now, out = time.monotonic(), []
        if not self.started:
            self.started = True
            out.append(self._hello())
        elif now >= self.end:  # the end: the client reconnects with its Last-Event-ID
            self.close()
            raise StopIteration
        else:
            out += self._events()
        if self.reset is not None:
            data = hubs.ENCODE.encode({"reason": self.reset, "cursor": encode_cursor(self.cursor)})
            out.append(self._frame(b"reset", data))
            self.reset = None
        slo = self.hub.slo_now(self.host)
        if slo is not self.slo_sent:
            out.append(self._frame(b"slo", slo))
            self.slo_sent = slo
        if not out and now - self.last >= self.limits["heartbeat_s"]:
            out.append(b": ping\n" + self._id() + b"\n")
        if out:
            self.last = now
        self.due = min(self.last + self.limits["heartbeat_s"], self.end)
        return b"".join(out) if out else Wait(self.arm)

    def _hello(self):
        hello = {
            "now": timefmt.format(time.time()),
            "cursor": encode_cursor(self.cursor),
            "host": self.host,
            "resumed": self.resumed,
            "retry_ms": self.limits["retry_ms"],
            "heartbeat_s": self.limits["heartbeat_s"],
            "max_duration_s": self.limits["max_duration_s"],
        }
        retry = b"retry: %d\n" % self.limits["retry_ms"]
        return retry + self._frame(b"hello", hubs.ENCODE.encode(hello))

    def _id(self):
        """The id line, when the cursor moved since the last one sent."""
        if self.cursor == self.sent_id:
            return b""
        self.sent_id = self.cursor
        return b"id: %s\n" % encode_cursor(self.cursor).encode()

    def _frame(self, name, data):
        self.sent_id = None  # an event always says its id
        return b"event: %s\n%sdata: %s\n\n" % (name, self._id(), data)

    def _events(self):
        """The frames of what is new: from the hub's ring, or from the store while the
        stream is behind it (batch after batch until one has frames for this stream)."""
        while True:
            events, seq, pos, floor, epoch = self.hub.since(self.seq)
            if epoch != self.epoch:
                self.epoch = epoch
                if any(c > p for c, p in zip(self.cursor, pos)):
                    self._reset("the store's ids went back (a replaced database?)")
                    return []
            behind = [i for i in range(len(hubs.TABLES)) if self.cursor[i] < floor[i]]
            if not behind:
                self.replaying = False
                break
            if not self.replaying and not self._may_replay(floor):
                self._reset(f"more than {self.limits['replay_max']} rows missed")
                return []
            out = self._replay(behind[0], floor[behind[0]])
            if out or self.reset is not None:
                return out
        out, host = [], self.host
        for e in events:
            if e.id <= self.cursor[e.table]:
                continue
            self.cursor = hubs.later(self.cursor, e.pos)
            if host is None or e.host == host:
                out.append(self._frame(e.name, e.data))
        self.seq, self.cursor = seq, hubs.later(self.cursor, pos)  # rows passed silently too
        return out

    def _may_replay(self, floor):
        """Fell behind the hub's memory (a slow reader, a skipped backlog): whether what
        lies between the cursor and the floor is within replay_max rows."""
        budget = self.limits["replay_max"]
        with self.hub.reader() as db:
            for table, c, f in zip(hubs.TABLES, self.cursor, floor):
                if c < f:
                    budget -= hubs.count_after(db, table, c, f, budget + 1)
                    if budget < 0:
                        return False
        self.replaying, self.replayed = True, 0
        return True

    def _replay(self, ti, upto):
        """One batch of table TABLES[ti]'s rows after the cursor, up to `upto`, from the store."""
        with self.hub.reader() as db:
            rows = hubs.rows_after(db, hubs.TABLES[ti], self.cursor[ti], upto, REPLAY_BATCH)
            events = hubs.events_of(db, ti, rows, self.prev)
        out, cur = [], list(self.cursor)
        for rid, host, name, data in events:
            cur[ti] = rid
            if self.host is None or host == self.host:
                self.cursor = tuple(cur)
                out.append(self._frame(name, data))
        cur[ti] = (rows[-1][0] if ti == 1 else rows[-1][-1]) if len(rows) == REPLAY_BATCH else upto
        self.cursor = tuple(cur)
        self.replayed += len(rows)
        if self.replayed > self.limits["replay_max"] + hubs.RING:  # the floor runs away
            self._reset(f"more than {self.limits['replay_max']} rows missed")
        return out

    # ------------------------------------------------------------ waking, closing
    def arm(self, wake):
        """lumen.httpserve's wake function for this connection (see Wait)."""
        with self._lock:
            self._waker, dirty, self._dirty = wake, self._dirty, False
        if dirty:
            wake()

    def wake(self):
        """Have the next piece made (the hub calls this from its thread)."""
        with self._lock:
            waker = self._waker
            if waker is None:
                self._dirty = True
        if waker is not None:
            waker()

    def close(self):
        if not self.closed:
            self.closed = True
            self.hub.unsubscribe(self)
