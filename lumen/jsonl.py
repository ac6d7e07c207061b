"""Append whole JSON lines to a log, one locked write() per batch.

Two writers of one file (merge and URE share the v2 log) never interleave: each batch
is written under an exclusive `fcntl.flock`. The file is opened by path on every
flush, so a rename-based rotation is picked up at the next batch.

Writers never extend a fragment: if the file does not end in a newline (a writer died in
the middle of a line), the batch starts with one, so the fragment stays a line of its own
(a reject) and the new events are whole. A write that fails part way (disk full, I/O
error) is cut back to its last whole line, never left torn: the lines that landed stay
(a reader may have read them already), and the error says how many (PartialWrite); the
rest of the batch stays in the caller's hands. `fsync=True` makes the batch durable before returning
(sinks whose checkpoint vouches for their output).
"""

import fcntl
import os
import sys
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
                raise LockTimeout(
                    f"{path}: locked by another process for more than "
                    f"{LOCK_TIMEOUT_S:g}s (see lslocks)"
                ) from None
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


class PartialWrite(OSError):
    """The write failed part way: the first `lines` lines of the batch are in the file
    (whole), the rest is not. Carries the errno and message of the failure."""

    def __init__(self, err, lines):
        super().__init__(err.errno, err.strerror)
        self.lines = lines


def append_lines(path, lines, fsync=False, hold=None) -> int:
    """Append already-encoded lines (each ending in b"\\n") as one write; returns bytes
    written. On an OSError the file keeps only whole lines: a line cut short is removed,
    and PartialWrite says how many lines of the batch did land. With a list `hold` (and
    no `fsync`), the file's descriptor is unlocked and kept open there instead of closed,
    for the caller to fsync later (the very file written, even if it is renamed since)."""
    data = b"".join(lines)
    if not data:
        return 0
    if not data.endswith(b"\n"):
        raise ValueError(f"{path}: refusing to append a partial line")
    path = Path(path)
    fd = _open_locked(path)
    try:
        start = os.fstat(fd).st_size
        lead = 0
        if start and os.pread(fd, 1, start - 1) != b"\n":
            data = b"\n" + data  # end the fragment a dead writer left: it stays one line
            lead = 1
        view = memoryview(data)
        done = 0
        try:
            while done < len(data):  # os.write may be short (large batch, disk filling up)
                done += os.write(fd, view[done:])
            if fsync:
                os.fsync(fd)
        except OSError as e:
            # Keep the whole lines that landed (readers may have seen them), cut the rest;
            # a failed fsync keeps all (the caller does not move its checkpoint past them).
            keep = data.rfind(b"\n", 0, done) + 1
            _cut_back(fd, start + keep)
            landed = data[lead:keep].count(b"\n") if keep > lead else 0
            if landed:
                raise PartialWrite(e, landed) from None
            raise
        if hold is not None and not fsync:
            fcntl.flock(fd, fcntl.LOCK_UN)  # other writers may go on; the fd stays for fsync
            hold.append(fd)
            fd = None
    finally:
        if fd is not None:
            os.close(fd)  # closing releases the lock
    return len(data)


def sync_held(hold):
    """fsync and close every descriptor `append_lines` held; the first OSError is raised
    after all are closed (what was written is then not known to be durable)."""
    error = None
    while hold:
        fd = hold.pop()
        try:
            os.fsync(fd)
        except OSError as e:
            error = error or e
        finally:
            os.close(fd)
    if error is not None:
        raise error


def _cut_back(fd, size):
    """Remove a partial line (we hold the lock: nobody else wrote after `size`)."""
    try:
        os.ftruncate(fd, size)
    except OSError:  # EIO on truncate too: the reader's classification quarantines it
        pass


class JsonlWriter:
    """Buffers events and appends them in batches to `path`.

    While the file cannot be written (disk full, I/O error) the batch stays here, up to
    `max_pending` lines; lines offered beyond that are refused and counted in `dropped`
    (memory stays bounded). `flush()` raises the OSError; `try_flush()` counts it in
    `write_errors`, waits at least `retry_s` before trying again, and returns False."""

    def __init__(self, path, fsync=False, max_pending=100_000, retry_s=0.5):
        """`fsync`: False, True (every flush is durable before it returns) or "later"
        (flushes write; `sync()` makes all of them durable at once, before a checkpoint)."""
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError:  # a full disk (the directory is made again at the first write)
            pass
        self.fsync = fsync
        self.max_pending, self.retry_s = max_pending, retry_s
        self._buf = []
        self.lines_written = 0
        self.batches_written = 0
        self.dropped = 0
        self.write_errors = 0
        self.last_error = None
        self._said = None
        self._retry_at = 0.0
        self._held = [] if fsync == "later" else None

    def add(self, obj) -> bool:
        return self.add_line(dumps(obj))

    def add_line(self, line: bytes) -> bool:
        if len(self._buf) >= self.max_pending:
            self.dropped += 1
            return False
        self._buf.append(line if line.endswith(b"\n") else line + b"\n")
        return True

    def add_lines(self, lines) -> int:
        """Buffer encoded lines, each already ending in b"\\n" (the caller built them so);
        those beyond `max_pending` are refused and counted in `dropped`. Returns how many
        of the first lines were taken."""
        room = self.max_pending - len(self._buf)
        if room < len(lines):
            room = max(room, 0)
            self.dropped += len(lines) - room
            lines = lines[:room]
        self._buf += lines
        return len(lines)

    def __len__(self):
        return len(self._buf)

    def flush(self) -> int:
        if not self._buf:
            return 0
        n = len(self._buf)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            append_lines(self.path, self._buf, self.fsync is True, self._held)
        except PartialWrite as e:  # what landed is written; the rest stays for next time
            del self._buf[: e.lines]
            self.lines_written += e.lines
            raise
        self._buf = []
        self.lines_written += n
        self.batches_written += 1
        self.last_error = None
        return n

    def sync(self):
        """With fsync="later": make every flush since the last sync durable (OSError if not)."""
        if self._held:
            sync_held(self._held)

    def close(self):
        """Let go of descriptors held for a sync that will not come (nothing is flushed)."""
        while self._held:
            os.close(self._held.pop())

    def try_flush(self, tag=None) -> bool:
        """Flush unless the last failure was under `retry_s` ago; False while it fails.
        With `tag` (e.g. "[ure]"), a failure is said once on stderr, and so is recovery."""
        ok = self._try_flush()
        if tag is not None:
            if not ok and self.last_error and self.last_error != self._said:
                print(
                    f"{tag} warning: {self.last_error}; keeping up to {self.max_pending} "
                    f"lines in memory until it can be written",
                    file=sys.stderr,
                    flush=True,
                )
                self._said = self.last_error
            elif ok and self._said:
                print(
                    f"{tag} writing {self.path} again ({self.dropped} lines dropped so far)",
                    file=sys.stderr,
                    flush=True,
                )
                self._said = None
        return ok

    def _try_flush(self):
        if not self._buf:
            return True
        now = time.monotonic()
        if now < self._retry_at:
            return False
        try:
            self.flush()
            return True
        except OSError as e:  # ENOSPC, EIO, EDQUOT, a lock held too long: keep the batch
            self.write_errors += 1
            self.last_error = f"{self.path}: {e.strerror or e}"
            self._retry_at = now + self.retry_s
            return False
