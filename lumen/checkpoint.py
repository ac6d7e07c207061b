"""Atomic state files: write a temp file, fsync, rename; never a half-written checkpoint.

Used for the tailer's per-consumer offsets (`logs/.offsets/<consumer>.json`) and any
other small state a process must find intact after a crash.
"""

import json
import os
import tempfile
from pathlib import Path


def write_atomic(path, data: bytes) -> None:
    """Replace `path` with `data` so a reader sees the old or the new file, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    # The rename is durable once the directory entry is.
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class CorruptState(ValueError):
    """A state file that is not what Lumen wrote: the message names it and how to recover."""


def save_json(path, obj) -> None:
    write_atomic(path, json.dumps(obj, sort_keys=True).encode() + b"\n")


def load_json(path):
    """The saved object, or None when there is none. A corrupt file is an error naming it."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise CorruptState(f"{path}: is a directory, not a checkpoint") from None
    try:
        obj = json.loads(raw)
    except ValueError as e:  # UnicodeDecodeError included
        obj, why = None, str(e)
    else:
        why = None if isinstance(obj, dict) else f"expected an object, got {type(obj).__name__}"
    if why:
        raise CorruptState(
            f"{path}: corrupt checkpoint ({why}); move it aside to re-read "
            f"the stream from the oldest file on disk"
        ) from None
    return obj
