"""The shared tailer and writer (DESIGN.md section 2), at the unit level: restart from the
checkpoint, rename rotation, copytruncate, partial lines, oversize lines, missing files,
and two writer processes that never interleave."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from lumen import checkpoint
from lumen.jsonl import JsonlWriter, append_lines
from lumen.tail import Tailer


def write(path, lines):
    append_lines(path, [f"{x}\n".encode() for x in lines])


def drain(t):
    out = []
    while True:
        got = t.poll()
        if not got:
            return out
        out += [x.decode() for _, x in got]


@pytest.fixture
def log(workdir):
    p = workdir / "logs" / "s.jsonl"
    p.parent.mkdir()
    return p


def test_reads_from_start_and_resumes_from_checkpoint_never_from_end(log):
    write(log, range(5))
    t = Tailer(log, "c")
    assert drain(t) == ["0", "1", "2", "3", "4"]
    t.commit()
    t.close()
    write(log, range(5, 9))  # written while the consumer is down
    t = Tailer(log, "c")
    assert drain(t) == ["5", "6", "7", "8"]


def test_uncommitted_lines_are_delivered_again_after_restart(log):
    write(log, range(3))
    t = Tailer(log, "c")
    drain(t)
    t.commit()
    write(log, range(3, 6))
    assert drain(t) == ["3", "4", "5"]
    t.close()  # crash before commit
    assert drain(Tailer(log, "c")) == ["3", "4", "5"]


def test_offsets_are_real_byte_offsets(log):
    write(log, ["a", "bbb", "cc"])
    t = Tailer(log, "c")
    got = t.poll()
    with open(log, "rb") as f:
        for off, data in got:
            f.seek(off)
            assert f.readline().rstrip(b"\n") == data


def test_partial_line_waits_for_its_newline(log):
    with open(log, "wb") as f:
        f.write(b'{"a":1}\n{"b":')
    t = Tailer(log, "c")
    assert [x for _, x in t.poll()] == [b'{"a":1}']
    assert t.poll() == []
    t.commit()  # the checkpoint stands before the partial line
    with open(log, "ab") as f:
        f.write(b"2}\n")
    assert t.poll() == [(8, b'{"b":2}')]


def test_rename_rotation_while_following(log):
    write(log, range(10))
    t = Tailer(log, "c")
    got = drain(t)
    write(log, range(10, 15))  # lands in the old file before the rename
    os.rename(log, f"{log}.1")
    write(log, range(15, 20))  # the writer re-opens by path: a new file
    got += drain(t)
    assert got == [str(i) for i in range(20)]
    assert t.rotations == 1


def test_rotations_while_down_are_drained_in_order(log):
    write(log, range(5))
    t = Tailer(log, "c")
    drain(t)
    t.commit()
    t.close()
    write(log, range(5, 8))
    os.rename(log, f"{log}.1")
    write(log, range(8, 11))
    os.rename(f"{log}.1", f"{log}.2")
    os.rename(log, f"{log}.1")
    write(log, range(11, 13))
    t = Tailer(log, "c")
    assert drain(t) == [str(i) for i in range(5, 13)]


def test_copytruncate_while_following_and_while_down(log):
    write(log, range(6))
    t = Tailer(log, "c")
    got = drain(t)
    write(log, range(6, 9))  # reaches the copy, not yet read
    shutil.copy(log, f"{log}.1")
    with open(log, "r+b") as f:
        f.truncate(0)
    write(log, range(9, 12))
    got += drain(t)
    assert got == [str(i) for i in range(12)]
    assert t.truncations == 1
    t.commit()
    t.close()
    # Down during a second copytruncate.
    write(log, range(12, 14))
    os.replace(f"{log}.1", f"{log}.2")
    shutil.copy(log, f"{log}.1")
    with open(log, "r+b") as f:
        f.truncate(0)
    write(log, range(14, 16))
    assert drain(Tailer(log, "c")) == [str(i) for i in range(12, 16)]


def test_truncation_without_a_copy_restarts_at_zero(log):
    write(log, range(4))
    t = Tailer(log, "c")
    drain(t)
    with open(log, "r+b") as f:
        f.truncate(0)
    write(log, ["x"])
    assert drain(t) == ["x"]
    assert t.truncations == 1


def test_oversize_line_is_cut_and_the_rest_intact(log):
    with open(log, "wb") as f:
        f.write(b"ok1\n" + b"y" * 5000 + b"\nok2\n")
    t = Tailer(log, "c", max_line_bytes=1000, read_size=4096)
    got = [x for _, x in t.poll()] + [x for _, x in t.poll()]
    assert got[0] == b"ok1"
    assert got[1] == b"y" * 1001  # the head, one byte over the limit: a length check flags it
    assert got[2] == b"ok2"


def test_oversize_line_across_polls_and_a_restart(log):
    with open(log, "wb") as f:
        f.write(b"z" * 9000)  # no newline yet
    t = Tailer(log, "c", max_line_bytes=1000, read_size=4096)
    heads = drain(t)
    assert heads == ["z" * 1001]
    t.commit()
    t.close()
    with open(log, "ab") as f:
        f.write(b"z" * 3000 + b"\nafter\n")
    t = Tailer(log, "c", max_line_bytes=1000, read_size=4096)
    assert drain(t) == ["after"]  # the rest of the long line is skipped, not a new line


def test_missing_file_then_created_and_deleted(log):
    t = Tailer(log, "c")
    assert t.poll() == []
    write(log, ["a"])
    assert drain(t) == ["a"]
    write(log, ["b"])
    os.unlink(log)  # gone: what was written is still read through the open handle
    assert drain(t) == ["b"]
    write(log, ["c"])
    assert drain(t) == ["c"]


def test_bytes_behind(log):
    write(log, ["aaaa", "bb"])
    t = Tailer(log, "c", read_size=4096)
    assert t.bytes_behind() == 8
    drain(t)
    assert t.bytes_behind() == 0


WRITER = """
import sys
from lumen.jsonl import append_lines
path, who = sys.argv[1], sys.argv[2]
for b in range(100):
    append_lines(path, [("%s-%d-%d-" % (who, b, i) + "x" * 8000 + "\\n").encode() for i in range(50)])
"""


def test_two_writer_processes_never_interleave(log):
    ps = [subprocess.Popen([sys.executable, "-c", WRITER, str(log), w]) for w in ("A", "B")]
    for p in ps:
        assert p.wait(timeout=120) == 0
    lines = log.read_bytes().split(b"\n")[:-1]
    assert len(lines) == 2 * 100 * 50
    for ln in lines:
        who, b, i, xs = ln.split(b"-")
        assert who in (b"A", b"B") and xs == b"x" * 8000
    # Batches are whole: the 50 lines of one batch are contiguous.
    for k in range(0, len(lines), 50):
        assert len({ln.split(b"-")[0] + ln.split(b"-")[1] for ln in lines[k:k + 50]}) == 1


def test_writer_refuses_partial_lines_and_reopens_by_path(log):
    with pytest.raises(ValueError, match="partial line"):
        append_lines(log, [b"no newline"])
    w = JsonlWriter(log)
    w.add({"a": 1})
    w.flush()
    os.rename(log, f"{log}.1")
    w.add({"a": 2})
    w.flush()
    assert json.loads(log.read_text()) == {"a": 2}


def test_checkpoint_is_atomic_and_corruption_is_named(workdir):
    p = workdir / "ck.json"
    checkpoint.save_json(p, {"x": 1})
    assert checkpoint.load_json(p) == {"x": 1}
    assert [f.name for f in workdir.iterdir() if f.name.startswith(".ck")] == []
    with pytest.raises(TypeError):
        checkpoint.save_json(p, {"x": object()})
    assert checkpoint.load_json(p) == {"x": 1}  # the old state survives a failed write
    assert [f.name for f in workdir.iterdir() if f.name.endswith(".tmp")] == []
    p.write_text("{not json")
    with pytest.raises(ValueError, match="ck.json"):
        checkpoint.load_json(p)
