"""Append whole JSON lines to a log, one locked write() per batch.

Two writers of one file (merge and URE share the v2 log) never interleave: each batch
is written under an exclusive `fcntl.flock`. The file is opened by path on every
flush, so a rename-based rotation is picked up at the next batch.

Writers never extend a fragment: if the file does not end in a newline (a writer died in
the middle of a line), the batch starts with one, so the fragment stays a line of its own
(a reject) and the new events are whole. A write that fails part way (disk full, I/O
error) is cut back to where it started, never left torn, and the error is raised with the
batch still in the caller's hands. `fsync=True` makes the batch durable before returning
(sinks whose checkpoint vouches for their output).
"""
import fcntl
import os
import time
from pathlib import Path

import orjson


def dumps(obj) -> bytes:
    """One event as a line of UTF-8 JSON, newline included."""
    return orjson.dumps(obj) + b"\n"


class LockTimeout(OSError):
    """Another process has held the file's lock for longer than LOCK_TIMEOUT_S."""


LOCK_TIMEOUT_S = 2.0  # a Lumen batch holds the lock for milliseconds


def _lock(fd, path, timeout=None):
    """LOCK_EX, waiting at most `timeout` seconds: a writer must not hang for ever (and
    stop answering SIGTERM) because some other process holds the lock."""
    deadline = time.monotonic() + (LOCK_TIMEOUT_S if timeout is None else timeout)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise LockTimeout(f"{path}: locked by another process for more than "
                                  f"{LOCK_TIMEOUT_S:g}s (see lslocks)") from None
            time.sleep(0.002)


def _open_locked(path):
    """An fd on the file now at `path`, holding LOCK_EX.

    If the file is renamed (rotated) between open() and flock(), the fd would point at the
    rotated file: a reader that had already drained it would never see this batch. So the
    lock is taken first and the path checked again under it; readers take LOCK_SH on a
    rotated file before draining it, which waits out a write already in progress."""
    for _ in range(100):
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        _lock(fd, path)
        st = os.fstat(fd)
        try:
            now = os.stat(path)
            if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                return fd
        except FileNotFoundError:  # renamed away and not re-created yet: create it
            pass
        os.close(fd)
    raise OSError(f"{path}: the file keeps changing under the writer (rotation loop?)")


def append_lines(path, lines, fsync=False) -> int:
    """Append already-encoded lines (each ending in b"\\n") as one write; returns bytes
    written. On an OSError nothing of the batch stays in the file."""
    data = b"".join(lines)
    if not data:
        return 0
    if not data.endswith(b"\n"):
        raise ValueError(f"{path}: refusing to append a partial line")
    path = Path(path)
    fd = _open_locked(path)
    try:
        start = os.fstat(fd).st_size
        if start and os.pread(fd, 1, start - 1) != b"\n":
            data = b"\n" + data  # end the fragment a dead writer left: it stays one line
        view = memoryview(data)
        try:
            while view:  # os.write may be short (large batch, disk filling up)
                n = os.write(fd, view)
                view = view[n:]
            if fsync:
                os.fsync(fd)
        except OSError:
            _cut_back(fd, start)
            raise
    finally:
        os.close(fd)  # closing releases the lock
    return len(data)


def _cut_back(fd, size):
    """Undo a partial append (we hold the lock: nobody else wrote after `size`)."""
    try:
        os.ftruncate(fd, size)
    except OSError:  # EIO on truncate too: the reader's classification quarantines it
        pass


class JsonlWriter:
    """Buffers events and appends them in batches to `path`."""

    def __init__(self, path, fsync=False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._buf = []
        self.lines_written = 0
        self.batches_written = 0

    def add(self, obj) -> None:
        self._buf.append(dumps(obj))

    def add_line(self, line: bytes) -> None:
        self._buf.append(line if line.endswith(b"\n") else line + b"\n")

    def __len__(self):
        return len(self._buf)

    def flush(self) -> int:
        if not self._buf:
            return 0
        n = len(self._buf)
        append_lines(self.path, self._buf, self.fsync)  # raises with the batch kept
        self._buf = []
        self.lines_written += n
        self.batches_written += 1
        return n
