"""The small soak of issue 8 in the suite: 200 000 events through the whole stack with
SIGKILLs, real logrotate (rename and copytruncate), injected bad lines and 16 clients;
zero lost, zero duplicated, rejects equal to the bad lines on disk, no 5xx, every process
back. And the soak is a real check: with a tailer that skips lines (a checkpoint broken on
purpose) it fails."""

import subprocess
import sys

import pytest

from conftest import ROOT, require_tool

SOAK = ROOT / "tools/soak.py"


def soak(tmp_path, *extra):
    require_tool("logrotate")
    return subprocess.run(
        [
            sys.executable,
            str(SOAK),
            "--events",
            "200000",
            "--rate",
            "20000",
            "--dir",
            str(tmp_path / "soak"),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.timeout(600)
def test_small_soak_loses_and_duplicates_nothing(tmp_path):
    r = soak(tmp_path)
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    assert out.strip().endswith("[soak] RESULT = PASS")
    table = [
        ln.split()
        for ln in out.splitlines()
        if ln.startswith(
            ("rmb_exporter ", "safety_music ", "ure_exporter ", "ure_merge ", "ingest ")
        )
    ]
    assert len(table) == 5
    for row in table:
        expected, seen, lost, dup, rejected = row[-8:-3] if row[0] == "ingest" else row[1:6]
        assert lost == "0" and dup == "0"
    assert "kills {" in out and "'copytruncate': 2" in out and "'rename': 3" in out


@pytest.mark.timeout(600)
def test_soak_fails_when_a_tailer_skips_lines(tmp_path):
    r = soak(tmp_path, "--break-checkpoint", "--kills", "1", "--bad-lines", "5")
    assert r.returncode == 1, r.stdout
    assert "[soak] checkpoint broken on purpose: True" in r.stdout
    assert "[soak] FAIL ingest (rmb rows):" in r.stdout and " lost" in r.stdout
