"""The shared tailer (lumen.tail) and its atomic checkpoints (lumen.checkpoint), against
the reader contract of docs/architecture.md: restart from the checkpoint (never from the
end), at-least-once commit, rename rotation and copytruncate (while following and while the
consumer is down), partial and oversize lines, missing and vanishing files, real byte
offsets, bytes behind."""

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import ROOT, wait_until
from lumen import checkpoint, tail
from lumen.jsonl import append_lines
from lumen.tail import Tailer

pytestmark = pytest.mark.timeout(60)


# ------------------------------------------------------------------ helpers
def line(n, pad=0):
    return json.dumps({"n": n, "pad": "p" * pad}).encode()


def write(path, ns, pad=0):
    """Append events numbered `ns` as one batch (the way every Lumen writer appends)."""
    append_lines(path, [line(n, pad) + b"\n" for n in ns])


def nums(got):
    return [json.loads(x)["n"] for _, x in got]


def drain(t, limit=100_000):
    """Everything the tailer has now: poll until it reports nothing new."""
    out = []
    for _ in range(limit):
        got = t.poll()
        if not got:
            return out
        out += got
    raise AssertionError("poll() never ran dry")


def restart(path, consumer="c", **kw):
    return Tailer(path, consumer, **kw)


def ckpt(workdir, consumer="c"):
    return json.loads((workdir / "logs" / ".offsets" / f"{consumer}.json").read_text())


def copytruncate(path):
    """What logrotate's copytruncate does: copy to <name>.1 (after shifting older copies),
    then truncate the live file in place (same inode)."""
    for i in range(8, 0, -1):
        if os.path.exists(f"{path}.{i}"):
            os.replace(f"{path}.{i}", f"{path}.{i + 1}")
    shutil.copyfile(path, f"{path}.1")
    with open(path, "r+b") as f:
        f.truncate(0)


def rotate(path):
    """Rename rotation: <name>.N -> <name>.N+1, ..., <name> -> <name>.1."""
    for i in range(8, 0, -1):
        if os.path.exists(f"{path}.{i}"):
            os.replace(f"{path}.{i}", f"{path}.{i + 1}")
    os.rename(path, f"{path}.1")


def check_offsets(path, got):
    """Each delivered (offset, line) is the line found at that byte offset of `path`."""
    with open(path, "rb") as f:
        for off, data in got:
            f.seek(off)
            assert f.readline() == data + b"\n", off


@pytest.fixture
def log(workdir):
    p = workdir / "logs" / "s.jsonl"
    p.parent.mkdir()
    return p


# ------------------------------------------------------- start and restart
def test_no_checkpoint_reads_from_offset_zero(log, workdir):
    write(log, range(10))
    t = Tailer(log, "c")
    got = drain(t)
    assert nums(got) == list(range(10))
    assert got[0][0] == 0
    assert not (workdir / "logs" / ".offsets" / "c.json").exists()  # only commit() writes it
    t.commit()
    ck = ckpt(workdir)
    st = os.stat(log)
    assert (ck["dev"], ck["ino"], ck["offset"]) == (st.st_dev, st.st_ino, st.st_size)
    assert t.checkpoints == 1


def test_restart_resumes_from_checkpoint_never_from_end(log):
    write(log, range(5))
    t = Tailer(log, "c")
    assert nums(drain(t)) == list(range(5))
    t.commit()
    t.close()
    for b in range(10):  # many batches while the consumer is down
        write(log, range(5 + 10 * b, 15 + 10 * b))
    t = restart(log)
    got = drain(t)
    assert nums(got) == list(range(5, 105))
    check_offsets(log, got)
    t.commit()
    t.close()
    assert drain(restart(log)) == []  # nothing new: nothing again


def test_many_restarts_lose_and_repeat_nothing(log):
    seen = []
    n = 0
    for k in range(1, 25):
        write(log, range(n, n + k))
        n += k
        t = restart(log)
        seen += nums(drain(t))
        t.commit()
        t.close()
    assert seen == list(range(n))


def test_uncommitted_lines_are_redelivered_committed_ones_are_not(log):
    write(log, range(4))
    t = Tailer(log, "c")
    assert nums(drain(t)) == [0, 1, 2, 3]
    t.commit()
    write(log, range(4, 8))
    assert nums(drain(t)) == [4, 5, 6, 7]
    t.close()  # "crash" before commit: 4..7 were delivered but not handled
    t = restart(log)
    assert nums(drain(t)) == [4, 5, 6, 7]  # at-least-once
    t.commit()
    t.close()
    write(log, [8])
    assert nums(drain(restart(log))) == [8]


def test_commit_keeps_consumer_state_and_consumers_are_independent(log, workdir):
    write(log, range(6))
    a = Tailer(log, "a")
    assert nums(drain(a)) == list(range(6))
    a.commit({"sum": 15})
    a.commit()  # no state given: the last one is kept
    a.close()
    b = Tailer(log, "b")
    assert nums(b.poll())[:1] == [0]
    b.close()  # b never committed: it has no checkpoint
    assert not (workdir / "logs" / ".offsets" / "b.json").exists()
    a = Tailer(log, "a")
    assert a.state == {"sum": 15}
    assert drain(a) == []
    assert nums(drain(Tailer(log, "b"))) == list(range(6))


def test_offsets_are_real_byte_offsets(log):
    # Lines of many lengths (multi-byte UTF-8 included) spanning read boundaries.
    data = [("é" * (i * 37 % 900)).encode() + b"|" + str(i).encode() for i in range(300)]
    append_lines(log, [d + b"\n" for d in data])
    t = Tailer(log, "c", read_size=4096)
    got = drain(t)
    assert [x for _, x in got] == data
    check_offsets(log, got)
    for (o1, d1), (o2, _) in zip(got, got[1:]):
        assert o2 == o1 + len(d1) + 1
    t.commit()
    t.close()
    append_lines(log, [b"tail\n"])
    got = drain(restart(log))
    assert got == [(os.path.getsize(log) - 5, b"tail")]


# ------------------------------------------------------------ partial lines
def test_partial_last_line_waits_for_its_newline(log, workdir):
    with open(log, "wb") as f:
        f.write(b'{"n":0}\n{"n":')
    t = Tailer(log, "c")
    assert t.poll() == [(0, b'{"n":0}')]
    assert t.poll() == []
    with open(log, "ab") as f:
        f.write(b"1")  # still no newline
    assert t.poll() == []
    t.commit()
    assert ckpt(workdir)["offset"] == 8  # stands before the partial line
    with open(log, "ab") as f:
        f.write(b'}\n{"n":2}\n')
    assert t.poll() == [(8, b'{"n":1}'), (16, b'{"n":2}')]
    t.close()
    # Restarted from the checkpoint taken while the line was partial: delivered once, whole.
    t = restart(log)
    assert drain(t) == [(8, b'{"n":1}'), (16, b'{"n":2}')]


# ----------------------------------------------------------- oversize lines
def test_oversize_line_is_cut_to_max_plus_one_and_the_rest_is_intact(log):
    big = b"y" * 5000
    exact = b"e" * 1000
    over1 = b"o" * 1001
    append_lines(log, [b"ok1\n", big + b"\n", b"ok2\n", exact + b"\n", over1 + b"\n", b"ok3\n"])
    t = Tailer(log, "c", max_line_bytes=1000, read_size=4096)
    got = drain(t)
    assert [x for _, x in got] == [b"ok1", big[:1001], b"ok2", exact, over1, b"ok3"]
    assert [o for o, _ in got] == [0, 4, 5005, 5009, 6010, 7012]


def test_oversize_line_arriving_across_several_polls(log):
    t = Tailer(log, "c", max_line_bytes=1000, read_size=4096)
    write(log, [0])
    got = drain(t)
    start = os.path.getsize(log)
    body = bytes(range(97, 123)) * 800  # 20 800 bytes, no newline inside
    # The line arrives in pieces, each poll sees some of it; its head is delivered once.
    for i in range(0, len(body), 700):
        with open(log, "ab") as f:
            f.write(body[i : i + 700])
        got += drain(t)
    assert len(got) == 2
    assert got[1] == (start, body[:1001])
    with open(log, "ab") as f:
        f.write(b"\n")
    write(log, [1, 2])
    rest = drain(t)
    assert nums(rest) == [1, 2]
    check_offsets(log, rest)
    # A big read_size sees the whole line at once: same result.
    assert [x for _, x in drain(Tailer(log, "d", max_line_bytes=1000))][1] == body[:1001]


def test_oversize_line_with_a_partial_head_already_buffered(log):
    t = Tailer(log, "c", max_line_bytes=1000, read_size=4096)
    with open(log, "wb") as f:
        f.write(b"a\n" + b"h" * 900)  # a partial line under the limit, buffered
    assert t.poll() == [(0, b"a")]
    with open(log, "ab") as f:
        f.write(b"H" * 5000 + b"\nb\n")
    got = drain(t)
    assert got == [(2, (b"h" * 900 + b"H" * 5000)[:1001]), (5903, b"b")]


def test_checkpoint_inside_an_oversize_line_and_restart(log, workdir):
    write(log, [0])
    base = os.path.getsize(log)
    with open(log, "ab") as f:
        f.write(b"z" * 9000)  # no newline yet
    t = Tailer(log, "c", max_line_bytes=1000, read_size=4096)
    got = drain(t)
    assert [x for _, x in got] == [line(0), b"z" * 1001]
    t.commit()
    assert ckpt(workdir)["skipping"] is True
    t.close()
    with open(log, "ab") as f:
        f.write(b"z" * 3000)  # the long line goes on while we are down
    t = restart(log, max_line_bytes=1000, read_size=4096)
    assert drain(t) == []  # still inside the line: no new "line" made of its middle
    t.commit()
    t.close()
    with open(log, "ab") as f:
        f.write(b"z" * 10 + b"\n")
    write(log, [1, 2])
    t = restart(log, max_line_bytes=1000, read_size=4096)
    got = drain(t)
    assert nums(got) == [1, 2]
    assert got[0][0] == base + 12011
    check_offsets(log, got)


# ---------------------------------------------------- rename rotation: live
def test_rename_rotation_while_following(log):
    write(log, range(10))
    t = Tailer(log, "c", read_size=4096)
    got = drain(t)
    write(log, range(10, 200), pad=50)  # lands in the old file, unread at the rename
    rotate(log)
    write(log, range(200, 210))  # the writer re-opens by path: a new file
    got += drain(t)
    assert nums(got) == list(range(210))
    assert t.rotations == 1
    write(log, range(210, 215))
    more = drain(t)
    assert nums(more) == list(range(210, 215))
    check_offsets(log, more)
    assert t.rotations == 1


def test_rename_rotation_before_the_new_file_exists(log):
    write(log, range(5))
    t = Tailer(log, "c")
    got = drain(t)
    rotate(log)
    for _ in range(3):  # the old file is drained; the new one is not there yet
        got += drain(t)
    write(log, range(5, 8))
    got += drain(t)
    got += drain(t)
    assert nums(got) == list(range(8))
    assert t.rotations == 1


def test_two_rotations_between_polls(log):
    write(log, range(3))
    t = Tailer(log, "c")
    got = drain(t)
    write(log, [3])
    rotate(log)
    write(log, [4])
    rotate(log)  # our file is now <name>.2
    write(log, [5])
    got += drain(t)
    assert nums(got) == list(range(6))
    assert t.rotations == 2


def test_two_rotations_between_polls_and_no_new_file_yet(log):
    write(log, range(3))
    t = Tailer(log, "c")
    got = drain(t)
    rotate(log)
    write(log, [3, 4])
    rotate(log)  # ours is <name>.2, the newer <name>.1 holds 3 and 4, no live file
    got += drain(t)
    assert nums(got) == list(range(5))
    assert t.rotations == 2
    write(log, [5])
    got += drain(t)
    assert nums(got) == list(range(6))


WRITER = r"""
import sys, time
from pathlib import Path
from lumen.jsonl import JsonlWriter
path, go, stop = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
w = JsonlWriter(path)
while not go.exists():
    time.sleep(0.001)
i = 0
while not stop.exists():
    for _ in range(7):
        w.add({"n": i, "pad": "w" * 200})
        i += 1
    w.flush()
print(i)
"""


def test_rotations_under_a_live_writer_process_lose_and_repeat_nothing(log, workdir):
    """A writer process appends batches as fast as it can while the file is rotated five
    times under it and the tailer keeps polling: every line is read exactly once, in order."""
    go, stop = workdir / "go", workdir / "stop"
    p = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(log), str(go), str(stop)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        t = Tailer(log, "c", read_size=4096)
        got = []
        go.touch()
        rotations = 0
        deadline = time.monotonic() + 30
        while t.rotations < 5:  # until the tailer has followed all five into the new file
            assert time.monotonic() < deadline, f"stuck after {len(got)} lines"
            assert p.poll() is None, p.stderr.read()  # still writing: rotations race it
            got += nums(t.poll())
            if len(got) > (rotations + 1) * 1500 and log.exists() and rotations < 5:
                rotate(log)
                rotations += 1
        stop.touch()
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        total = int(out)

        def caught_up():
            got.extend(nums(t.poll()))
            return len(got) >= total

        wait_until(caught_up, timeout=20, interval=0.001, what="the tailer to catch up")
        assert t.poll() == []
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert total > 5 * 1500
    assert got == list(range(total))
    assert t.rotations == 5


# ----------------------------------------------- rename rotation: while down
def test_rotation_while_down_found_as_dot_1(log):
    write(log, range(5))
    t = Tailer(log, "c")
    drain(t)
    t.commit()
    t.close()
    write(log, range(5, 9))
    rotate(log)
    write(log, range(9, 12))
    t = restart(log)
    got = drain(t)
    assert nums(got) == list(range(5, 12))
    assert t.rotations == 1
    check_offsets(log, got[-3:])


def test_two_rotations_while_down_found_as_dot_2(log):
    write(log, range(5))
    t = Tailer(log, "c")
    drain(t)
    t.commit()
    t.close()
    write(log, range(5, 8))
    rotate(log)
    write(log, range(8, 11))
    rotate(log)
    write(log, range(11, 13))
    t = restart(log)
    assert nums(drain(t)) == list(range(5, 13))
    assert t.rotations == 2
    write(log, [13])
    assert nums(drain(t)) == [13]


def test_rotation_while_down_with_identical_first_lines(log):
    """Every file starts with the same line (same fingerprint): the inode decides."""
    head = b'{"n":-1,"pad":"header"}\n'
    append_lines(log, [head])
    write(log, range(0, 20))
    t = Tailer(log, "c")
    drain(t)
    t.commit()
    t.close()
    write(log, [20])
    rotate(log)
    append_lines(log, [head])
    write(log, range(21, 60))  # .1 is longer than our offset in .2
    rotate(log)
    append_lines(log, [head])
    write(log, [60])
    t = restart(log)
    got = [n for n in nums(drain(t)) if n >= 0]
    assert got == list(range(20, 61))


def test_new_consumer_starts_at_the_oldest_rotated_file(log):
    write(log, [0, 1])
    rotate(log)
    write(log, [2, 3])
    rotate(log)
    write(log, [4])
    t = Tailer(log, "c")
    assert nums(drain(t)) == [0, 1, 2, 3, 4]
    write(log, [5])
    assert nums(drain(t)) == [5]


def test_a_batch_still_being_written_into_a_rotated_file_is_not_missed(log, monkeypatch):
    """A writer found the file at the path and took its lock just before the rename; it
    writes its batch while a restarted tailer drains <name>.1. The tailer waits it out."""
    write(log, [0])
    t = Tailer(log, "c")
    drain(t)
    t.commit()
    t.close()
    write(log, [1, 2])
    wfd = os.open(log, os.O_WRONLY | os.O_APPEND)
    fcntl.flock(wfd, fcntl.LOCK_EX)
    rotate(log)
    write(log, [4])  # the next batch goes to the new file
    real = tail._wait_for_writers
    calls = []

    def writer_finishes_while_we_wait(fd, timeout=5.0):
        if not calls:
            os.write(wfd, line(3) + b"\n")
            os.close(wfd)  # releases the lock
        calls.append(fd)
        return real(fd, timeout)

    monkeypatch.setattr(tail, "_wait_for_writers", writer_finishes_while_we_wait)
    try:
        got = nums(drain(restart(log)))
    finally:
        if not calls:
            os.close(wfd)
    assert got == [1, 2, 3, 4]


def test_one_poll_passes_many_empty_rotated_files(log):
    for _ in range(8):
        log.touch()
        rotate(log)
    write(log, [0, 1])
    t = Tailer(log, "c")
    assert nums(t.poll()) == [0, 1]  # not "nothing new" while lines wait behind them


def test_commit_while_draining_a_rotated_file_then_restart(log):
    write(log, range(3))
    t = Tailer(log, "c")
    drain(t)
    t.commit()
    t.close()
    write(log, range(3, 400), pad=40)
    rotate(log)
    write(log, range(400, 410))
    t = restart(log, read_size=4096)
    got = nums(t.poll())  # part of the rotated file only
    assert got and got[-1] < 399
    t.commit()
    t.close()
    t = restart(log, read_size=4096)
    assert got + nums(drain(t)) == list(range(3, 410))


def test_rotation_while_draining_rotated_files_after_a_restart(log):
    """Names shift while the consumer is catching up through <name>.2 and <name>.1."""
    write(log, [0])
    t = Tailer(log, "c")
    drain(t)
    t.commit()
    t.close()
    write(log, range(1, 200), pad=40)
    rotate(log)
    write(log, range(200, 300), pad=40)
    rotate(log)
    write(log, range(300, 400), pad=40)
    t = restart(log, read_size=4096)
    got = nums(t.poll())  # inside what is now <name>.2
    assert got and got[-1] < 199
    rotate(log)  # .2 -> .3, .1 -> .2, live -> .1
    write(log, range(400, 410))
    got += nums(drain(t))
    assert got == list(range(1, 410))
    assert t.rotations == 3  # two before the restart, one while draining


def test_rotation_while_following_the_rotated_copy(log):
    """A rotation while the tailer drains <name>.1 after a restart (queue: live file)."""
    write(log, [0])
    t = Tailer(log, "c")
    drain(t)
    t.commit()
    t.close()
    write(log, range(1, 200), pad=40)
    rotate(log)
    write(log, range(200, 300), pad=40)
    t = restart(log, read_size=4096)
    got = nums(t.poll())
    assert got and got[-1] < 199
    rotate(log)  # our file is now .2, the file we meant to read next is .1
    write(log, range(300, 305))
    got += nums(drain(t))
    assert got == list(range(1, 305))
    assert t.rotations == 2


# ------------------------------------------------------------- copytruncate
def test_copytruncate_while_following(log):
    write(log, range(6))
    t = Tailer(log, "c")
    got = drain(t)
    write(log, range(6, 9))  # in the copy, not read yet
    copytruncate(log)
    write(log, range(9, 12))
    got += drain(t)
    assert nums(got) == list(range(12))
    assert t.truncations == 1
    check_offsets(log.with_name(log.name + ".1"), got[6:9])  # read from the copy
    check_offsets(log, got[9:])  # then the live file from 0
    assert got[9][0] == 0
    write(log, [12])
    more = drain(t)
    assert nums(more) == [12]
    check_offsets(log, more)


def test_copytruncate_while_following_and_the_live_file_regrows_past_our_offset(log):
    write(log, range(6))
    t = Tailer(log, "c")
    got = drain(t)
    write(log, range(6, 9))
    copytruncate(log)
    write(log, range(9, 60), pad=30)  # longer than what we had read before the truncate
    got += drain(t)
    assert nums(got) == list(range(60))
    assert t.truncations == 1


def test_copytruncate_while_down(log):
    write(log, range(6))
    t = Tailer(log, "c")
    drain(t)
    t.commit()
    t.close()
    write(log, range(6, 9))
    copytruncate(log)
    write(log, range(9, 12))
    t = restart(log)
    got = drain(t)
    assert nums(got) == list(range(6, 12))
    assert t.truncations == 1
    check_offsets(log, got[-3:])


def test_copytruncate_while_down_and_the_live_file_regrew_past_our_offset(log):
    write(log, range(6))
    t = Tailer(log, "c")
    drain(t)
    t.commit()
    t.close()
    write(log, range(6, 9))
    copytruncate(log)
    write(log, range(9, 60), pad=30)
    t = restart(log)
    assert nums(drain(t)) == list(range(6, 60))
    assert t.truncations == 1


def test_two_copytruncates_while_down(log):
    write(log, range(3))
    t = Tailer(log, "c")
    drain(t)
    t.commit()
    t.close()
    write(log, range(3, 6))
    copytruncate(log)  # our remainder is in this copy, soon <name>.2
    write(log, range(6, 9))
    copytruncate(log)
    write(log, range(9, 11))
    t = restart(log)
    assert nums(drain(t)) == list(range(3, 11))


def test_copytruncate_with_a_commit_while_draining_the_copy(log):
    write(log, range(3))
    t = Tailer(log, "c", read_size=4096)
    got = nums(drain(t))
    write(log, range(3, 300), pad=40)
    copytruncate(log)
    write(log, range(300, 305))
    while got[-1] < 100:
        got += nums(t.poll())
    assert got[-1] < 299  # still in the copy
    t.commit()
    t.close()
    t = restart(log, read_size=4096)
    got += nums(drain(t))
    assert got == list(range(305))


def test_truncate_without_a_copy_restarts_at_zero(log):
    write(log, range(4))
    t = Tailer(log, "c")
    drain(t)
    with open(log, "r+b") as f:
        f.truncate(0)
    write(log, [10, 11])
    got = drain(t)
    assert got[0][0] == 0 and nums(got) == [10, 11]
    assert t.truncations == 1


def test_truncate_without_a_copy_ignores_an_unrelated_dot_1(log):
    write(log, [100, 101])
    rotate(log)  # an older rotated file: not a copy of ours
    write(log, range(4))
    t = Tailer(log, "c")
    assert nums(drain(t)) == [100, 101, 0, 1, 2, 3]
    t.commit()
    t.close()
    with open(log, "r+b") as f:
        f.truncate(0)
    write(log, [10])
    t = restart(log)
    assert nums(drain(t)) == [10]
    assert t.truncations == 1


# ------------------------------------------------- missing and vanishing files
def test_file_missing_then_appearing(workdir):
    log = workdir / "logs" / "later.jsonl"  # not even its directory exists
    t = Tailer(log, "c")
    for _ in range(3):
        assert t.poll() == []
    assert t.bytes_behind() == 0
    t.commit()  # a checkpoint before there is any file
    write(log, range(3))
    got = drain(t)
    assert nums(got) == [0, 1, 2] and got[0][0] == 0


def test_file_missing_then_created_and_rotated_between_polls(log):
    t = Tailer(log, "c")
    assert t.poll() == []
    write(log, [0, 1])
    rotate(log)
    write(log, [2])
    assert nums(drain(t)) == [0, 1, 2]


def test_checkpoint_before_the_file_existed_then_created_and_rotated_while_down(log):
    t = Tailer(log, "c")
    assert t.poll() == []
    t.commit()
    t.close()
    write(log, [0, 1])
    rotate(log)
    write(log, [2])
    assert nums(drain(restart(log))) == [0, 1, 2]


def test_checkpoint_while_waiting_for_the_new_file_after_a_rotation(log):
    write(log, [0, 1])
    t = Tailer(log, "c")
    rotate(log)
    assert nums(drain(t)) == [0, 1]
    t.commit()  # rotated file drained, the new one not there yet
    t.close()
    write(log, [2])
    t = restart(log)
    assert nums(drain(t)) == [2]  # .1 is not read again
    t.close()
    # And if it is rotated too before the restart, it is not lost.
    t = restart(log)  # same checkpoint: .1 drained, waiting for the live file
    t.close()
    rotate(log)
    write(log, [3])
    assert nums(drain(restart(log))) == [2, 3]


def test_unlinked_while_open_is_drained_then_the_new_file_followed(log):
    write(log, range(3))
    t = Tailer(log, "c")
    got = drain(t)
    write(log, [3, 4])  # unread when the file is deleted
    os.unlink(log)
    got += drain(t)
    assert nums(got) == [0, 1, 2, 3, 4]
    assert t.poll() == []
    write(log, [5])  # a new file under the same name
    got += drain(t)
    assert nums(got) == list(range(6))
    write(log, [6])
    more = drain(t)
    assert nums(more) == [6]
    check_offsets(log, more)


# --------------------------------------------------------------- bytes behind
def test_bytes_behind_counts_unread_bytes(log):
    t = Tailer(log, "c", read_size=4096)
    assert t.bytes_behind() == 0  # no file yet
    write(log, range(200), pad=40)
    size = os.path.getsize(log)
    assert t.bytes_behind() == size
    got = t.poll()  # one read of 4096 bytes: part of the file
    end = got[-1][0] + len(got[-1][1]) + 1
    assert 0 < end < size
    assert t.bytes_behind() == size - end
    drain(t)
    assert t.bytes_behind() == 0
    with open(log, "ab") as f:
        f.write(b"partial")  # an incomplete line is still behind
    assert t.poll() == []
    assert t.bytes_behind() == 7


def test_bytes_behind_spans_rotated_and_live_files(log):
    write(log, range(5))
    t = Tailer(log, "c")
    drain(t)
    t.commit()
    t.close()
    write(log, range(5, 9))
    old_rest = os.path.getsize(log) - ckpt(log.parent.parent)["offset"]
    rotate(log)
    write(log, range(9, 12))
    t = restart(log)
    assert t.bytes_behind() == old_rest + os.path.getsize(log)
    drain(t)
    assert t.bytes_behind() == 0


# ---------------------------------------------------------------- checkpoints
def test_write_atomic_failure_leaves_old_file_and_no_temp_file(workdir, monkeypatch):
    p = workdir / "state" / "ck.json"
    checkpoint.save_json(p, {"x": 1})
    assert [f.name for f in p.parent.iterdir()] == ["ck.json"]

    def broken_fsync(fd):
        raise OSError("disk on fire")

    monkeypatch.setattr(checkpoint.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk on fire"):
        checkpoint.save_json(p, {"x": 2})
    monkeypatch.undo()
    assert [f.name for f in p.parent.iterdir()] == ["ck.json"]
    assert checkpoint.load_json(p) == {"x": 1}
    with pytest.raises(TypeError):
        checkpoint.write_atomic(p, "not bytes")
    assert [f.name for f in p.parent.iterdir()] == ["ck.json"]
    checkpoint.save_json(p, {"x": 3})
    assert checkpoint.load_json(p) == {"x": 3}
    assert [f.name for f in p.parent.iterdir()] == ["ck.json"]


def test_write_atomic_failure_at_rename_leaves_no_temp_file(workdir, monkeypatch):
    p = workdir / "ck.json"

    def broken_replace(a, b):
        raise OSError("no rename today")

    monkeypatch.setattr(checkpoint.os, "replace", broken_replace)
    with pytest.raises(OSError):
        checkpoint.write_atomic(p, b"{}")
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"offset": 1', b"\xff\xfe"])
def test_load_json_of_a_corrupt_file_names_it(workdir, raw):
    p = workdir / "ck.json"
    p.write_bytes(raw)
    with pytest.raises(ValueError, match=str(p)):
        checkpoint.load_json(p)


def test_load_json_missing_is_none(workdir):
    assert checkpoint.load_json(workdir / "nope.json") is None


def test_tailer_with_a_corrupt_checkpoint_refuses_to_guess(log, workdir):
    write(log, range(3))
    ck = workdir / "logs" / ".offsets" / "c.json"
    ck.parent.mkdir(parents=True)
    ck.write_text('{"dev": 1, "ino"')
    with pytest.raises(ValueError, match="c.json"):
        Tailer(log, "c")


def test_committed_checkpoint_is_valid_json_after_every_commit(log, workdir):
    t = Tailer(log, "c")
    for i in range(30):
        write(log, [i])
        drain(t)
        t.commit({"i": i})
        ck = ckpt(workdir)
        assert ck["offset"] == os.path.getsize(log) and ck["state"] == {"i": i}
    assert [f.name for f in (workdir / "logs" / ".offsets").iterdir()] == ["c.json"]
    assert t.checkpoints == 30


def test_restart_after_a_rotation_before_the_new_file_exists(log):
    write(log, [0])
    t = Tailer(log, "c")
    drain(t)
    t.commit()
    t.close()
    write(log, [1, 2])
    rotate(log)  # the writer has not created the new file yet
    t = restart(log)
    got = nums(drain(t))
    assert got == [1, 2]
    for _ in range(3):
        assert t.poll() == []
    write(log, [3])
    got += nums(drain(t))
    assert got == [1, 2, 3]  # <name>.1 is not read a second time


def test_new_consumer_with_only_a_rotated_file(log):
    write(log, [0, 1])
    rotate(log)
    t = Tailer(log, "c")
    got = nums(drain(t))
    assert t.poll() == []
    write(log, [2])
    got += nums(drain(t))
    assert got == [0, 1, 2]


def test_checkpoint_before_the_file_existed_then_created_while_down(log):
    t = Tailer(log, "c")
    t.commit({"k": 1})
    t.close()
    write(log, [0, 1])
    t = restart(log)
    assert t.state == {"k": 1}
    assert t.bytes_behind() == os.path.getsize(log)
    assert nums(drain(t)) == [0, 1]


def test_old_empty_checkpoint_without_known_rotated_files(log, workdir):
    """A checkpoint written while waiting for the file, by a version that did not record the
    rotated files already there: those are taken as seen, the live file is read from 0."""
    write(log, [100])
    rotate(log)
    write(log, [0, 1])
    checkpoint.save_json(
        workdir / "logs" / ".offsets" / "c.json",
        {"dev": 0, "ino": 0, "offset": 0, "fp": None, "state": None},
    )
    assert nums(drain(restart(log))) == [0, 1]


def test_copytruncate_window_read_from_the_live_file_is_not_read_again_from_the_copy(log):
    """Lines written between logrotate's copy and its truncate are in the live file only;
    a reader that read them is past the end of the copy: the copy holds nothing new for it
    (reading it from 0 counted a whole file twice in the 5 M soak)."""
    write(log, range(10))
    t = Tailer(log, "c")
    got = drain(t)
    shutil.copy(log, f"{log}.1")  # logrotate's copy ...
    write(log, range(10, 15))  # ... a writer appends in the window ...
    got += drain(t)  # ... and the reader reads those lines from the live file
    os.truncate(log, 0)  # ... then the truncate
    write(log, range(15, 20))
    got += drain(t)
    assert nums(got) == list(range(20))
    t.commit()
    t.close()
    write(log, [20])
    assert nums(drain(restart(log))) == [20]  # and nothing of the copy after a restart


def test_copytruncate_window_while_down_is_not_read_again(log):
    write(log, range(10))
    t = Tailer(log, "c")
    drain(t)
    shutil.copy(log, f"{log}.1")
    write(log, range(10, 15))
    drain(t)
    t.commit()  # the checkpoint is past the end of the copy
    t.close()
    os.truncate(log, 0)
    write(log, range(15, 20))
    assert nums(drain(restart(log))) == list(range(15, 20))


# ------------------------------------- a torn first line, copytruncated, and a checkpoint
@pytest.mark.parametrize("read_fragment", [True, False], ids=["fragment read", "nothing read"])
@pytest.mark.parametrize("restarted", [False, True], ids=["following", "restarted"])
def test_a_checkpoint_before_the_first_whole_line_names_no_file(log, read_fragment, restarted):
    """The live file holds only a torn line (its first line never whole, so no fingerprint)
    when it is copytruncated and written again, and a checkpoint is taken before the
    reader looks (a merge commits a quiet input along with the other one). The checkpoint
    must not take the rewritten file's first line for this file's: the torn line is then
    read from the copy (one last line, to reject), and the new lines once each."""
    log.write_bytes(b"")
    t = Tailer(log, "c")
    assert drain(t) == []
    with open(log, "ab") as f:
        f.write(b'{"torn": ')
    if read_fragment:
        assert drain(t) == []  # held: no newline yet
    copytruncate(log)
    write(log, [1, 2, 3])
    t.commit()  # between the rewrite and the next poll
    assert t.position()["fp"] is None and t.position()["offset"] == 0
    if restarted:
        t.close()
        t = restart(log)
    got = [x for _ in range(10) for x in t.poll()]  # a file switch may return nothing once
    assert [x for _, x in got][0] == b'{"torn": '
    assert nums(got[1:]) == [1, 2, 3]
    t.commit()
    t.close()
    assert drain(restart(log)) == []  # all of it committed: nothing read twice
