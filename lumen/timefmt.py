"""The one RFC 3339 parser: event timestamps as text -> Unix seconds.

Every stage reads `ts` through `parse`, and the JSON Schema validators use `is_datetime`
as their `date-time` format checker, so "is this a timestamp" has one answer everywhere.

Accepted (RFC 3339 section 5.6): `YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)`, with `T`
and `Z` in either case. A leap second (`:60`) is accepted and counted as the first
instant of the next minute, so 23:59:60Z sorts after 23:59:59Z. Rejected: a space instead
of `T`, a missing zone, out-of-range fields (month 13, February 30, hour 24), anything
else. `parse` never returns anything but a float or None; it does not raise on any str.
"""

import re
from datetime import datetime, timezone

_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))\Z",
    re.ASCII,
)
_fromiso = datetime.fromisoformat
_MDAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


# The fast path of `parse`: most timestamps of a stream share their minute with the one
# before, so the minute ("YYYY-MM-DDTHH:MM", checked once by the full parser) is looked up,
# and only the seconds, fraction and zone are read (each a table lookup or a digit check).
# Whatever it does not recognise goes to the full parser; tests/test_timefmt.py checks the
# two give the same answer (the same float, or None) on generated and hostile text.
_MINUTES = {}  # minute text ("YYYY-MM-DDTHH:MM:") -> its Unix seconds read as UTC
_MINUTES_MAX = 4096  # bounded: cleared when full
_SECONDS = {f"{s:02d}": s for s in range(60)}  # a leap second (60) takes the full parser
_ZONES = {"Z": 0, "z": 0}
_ZONES.update(
    (f"{sign}{h:02d}:{m:02d}", (1 if sign == "+" else -1) * (h * 3600 + m * 60))
    for sign in "+-"
    for h in range(24)
    for m in range(60)
)


def parse(ts):
    """Unix seconds of an RFC 3339 date-time, or None when `ts` is not one."""
    if type(ts) is not str:
        return None
    base = _MINUTES.get(ts[:17])  # "YYYY-MM-DDTHH:MM:"
    if base is not None:
        sec = _SECONDS.get(ts[17:19])
        if sec is not None:
            rest = ts[19:]
            if len(rest) == 13 and rest[0] == ".":  # microseconds and +hh:mm, as Lumen writes
                off, digits = _ZONES.get(rest[7:]), rest[1:7]
                if off is not None and digits.isdigit() and digits.isascii():
                    return ((base + sec - off) * 1_000_000 + int(digits)) / 1_000_000
            off = _ZONES.get(rest)
            if off is not None:
                return float(base + sec - off)
            if rest[:1] == ".":
                if rest[-1:] in ("Z", "z"):
                    digits, off = rest[1:-1], 0
                else:
                    digits, off = rest[1:-6], _ZONES.get(rest[-6:])
                if (
                    off is not None
                    and 0 < len(digits) <= 9
                    and digits.isdigit()
                    and digits.isascii()
                ):
                    us = int(digits[:6].ljust(6, "0"))  # cut to microseconds, as below
                    return ((base + sec - off) * 1_000_000 + us) / 1_000_000
    t = _parse(ts)
    if t is not None and ts[11:13] < "24" and ts[14:16] < "60" and ts[:17] not in _MINUTES:
        if len(_MINUTES) >= _MINUTES_MAX:
            _MINUTES.clear()
        _MINUTES[ts[:17]] = int(_parse(ts[:16] + ":00Z"))
    return t


def _parse(ts):
    """`parse` in full: the regex, then datetime, then the exact civil-date arithmetic."""
    m = _RE.match(ts)
    if m is None or (m.group(8) is None and (m.group(10) > "23" or m.group(11) > "59")):
        return None  # no such shape, or no such offset (fromisoformat takes +00:99)
    frac = m.group(7)
    if frac is not None and len(frac) > 7:
        ts = ts[: m.start(7) + 7] + ts[m.end(7) :]  # microseconds, cut (not rounded) as in C
        frac = frac[:7]
    try:  # the common case, in C; the regex has already fixed the shape
        return _fromiso(ts).timestamp()
    except (ValueError, OverflowError):
        pass  # a leap second, 7-9 fraction digits, or a field out of range: below
    y, mo, d, hh, mi, ss = (int(m.group(i)) for i in range(1, 7))
    if not 1 <= mo <= 12 or hh > 23 or mi > 59 or ss > 60:
        return None
    leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    if not 1 <= d <= (_MDAYS[mo - 1] + (mo == 2 and leap)):
        return None
    t = _days_from_civil(y, mo, d) * 86400 + hh * 3600 + mi * 60 + ss
    if m.group(8) is None:
        off = int(m.group(10)) * 3600 + int(m.group(11)) * 60
        t -= off if m.group(9) == "+" else -off
    us = int(frac[1:].ljust(6, "0")) if frac else 0
    return (t * 1_000_000 + us) / 1_000_000  # int / int, as datetime.timestamp() does


def seconds(ts):
    """Unix seconds of an RFC 3339 date-time; ValueError (naming the text) when it is not one."""
    t = parse(ts)
    if t is None:
        raise ValueError(f"not an RFC 3339 date-time: {ts!r}")
    return t


def format(t):
    """RFC 3339 text of Unix seconds `t`, in UTC with microseconds as needed
    (`2025-11-01T00:00:00.250000+00:00`): how every Lumen writer stamps `ts`."""
    return datetime.fromtimestamp(t, timezone.utc).isoformat()


def now():
    """RFC 3339 text of the current time (see `format`)."""
    return datetime.now(timezone.utc).isoformat()


def is_datetime(ts):
    """The JSON Schema `date-time` format checker (non-strings are not its business)."""
    return type(ts) is not str or parse(ts) is not None
