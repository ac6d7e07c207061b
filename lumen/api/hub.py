"""The one poller behind every /api/stream of an API process (lumen/api/stream.py): it
reads the rows stored since its last look, turns them into events once, keeps the recent
ones in memory for all streams, and wakes the streams that have something to send.

Reads the store through the API's read-only pool (lumen/api/readers.py); writes nothing.

- Rows are found by id, the primary key: `WHERE id > ? ORDER BY id LIMIT ?`, an index
  range whatever the table's size. Ids follow commit order (SQLite has one writer;
  PostgreSQL's ingest takes a lock per streamed table until commit, lumen/pgstore.py),
  so having seen id N, no smaller id can appear later.
- Events: `rmb` (each RMB row, the JSON of an /api/rmb item), `level` (a Safety Music row
  whose final level differs from the previous row of the same host: {ts, level,
  previous, host}) and `alert` (each alert row, the JSON of an /api/alerts item). Each
  is rendered once, whatever the number of streams.
- A position is the newest id seen of each table (rmb, safety, alerts); every event
  carries the position just after it. The ring holds the events of every row after
  `floor`, at most RING of them; a stream behind the floor reads its rows from the
  store (`rows_after`), bounded by the stream's replay_max.
- With no stream open nothing is polled; the first stream to open takes the newest ids.
  A backlog over replay_max rows (a bulk backfill) is skipped: the hub moves to the
  newest ids, and the streams behind it are told to reset. A store whose ids went back
  (a file replaced) is taken from its newest ids too.
- SLO verdicts (queries.slo_verdicts) are computed for each host filter in use every
  `slo_every_s`, and a stream is woken when its answer differs from the last one.
"""

import sys
import threading
import time
from typing import NamedTuple

import msgspec

from lumen.api import lists

TABLES = ("rmb", "safety", "alerts")
RING = 4096  # events kept in memory for every stream
TOP = (1 << 63) - 1  # "no upper bound" for an id
ENCODE = msgspec.json.Encoder()
SQL = {
    "rmb": f"SELECT {lists.COLUMNS['rmb']} FROM rmb",
    "safety": "SELECT id, ts, final, host FROM safety",
    "alerts": f"SELECT {lists.COLUMNS['alerts']} FROM alerts",
}
PREVIOUS_LEVEL = "SELECT final FROM safety WHERE host = ? AND id < ? ORDER BY id DESC LIMIT 1"


class Event(NamedTuple):
    table: int  # index in TABLES
    id: int
    host: str
    name: bytes  # b"rmb", b"level", b"alert"
    data: bytes  # JSON, one line
    pos: tuple  # the position just after this event (the hub's, when it came from the ring)


class Full(Exception):
    """max_streams are open."""


def rows_after(db, table, after, upto, n):
    """Up to `n` rows of `table` with after < id <= upto, oldest first."""
    return db.execute(
        f"{SQL[table]} WHERE id > ? AND id <= ? ORDER BY id LIMIT ?", (after, upto, n)
    ).fetchall()


def count_after(db, table, after, upto, n):
    """How many rows after < id <= upto, counting to `n` at most."""
    q = f"SELECT COUNT(*) FROM (SELECT 1 FROM {table} WHERE id > ? AND id <= ? LIMIT ?) AS x"
    return db.execute(q, (after, upto, n)).fetchone()[0]


def newest_ids(db):
    return tuple(db.execute(f"SELECT MAX(id) FROM {t}").fetchone()[0] or 0 for t in TABLES)


def events_of(db, ti, rows, prev):
    """[(id, host, name, data)] of rows of TABLES[ti], read by rows_after. `prev`: the last
    final level of each host seen so far (looked up in the store for a host not in it)."""
    if ti == 0:
        return [(r[-1], r[6], b"rmb", ENCODE.encode(lists.item("rmb", r[:-2]))) for r in rows]
    if ti == 2:
        return [(r[-1], r[-3], b"alert", ENCODE.encode(lists.item("alerts", r[:-2]))) for r in rows]
    out = []
    for rid, ts, final, host in rows:
        if host not in prev:
            row = db.execute(PREVIOUS_LEVEL, (host, rid)).fetchone()
            prev[host] = row[0] if row else None
        before, prev[host] = prev[host], final
        if final != before:
            data = {"ts": ts, "level": final, "previous": before, "host": host}
            out.append((rid, host, b"level", ENCODE.encode(data)))
    return out


def later(a, b):
    """The position of both: each table's larger id."""
    return tuple(map(max, a, b))


class Hub:
    """`reader`: the API's pool.reader; `errors`: its ERRORS; `slo(db, host)`: the
    /api/slo answer for a host (None: all hosts); `limits`: the api.stream settings."""

    def __init__(self, reader, errors, slo, limits):
        self.reader, self.errors, self.slo_of, self.limits = reader, errors, slo, limits
        self.lock = threading.Lock()  # the state below
        self.polling = threading.Lock()  # one reader of the store at a time (tick, start)
        self.streams = set()
        self.active = False  # polling: some stream is open
        self.pos = self.floor = (0, 0, 0)
        self.ring = []  # Events after `floor`, oldest first
        self.seq0 = 0  # the sequence number of ring[0]
        self.epoch = 0  # bumped when the ring starts again (a jump, a replaced store)
        self.prev = {}  # host -> last final level
        self.slo = {}  # host filter -> [computed at (monotonic), JSON bytes]
        self.failures = 0
        self.polls = 0

    # ------------------------------------------------------------ streams
    def subscribe(self, stream):
        """Count `stream` in (Full at max_streams); the first one starts the polling."""
        with self.lock:
            if len(self.streams) >= self.limits["max_streams"]:
                raise Full()
            self.streams.add(stream)
        try:
            with self.polling:
                if not self.active:
                    with self.reader() as db:
                        self._restart(newest_ids(db))
                    self.active = True
                changed = self._slo(stream.host)
        except BaseException:
            self.unsubscribe(stream)
            raise
        if changed:
            self._wake(lambda s: s.host == stream.host and s is not stream)

    def unsubscribe(self, stream):
        with self.lock:
            self.streams.discard(stream)

    def open_count(self):
        with self.lock:
            return len(self.streams)

    def state(self):
        """(the next sequence number, position, floor, epoch)."""
        with self.lock:
            return self.seq0 + len(self.ring), self.pos, self.floor, self.epoch

    def since(self, seq):
        """(events after sequence number `seq`, the next seq, position, floor, epoch)."""
        with self.lock:
            start = max(0, seq - self.seq0)
            return self.ring[start:], self.seq0 + len(self.ring), self.pos, self.floor, self.epoch

    def slo_now(self, host):
        """The JSON of the newest SLO answer for this host filter."""
        with self.lock:
            return self.slo[host][1]

    # ------------------------------------------------------------ the poller
    def run(self, stop):
        """Poll every poll_s until `stop` is set (lumen.proc.run_server's worker)."""
        while not stop.wait(self.limits["poll_s"]):
            self.tick()

    def tick(self, now=None):
        """One look at the store: new rows, SLO verdicts due, streams due; then wakes."""
        now = time.monotonic() if now is None else now
        try:
            with self.polling:
                with self.lock:
                    streams = list(self.streams)
                if not streams:
                    self.active = False
                    return
                hosts, changed = self._poll(), set()
                for host in {s.host for s in streams}:
                    if self._slo(host, now=now):
                        changed.add(host)
            self.failures = 0
        except self.errors as e:  # the store away: streams keep their heartbeat, retry later
            self.failures += 1
            if self.failures in (1, 10) or self.failures % 100 == 0:
                print(
                    f"[stream] store unavailable ({self.failures}x): {e}",
                    file=sys.stderr,
                    flush=True,
                )
            hosts, changed = set(), set()
        self._wake(
            lambda s: (
                (hosts and (s.host is None or s.host in hosts))
                or s.host in changed
                or s.due <= now
                or s.epoch != self.epoch
            )
        )

    def _wake(self, cond):
        with self.lock:
            streams = list(self.streams)
        for s in streams:
            if cond(s):
                s.wake()

    def _poll(self):
        """Read what is new into the ring; returns the hosts of the new events."""
        self.polls += 1
        replay_max = self.limits["replay_max"]
        with self.reader() as db:
            if self.polls % 10 == 0:  # now and then: did the store's ids go back?
                top = newest_ids(db)
                if any(t < p for t, p in zip(top, self.pos)):
                    self._restart(top)
                    return set()
            new, pos = [], list(self.pos)
            for ti, table in enumerate(TABLES):
                rows = rows_after(db, table, pos[ti], TOP, RING)
                if (
                    len(rows) == RING
                    and count_after(db, table, pos[ti], TOP, replay_max + 1) > replay_max
                ):
                    self._restart(newest_ids(db))  # a backlog: skip it, streams reset
                    return set()
                for rid, host, name, data in events_of(db, ti, rows, self.prev):
                    pos[ti] = rid
                    new.append(Event(ti, rid, host, name, data, tuple(pos)))
                if rows:
                    pos[ti] = rows[-1][0] if ti == 1 else rows[-1][-1]
        with self.lock:
            self.ring += new
            self.pos = tuple(pos)
            over = len(self.ring) - RING
            if over > 0:
                self.floor = self.ring[over - 1].pos
                del self.ring[:over]
                self.seq0 += over
        return {e.host for e in new}

    def _restart(self, top):
        """Start the ring again at the position `top` (under self.polling)."""
        with self.lock:
            self.seq0 += len(self.ring)
            self.ring = []
            self.pos = self.floor = top
            self.prev = {}
            self.epoch += 1

    def _slo(self, host, now=None):
        """Compute the SLO answer for `host` if due (or missing; under self.polling); True
        when it differs from the last one. An equal answer keeps its bytes object, so a
        stream tells a new answer from the one it sent by identity."""
        now = time.monotonic() if now is None else now
        have = self.slo.get(host)
        if have is not None and now - have[0] < self.limits["slo_every_s"]:
            return False
        with self.reader() as db:
            body = ENCODE.encode(self.slo_of(db, host))
        with self.lock:
            if have is not None and have[1] == body:
                have[0] = now
                return False
            self.slo[host] = [now, body]
            for h in set(self.slo) - {s.host for s in self.streams} - {host}:
                del self.slo[h]  # a filter no stream uses any more
        return have is not None
