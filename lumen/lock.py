"""A consumer name is an exclusive lock: one process per name, per state directory.

`hold(path)` takes `flock(LOCK_EX | LOCK_NB)` on `path` (beside the consumer's checkpoint)
and writes the holder's PID into it; the kernel drops the lock when the process dies, so
a stale lock file never blocks a restart. A second process gets `Busy`, naming the holder.
Within one process the lock is shared (a test that re-opens a consumer is not a rival).
"""

import fcntl
import os
from pathlib import Path

_held = {}  # resolved path -> [fd, users]


class Busy(Exception):
    """Another process holds the lock; the message names it and its PID."""


def hold(path, what):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = str(path.resolve())
    if key in _held:
        _held[key][1] += 1
        return key
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise Busy(f"{what} is already running (pid {holder}; lock {path})") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:  # a full disk: the lock holds without the PID text
        pass
    _held[key] = [fd, 1]
    return key


def release(key):
    entry = _held.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        del _held[key]
        os.close(entry[0])
