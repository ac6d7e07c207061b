"""The list endpoints, /api/rmb, /api/ure and /api/alerts: their parameters, and the keyset SQL that
reads them, as one JSON page (`list_rows`) or as batches for a streamed answer (`Rows`).
Pure over read-only connections (lumen.api.readers): the same SQL on SQLite and PostgreSQL.

Rows are newest first, (t, id) descending; a position is a row's (t, id), given out as an
opaque cursor (`next_cursor`), and the next page or batch starts after it with a row-value
comparison, which both stores answer with a search of the (t, id) index: a page costs the
same wherever it starts.
"""

import re

import msgspec

from lumen import storage, vocab
from lumen.api.queries import (
    BadRequest,
    check_known,
    host_filter,
    parse_entity,
    parse_enum,
    parse_limit,
    parse_time,
    single,
    where_sql,
)

LIST_PARAMS = {
    "rmb": {"limit", "since", "until", "entity", "risk", "cursor", "host"},
    "ure": {"limit", "since", "until", "entity", "action", "cursor", "host"},
    "alerts": {"limit", "since", "until", "status", "cursor", "host"},
}
# Each list's enum filter: parameter (a column) and its values.
ENUMS = {
    "rmb": ("risk", vocab.RISK_BANDS),
    "ure": ("action", vocab.ACTIONS),
    "alerts": ("status", vocab.ALERT_STATUSES),
}

CURSOR = re.compile(r"^(-?\d{1,12}(?:\.\d{1,9})?)_(\d{1,18})$")


def encode_cursor(t, rowid):
    """The position of a row: its time and id, e.g. 1795513944.885805_2342."""
    return f"{t!r}_{rowid}"  # repr round-trips the float exactly


def parse_cursor(v):
    if v is None:
        return None
    m = CURSOR.match(v)
    if not m:
        raise BadRequest("cursor must be a next_cursor this API returned (TIME_ID)")
    return float(m.group(1)), int(m.group(2))


COLUMNS = {
    "rmb": "ts, entity_id, residual, phase, risk, event_type, host, t, id",
    "ure": "ts, entity_id, residual, harmony, coherence, action, host, t, id",
}
# An item's keys: the columns above but the last two (t and id, the row's position).
KEYS = {
    "rmb": ("ts", "entity_id", "residual", "phase", "risk", "event_type", "host"),
    "ure": ("ts", "entity_id", "residual", "harmony", "coherence", "action", "host"),
    # the stored alert's columns, without its time and source; with its id and host
    "alerts": ("id",)
    + tuple(c for c in storage.COLUMNS["alerts"] if c not in ("t",) + storage.KEY)
    + ("host",),
}
COLUMNS["alerts"] = ", ".join(KEYS["alerts"]) + ", t, id"
# Columns stored as JSON text: objects in JSON and NDJSON, their JSON text in CSV.
NESTED = {"alerts": ("labels",)}
_decode = msgspec.json.decode


def item(table, row):
    """The JSON item of a row of COLUMNS[table]."""
    out = dict(zip(KEYS[table], row))
    for k in NESTED.get(table, ()):
        out[k] = _decode(out[k])
    return out


class ListQuery:
    """A list request's filters, validated: SQL conditions and their arguments, the page
    size and the position to start after (a cursor, or None for the newest row)."""

    __slots__ = ("table", "where", "args", "limit", "cursor")

    def __init__(self, table, query, default_limit, max_limit):
        check_known(query, LIST_PARAMS[table])
        self.table = table
        self.limit = parse_limit(single(query, "limit"), default_limit, max_limit)
        since = parse_time("since", single(query, "since"))
        until = parse_time("until", single(query, "until"))
        entity = parse_entity(single(query, "entity"))
        self.cursor = parse_cursor(single(query, "cursor"))
        self.where, self.args = where, args = [], []
        host_filter(query, where, args)
        if since is not None:
            where.append("t >= ?")
            args.append(since)
        if until is not None:
            where.append("t <= ?")
            args.append(until)
        if entity is not None:
            where.append("entity_id = ?")
            args.append(entity)
        name, allowed = ENUMS[table]
        value = parse_enum(name, single(query, name), allowed)
        if value:
            where.append(f"{name} = ?")
            args.append(value)

    def page(self, after, n):
        """(sql, args) of the next `n` rows, newest first, after position `after` (or from
        the newest row when None)."""
        where, args = list(self.where), list(self.args)
        if after is not None:
            # A row value, not `t < ? OR (t = ? AND id < ?)`: both stores then search the
            # (t, id) index from the position; with the OR, SQLite walks the index from the
            # newest row (measured at 1 M rows, a page 900 000 rows deep: 158 ms, now 1.6).
            where.append("(t, id) < (?, ?)")
            args += [after[0], after[1]]
        sql = f"SELECT {COLUMNS[self.table]} FROM {self.table}{where_sql(where)} "
        return sql + "ORDER BY t DESC, id DESC LIMIT ?", args + [n]

    def items(self, rows):
        return [item(self.table, r[:-2]) for r in rows]


def list_rows(db, table, query, default_limit, max_limit):
    lq = ListQuery(table, query, default_limit, max_limit)
    rows = db.execute(*lq.page(lq.cursor, lq.limit + 1)).fetchall()
    more = len(rows) > lq.limit
    rows = rows[: lq.limit]
    items = lq.items(rows)
    nxt = encode_cursor(rows[-1][-2], rows[-1][-1]) if more and rows else None
    return {"ok": True, "count": len(items), "items": items, "next_cursor": nxt}


class Rows:
    """The rows of a list request, newest first, in batches of up to `batch` rows, for a
    streamed answer: each batch is its own query, on a connection lent by `reader` for
    that query only, starting after the previous batch's last row (the cursor of
    next_cursor), so a stream holds no connection and no snapshot while the client reads,
    and a batch costs the same wherever it starts. A row stored during the stream is in it
    if it sorts after the stream's position (older than the last row sent), as when
    following next_cursor.

    `cap`: the most rows (None: every row); one row more is read to tell whether there
    is a next page, `next_cursor` once iterated. The first batch is read at once, so a
    store error is the caller's to answer (503) before any byte is sent; `done` says
    whether that batch was all there is. A batch is a list of tuples in KEYS order."""

    def __init__(self, reader, lq, cap, batch):
        self.reader, self.lq, self.batch = reader, lq, batch
        self.left, self.pos = cap, lq.cursor
        self.next_cursor, self.done = None, False
        self.first = self._fetch()

    def _fetch(self):
        n = self.batch if self.left is None else min(self.batch, self.left + 1)
        with self.reader() as db:
            rows = db.execute(*self.lq.page(self.pos, n)).fetchall()
        more = self.left is not None and len(rows) > self.left
        if more:
            rows = rows[: self.left]
        if rows:
            self.pos = (rows[-1][-2], rows[-1][-1])
        if self.left is not None:
            self.left -= len(rows)
        if more:
            self.next_cursor = encode_cursor(*self.pos)
        self.done = more or len(rows) < n
        return [r[:-2] for r in rows]

    def __iter__(self):
        first, self.first = self.first, None
        yield first
        while not self.done:
            yield self._fetch()
