"""The one tailer every Lumen consumer reads its JSONL stream with (DESIGN.md section 2).

What it guarantees:
- only complete lines are delivered; a trailing partial line waits for its newline;
- a per-consumer checkpoint (`<offsets_dir>/<consumer>.json`: device, inode, offset, a
  fingerprint of the file's first line, plus the consumer's own state) is written
  atomically, and only when the consumer calls `commit()` after handling what it was given;
- a restart resumes from the checkpoint, never from the end of the file; a consumer with
  no checkpoint starts at the oldest uncompressed rotated file (`<name>.N`), then the newer
  ones, then the live file: everything still on disk; a checkpoint taken while waiting for
  the file remembers the rotated files already there, so files created and rotated while
  the consumer was down are read;
- rename rotation: the old file is drained to EOF (also after a restart, when it is found
  again as `<name>.1`, `<name>.2`, ... by inode, else by fingerprint), waiting out a batch a
  writer is still writing into it, then the newer files in order; which files are newer is
  decided by where the drained file is when it is finished, so a rotation while draining
  rotated files loses nothing;
- copytruncate (size < offset, or the first line changed, checked before bytes read from the
  live file are used): the remainder is read from the rotated copy (`<name>.1`, or `<name>.2`
  ... after more copytruncates while down) when its fingerprint matches, then the newer
  copies, then the live file from 0;
- a missing file is waited for; a file that disappears is drained through its open handle.
- a line longer than `max_line_bytes` is delivered as its first `max_line_bytes + 1` bytes
  (so a length check classifies it) and the rest of it is skipped without being buffered.

What it does not do: parse or validate lines (see `lumen.events`), sleep (callers poll).
"""
import fcntl
import hashlib
import os
import time
from pathlib import Path

from . import checkpoint

FP_BYTES = 1024  # the fingerprint hashes the first line, or the first FP_BYTES of it
MAX_ROTATED = 9  # <name>.1 ... <name>.9 are searched for a consumer's file after a restart


def _fingerprint_fd(fd):
    """Hash of the file's first line (capped at FP_BYTES); None until that line is complete."""
    head = os.pread(fd, FP_BYTES, 0)
    nl = head.find(b"\n")
    if nl >= 0:
        head = head[: nl + 1]
    elif len(head) < FP_BYTES:
        return None
    return hashlib.sha256(head).hexdigest()[:24]


def _fingerprint_path(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, IsADirectoryError):
        return None
    try:
        return _fingerprint_fd(fd)
    finally:
        os.close(fd)


def _wait_for_writers(fd, timeout=5.0):
    """Take and drop a shared lock: returns once no writer holds LOCK_EX (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)


class _File:
    """An open file being read: its identity and where reading stands."""

    __slots__ = ("fd", "dev", "ino", "fp", "name", "settled")

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDONLY)
        st = os.fstat(self.fd)
        self.dev, self.ino = st.st_dev, st.st_ino
        self.fp = _fingerprint_fd(self.fd)
        self.name = str(path)
        self.settled = False  # a rotated file: no write is in progress any more

    def size(self):
        return os.fstat(self.fd).st_size

    def close(self):
        os.close(self.fd)


class Tailer:
    def __init__(self, path, consumer, offsets_dir="logs/.offsets",
                 max_line_bytes=1 << 20, read_size=1 << 20):
        self.path = Path(path)
        self.consumer = consumer
        self.ckpt_path = Path(offsets_dir) / f"{consumer}.json"
        self.max_line_bytes = max_line_bytes
        self.read_size = max(read_size, 4096)
        self.rotations = 0        # rename rotations followed
        self.truncations = 0      # truncations (copytruncate) detected
        self.checkpoints = 0      # checkpoints written
        self.state = None         # the consumer's own state, as last committed
        self._file = None         # the _File being read
        self._queue = []          # paths to read after the current file is drained
        self._following = False   # True when _file is the live file (not a rotated one)
        self.offset = 0           # offset just past the last line delivered
        self._pos = 0             # offset of the next read
        self._buf = b""           # bytes read past self.offset: a partial line
        self._skipping = False    # inside an oversize line, discarding to its newline
        self._known_rotated = set()  # rotated files that existed while we waited for the file
        self._restore()

    # ----------------------------------------------------------------- restore
    def _rotated(self, i):
        return Path(f"{self.path}.{i}")

    def _restore(self):
        ck = checkpoint.load_json(self.ckpt_path)
        if ck is None:
            self._start_from_oldest()
            return
        self.state = ck.get("state")
        if not ck["ino"]:
            # Committed while waiting for the file (nothing of it read yet): wait again, and
            # read whatever was created and rotated meanwhile (rotated files we had not seen).
            known = ck.get("known_rotated")
            self._file = None
            self._following = True
            self._known_rotated = ({tuple(k) for k in known} if known is not None
                                   else self._rotated_ids())
            return
        want = (ck["dev"], ck["ino"])
        fp, offset = ck.get("fp"), ck["offset"]

        # The live file is still ours: same inode, long enough, same first line.
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if st is not None and (st.st_dev, st.st_ino) == want:
            if st.st_size >= offset and (fp is None or _fingerprint_path(self.path) == fp):
                self._open_live(offset, skipping=ck.get("skipping", False))
                return
            # Truncated while we were down: the rest is in the copy, if there is one.
            self.truncations += 1
            if fp is not None and self._drain_copy(fp, offset, ck.get("skipping", False)):
                return
            self._open_live(0)
            return

        # Renamed away (or copied): find it among <name>.1 ... by inode, else by first line
        # (the inode first: rotated files may all begin with the same line).
        for by_inode in (True, False):
            for i, p, rst in self._rotated_files():
                if by_inode:
                    same = (rst.st_dev, rst.st_ino) == want
                else:
                    same = fp is not None and _fingerprint_path(p) == fp
                if same and rst.st_size >= offset:
                    self.rotations += i  # <name>.i: rotated i times since the checkpoint
                    self._open(p, offset, skipping=ck.get("skipping", False))
                    self._following = False
                    self._queue = self._queue_after(self._file)[1] or [self.path]
                    return

        # Not found under a rotated name: the live file with the same first line is ours
        # (restored from backup, moved across filesystems); otherwise start it from 0.
        if st is not None and fp is not None and _fingerprint_path(self.path) == fp \
                and st.st_size >= offset:
            self._open_live(offset, skipping=ck.get("skipping", False))
        else:
            self._open_live(0)

    def _start_from_oldest(self):
        """A new consumer reads everything still on disk uncompressed: the oldest rotated
        file (<name>.N ... <name>.1) first, then the newer ones, then the live file."""
        rotated = [i for i, _, _ in self._rotated_files()]
        for i in sorted(rotated, reverse=True):
            try:
                self._open(self._rotated(i), 0)
            except FileNotFoundError:
                continue
            self._following = False
            self._queue = [self._rotated(j) for j in range(i - 1, 0, -1)
                           if self._rotated(j).exists()] + [self.path]
            return
        self._open_live(0)

    def _drain_copy(self, fp, offset, skipping):
        """After a copytruncate: read the copy of our file from `offset`. It is <name>.1, or
        <name>.2 ... after more copytruncates while we were down; the newer copies follow."""
        for _, copy, st in self._rotated_files():
            if st.st_size < offset or _fingerprint_path(copy) != fp:
                continue
            self._open(copy, offset, skipping=skipping)
            self._following = False
            self._queue = self._queue_after(self._file)[1] or [self.path]
            return True
        return False

    # ------------------------------------------------------------- open/close
    def _open(self, path, offset, skipping=False):
        self._close()
        self._file = _File(path)
        self.offset = self._pos = offset
        self._buf = b""
        self._skipping = skipping

    def _open_live(self, offset, skipping=False):
        self._queue = []
        self._following = True
        # Noted before looking: a file created and rotated after this counts as new.
        known = self._rotated_ids()
        try:
            self._open(self.path, offset, skipping)
        except FileNotFoundError:
            self._file = None  # not there yet: poll() opens it when it appears
            self.offset = self._pos = 0
            self._known_rotated = known

    def _rotated_files(self):
        """(i, path, stat) of each <name>.i that exists, newest (i = 1) first."""
        for i in range(1, MAX_ROTATED + 1):
            p = self._rotated(i)
            try:
                yield i, p, os.stat(p)
            except FileNotFoundError:
                continue

    def _rotated_ids(self):
        return {(st.st_dev, st.st_ino) for _, _, st in self._rotated_files()}

    def _appeared_and_rotated(self):
        """While we waited for the file, was it created and rotated away already? Then the
        rotated files we have not seen come first (oldest first), then the live file."""
        new = [p for _, p, st in reversed(list(self._rotated_files()))
               if (st.st_dev, st.st_ino) not in self._known_rotated]
        if not new:
            return False
        self.rotations += len(new)
        self._following = False
        self._queue = new + [self.path]
        self._next_file()
        return self._file is not None

    def _close(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self):
        self._close()

    # ---------------------------------------------------------------- reading
    def poll(self):
        """Complete lines available now, as a list of (offset, bytes-without-newline).

        All lines of one call come from one file; `source` names that file's fingerprint.
        An empty list means nothing new at the moment.
        """
        for _ in range(4 + 2 * MAX_ROTATED):  # file switches per call: bounded
            if self._file is None:
                if not self._following:
                    self._next_file()
                    continue
                if self._appeared_and_rotated():
                    continue
                try:
                    self._open(self.path, 0)
                except FileNotFoundError:
                    return []
            data = os.pread(self._file.fd, self.read_size, self._pos)
            if data:
                f = self._file
                if self._following and f.fp is not None and _fingerprint_fd(f.fd) != f.fp:
                    # Truncated and written again past our position since we last looked:
                    # these bytes are not the continuation of what we read.
                    self._truncated()
                    continue
                self._pos += len(data)
                if f.fp is None:
                    f.fp = _fingerprint_fd(f.fd)
                return self._split(data)
            # At the end of the current file.
            if not self._following:
                f = self._file
                if not f.settled:
                    # A rotated file: a writer that found it at the path just before the
                    # rename may still be writing its batch. Wait that out, then read on.
                    f.settled = True
                    _wait_for_writers(f.fd)
                    if f.size() > self._pos:
                        continue
                tail = self._flush_partial()
                self._next_file()
                if tail:
                    return tail
                continue
            switched, tail = self._check_live()
            if tail:
                return tail
            if not switched:
                return []
        return []

    @property
    def source(self):
        """Fingerprint of the file the last lines came from (None before its first line)."""
        return self._file.fp if self._file is not None else None

    def _split(self, data):
        buf = self._buf + data if self._buf else data
        base = self.offset
        out = []
        start = 0
        if self._skipping:
            nl = buf.find(b"\n")
            if nl < 0:  # still inside the oversize line
                self.offset += len(buf)
                self._buf = b""
                return out
            start = nl + 1
            self._skipping = False
        limit = self.max_line_bytes
        find = buf.find
        while True:
            nl = find(b"\n", start)
            if nl < 0:
                break
            if nl - start > limit:
                out.append((base + start, buf[start:start + limit + 1]))
            else:
                out.append((base + start, buf[start:nl]))
            start = nl + 1
        rest = buf[start:]
        if len(rest) > limit:
            # An oversize line without its newline yet: deliver its head, skip the rest.
            out.append((base + start, rest[: limit + 1]))
            self._skipping = True
            self.offset = base + len(buf)
            self._buf = b""
        else:
            self.offset = base + start
            self._buf = rest
        return out

    def _flush_partial(self):
        """A file that will not grow again may end without a newline: deliver that last line."""
        if self._skipping:
            self._skipping = False
            self._buf = b""
            return []
        if not self._buf:
            return []
        line, off = self._buf, self.offset
        self.offset += len(line)
        self._buf = b""
        return [(off, line[: self.max_line_bytes + 1])]

    def _queue_after(self, f):
        """Where `f` is now, as (i, files to read after it) when it is <name>.i: the newer
        rotated files <name>.i-1 ... <name>.1 there are, then the live file. (None, None)
        when `f` is not among the rotated names."""
        found, newer = None, []
        for i, p, rst in self._rotated_files():
            if (rst.st_dev, rst.st_ino) == (f.dev, f.ino):
                found = i
                break
            newer.append(p)
        if found is None:
            return None, None
        return found, newer[::-1] + [self.path]

    def _next_file(self):
        """Move on to the next file after the current one (drained)."""
        if self._file is not None and self._queue:
            # The names may have shifted while we drained it (another rotation): go by where
            # it is now, not by the names it had when the queue was made.
            _, queue = self._queue_after(self._file)
            if queue is not None:
                self.rotations += max(0, len(queue) - len(self._queue))
                self._queue = queue
        self._close()
        while self._queue:
            nxt = self._queue.pop(0)
            if not self._queue:
                break  # the live file
            try:
                self._open(nxt, 0)
            except FileNotFoundError:
                continue
            self._following = False
            return
        self._open_live(0)

    def _check_live(self):
        """At EOF of the live file: has it been rotated or truncated? Returns (switched, lines)."""
        f = self._file
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
            i, _ = self._queue_after(f)
            if i is None or i == 1:
                # Deleted, or rotated and the new file not created yet: keep our handle,
                # the file may come back.
                return False, []
            # Rotated more than once: newer files are waiting under <name>.i-1 ...
        if st is None or (st.st_dev, st.st_ino) != (f.dev, f.ino):
            # Renamed away. A Lumen writer checks the path under its lock, so once we hold
            # LOCK_SH (waiting out a write in progress) no more lines can land in the old
            # file: read whatever landed after our last read, then move on.
            _wait_for_writers(f.fd)
            data = os.pread(f.fd, self.read_size, self._pos)
            if data:
                self._pos += len(data)
                return True, self._split(data)
            tail = self._flush_partial()
            # If it was rotated more than once since we looked, newer copies come first.
            i, queue = self._queue_after(f)
            self.rotations += i or 1
            self._following = False
            self._queue = queue or [self.path]
            self._next_file()
            return True, tail
        fp_now = _fingerprint_fd(f.fd) if f.fp is not None else None
        if st.st_size < self._pos or (f.fp is not None and fp_now != f.fp):
            self._truncated()
            return True, []
        return False, []

    def _truncated(self):
        """The live file was truncated in place (copytruncate): finish from the copy when it
        is ours, continuing exactly where reading stood; then the live file from 0."""
        self.truncations += 1
        f = self._file
        old_fp, pos, buf, skipping = f.fp, self._pos, self._buf, self._skipping
        if old_fp is not None and self._drain_copy(old_fp, self.offset, skipping):
            self._pos, self._buf = pos, buf
            return
        self._open_live(0)

    # ----------------------------------------------------------- checkpoints
    def commit(self, state=None):
        """Record that every line delivered so far has been handled (with the consumer's state)."""
        if state is not None:
            self.state = state
        f = self._file
        if f is None:  # waiting for the file: remember which rotated files were already there
            ck = {"dev": 0, "ino": 0, "offset": 0, "fp": None,
                  "known_rotated": sorted(self._known_rotated)}
        else:
            if f.fp is None:
                f.fp = _fingerprint_fd(f.fd)
            ck = {"dev": f.dev, "ino": f.ino, "offset": self.offset, "fp": f.fp,
                  "skipping": self._skipping, "path": f.name}
        ck["state"] = self.state
        checkpoint.save_json(self.ckpt_path, ck)
        self.checkpoints += 1

    def bytes_behind(self):
        """Bytes not yet delivered: the rest of the current file plus any file queued after it."""
        total = 0
        if self._file is not None:
            total += max(0, self._file.size() - self.offset)
        for p in self._queue:
            try:
                total += os.stat(p).st_size
            except FileNotFoundError:
                pass
        if self._file is None and self._following:
            try:
                total += os.stat(self.path).st_size
            except FileNotFoundError:
                pass
        return total
