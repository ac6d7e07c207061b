"""Parameter validation and SQL for the read-only API (pure over a read-only connection,
a lumen.api.readers.Db: the same SQL runs on SQLite and PostgreSQL).

Every query parameter is checked here: a bad value raises BadRequest with a message that
names the parameter. The row lists (/api/rmb, /api/ure) are lumen/api/lists.py.
"""

import re
import time

from lumen.timefmt import seconds as parse_ts
from lumen import timefmt, vocab

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")
WINDOW = re.compile(r"^([1-9]\d{0,5})([smhd])$")
MAX_WINDOW_S = 30 * 86400
UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class BadRequest(Exception):
    pass


def single(query, name):
    vals = query.get(name)
    if vals is None:
        return None
    if len(vals) != 1:
        raise BadRequest(f"parameter {name} given {len(vals)} times")
    return vals[0]


def check_known(query, allowed):
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        raise BadRequest(
            f"unknown parameter {unknown[0]} (allowed: {', '.join(sorted(allowed)) or 'none'})"
        )


def parse_limit(v, default, maximum):
    if v is None:
        return default
    if not re.fullmatch(r"\d{1,6}", v) or not 1 <= int(v) <= maximum:
        raise BadRequest(f"limit must be an integer from 1 to {maximum}")
    return int(v)


def parse_time(name, v):
    if v is None:
        return None
    if not RFC3339.match(v):
        raise BadRequest(f"{name} must be an RFC 3339 time with a zone, e.g. 2025-11-01T00:00:00Z")
    try:
        return parse_ts(v.replace(" ", "T").replace("t", "T").replace("z", "Z"))
    except ValueError:
        raise BadRequest(f"{name} is not a valid time: {v}") from None


def parse_enum(name, v, allowed):
    if v is not None and v not in allowed:
        raise BadRequest(f"{name} must be one of {', '.join(allowed)}")
    return v


def parse_entity(v, name="entity"):
    if v is not None and not 1 <= len(v) <= 200:
        raise BadRequest(f"{name} must be 1 to 200 characters")
    return v


def host_filter(query, where, args):
    """`host=ID`: only that host's rows (the store's hosts: /api/hosts)."""
    host = parse_entity(single(query, "host"), "host")
    if host is not None:
        where.append("host = ?")
        args.append(host)
    return host


def where_sql(where):
    return (" WHERE " + " AND ".join(where)) if where else ""


def parse_window(v, default="10m"):
    m = WINDOW.match(v if v is not None else default)
    if not m:
        raise BadRequest("window must look like 300s, 10m, 1h or 7d")
    return min(int(m.group(1)) * UNIT[m.group(2)], MAX_WINDOW_S)  # longer: capped at 30d


def rmb_last(db, query):
    check_known(query, {"host"})
    where, args = [], []
    host_filter(query, where, args)
    row = db.execute(
        f"SELECT ts, residual, phase, risk FROM rmb{where_sql(where)} "
        "ORDER BY t DESC, id DESC LIMIT 1",
        args,
    ).fetchone()
    return dict(zip(("ts", "residual", "phase", "risk"), row)) if row else {}


def ure_last(db, query):
    check_known(query, {"entity", "host"})
    entity = parse_entity(single(query, "entity")) or "lumen.ure"
    where, args = ["entity_id = ?"], [entity]
    host_filter(query, where, args)
    row = db.execute(
        "SELECT ts, residual, harmony, coherence, action FROM ure"
        f"{where_sql(where)} ORDER BY t DESC, id DESC LIMIT 1",
        args,
    ).fetchone()
    return dict(zip(("ts", "residual", "harmony", "coherence", "action"), row)) if row else {}


ROLLBACKS = f"COUNT(CASE WHEN event_type = '{vocab.ROLLBACK}' THEN 1 END)"


def summary(db, query, now=None):
    check_known(query, {"window", "host"})
    window = parse_window(single(query, "window"))
    now = time.time() if now is None else now
    lo = now - window
    where, args = ["t >= ?", "t <= ?"], [lo, now]
    host = host_filter(query, where, args)
    ev, rb, mean = db.execute(
        f"SELECT COUNT(*), {ROLLBACKS}, AVG(residual) FROM rmb{where_sql(where)}", args
    ).fetchone()
    actions = dict(
        db.execute(f"SELECT action, COUNT(*) FROM ure{where_sql(where)} GROUP BY action", args)
    )
    out = {
        "ok": True,
        "window_s": window,
        "now": timefmt.format(now),
        "rmb": {
            "events": ev,
            "rollbacks": rb,
            "rollback_ratio": (rb / ev) if ev else None,
            "residual_mean": mean,
        },
        "ure": {"events": sum(actions.values()), "actions": actions},
    }
    if host is not None:
        out["host"] = host
    return out


def hosts(db, query, now=None):
    """Every host that has written to the store, with its RMB counts over the window and
    the age of its newest RMB and URE rows (kept in `hosts` by ingest: one row per host,
    whatever the tables hold)."""
    check_known(query, {"window"})
    window = parse_window(single(query, "window"))
    now = time.time() if now is None else now
    per = {
        h: (n, rb, mean)
        for h, n, rb, mean in db.execute(
            f"SELECT host, COUNT(*), {ROLLBACKS}, AVG(residual) FROM rmb "
            "WHERE t >= ? AND t <= ? GROUP BY host",
            (now - window, now),
        )
    }
    listed = db.execute(
        "SELECT host, rmb_ts, rmb_t, ure_ts, ure_t FROM hosts ORDER BY host"
    ).fetchall()
    out = [host_entry(r, per.get(r[0], (0, 0, None)), now) for r in listed]
    return {"ok": True, "window_s": window, "now": timefmt.format(now), "hosts": out}


def host_entry(listed, counts, now):
    """One host of /api/hosts: (host, rmb_ts, rmb_t, ure_ts, ure_t) of the hosts table and
    (events, rollbacks, residual mean) over the window."""
    host, rmb_ts, rmb_t, ure_ts, ure_t = listed
    n, rb, mean = counts
    newest = {
        table: {"ts": ts, "age_s": None if t is None else round(now - t, 3)}
        for table, ts, t in (("rmb", rmb_ts, rmb_t), ("ure", ure_ts, ure_t))
    }
    return {
        "host": host,
        "rmb": {
            "events": n,
            "rollbacks": rb,
            "rollback_ratio": (rb / n) if n else None,
            "residual_mean": mean,
            "newest": newest["rmb"],
        },
        "ure": {"newest": newest["ure"]},
    }


# The shape of a host entry, for the columns of /api/hosts as CSV.
HOST_TEMPLATE = host_entry(("", None, None, None, None), (0, 0, None), 0.0)


STEP = re.compile(r"^([1-9]\d{0,4})([smh])$")
LEVEL_OF = {v: k for k, v in vocab.SEVERITY.items()}
# The worst level in a bucket: MAX of the levels' severities (UNDEFINED when none is defined).
SEVERITY_SQL = (
    "CASE final "
    + " ".join(f"WHEN '{lv}' THEN {v}" for lv, v in vocab.SEVERITY.items() if lv != vocab.UNDEFINED)
    + f" ELSE {vocab.SEVERITY[vocab.UNDEFINED]} END"
)


def parse_step(v, window):
    m = STEP.match(v if v is not None else "60s")
    if not m:
        raise BadRequest("step must look like 10s, 1m or 1h")
    # Kept between 5 s and 24 h, and raised so a window has at most 2000 buckets;
    # the response's step_s says which step was used.
    step = min(max(int(m.group(1)) * UNIT[m.group(2)], 5), 86400)
    return max(step, -(-window // 2000))


def series(db, query, now=None):
    """Per-step buckets over a window, for the live page: RMB events, rollbacks, ratio and
    residual; the worst Safety Music level; URE harmony, coherence, hz and actions."""
    check_known(query, {"window", "step", "host"})
    window = parse_window(single(query, "window"), "1h")
    step = parse_step(single(query, "step"), window)
    now = time.time() if now is None else now
    lo = now - window
    where, args = ["t >= ?", "t <= ?"], [lo, now]
    host_filter(query, where, args)
    w = where_sql(where)
    rmb = [
        {
            "t": b * step,
            "events": n,
            "rollbacks": rb,
            "ratio": rb / n if n else None,
            "residual_mean": mean,
            "residual_max": mx,
        }
        for b, n, rb, mean, mx in db.execute(
            f"SELECT {db.bucket} AS b, COUNT(*), {ROLLBACKS}, AVG(residual), MAX(residual) "
            f"FROM rmb{w} GROUP BY b ORDER BY b",
            [step, *args],
        )
    ]
    safety = [
        {"t": b * step, "level": LEVEL_OF[r]}
        for b, r in db.execute(
            f"SELECT {db.bucket} AS b, MAX({SEVERITY_SQL}) FROM safety{w} GROUP BY b ORDER BY b",
            [step, *args],
        )
    ]
    ure = [
        {"t": b * step, "harmony": h, "coherence": c, "hz": hz, "actions": a}
        for b, h, c, hz, a in db.execute(
            f"SELECT {db.bucket} AS b, AVG(harmony), AVG(coherence), AVG(hz), "
            f"COUNT(CASE WHEN action <> '{vocab.NO_ACTION}' THEN 1 END) FROM ure{w} "
            "AND entity_id = 'lumen.ure' GROUP BY b ORDER BY b",
            [step, *args],
        )
    ]
    return {
        "ok": True,
        "window_s": window,
        "step_s": step,
        "rmb": rmb,
        "safety": safety,
        "ure": ure,
    }


def slo_verdicts(db, query, policies, min_events, now=None):
    """slo.report's verdicts over the stored RMB rows (same policies, same maths)."""
    from lumen import slo

    check_known(query, {"host"})
    now = time.time() if now is None else now
    span = max(slo.window_s(p["evaluate"]["metric"]) for p in policies)
    where, args = ["t >= ?", "t <= ?"], [now - span, now + slo.MAX_FUTURE_S]
    host_filter(query, where, args)
    rows = db.execute(
        f"SELECT t, residual, CASE WHEN event_type = '{vocab.ROLLBACK}' THEN 1 ELSE 0 END "
        f"FROM rmb{where_sql(where)}",
        args,
    ).fetchall()
    verdicts = slo.evaluate(policies, rows, now, min_events)
    return {
        "ok": True,
        "result": slo.overall(verdicts),
        "verdicts": [
            {
                "id": v.id,
                "metric": v.metric,
                "value": v.value,
                "threshold": v.threshold,
                "status": v.status,
                "action": v.action,
                "events": v.events,
            }
            for v in verdicts
        ],
    }
