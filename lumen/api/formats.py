"""The API's answers as JSON, CSV or NDJSON (`_format`), and the list rows turned into
bytes batch by batch, for lumen.httpserve to stream. Reads and writes nothing.

- `_format=json` (the default) is the JSON every endpoint always gave. `csv` and `ndjson`
  are for the lists only: /api/rmb, /api/ure, /api/alerts (rows) and /api/hosts (one row
  per host). /api/series (three lists of different shapes), /api/summary, /api/slo and
  the :last rows are objects, not lists: `_format=json` only. Any other value is a 400.
- `_stream=on` (/api/rmb, /api/ure, /api/alerts): every matching row, not one page
  (`limit`, when given, still caps the rows); in JSON the page object is written as the
  rows come, its count and next_cursor after the items. /api/alerts' labels are an
  object in JSON and NDJSON, their JSON text in CSV.
- CSV: a header row of the column names, then one record per row: RFC 4180 as the csv
  module writes it (CRLF line ends, a field quoted when it holds a comma, quote or line
  end, quotes doubled). A nested object is flattened into dotted columns (rmb.newest.ts),
  a list is written as its JSON; null is an empty field, true/false as in JSON, numbers
  as JSON writes them, so a cell reads back to the JSON value's text.
- NDJSON: one JSON object per line, `\\n` after each, nesting kept.

Streamed JSON and NDJSON are written by msgspec (compact, no spaces); parsed, they are the
values the JSON page holds.
"""

import csv
import io
import json

import msgspec

from lumen.api.queries import BadRequest, single

TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "ndjson": "application/x-ndjson",
}
ENCODE = msgspec.json.Encoder()  # ~6x json.dumps on rows; the same values once parsed
ROWS, LIST, OBJECT = "rows", "list", "object"
KINDS = {"/api/rmb": ROWS, "/api/ure": ROWS, "/api/alerts": ROWS, "/api/hosts": LIST}
# (the others: OBJECT)


def take(query, kind):
    """(format, stream) of a request, the two parameters taken out of `query`."""
    fmt = single(query, "_format")
    stream = single(query, "_stream") if kind == ROWS else None
    query.pop("_format", None)
    if kind == ROWS:
        query.pop("_stream", None)
    fmt = "json" if fmt is None else fmt
    allowed = ("json",) if kind == OBJECT else tuple(TYPES)
    if fmt not in allowed:
        if kind == OBJECT and fmt in TYPES:
            raise BadRequest(
                f"_format={fmt} is for the lists (/api/rmb, /api/ure, /api/alerts, /api/hosts); "
                "this endpoint answers an object: _format=json"
            )
        raise BadRequest(f"_format must be one of {', '.join(allowed)}")
    if stream not in (None, "on", "off"):
        raise BadRequest("_stream must be on or off")
    return fmt, stream == "on"


def headers(fmt, name):
    out = [("Content-Type", TYPES[fmt])]
    if fmt == "csv":
        out.append(("Content-Disposition", f'attachment; filename="{name}.csv"'))
    return out


def flatten(obj, prefix=""):
    """{dotted name: value} of a JSON object: nested objects become dotted columns."""
    out = {}
    for k, v in obj.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def cell(v):
    """A CSV field: the JSON text of the value, a string as it is, null empty."""
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    return json.dumps(v)


def rows(fmt, keys, batches, page, item=None):
    """The bytes of list rows, one piece per batch: `batches` of tuples in `keys` order
    (flat: str, int, float or None, which the csv module writes as JSON would, None
    empty); `page` (a lists.Rows) says the streamed JSON's next_cursor at the end.
    `item(row)`: a row's JSON object, when it is not dict(zip(keys, row)) (a column
    holding JSON text, written as it is in CSV)."""
    if fmt == "csv":
        return _csv(keys, batches)
    item = item or (lambda r: dict(zip(keys, r)))
    dicts = ([item(r) for r in batch] for batch in batches)
    if fmt == "ndjson":
        return map(ENCODE.encode_lines, dicts)
    return _json(dicts, page)


def objects(fmt, columns, items):
    """The bytes of a list of JSON objects (nested): CSV of their flattened `columns`, or
    NDJSON. One piece: the lists this is for are short (a row per host)."""
    if fmt == "csv":
        flat = (flatten(o) for o in items)
        return b"".join(_csv(columns, [[[cell(f.get(c)) for c in columns] for f in flat]]))
    return ENCODE.encode_lines(items)


def _csv(columns, batches):
    buf = io.StringIO()
    w = csv.writer(buf)  # the excel dialect: RFC 4180, CRLF
    w.writerow(columns)
    for batch in batches:
        w.writerows(batch)
        yield buf.getvalue().encode()
        buf.seek(0)
        buf.truncate()
    if buf.tell():  # the header of an empty list
        yield buf.getvalue().encode()


def _json(batches, page):
    yield b'{"ok":true,"items":['
    sep, count = b"", 0
    for batch in batches:
        if batch:
            yield sep + ENCODE.encode(batch)[1:-1]
            sep, count = b",", count + len(batch)
    yield b"]," + ENCODE.encode({"count": count, "next_cursor": page.next_cursor})[1:]
