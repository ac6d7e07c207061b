"""The model check's lines: what it writes to the RMB log and how it reads the logs back.

- valid_event(n, tag): a valid v1 event numbered n (entity_id `<tag>-<n>`, trace.iter n),
  every enum drawn from lumen.vocab; bad_line(kind, k, tag): a line of a KINDS kind, unique
  in its first bytes (the tailer knows a file by its first line).
- read_lines, log_files: the complete lines of a log and of its rotated files (.N, .N.gz)
  as a reader finds them; rmb_ids: the merged RMB events among v2 events.
The log paths (relative to the run's scratch directory) are named here too.
"""

import gzip
import json
import time
from datetime import datetime, timezone
from pathlib import Path

from lumen import vocab

RMB_LOG = "logs/rmb_events.jsonl"
V2_LOG = "logs/resonance_events_v2.jsonl"
SAFETY_LOG = "logs/safety_music_events.jsonl"
QUARANTINE = "logs/rejects/rmb_events.jsonl"


def iso(t):
    return datetime.fromtimestamp(t, timezone.utc).isoformat()


def valid_event(n, tag, ts=None):
    types = (vocab.OBSERVE, *vocab.EVENT_TYPES)
    residual = round((n * 0.137) % 1.0, 4)
    return {
        "ts": ts or iso(time.time()),
        "entity_id": f"{tag}-{n}",
        "group": vocab.GROUPS[n % len(vocab.GROUPS)],
        "event_type": types[n % len(types)],
        "resonance_v3": {
            "phase_diff": round(((n * 0.71) % 6.2) - 3.1, 4),
            "residual_entropy": residual,
            "creative_band": vocab.CREATIVE_BANDS[n % 3],
            "risk_band": vocab.RISK_BANDS[n % 3],
        },
        "memory_bridge": {
            "slot_id": f"rmb/v17/slot-{n % 7}",
            "op": vocab.UPSERT,
            "key": f"k{n}",
            "value_hash": f"{n:08x}deadbeef",
        },
        "trace": {"loop_id": "rmb.v17", "iter": n, "host": "model"},
    }


def dumps(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def bad_line(kind, k, tag):
    """A bad line of `kind`, unique in its first bytes (k: a serial number), so that no two
    files start with the same line (the tailer knows files by their first line)."""
    if kind == "json":
        return b"not json #%d {" % k
    if kind == "utf8":
        return b'{"n": %d, "note": "bad-\xff\xfe"}' % k
    if kind == "utf8_field":
        return b'{"entity_id": "bad-%d-\xff\xfe"}' % k
    if kind == "deep":
        return b"[" * 999 + b"[%d]" % k + b"]" * 999
    if kind == "deep_obj":
        return b'{"n": %d, "a": ' % k + b"[" * 1000 + b"]" * 1000 + b"}"
    if kind == "too_deep":
        return b'{"n": %d, "a": ' % k + b"[" * 2000 + b"]" * 2000 + b"}"
    if kind == "not_object":
        return b"[%d, 1, 2]" % k
    if kind == "schema":
        return dumps({"entity_id": f"bad-{k}", "ts": iso(time.time())})
    if kind == "oversize":
        return b'{"n": %d, "pad": "' % k + b"x" * ((1 << 20) + 10) + b'"}'
    if kind == "ts_future":
        return dumps(valid_event(k, f"{tag}-future", ts="2099-01-01T00:00:00Z"))
    if kind == "ts_space":
        return dumps(valid_event(k, f"{tag}-space", ts="2025-11-01 00:00:00Z"))
    raise ValueError(kind)


def read_lines(path):
    """Complete lines of a (possibly compressed) file; [] if it vanished meanwhile."""
    try:
        if str(path).endswith(".gz"):
            with gzip.open(path) as f:
                data = f.read()
        else:
            data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    return data[: data.rfind(b"\n") + 1].splitlines()


def log_files(cwd, name):
    """A log and its rotated files (.N, .N.gz), as each reader would find them."""
    out = [cwd / name]
    for i in range(1, 25):
        plain, gz = cwd / f"{name}.{i}", cwd / f"{name}.{i}.gz"
        out.append(plain if plain.exists() else gz)
    return [p for p in out if p.exists()]


def rmb_ids(v2_events):
    """entity_id of each merged RMB event among v2 events."""
    return [e["entity_id"] for e in v2_events if (e.get("source") or {}).get("stream") == "rmb"]
