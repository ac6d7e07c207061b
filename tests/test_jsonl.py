"""The shared writer (lumen.jsonl), against the writer contract of docs/architecture.md:
whole lines only, one locked write() per batch (two writer processes never interleave), and
the file re-opened by path on every flush so that a rename rotation is picked up."""

import fcntl
import json
import os
import subprocess
import threading

import orjson
import pytest

from conftest import PY, ROOT, wait_until
from lumen import jsonl
from lumen.jsonl import JsonlWriter, append_lines, dumps

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def log(workdir):
    p = workdir / "logs" / "w.jsonl"
    p.parent.mkdir()
    return p


def lines_in(*paths):
    out = []
    for p in paths:
        data = p.read_bytes()
        assert data == b"" or data.endswith(b"\n"), f"{p} ends in a partial line"
        out += data.split(b"\n")[:-1]
    return out


# ------------------------------------------------------- concurrent writers
BATCH_WRITER = r"""
import sys, time
from pathlib import Path
from lumen.jsonl import JsonlWriter, append_lines, dumps
path, who, batches, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
pad = who * 8000
while not go.exists():
    time.sleep(0.001)
if who == "A":  # one writer through JsonlWriter, the other through append_lines
    w = JsonlWriter(path)
    for b in range(batches):
        for i in range(50):
            w.add({"w": who, "b": b, "i": i, "pad": pad})
        assert w.flush() == 50
else:
    for b in range(batches):
        append_lines(path, [dumps({"w": who, "b": b, "i": i, "pad": pad}) for i in range(50)])
"""


def test_two_writer_processes_never_interleave(log, workdir):
    batches = 40
    go = workdir / "go"
    ps = [
        subprocess.Popen(
            [PY, "-c", BATCH_WRITER, str(log), who, str(batches), str(go)],
            cwd=ROOT,
            stderr=subprocess.PIPE,
        )
        for who in ("A", "B")
    ]
    try:
        go.touch()  # both start together
        for p in ps:
            assert p.wait(timeout=50) == 0, p.stderr.read()
    finally:
        for p in ps:
            if p.poll() is None:
                p.kill()
                p.wait()
    lines = lines_in(log)
    assert len(lines) == 2 * batches * 50
    evs = [orjson.loads(ln) for ln in lines]  # every line is complete JSON
    for ev in evs:
        assert ev["pad"] == ev["w"] * 8000
    # Each batch is contiguous (its 50 lines in order) and each writer's batches in order.
    seen = {"A": [], "B": []}
    for k in range(0, len(evs), 50):
        chunk = evs[k : k + 50]
        who, b = chunk[0]["w"], chunk[0]["b"]
        assert [(e["w"], e["b"], e["i"]) for e in chunk] == [(who, b, i) for i in range(50)]
        seen[who].append(b)
    assert seen == {"A": list(range(batches)), "B": list(range(batches))}


def count_refused_locks(monkeypatch):
    """Count the writer's lock attempts refused because another process holds the lock."""
    real_flock = fcntl.flock
    refused = []

    def flock(fd, op):
        try:
            return real_flock(fd, op)
        except BlockingIOError:
            refused.append(fd)
            raise

    monkeypatch.setattr(jsonl.fcntl, "flock", flock)
    return refused


def test_append_waits_for_the_lock_of_another_writer(log, monkeypatch):
    log.touch()
    held = os.open(log, os.O_WRONLY | os.O_APPEND)
    fcntl.flock(held, fcntl.LOCK_EX)  # another writer is in the middle of its batch
    refused = count_refused_locks(monkeypatch)
    done = []
    th = threading.Thread(target=lambda: done.append(append_lines(log, [b'{"n":2}\n'])))
    th.start()
    try:
        # The writer polls for the lock (bounded by LOCK_TIMEOUT_S): wait until it was refused.
        wait_until(
            lambda: len(refused) >= 3,
            timeout=1,
            interval=0.001,
            what="the writer to be refused the lock",
        )
        assert th.is_alive() and done == [] and log.read_bytes() == b""
        os.write(held, b'{"n":1}\n')
    finally:
        os.close(held)  # releases the lock
    th.join(timeout=10)
    assert done == [8]
    assert log.read_bytes() == b'{"n":1}\n{"n":2}\n'


def test_a_lock_held_too_long_is_an_error_not_a_hang(log, monkeypatch):
    append_lines(log, [b'{"n":1}\n'])
    monkeypatch.setattr(jsonl, "LOCK_TIMEOUT_S", 0.05)
    held = os.open(log, os.O_WRONLY | os.O_APPEND)
    fcntl.flock(held, fcntl.LOCK_EX)  # some other process never lets go
    try:
        fds_before = len(os.listdir("/proc/self/fd"))
        with pytest.raises(jsonl.LockTimeout, match=str(log)):
            append_lines(log, [b'{"n":2}\n'])
        assert len(os.listdir("/proc/self/fd")) == fds_before  # its fd was closed
        w = JsonlWriter(log)
        w.add({"n": 2})
        with pytest.raises(jsonl.LockTimeout):
            w.flush()
        assert len(w) == 1  # the batch is kept for the next flush
    finally:
        os.close(held)
    assert w.flush() == 1
    assert log.read_bytes() == b'{"n":1}\n{"n":2}\n'


ROTATED_WRITER = r"""
import sys
from pathlib import Path
from lumen.jsonl import JsonlWriter
path, stop = sys.argv[1], Path(sys.argv[2])
w = JsonlWriter(path)
n = 0
while not stop.exists():
    for _ in range(10):
        w.add({"n": n, "pad": "r" * 300})
        n += 1
    w.flush()
print(n)
"""


def test_writer_process_under_rename_rotation_loses_nothing(log, workdir):
    stop = workdir / "stop"
    p = subprocess.Popen(
        [PY, "-c", ROTATED_WRITER, str(log), str(stop)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        for r in range(1, 8):
            wait_until(
                lambda: log.exists() and log.stat().st_size > 20_000,
                timeout=20,
                what="the writer to (re)create the file",
            )
            os.rename(log, f"{log}.{r}")
            assert p.poll() is None, p.stderr.read()  # the rotations race a live writer
        wait_until(lambda: log.exists(), timeout=20, what="the writer to create the file")
        stop.touch()
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    total = int(out)
    files = [log.with_name(f"{log.name}.{r}") for r in range(1, 8)] + [log]
    ns = [orjson.loads(ln)["n"] for ln in lines_in(*files)]
    assert ns == list(range(total))  # whole lines, in order, none lost, none twice
    assert all(f.stat().st_size > 0 for f in files)


# ------------------------------------------------------------- single writer
def test_append_lines_writes_exactly_the_batch(log):
    assert append_lines(log, [b'{"a":1}\n', b'{"b":2}\n']) == 16
    assert append_lines(log, [b'{"c":3}\n']) == 8
    assert log.read_bytes() == b'{"a":1}\n{"b":2}\n{"c":3}\n'


def test_refuses_a_batch_not_ending_in_newline(log):
    with pytest.raises(ValueError, match=f"{log}.*partial line"):
        append_lines(log, [b'{"a":1}\n', b'{"b":'])
    assert not log.exists()  # nothing written, not even the complete first line
    append_lines(log, [b'{"a":1}\n'])
    with pytest.raises(ValueError, match="partial line"):
        append_lines(log, [b"no newline"])
    assert log.read_bytes() == b'{"a":1}\n'


def test_empty_batch_writes_nothing(log):
    assert append_lines(log, []) == 0
    assert append_lines(log, [b""]) == 0
    assert not log.exists()
    w = JsonlWriter(log)
    assert w.flush() == 0
    assert not log.exists()
    assert (w.lines_written, w.batches_written) == (0, 0)


def test_dumps_is_one_line_of_utf8_json():
    ev = {"msg": "two\nlines", "é": "ü", "n": 1.5}
    raw = dumps(ev)
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    assert json.loads(raw.decode("utf-8")) == ev


def test_writer_batches_and_counters(log, workdir):
    w = JsonlWriter(workdir / "deep" / "er" / "x.jsonl")  # parents are created
    w.add({"n": 1})
    w.add_line(b'{"n":2}')  # a newline is added
    w.add_line(b'{"n":3}\n')  # not doubled
    assert len(w) == 3
    assert not w.path.exists()  # nothing is written before flush()
    assert w.flush() == 3
    assert len(w) == 0
    assert w.path.read_bytes() == b'{"n":1}\n{"n":2}\n{"n":3}\n'
    w.add({"n": 4})
    w.flush()
    assert (w.lines_written, w.batches_written) == (4, 2)


def test_writer_reopens_by_path_after_a_rename(log):
    w = JsonlWriter(log)
    w.add({"n": 1})
    w.flush()
    os.rename(log, f"{log}.1")
    w.add({"n": 2})
    w.flush()  # a new file at the path, not an append to the renamed one
    assert log.read_bytes() == b'{"n":2}\n'
    assert log.with_name(log.name + ".1").read_bytes() == b'{"n":1}\n'
    os.unlink(log)
    w.add({"n": 3})
    w.flush()
    assert log.read_bytes() == b'{"n":3}\n'


def test_failed_flush_keeps_the_batch(log, workdir):
    w = JsonlWriter(log)
    w.add({"n": 1})
    os.rmdir(log.parent)
    log.parent.write_bytes(b"")  # a file where the directory was: no write can succeed
    with pytest.raises(OSError):
        w.flush()
    assert len(w) == 1 and w.lines_written == 0
    assert w.try_flush() is False and w.write_errors == 1 and "logs" in w.last_error
    log.parent.unlink()  # the directory is made again by the next flush
    assert w.flush() == 1
    assert log.read_bytes() == b'{"n":1}\n'


@pytest.mark.parametrize("create", [True, False], ids=["new-file-created", "no-new-file"])
def test_a_rename_between_open_and_lock_is_noticed(log, monkeypatch, create):
    """The file is rotated after the writer opened it but before it got the lock: the batch
    must go to the new file at the path, not into the rotated one a reader may have drained."""
    append_lines(log, [b'{"n":0}\n'])
    real_flock = fcntl.flock
    renamed = []

    def flock_after_a_rotation(fd, op):
        if op & fcntl.LOCK_EX and not renamed:
            os.rename(log, f"{log}.1")
            if create:  # logrotate's `create`, or another writer, made the new file
                log.touch()
            renamed.append(True)
        return real_flock(fd, op)

    monkeypatch.setattr(jsonl.fcntl, "flock", flock_after_a_rotation)
    append_lines(log, [b'{"n":1}\n'])
    assert renamed
    assert log.with_name(log.name + ".1").read_bytes() == b'{"n":0}\n'
    assert log.read_bytes() == b'{"n":1}\n'


def test_append_releases_the_lock(log):
    append_lines(log, [b'{"n":1}\n'])
    fd = os.open(log, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # would raise if still held
    finally:
        os.close(fd)


def test_a_writer_that_syncs_later_holds_each_file_written_unlocked(tmp_path, monkeypatch):
    """fsync="later": each flush writes and keeps the file's descriptor (not its lock), so
    other writers go on; sync() fsyncs the very files written (a renamed one too) and lets
    them go; a failing fsync is raised after every descriptor is closed."""
    import errno
    import fcntl
    import os

    from lumen.jsonl import JsonlWriter

    path = tmp_path / "out.jsonl"
    w = JsonlWriter(path, fsync="later")
    w.add({"a": 1})
    assert w.flush() == 1 and path.read_bytes() == b'{"a":1}\n'
    fd = os.open(path, os.O_WRONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # not held by the writer any more
    os.close(fd)
    first = path.stat().st_ino
    path.rename(tmp_path / "out.jsonl.1")  # a rotation between a flush and the sync
    w.add({"a": 2})
    w.flush()
    held = list(w._held)
    inodes = sorted(os.fstat(x).st_ino for x in held)
    assert inodes == sorted([first, path.stat().st_ino])
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda f: synced.append(os.fstat(f).st_ino) or real_fsync(f))
    w.sync()
    assert sorted(synced) == inodes  # the files written, the renamed one included
    assert w._held == []
    for x in held:  # closed
        with pytest.raises(OSError):
            os.fstat(x)
    # A failing fsync: raised once all are closed; nothing is held after.
    w.add({"a": 3})
    w.flush()
    held = list(w._held)

    def eio(f):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fsync", eio)
    with pytest.raises(OSError):
        w.sync()
    assert w._held == []
    with pytest.raises(OSError):
        os.fstat(held[0])
