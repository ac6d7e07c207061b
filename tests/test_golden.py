"""Golden files (tests/golden/): output compared byte for byte with a committed file.

- rmb_exporter.metrics.txt, ure_exporter.metrics_ure.txt: the Prometheus exposition of the
  RMB exporter (/metrics) and the URE exporter (/metrics_ure) over a fixed input (the
  events below, with fixed timestamps, in a temp dir), served on an ephemeral port. Masked:
  the value of `*_scrape_duration_seconds` (how long this scrape took to render) and the
  python_version label of `lumen_build_info` (the Python running the tests); the
  python_/process_ families (prometheus_client's standard collectors) are dropped.
- result_lines.txt: every `RESULT = ...` line the Makefile targets print, one
  `target: line` row each, for every target that runs hermetically in a temp dir
  (ephemeral ports, no config override or Makefile default taken from the environment).
  NOT_COVERED names the others and why; test_every_result_target_is_accounted_for keeps
  the two lists complete.

Regenerate after an intended change, then review `git diff tests/golden/`:
    LUMEN_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_golden.py
"""

import ast
import json
import os
import re
import selectors
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import (
    require_tool,
    CONFIG_RMB,
    GOLDEN,
    PY,
    ROOT,
    UPDATE_GOLDEN,
    assert_golden,
    emit,
    hermetic_env,
    run_make,
    wait_until,
)

RMB_EXPORTER = ROOT / "exporters/rmb_exporter_v17.py"
URE_EXPORTER = ROOT / "exporters/ure_exporter_v18.py"
CONFIG_URE = ROOT / "configs/ure_v18.yaml"
RESULT_LINES = "result_lines.txt"


# ----------------------------------------------------------------- the fixed input
def _ts(i):
    return f"2025-01-01T00:00:{i:02d}Z"


def rmb_event(i, event_type, risk, residual, phase):
    return {
        "ts": _ts(i),
        "entity_id": f"golden.{i % 3}",
        "group": ["design_core", "build_core", "safety_music", "observer"][i % 4],
        "event_type": event_type,
        "resonance_v3": {
            "phase_diff": phase,
            "residual_entropy": residual,
            "creative_band": ["LOW", "MID", "HIGH"][i % 3],
            "risk_band": risk,
        },
        "memory_bridge": {
            "slot_id": f"rmb/v17/slot-{i}",
            "op": "UPSERT" if i % 5 else "DELETE",
            "key": f"k{i}",
            "value_hash": f"{i:08x}",
        },
        "trace": {"loop_id": "rmb.v17", "iter": i, "host": "golden"},
    }


# (event_type, risk_band, residual_entropy, phase_diff): every type and band at least once.
RMB_SPECS = [
    ("observe", "SAFE", 0.12, 0.1),
    ("decide", "SAFE", 0.25, -0.4),
    ("commit", "WATCH", 0.31, 0.75),
    ("observe", "SAFE", 0.44, 1.5),
    ("rollback", "RISK", 0.91, -2.25),
    ("observe", "WATCH", 0.5, 0.0),
    ("commit", "SAFE", 0.18, 3.0),
    ("rollback", "SAFE", 0.87, -0.05),
    ("decide", "WATCH", 0.625, 0.3),
    ("observe", "SAFE", 0.375, -1.0),
]
RMB_LINES = [
    json.dumps(rmb_event(i, *spec), separators=(",", ":")).encode()
    for i, spec in enumerate(RMB_SPECS)
]
_bad_schema = rmb_event(10, "observe", "SAFE", 0.5, 0.0)
_bad_schema["resonance_v3"]["residual_entropy"] = 7  # out of [0, 1]
RMB_LOG = b"".join(
    [line + b"\n" for line in RMB_LINES[:4]]
    + [b"not json\n", b"\xff\xfe not utf-8\n", b"\n"]  # json, utf8; blank: neither
    + [line + b"\n" for line in RMB_LINES[4:]]
    + [json.dumps(_bad_schema).encode() + b"\n", b"[1, 2]\n"]  # schema, not_object
)
RMB_VALID, RMB_REJECTED = len(RMB_LINES), 4


def v2_event(i, residual, loop_id="ure.merge", **extra):
    own = loop_id == "ure.v18"
    ev = {
        "ts": _ts(i),
        "entity_id": "lumen.ure" if own else ("lumen.core", "lumen.safety")[i % 2],
        "phase_field": {"phase_diff": 0.0, "residual_entropy": residual, "risk_band": "SAFE"},
        "harmony_index": 0.5,
        "coherence_level": 0.5,
        "auto_reg_action": "NONE",
        "trace": {"loop_id": loop_id, "iter": i, "host": "golden", "ver": "v1.8"},
    }
    if not own:
        ev["rmb"] = {"event_type": "observe", "group": "build_core"}
    ev.update(extra)
    return ev


V2_EVENTS = [
    v2_event(0, 0.2),
    v2_event(1, 0.3),
    v2_event(
        2,
        0.2,
        "ure.v18",
        harmony_index=0.7,
        coherence_level=0.8,
        auto_reg_action="RAISE_HZ",
        actions=["RAISE_HZ"],
        loop={"hz": 6, "batch_size": 16},
        self_regulation_score=1.0,
    ),
    v2_event(3, 0.9),
    v2_event(
        4,
        0.85,
        "ure.v18",
        harmony_index=0.35,
        coherence_level=0.6,
        auto_reg_action="DOWNGRADE_OBSERVE",
        actions=["LOWER_HZ", "DOWNGRADE_OBSERVE"],
        loop={"hz": 5, "batch_size": 12},
        self_regulation_score=0.5,
    ),
    v2_event(5, 0.4),
]
SAFETY_EVENTS = [
    {
        "ts": _ts(0),
        "loop": "safety.music.v17",
        "levels": {"residual": "CALM", "rollback_ratio": "CALM", "final": "CALM"},
        "inputs": {"residual_entropy": 0.2, "rollback_ratio": 0.0},
        "changed": False,
    },
    {
        "ts": _ts(1),
        "loop": "safety.music.v17",
        "levels": {"residual": "TENSE", "rollback_ratio": "CALM", "final": "TENSE"},
        "inputs": {"residual_entropy": 0.6, "rollback_ratio": 0.0},
        "changed": True,
    },
    {
        "ts": _ts(2),
        "loop": "safety.music.v17",
        "levels": {"residual": "ALERT", "rollback_ratio": "TENSE", "final": "ALERT"},
        "inputs": {"residual_entropy": 0.9, "rollback_ratio": 0.04},
        "changed": True,
    },
    {
        "ts": _ts(3),
        "loop": "safety.music.v17",
        "levels": {"residual": "ALERT", "rollback_ratio": "UNDEFINED", "final": "ALERT"},
        "inputs": {"residual_entropy": 0.9, "rollback_ratio": None},
        "changed": False,
    },
]


def _jsonl(items):
    return b"".join(json.dumps(x, separators=(",", ":")).encode() + b"\n" for x in items)


def write_inputs(cwd):
    logs = cwd / "logs"
    logs.mkdir(exist_ok=True)
    (logs / "rmb_events.jsonl").write_bytes(RMB_LOG)
    v2_bad = {"ts": _ts(9), "entity_id": "x"}  # schema: no phase_field, trace, ...
    (logs / "resonance_events_v2.jsonl").write_bytes(_jsonl(V2_EVENTS) + _jsonl([v2_bad]))
    (logs / "safety_music_events.jsonl").write_bytes(_jsonl(SAFETY_EVENTS) + b"{oops\n")


# ------------------------------------------------------------------ exposition
def samples(text):
    """{name or name{"label": ...}: value} of a Prometheus exposition."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name + (json.dumps(s.labels, sort_keys=True) if s.labels else "")] = s.value
    return out


def normalize_exposition(text):
    """The exposition minus what is inherently variable: python_/process_ families, the
    value of *_scrape_duration_seconds (the time this scrape took), and the Python version
    in lumen_build_info."""
    out = []
    for line in text.splitlines(keepends=True):
        if line.startswith("#"):
            parts = line.split()
            name = parts[2] if len(parts) > 2 else ""
        else:
            name = re.split(r"[{ ]", line, maxsplit=1)[0]
        if name.startswith(("python_", "process_")):
            continue
        if not line.startswith("#") and name.endswith("_scrape_duration_seconds"):
            line = f"{line.rsplit(' ', 1)[0]} <variable>\n"
        if name == "lumen_build_info":
            line = re.sub(r'python_version="[^"]*"', 'python_version="<variable>"', line)
        out.append(line)
    return "".join(out)


def banner_port(proc, timeout=20):
    """The port a Lumen server started with --port 0 bound: read from its first stdout line
    ("... on :PORT"), with a deadline; fails if the process exits first."""
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            m = re.search(rb"on :(\d+)\s*\n", buf)
            if m:
                return int(m.group(1))
            if sel.select(timeout=max(0.0, deadline - time.monotonic())):
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                buf += chunk
    raise AssertionError(
        f"no port banner (exit {proc.poll()}): {buf!r} "
        f"{proc.stderr.read().decode() if proc.poll() is not None else ''}"
    )


def scrape(port, path):
    import requests

    r = requests.get(f"http://127.0.0.1:{port}{path}", timeout=5)
    r.raise_for_status()
    return r.text


def settled_exposition(port, path, done):
    """The exposition once `done(samples)` holds; then scraped again to show it is stable."""
    text = wait_until(
        lambda: (t := scrape(port, path)) and done(samples(t)) and t,
        timeout=30,
        what=f"{path} to cover the whole input",
    )
    first = normalize_exposition(text)
    assert normalize_exposition(scrape(port, path)) == first, "exposition not stable"
    return first


def test_rmb_exporter_exposition(workdir, procs):
    write_inputs(workdir)
    p = procs.start(
        RMB_EXPORTER, "--config", CONFIG_RMB, "--port", 0, "--host", "127.0.0.1", env=hermetic_env()
    )
    port = banner_port(p)

    def done(m):
        return (
            m.get('rmb_log_lines_total{"status": "valid"}') == RMB_VALID
            and m.get('rmb_log_lines_total{"status": "rejected"}') == RMB_REJECTED
            and m.get("rmb_checkpoints_written_total", 0) >= 1
            and m.get("rmb_log_bytes_behind") == 0
        )

    assert_golden("rmb_exporter.metrics.txt", settled_exposition(port, "/metrics", done))


def test_ure_exporter_exposition(workdir, procs):
    write_inputs(workdir)
    p = procs.start(
        URE_EXPORTER, "--config", CONFIG_URE, "--port", 0, "--host", "127.0.0.1", env=hermetic_env()
    )
    port = banner_port(p)
    expect = {
        "v2": (len(V2_EVENTS), 1),
        "safety": (len(SAFETY_EVENTS), 1),
        "rmb": (RMB_VALID, RMB_REJECTED),
    }

    def done(m):
        for stream, (valid, rejected) in expect.items():
            key = 'ure_exporter_log_lines_total{"status": "%s", "stream": "%s"}'
            if (
                m.get(key % ("valid", stream)) != valid
                or m.get(key % ("rejected", stream)) != rejected
                or m.get('ure_exporter_checkpoints_written_total{"stream": "%s"}' % stream, 0) < 1
                or m.get('ure_exporter_log_bytes_behind{"stream": "%s"}' % stream) != 0
            ):
                return False
        return True

    assert_golden("ure_exporter.metrics_ure.txt", settled_exposition(port, "/metrics_ure", done))


def test_normalize_masks_only_the_variable_parts():
    text = (
        "# HELP python_gc_objects_collected_total x\n"
        "# TYPE python_gc_objects_collected_total counter\n"
        'python_gc_objects_collected_total{generation="0"} 12.0\n'
        "process_cpu_seconds_total 0.5\n"
        "# HELP rmb_scrape_duration_seconds Time.\n"
        "rmb_scrape_duration_seconds 0.000123\n"
        "rmb_log_bytes_behind 0.0\n"
        'lumen_build_info{python_version="3.11.7",version="0.1.0"} 1.0\n'
    )
    assert normalize_exposition(text) == (
        "# HELP rmb_scrape_duration_seconds Time.\n"
        "rmb_scrape_duration_seconds <variable>\n"
        "rmb_log_bytes_behind 0.0\n"
        'lumen_build_info{python_version="<variable>",version="0.1.0"} 1.0\n'
    )


# ------------------------------------------------------------------ RESULT lines
# Every target whose output is in result_lines.txt, in the file's order. metrics.fake.v17
# and exporter.v17.serve print no RESULT line: they have no row, which is checked too.
COVERED = [
    "rmb.verify",
    "validate.v17.schema",
    "ops.check",
    "ops.build",
    "logs.rotate",
    "alert.reload",
    "prom.reload",
    "feature.v17.init",
    "dashboards.v3.build",
    "metrics.fake.v17",
    "exporter.v17.serve",
    "slo.report",
    "kpi.snapshot",
    "trackA.exit",
    "trackB.start",
    "trackB.stop",
    "trackD.start",
    "trackD.stop",
    "smoke.v18",
    "rollback.v17",
    "switch.v18",
    "up",
]
# Targets that print RESULT lines but cannot run hermetically here.
NOT_COVERED = {
    "soak": "the long soak run (5M events, SIGKILLs, disk/CPU hogs, then model_check --long "
    "with its [model] RESULT line): hours, not hermetic on a shared machine",
    "smoke.v17": "sources SESSION_RESTORE_2025-11-01_v1_7_DELTA.env, which exports "
    "RMB_EXPORTER_PORT=9409: a fixed port, not an ephemeral one (its lines "
    "are those of trackB.stop/start, validate.v17.schema, feature.v17.init, "
    "rmb.verify, all covered)",
}


def result_lines(stdout):
    return [ln.strip() for ln in stdout.splitlines() if "RESULT =" in ln]


def golden_rows():
    path = GOLDEN / RESULT_LINES
    if not path.exists():
        return []
    return [tuple(r.split(": ", 1)) for r in path.read_text().splitlines() if r]


def check_result_lines(rows, targets):
    """`rows` [(target, line)] must be exactly the golden rows of `targets`, in order
    (LUMEN_UPDATE_GOLDEN=1: replace those rows in the file, keeping the others)."""
    assert {t for t, _ in rows} <= set(targets)
    want = [r for r in golden_rows() if r[0] in targets]
    if UPDATE_GOLDEN:
        keep = [r for r in golden_rows() if r[0] not in targets]
        order = {t: i for i, t in enumerate(COVERED)}
        merged = sorted(keep + rows, key=lambda r: order.get(r[0], len(order)))  # stable
        assert_golden(RESULT_LINES, "".join(f"{t}: {ln}\n" for t, ln in merged))
        return
    got = [f"{t}: {ln}" for t, ln in rows]
    assert got == [f"{t}: {ln}" for t, ln in want], (
        f"RESULT lines differ from tests/golden/{RESULT_LINES} (if intended, regenerate "
        f"with LUMEN_UPDATE_GOLDEN=1)"
    )


def run_targets(cwd, env, targets, timeout=120, expect_rc=0):
    """Run each target on its own; [(target, RESULT line)] in the order printed."""
    rows = []
    for t in targets:
        r = run_make(cwd, t, env=env, timeout=timeout)
        assert r.returncode == expect_rc, f"make {t}: exit {r.returncode}\n{r.stdout}{r.stderr}"
        rows += [(t, ln) for ln in result_lines(r.stdout)]
    return rows


def require_current(tool):
    """Targets that regenerate committed files (under ops/) write only what is stale; run
    them only when nothing is, so a test never changes the repository."""
    r = subprocess.run(
        [PY, str(ROOT / "tools" / tool), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, f"{tool} --check: generated files are stale\n{r.stderr}"


def test_result_lines_of_the_offline_targets(workdir):
    require_current("ops_build.py")
    require_tool("logrotate")
    env = hermetic_env(LOG_RETENTION_DAYS=7)
    (workdir / "logs").mkdir()
    (workdir / "logs/rmb_events.jsonl").write_bytes(RMB_LOG)  # something to rotate
    targets = ["rmb.verify", "validate.v17.schema", "ops.check", "ops.build", "logs.rotate"]
    check_result_lines(run_targets(workdir, env, targets), targets)


class _Reload(BaseHTTPRequestHandler):
    def do_POST(self):
        self.server.hits.append(self.path)  # before answering: curl returns on the answer
        self.send_response(200 if self.path == "/-/reload" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def reload_endpoint():
    """A stand-in for Prometheus / Alertmanager: POST /-/reload -> 200, on an ephemeral port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Reload)
    server.hits = []
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server
    server.shutdown()
    server.server_close()
    t.join(timeout=10)


def test_result_lines_of_the_reload_targets(workdir, reload_endpoint):
    require_tool("curl")
    url = f"http://127.0.0.1:{reload_endpoint.server_address[1]}"
    env = hermetic_env(ALERTMANAGER_URL=url, PROMETHEUS_URL=url)
    targets = ["alert.reload", "prom.reload"]
    check_result_lines(run_targets(workdir, env, targets), targets)
    assert reload_endpoint.hits == ["/-/reload", "/-/reload"]


def test_result_lines_of_track_a(workdir, private_stack):
    require_current("dashboards_v3_build.py")
    env = private_stack(ports=("FAKE_EXPORTER_PORT",), **hermetic_env())
    targets = [
        "feature.v17.init",
        "dashboards.v3.build",
        "metrics.fake.v17",
        "exporter.v17.serve",
        "slo.report",
        "kpi.snapshot",
        "trackA.exit",
    ]
    check_result_lines(run_targets(workdir, env, targets), targets)


def test_result_lines_of_track_b(workdir, private_stack):
    env = private_stack(ports=("RMB_EXPORTER_PORT",), **hermetic_env(RMB_HZ=20))
    targets = ["trackB.start", "trackB.stop"]
    check_result_lines(run_targets(workdir, env, targets, timeout=60), targets)


def test_result_lines_of_ure_and_the_rollback_plan(workdir, private_stack, tmp_path_factory):
    require_current("ops_build.py")
    scrape_dir = tmp_path_factory.mktemp("prom")
    scrape_file = scrape_dir / "scrape.yml"
    shutil.copy(ROOT / "ops/prometheus/scrape.yml", scrape_file)
    env = private_stack(
        ports=("RMB_EXPORTER_PORT", "URE_EXPORTER_PORT"), **hermetic_env(SCRAPE_FILE=scrape_file)
    )
    emit(workdir, 200)  # upstream for the URE loop (the lines do not depend on the data)
    targets = ["trackD.start", "trackD.stop", "smoke.v18", "rollback.v17", "switch.v18"]
    check_result_lines(run_targets(workdir, env, targets), targets)


def test_result_lines_of_up(workdir, private_stack):
    env = private_stack(**hermetic_env(RMB_HZ=20))
    check_result_lines(run_targets(workdir, env, ["up"]), ["up"])


def _recipes():
    """{target: recipe text} of the Makefile, $(TRACKA) written out."""
    text = (ROOT / "Makefile").read_text()
    tracka = re.search(r"^TRACKA = (.*)$", text, re.M).group(1)
    out, current = {}, None
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z][\w.-]*):(?!=)", line)
        if m:
            current = m.group(1)
            out[current] = ""
        elif line.startswith("\t") and current:
            out[current] += line.replace("$(TRACKA)", tracka) + "\n"
        elif not line.startswith("\t"):
            current = None
    return out


LOCAL_PACKAGES = ("lumen", "rmb", "exporters", "safety", "ure", "api", "tools")


def _prints_result(path, seen):
    """Whether the file, or a project module it imports (transitively), holds `RESULT =`."""
    path = path.resolve()
    if path in seen or not path.is_file():
        return False
    seen.add(path)
    text = path.read_text(errors="replace")
    if "RESULT =" in text:
        return True
    if path.suffix != ".py":
        return False
    for node in ast.walk(ast.parse(text)):
        mods = []
        if isinstance(node, ast.Import):
            mods = [(ROOT, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ROOT
            if node.level:
                base = path.parents[node.level - 1]
            elif (node.module or "").split(".")[0] not in LOCAL_PACKAGES:
                continue
            prefix = f"{node.module}." if node.module else ""
            mods = [(base, node.module)] if node.module else []
            mods += [(base, prefix + a.name) for a in node.names]
        for base, mod in mods:
            if base == ROOT and mod.split(".")[0] not in LOCAL_PACKAGES:
                continue
            rel = Path(*mod.split("."))
            for cand in (base / rel.with_suffix(".py"), base / rel / "__init__.py"):
                if _prints_result(cand, seen):
                    return True
    return False


def test_every_result_target_is_accounted_for():
    """A target that prints a RESULT line (in its recipe, or through a file it runs and the
    project modules that file imports) is in COVERED or NOT_COVERED."""
    printing = set()
    pattern = r"((?:%s|scripts)/[\w./-]+)" % "|".join(LOCAL_PACKAGES)
    for target, recipe in _recipes().items():
        files = re.findall(pattern, recipe)
        if "RESULT =" in recipe or any(_prints_result(ROOT / f, set()) for f in files):
            printing.add(target)
    assert {"trackB.start", "trackA.exit", "rmb.verify"} <= printing  # the scan works
    missing = printing - set(COVERED) - set(NOT_COVERED)
    assert not missing, f"targets printing RESULT lines with no golden row: {sorted(missing)}"
    assert not set(COVERED) & set(NOT_COVERED)
