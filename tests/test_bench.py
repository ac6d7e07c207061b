"""make bench's table: every stage beside its floor, the ratio and whether the goal was met.

The bench is run through its entry point (bench/bench.py --quick at a tiny size) into a
temp file; the table must hold each stage that has a floor, with a floor, a ratio and a
verdict that agrees with the row's own figures and goal. Nothing about speed is asserted.
The parts it is made of (the ABBA interleaving, medians and ratios, the bare server's
answer) are checked on their own; bad usage is one line and exit 2.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lumen.harness.bench import bare_http, table

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "bench.py"
PROCESSES = (
    "merge follower",
    "URE loop",
    "URE exporter",
    "ingest follower",
    "Safety Music loop",
    "RMB exporter",
    "API",
)
# Each stage with a floor: (start of its stage name, unit, goal).
COMPARED = [
    ("emitter unthrottled (batch_size 20)", "events/s", ">= 200 000 events/s"),
    ("emitter unthrottled (batch_size 1000)", "events/s", ">= 200 000 events/s"),
    ("exporter catch-up", "events/s", ">= 600 000 events/s"),
    ("merge.v2", "events/s", ">= 300 000 events/s"),
    ("ingest backfill", "rows/s", ">= 150 000 rows/s"),
    ("API /api/rmb:last, 16 clients: requests/s", "req/s", ">= 80 % of floor"),
] + [(f"peak RSS: {p}", "MB", "<= 40 MB") for p in PROCESSES]


def number(cell):
    return float(cell.replace(",", "").rstrip("×% "))


def parse_table(text):
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return head, [
        dict(zip(head, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[2:]
    ]


@pytest.fixture(scope="module")
def bench_table(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "results.md"
    r = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--sizes", "1000", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return out.read_text()


def test_every_stage_has_its_floor_ratio_and_verdict(bench_table):
    head, rows = parse_table(bench_table)
    assert head == ["stage", "events", "value", "unit", "floor", "ratio", "goal", "met"]
    for start, unit, goal in COMPARED:
        found = [r for r in rows if r["stage"].startswith(start)]
        assert len(found) == 1, f"{start}: {len(found)} rows in\n{bench_table}"
        r = found[0]
        assert r["events"] == "1,000" and r["unit"] == unit and r["goal"] == goal, r
        value, floor = number(r["value"]), number(r["floor"])
        assert floor > 0, r
        # The ratio is the row's own value over its floor, and the verdict its goal's.
        if unit == "MB":
            assert r["ratio"].endswith("×") and number(r["ratio"]) == pytest.approx(
                value / floor, abs=0.051
            ), r
            ok = value <= 40 and "NOT caught up" not in r["stage"]
        else:
            assert r["ratio"].endswith("%") and number(r["ratio"]) == pytest.approx(
                100 * value / floor, abs=0.51
            ), r
            least = 0.8 * floor if "80 %" in goal else int("".join(re.findall(r"\d", goal)))
            ok = value >= least
        assert r["met"] == ("yes" if ok else "NO"), r


def test_the_other_rows_are_kept(bench_table):
    _, rows = parse_table(bench_table)
    stages = [r["stage"] for r in rows]
    for want in (
        "/metrics scrape p50",
        "/metrics scrape p99",
        "safety tick, Lumen (tailer, 1 new event)",
        "URE loop tick (after catch-up)",
        "slo.report (10-minute window)",
        "API /api/rmb:last p99",
        "API /api/rmb:last, 16 clients: p99",
        "API 50 clients, live-page mix: p99",
    ):
        assert want in stages, want
    assert not [s for s in stages if "PostgreSQL" in s]  # only under --only
    # The header says the figures are noisy, and the notes say how they were taken.
    assert "noisy" in bench_table and "ABBA" in bench_table
    assert re.search(r"repeats per size \(1,000: 1\)", bench_table)
    assert "Floors (same data, same run" in bench_table


def test_interleaved_runs_stage_and_floor_abba():
    calls = []
    values, floors = table.interleaved(
        lambda: calls.append("s") or len(calls),
        lambda: calls.append("f") or -len(calls),
        4,
        "test",
    )
    assert "".join(calls) == "sffssffs"
    assert values == [1, 4, 5, 8] and floors == [-2, -3, -6, -7]


def test_compare_takes_medians_and_the_verdict(monkeypatch):
    monkeypatch.setattr(table, "ROWS", [])
    v, f = table.compare("x", 10, [5, 100, 7], [10, 1, 20], "ev/s", "g", lambda v, f: v > f)
    assert (v, f) == (7, 10)
    assert table.ROWS == [("x", 10, "7.00", "ev/s", "10.00", "70 %", "g", "NO")]
    table.compare("m", 10, [30.0], [10.0], "MB", "<= 40 MB", lambda v, f: v <= 40, False)
    assert table.ROWS[-1][5:] == ("3.0×", "<= 40 MB", "yes")


def test_bare_server_answer_is_one_fixed_response_of_the_asked_length():
    a = bare_http.answer(89)
    head, body = a.split(b"\r\n\r\n", 1)
    assert len(body) == 89 and body.startswith(b'{"pad":"') and body.endswith(b'"}')
    assert b"Content-Length: 89" in head and head.startswith(b"HTTP/1.1 200 OK")


@pytest.mark.parametrize(
    "args",
    [["--only", "emitter,nosuchstage"], ["--sizes", "abc"], ["--sizes", "0"], ["--repeats", "0"]],
)
def test_bad_usage_is_one_line_and_exit_2(args, tmp_path):
    r = subprocess.run(
        [sys.executable, str(BENCH), *args, "--out", str(tmp_path / "r.md")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert "error" in r.stderr and len(r.stderr.strip().splitlines()) <= 2
    assert not (tmp_path / "r.md").exists()


def test_sizes_default_quick_big_and_given():
    from argparse import Namespace

    from lumen.harness.bench import runner

    def sizes(env=None, **flags):
        return runner.sizes(Namespace(**{"sizes": None, "quick": False, **flags}), env or {})

    assert sizes() == [100_000, 1_000_000]
    assert sizes({"BENCH_BIG": "1"}) == [100_000, 1_000_000, 10_000_000]
    assert sizes(quick=True) == [10_000, 100_000]
    assert sizes({"BENCH_BIG": "1"}, quick=True, sizes="2000,5000") == [2000, 5000]
