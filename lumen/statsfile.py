"""A process's counters in a small fixed-size file, rewritten in place.

For a process without an HTTP server of its own (the emitter) whose counters matter most
when the disk is full: the file is created once at SIZE bytes, and every update is one
`pwrite` over the same bytes, which needs no new disk space. A reader that catches a write
half done sees text that does not parse and keeps what it had (`read` returns None).
"""

import json
import os

SIZE = 512


class StatsFile:
    def __init__(self, path):
        self.path = path
        self._fd = None

    def write(self, counters):
        """Best effort: never raises (the counters are also kept in memory)."""
        if self.path is None:
            return
        data = json.dumps(counters, sort_keys=True).encode()
        if len(data) >= SIZE:
            return
        try:
            if self._fd is None:
                os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                if os.fstat(self._fd).st_size < SIZE:
                    os.pwrite(self._fd, b" " * SIZE, 0)  # the space is taken now, once
            os.pwrite(self._fd, data.ljust(SIZE - 1) + b"\n", 0)
        except OSError:  # a full disk before the file existed: next time
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def read(path):
    """The counters last written at `path`, or None (absent, or caught mid-write)."""
    try:
        with open(path, "rb") as f:
            obj = json.loads(f.read(SIZE))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None
