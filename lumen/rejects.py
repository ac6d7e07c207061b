"""The quarantine for bad lines: counted by reason, appended to `logs/rejects/<stream>.jsonl`.

Each record names the consumer that met the line, the reason, a detail, the source file
and offset, and the line itself (UTF-8 text, or base64 when it is not UTF-8). An oversize
line is kept as its first PREVIEW_BYTES bytes plus its offset; the whole line is still in
the source file, which Lumen never rewrites. A consumer that crashes before its checkpoint
may quarantine a line again on restart: (consumer, source, offset) identifies a record.
"""

import base64
from collections import Counter
from pathlib import Path

from . import timefmt
from .jsonl import append_lines, dumps

PREVIEW_BYTES = 64 * 1024


class Rejects:
    def __init__(self, stream, consumer, rejects_dir="logs/rejects"):
        self.path = Path(rejects_dir) / f"{stream}.jsonl"
        self.consumer = consumer
        self.counts = Counter()
        self._pending = []

    def add(self, reason, detail, source, offset, line: bytes):
        self.counts[reason] += 1
        rec = {
            "ts": timefmt.now(),
            "consumer": self.consumer,
            "reason": reason,
            "detail": detail,
            "source": source,
            "offset": offset,
            "bytes": len(line),
        }
        raw = line[:PREVIEW_BYTES]
        try:
            rec["line"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            rec["line_b64"] = base64.b64encode(raw).decode()
        if len(line) > PREVIEW_BYTES:
            rec["truncated"] = True
        self._pending.append(dumps(rec))

    def flush(self):
        """Write pending records; call before committing the checkpoint past them."""
        if self._pending:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            append_lines(self.path, self._pending, fsync=True)  # before the checkpoint
            self._pending = []

    @property
    def total(self):
        return sum(self.counts.values())
