"""The one tailer every Lumen consumer reads its JSONL stream with.

What it guarantees:
- only complete lines are delivered, in batches that name their file: `poll()` returns a
  `Batch` (a list of (offset, bytes)) whose `fp` is the fingerprint of the file the lines
  are in, so a position (fp, offset) always names its own file; a trailing partial line
  waits for its newline (a rotated file's unterminated last line is delivered with that
  rotated file's fingerprint);
- a per-consumer checkpoint (`<offsets_dir>/<consumer>.json`: device, inode, offset, the
  file's fingerprint and size, the files already drained, plus the consumer's own state)
  is written atomically, and only when the consumer calls `commit()`;
- a restart resumes from the checkpoint, never from the end of the file. The checkpoint's
  file is looked for as the live file, then among the rotated files `<name>.1` ...
  `<name>.MAX_ROTATED` by inode, then by fingerprint, compressed ones (`<name>.N.gz`)
  included; files rotated after it are read next, oldest first;
- a new consumer reads everything still on disk: the oldest rotated file (compressed or
  not) first, then the newer ones, then the live file;
- rename rotation: the old file is drained to EOF, waiting out a batch a writer may still
  be writing into it; the next file is the oldest rotated file not drained yet (files are
  known by (fingerprint, size) once drained, so names shifting or files being compressed
  while we read changes nothing);
- copytruncate (size < offset, or the first line changed): the remainder is read from the
  copy whose fingerprint matches, then the live file from 0;
- bytes that are gone before they were read (the checkpoint's file deleted, a truncation
  without a copy) are counted in `gap_bytes` and logged with the file and size;
- a line longer than `max_line_bytes` is delivered as its first `max_line_bytes + 1`
  bytes (so a length check classifies it) and the rest of it is skipped.

What it does not do: parse or validate lines (lumen.events), sleep (callers poll), lock
the consumer name (lumen.consumer).
"""

import fcntl
import gzip
import hashlib
import os
import sys
import time
import zlib
from pathlib import Path

from . import checkpoint

FP_BYTES = 1024  # the fingerprint hashes the first line, or the first FP_BYTES of it
MAX_ROTATED = 20  # <name>.1 ... <name>.20 (and .gz) are searched for a consumer's file
MAX_DONE = 64  # drained files remembered, newest last


def _fp_of_head(head, final):
    """Fingerprint of a file from its first bytes: the first line (capped at FP_BYTES);
    for a file that will not grow (`final`), whatever it holds when it has no newline."""
    nl = head.find(b"\n")
    if nl >= 0:
        head = head[: nl + 1]
    elif len(head) < FP_BYTES:
        if not final:
            return None
        head = b"partial:" + head
    return hashlib.sha256(head).hexdigest()[:24]


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


class Batch(list):
    """Lines of one file: [(offset, bytes-without-newline), ...] and that file's `fp`."""

    __slots__ = ("fp",)

    def __init__(self, fp=None, lines=()):
        super().__init__(lines)
        self.fp = fp


class _File:
    """An open plain file being read: its identity and where reading stands."""

    gz = False

    def __init__(self, path, final=False):
        self.fd = os.open(path, os.O_RDONLY)
        st = os.fstat(self.fd)
        self.dev, self.ino = st.st_dev, st.st_ino
        self.name = str(path)
        self.settled = False  # a rotated file: no write is in progress any more
        self.fp = self.fingerprint(final)

    def fingerprint(self, final=False):
        return _fp_of_head(os.pread(self.fd, FP_BYTES, 0), final)

    def pread(self, n, pos):
        return os.pread(self.fd, n, pos)

    def size(self):
        return os.fstat(self.fd).st_size

    def lock_fd(self):
        return self.fd

    def close(self):
        os.close(self.fd)


class _GzFile:
    """A rotated file compressed by logrotate, read as its uncompressed bytes: offsets are
    those of the original file. Reads are sequential; a backward seek re-reads from 0."""

    gz = True
    settled = True

    def __init__(self, path, final=True):
        self.f = gzip.open(path, "rb")
        st = os.fstat(self.f.fileno())
        self.dev, self.ino = st.st_dev, st.st_ino
        self.name = str(path)
        self.fp = _fp_of_head(self.f.read(FP_BYTES), True)
        self._size = _gz_size(self.f.fileno())

    def fingerprint(self, final=True):
        return self.fp

    def pread(self, n, pos):
        try:
            self.f.seek(pos)
            return self.f.read(n)
        except _GZ_ERRORS:  # cut short or corrupt: what could be read is all there is
            return b""

    def size(self):
        return self._size

    def lock_fd(self):
        return None

    def close(self):
        self.f.close()


def _gz_size(fd):
    """Uncompressed size from the gzip trailer (ISIZE, modulo 4 GiB)."""
    try:
        tail = os.pread(fd, 4, max(0, os.fstat(fd).st_size - 4))
        return int.from_bytes(tail, "little") if len(tail) == 4 else 0
    except OSError:
        return 0


def _open(path, final=False):
    return _GzFile(path) if str(path).endswith(".gz") else _File(path, final)


# A compressed file that is not gzip, or cut short: it cannot be read; treat as absent.
_GZ_ERRORS = (OSError, EOFError, zlib.error, gzip.BadGzipFile)


def _check_position(ck, where):
    ok = (
        isinstance(ck, dict)
        and all(type(ck.get(k, 0)) is int and ck.get(k, 0) >= 0 for k in ("dev", "ino", "offset"))
        and isinstance(ck.get("done") or [], list)
        and all(isinstance(d, list) and len(d) == 2 for d in ck.get("done") or [])
    )
    if not ok or (ck.get("ino") and "offset" not in ck):
        raise checkpoint.CorruptState(
            f"{where}: corrupt checkpoint (not a position Lumen "
            f"wrote); move it aside to re-read the stream"
        )


class JsonStore:
    """A checkpoint kept as an atomic JSON file (the default)."""

    def __init__(self, path):
        self.path = Path(path)

    def __str__(self):
        return str(self.path)

    def load(self):
        return checkpoint.load_json(self.path)

    def save(self, ck):
        checkpoint.save_json(self.path, ck)


def position_of(path):
    """The position just past the end of the file at `path` now (a checkpoint without
    state), for a reader that must later read what was appended after it; None if absent."""
    try:
        f = _File(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return {
            "dev": f.dev,
            "ino": f.ino,
            "offset": f.size(),
            "size": f.size(),
            "fp": f.fp if f.fp is not None else f.fingerprint(),
            "path": f.name,
        }
    finally:
        f.close()


class Tailer:
    def __init__(
        self,
        path,
        consumer,
        offsets_dir="logs/.offsets",
        max_line_bytes=1 << 20,
        read_size=1 << 20,
        log=None,
        store=None,
        start=None,
    ):
        """`store` keeps the checkpoint (default: JsonStore(<offsets_dir>/<consumer>.json));
        `start`, a position dict (`{}`: from the oldest file), replaces loading it."""
        self.path = Path(path)
        self.consumer = consumer
        self.ckpt_path = Path(offsets_dir) / f"{consumer}.json"
        self.store = store or JsonStore(self.ckpt_path)
        self.max_line_bytes = max_line_bytes
        self.read_size = max(read_size, 4096)
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.rotations = 0  # rename rotations followed
        self.truncations = 0  # truncations (copytruncate) detected
        self.checkpoints = 0  # checkpoints written
        self.gap_bytes = 0  # bytes gone before they were read (deleted, truncated)
        self.state = None  # the consumer's own state, as last committed
        self._file = None  # the open file being read
        self._following = True  # _file is (or will be) the live file, not a rotated one
        self.offset = 0  # offset just past the last line delivered
        self._pos = 0  # offset of the next read
        self._buf = b""  # bytes read past self.offset: a partial line
        self._head = b""  # see _use
        self._skipping = False  # inside an oversize line, discarding to its newline
        self._done = []  # [fp, size] of drained rotated files, newest last
        self._fps = {}  # (dev, ino, size, mtime) -> fingerprint of rotated files
        self._index = None  # <name>.i the current rotated file was at when opened
        self._waiting = False  # waiting for the live file after following one: files
        #                           rotated meanwhile were live files we never got to see
        self._restore(start)

    # ------------------------------------------------------------ rotated files
    def _rotated_files(self):
        """(i, path, stat) of each <name>.i and <name>.i.gz that exists, oldest first."""
        out = []
        for i in range(MAX_ROTATED, 0, -1):
            # Both names at once: logrotate is compressing <name>.i; the plain file is whole.
            for p in (f"{self.path}.{i}", f"{self.path}.{i}.gz"):
                try:
                    out.append((i, p, os.stat(p)))
                    break
                except (FileNotFoundError, NotADirectoryError):
                    continue
        return out

    def _identity(self, p, st):
        """(fingerprint, size) of a rotated file, or None if it cannot be read."""
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        ident = self._fps.get(key)
        if ident is None:
            try:
                f = _open(p, final=True)
            except (FileNotFoundError, *_GZ_ERRORS):
                return None
            try:
                ident = (f.fp, f.size())
            finally:
                f.close()
            if len(self._fps) > 4 * MAX_ROTATED:
                self._fps.clear()
            self._fps[key] = ident
        return ident

    def _is_done(self, ident):
        return ident is not None and [ident[0], ident[1]] in self._done

    def _mark_done(self, fp, size):
        if fp is None or [fp, size] in self._done:
            return
        self._done.append([fp, size])
        del self._done[:-MAX_DONE]

    def _mark_older_done(self, index):
        """Every rotated file older than <name>.index (or all, for None) has been read."""
        for i, p, st in self._rotated_files():
            if index is None or i > index:
                ident = self._identity(p, st)
                if ident is not None:
                    self._mark_done(*ident)

    # ----------------------------------------------------------------- restore
    def _restore(self, start):
        ck = self.store.load() if start is None else (start or None)
        if ck is None:
            self._advance()  # a new consumer: the oldest file still on disk
            return
        _check_position(ck, self.store)
        self.state = ck.get("state")
        self._done = [list(d) for d in ck.get("done") or []][-MAX_DONE:]
        skipping = ck.get("skipping", False)
        if not ck.get("ino"):
            # Committed while waiting for the live file: the rotated files there then had
            # been read (an older checkpoint lists them by inode, or not at all).
            known = ck.get("known_rotated")
            known = {tuple(k) for k in known} if known is not None else None
            for _, p, st in self._rotated_files():
                if "done" not in ck and (known is None or (st.st_dev, st.st_ino) in known):
                    ident = self._identity(p, st)
                    if ident is not None:
                        self._mark_done(*ident)
            self._following = True
            self._waiting = True
            return
        want = (ck["dev"], ck["ino"])
        fp, offset = ck.get("fp"), ck["offset"]

        # The live file is still ours: same inode, long enough, same first line.
        st = self._stat_live()
        if st is not None and (st.st_dev, st.st_ino) == want:
            live_fp = self._fp_live()
            if fp is None and offset == 0 and "done" in ck:
                # Nothing of it delivered, its first line never whole: a copytruncate while
                # we were down would leave it looking the same. Its copy is a rotated file
                # not drained yet; _advance reads those first, then this file from 0.
                self._advance()
                return
            if st.st_size >= offset and (fp is None or live_fp == fp):
                self._mark_older_done(None)
                self._open_live(offset, skipping)
                return
            # Truncated while we were down: the rest is in the copy, if there is one.
            if fp is not None and self._open_copy(fp, offset, skipping):
                self.truncations += 1
                return
            if fp is not None and live_fp == fp:  # shorter, same start: lost its tail
                self._mark_older_done(None)
                self._open_live(offset)
                self._shrunk(st.st_size)
                return
            # Truncated with no copy, or the inode was reused by a new file after ours was
            # deleted: rotated files not drained yet come first (the list of drained files
            # says which), then the live file from 0.
            self.truncations += 1
            self._gap(
                ck,
                f"{self.path} was truncated, or is another file now, and no copy of ours was found",
            )
            self._advance()
            return

        # Renamed away (or copied, or compressed): by inode, else by first line.
        rotated = self._rotated_files()
        for by_inode in (True, False):
            for i, p, rst in reversed(rotated):  # newest first: the likeliest place
                if by_inode:  # and the same first line: an inode number can be reused
                    same = (
                        not p.endswith(".gz")
                        and (rst.st_dev, rst.st_ino) == want
                        and (fp is None or (self._identity(p, rst) or (None,))[0] == fp)
                    )
                else:
                    ident = self._identity(p, rst) if fp is not None else None
                    same = ident is not None and ident[0] == fp
                if not same:
                    continue
                try:
                    f = _open(p, final=True)
                except (FileNotFoundError, *_GZ_ERRORS):
                    continue
                if f.size() < offset:
                    f.close()
                    continue
                self.rotations += i  # <name>.i: rotated i times since the checkpoint
                self._mark_older_done(i)
                self._use(f, offset, skipping, following=False)
                self._index = i
                return

        # Not under a rotated name: the live file with the same first line is ours
        # (restored from backup, moved across filesystems).
        if st is not None and fp is not None and self._fp_live() == fp and st.st_size >= offset:
            self._mark_older_done(None)
            self._open_live(offset, skipping)
            return
        self._gap(ck, f"{ck.get('path') or self.path} (fingerprint {fp}) is no longer on disk")
        self._advance()

    def _gap(self, ck, why):
        lost = max(0, (ck.get("size") or ck["offset"]) - ck["offset"])
        self.gap_bytes += lost
        # A lower bound: what was appended to the file after the checkpoint is not known.
        self.log(
            f"[tail] {self.consumer}: {why}: at least {lost} unread bytes after offset "
            f"{ck['offset']} are lost (more if it grew after the last checkpoint); going "
            f"on with the oldest file not read yet"
        )

    def _stat_live(self):
        try:
            return os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _fp_live(self):
        try:
            f = _File(self.path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        try:
            return f.fp
        finally:
            f.close()

    def _open_copy(self, fp, offset, skipping):
        """After a copytruncate: read the copy of our file (the newest rotated file with our
        fingerprint, long enough) from `offset`. A copy with our fingerprint but shorter
        than what we read lost the lines written between logrotate's copy and its truncate
        (we read them from the live file): we have read all of it, so it is marked drained
        and reading goes on with the files after it. Returns "open" (reading the copy from
        `offset`), "short" (the copy held nothing new), or None (no copy)."""
        short = None
        for i, p, st in reversed(self._rotated_files()):
            ident = self._identity(p, st)
            if ident is None or ident[0] != fp:
                continue
            if ident[1] < offset:
                short = short or (i, ident)
                continue
            try:
                f = _open(p, final=True)
            except (FileNotFoundError, *_GZ_ERRORS):
                continue
            self._mark_older_done(i)
            self._use(f, offset, skipping, following=False)
            self._index = i
            return "open"
        if short is None:
            return None
        i, ident = short
        self._mark_older_done(i)
        self._mark_done(*ident)
        self._close()
        self._advance()
        return "short"

    # ------------------------------------------------------------- open/close
    def _use(self, f, offset, skipping=False, following=False):
        self._close()
        self._file = f
        self._following = following
        if following:
            self._waiting = False
        self.offset = self._pos = offset
        self._buf = b""
        self._skipping = skipping
        # The first bytes read, while the file has no fingerprint (only a live file opened
        # at 0 can lack one: its first line not whole yet), to take it from them.
        self._head = b""

    def _open_live(self, offset, skipping=False):
        """Follow the live file from `offset`; if it is not there, wait for it."""
        try:
            f = _File(self.path)
        except (FileNotFoundError, NotADirectoryError):
            self._close()
            self._following = True
            self._waiting = True
            self.offset = self._pos = 0
            self._buf = b""
            self._skipping = False
            return False
        self._use(f, offset, skipping, following=True)
        return True

    def _advance(self):
        """Open the oldest rotated file not drained yet, else follow the live file.
        Returns False when there is nothing to open (waiting for the live file)."""
        for i, p, st in self._rotated_files():
            ident = self._identity(p, st)
            if ident is None or self._is_done(ident):
                continue
            try:
                f = _open(p, final=True)
            except (FileNotFoundError, *_GZ_ERRORS):
                continue
            if self._waiting:
                self.rotations += 1  # created and renamed while we waited for it
            self._use(f, 0, following=False)
            self._index = i
            return True
        return self._open_live(0)

    def _finish_rotated(self):
        """The current (rotated) file is drained: remember it and move on."""
        f = self._file
        now = self._where(f)
        if now is not None and self._index is not None:
            self.rotations += max(0, now - self._index)  # rotations while we drained it
        self._mark_done(f.fp if f.fp is not None else f.fingerprint(True), self._pos)
        self._close()
        self._following = False
        self._advance()

    def _where(self, f):
        """The i of <name>.i where the open file `f` is now, or None."""
        for i, p, st in self._rotated_files():
            if (st.st_dev, st.st_ino) == (f.dev, f.ino) or (
                p.endswith(".gz") and self._identity(p, st) == (f.fp, f.size())
            ):
                return i
        return None

    def _close(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self):
        self._close()

    # ---------------------------------------------------------------- reading
    def poll(self):
        """Complete lines available now, as a Batch [(offset, bytes-without-newline)] of
        one file (`batch.fp`). An empty Batch means nothing new at the moment."""
        for _ in range(8 + 4 * MAX_ROTATED):  # file switches per call: bounded
            if self._file is None:
                if not self._advance():
                    return Batch()
                continue
            f = self._file
            data = f.pread(self.read_size, self._pos)
            if data:
                if self._following and self._replaced(f):
                    # Truncated and written again past our position since we last looked:
                    # these bytes are not the continuation of what we read.
                    self._truncated()
                    continue
                if f.fp is None:
                    # From the bytes read, not from the file again: that could be another
                    # file's head by now (truncated and rewritten: a copytruncate).
                    self._head = (self._head + data)[:FP_BYTES]
                    f.fp = _fp_of_head(self._head, False)
                self._pos += len(data)
                return self._split(data)
            # At the end of the current file.
            if not self._following:
                if not f.settled:
                    # A rotated file: a writer that found it at the path just before the
                    # rename may still be writing its batch. Wait that out, then read on.
                    f.settled = True
                    _wait_for_writers(f.lock_fd())
                    if f.size() > self._pos:
                        continue
                tail = self._flush_partial()
                self._finish_rotated()
                if tail:
                    return tail
                continue
            switched, tail = self._check_live()
            if tail:
                return tail
            if not switched:
                return Batch(f.fp)
        return Batch()

    @property
    def source(self):
        """Fingerprint of the file being read (None before its first line)."""
        return self._file.fp if self._file is not None else None

    def _split(self, data):
        buf = self._buf + data if self._buf else data
        base = self.offset
        out = Batch(self._file.fp)
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
        append = out.append
        while True:
            nl = find(b"\n", start)
            if nl < 0:
                break
            if nl - start > limit:
                append((base + start, buf[start : start + limit + 1]))
            else:
                append((base + start, buf[start:nl]))
            start = nl + 1
        rest = buf[start:]
        if len(rest) > limit:
            # An oversize line without its newline yet: deliver its head, skip the rest.
            append((base + start, rest[: limit + 1]))
            self._skipping = True
            self.offset = base + len(buf)
            self._buf = b""
        else:
            self.offset = base + start
            self._buf = rest
        return out

    def _flush_partial(self):
        """A file that will not grow again may end without a newline: deliver that last
        line, named by this file's fingerprint."""
        f = self._file
        if f.fp is None:
            f.fp = f.fingerprint(final=True)
        if self._skipping:
            self._skipping = False
            self._buf = b""
            return Batch(f.fp)
        if not self._buf:
            return Batch(f.fp)
        line, off = self._buf, self.offset
        self.offset += len(line)
        self._buf = b""
        return Batch(f.fp, [(off, line[: self.max_line_bytes + 1])])

    def _check_live(self):
        """At EOF of the live file: has it been rotated or truncated? Returns (switched, lines).

        The file we hold is checked first: truncated in place (a copytruncate, perhaps
        followed by a rename before we looked) is told apart from renamed whole."""
        f = self._file
        size = f.size()
        changed = f.fp is not None and f.fingerprint() != f.fp
        if size < self._pos and f.fp is not None and not changed:
            self._shrunk(size)  # the same file, cut back: not a copytruncate
            return False, Batch(f.fp)
        if size < self._pos or changed:
            self._truncated()
            return True, Batch()
        st = self._stat_live()
        if st is None:
            # Deleted, or rotated and the new file not created yet. If it is among the
            # rotated files, treat it as rotated; if it is nowhere, keep the handle: the
            # file may come back (a file deleted for good is drained already).
            if not any(
                (rst.st_dev, rst.st_ino) == (f.dev, f.ino) for _, _, rst in self._rotated_files()
            ):
                return False, Batch(f.fp)
        if st is None or (st.st_dev, st.st_ino) != (f.dev, f.ino):
            # Renamed away. A Lumen writer checks the path under its lock, so once we hold
            # LOCK_SH (waiting out a write in progress) no more lines can land in the old
            # file: read whatever landed after our last read, then move on.
            _wait_for_writers(f.fd)
            data = f.pread(self.read_size, self._pos)
            if data:
                self._pos += len(data)
                return True, self._split(data)
            tail = self._flush_partial()
            self._index = self._where(f)
            self.rotations += self._index or 1  # rotated more than once since we looked?
            f.settled = True
            self._finish_rotated()
            return True, tail
        if f.fp is None and self._undrained_rotated():
            # We never saw this file's first line whole, so a copytruncate that wrote and
            # truncated it between two looks leaves it as it was (empty, or the same
            # fragment). A rotated file we have not read can only be that copy.
            self._truncated()
            return True, Batch()
        return False, Batch(f.fp)

    def _replaced(self, f):
        """Is the live file we hold no longer the one we were reading (truncated and written
        again)? By its first line; before that line was ever whole, by the bytes we hold
        of it, and by a rotated file we have not read appearing (its copy)."""
        if f.fp is not None:
            return f.fingerprint() != f.fp
        if self._pos and f.pread(self._pos, 0) != self._head:
            return True
        return self._undrained_rotated()

    def _undrained_rotated(self):
        return any(
            not self._is_done(self._identity(p, st)) and self._identity(p, st)
            for _, p, st in self._rotated_files()
        )

    def _shrunk(self, size):
        """The live file got shorter but still starts with our first line: a writer cut a
        failed write back to its last whole line (lumen.jsonl), or the machine lost the
        file's unsynced tail. Bytes of a partial line we were holding are dropped; lines
        already delivered that are gone are reported (they cannot be taken back)."""
        if size >= self.offset:
            self._buf = b""
            self._pos = self.offset
            return
        self.log(
            f"[tail] {self.consumer}: {self.path} shrank to {size} bytes, below the "
            f"{self.offset} already read: {self.offset - size} bytes read before are "
            f"gone from the file"
        )
        self.offset = self._pos = size
        self._buf = b""
        self._skipping = False

    def _truncated(self):
        """The live file was truncated in place (copytruncate): finish from the copy when it
        is ours, continuing exactly where reading stood; then the live file from 0. Without
        our file's fingerprint (its first line was never whole) the copy cannot be told by
        it: the rotated files not drained yet are read from 0 (nothing of this file was
        delivered), which includes the copy."""
        self.truncations += 1
        f = self._file
        old_fp, pos, buf, skipping, offset = f.fp, self._pos, self._buf, self._skipping, self.offset
        found = self._open_copy(old_fp, offset, skipping) if old_fp is not None else None
        if found == "open":
            self._pos, self._buf = pos, buf
            return
        if found == "short":
            if pos > offset:  # a line we had begun, whose rest was in neither file
                self.gap_bytes += pos - offset
            return
        if old_fp is not None and pos > offset:
            self.gap_bytes += pos - offset
            self.log(
                f"[tail] {self.consumer}: {self.path} was truncated with no copy: "
                f"at least {pos - offset} bytes after offset {offset} are lost"
            )
        self._close()
        self._advance()

    # ----------------------------------------------------------- checkpoints
    def position(self):
        """What a checkpoint records of where reading stands (no consumer state)."""
        f = self._file
        if f is None:  # waiting for the live file
            return {"dev": 0, "ino": 0, "offset": 0, "fp": None, "done": self._done}
        # f.fp stays None until a first line was read whole (poll sets it from the bytes
        # read): taken from the file here, it could be a rewritten file's, which would
        # then pass for ours.
        return {
            "dev": f.dev,
            "ino": f.ino,
            "offset": self.offset,
            "fp": f.fp,
            "size": f.size(),
            "skipping": self._skipping,
            "path": f.name,
            "done": self._done,
        }

    def commit(self, state=None):
        """Record that every line delivered so far has been handled (with the consumer's
        state). Raises OSError when the checkpoint cannot be written (disk full)."""
        if state is not None:
            self.state = state
        ck = self.position()
        ck["state"] = self.state
        self.store.save(ck)
        self.checkpoints += 1

    def bytes_behind(self):
        """Bytes not yet delivered: the rest of the current file, plus (while reading
        rotated files) the rotated files not drained yet and the live file."""
        f = self._file
        total = max(0, f.size() - self.offset) if f is not None else 0
        if f is not None and self._following:
            return total
        for _, p, st in self._rotated_files():
            ident = self._identity(p, st)
            if ident is not None and not self._is_done(ident) and (f is None or ident[0] != f.fp):
                total += ident[1]
        st = self._stat_live()
        if st is not None:
            total += st.st_size
        return total
