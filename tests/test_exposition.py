"""The exporters' expositions as Prometheus' own tools see them (issue 16): every exporter
(RMB /metrics, URE /metrics_ure, Track A's fake-stream exporter) passes `promtool check
metrics` with no error and no lint warning, before any event and after; one family per
metric name (the URE exporter's three streams share each self-monitoring family, labelled
`stream`); gauges without a value yet are NaN, never 0; a landing page at `/`; the standard
process_/python_ collectors and lumen_build_info on each exporter's own registry.

promtool missing: a visible skip, a failure when LUMEN_REQUIRE_OPS_TOOLS=1 (as tests/test_ops.py).
"""

import json
import math
import platform
import re
import subprocess
import threading
from datetime import datetime, timezone
from importlib import metadata
from urllib.parse import urljoin

import prometheus_client
import requests
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lumen import config
from lumen.exporters import RmbExporter, UreExporter
from lumen.stats import RmbStats
from lumen.ure import UreLoop
from conftest import (
    require_tool,
    CONFIG_RMB,
    PY,
    ROOT,
    emit,
    free_port,
    hermetic_env,
    run_make,
    unlabelled_samples,
    wait_until,
)


RMB_EXPORTER = ROOT / "exporters/rmb_exporter_v17.py"
URE_EXPORTER = ROOT / "exporters/ure_exporter_v18.py"
CONFIG_URE = ROOT / "configs/ure_v18.yaml"
GATES = {"residual_entropy_max": 0.85, "risk_band_block": ["RISK"], "phase_diff_abs_max": 3.0}
BLUEPRINT = {
    "/metrics": ("rmb_events_total", "rmb_rollback_total", "rmb_residual_entropy_last"),
    "/metrics_ure": ("ure_residual_entropy_last", "ure_harmony_index", "ure_coherence_level"),
}


def promtool_check(text):
    """(exit status, output) of `promtool check metrics` on `text`; output is empty when
    there is neither an error nor a lint warning."""
    r = subprocess.run(
        [require_tool("promtool"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return r.returncode, (r.stdout + r.stderr).strip()


def start(procs, script, config_file):
    port = free_port()
    p = procs.start(
        script, "--config", config_file, "--port", port, "--host", "127.0.0.1", env=hermetic_env()
    )
    wait_until(lambda: p.poll() is not None or answers(port), what=f"{script.name} to listen")
    assert p.poll() is None, p.stderr.read().decode()
    return port


def answers(port):
    try:
        return requests.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def scrape(port, path):
    r = requests.get(f"http://127.0.0.1:{port}{path}", timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    return r.text


def stopped():
    """A set stop event: `exporter.run(stopped())` commits and releases the consumers."""
    e = threading.Event()
    e.set()
    return e


def helps(text):
    return re.findall(r"^# HELP (\S+)", text, re.M)


def feed(cwd):
    """Events in all three streams, a bad line in each, one merge and one URE tick."""
    emit(cwd, 60)
    safety = {
        "ts": datetime.now(timezone.utc).isoformat(),
        "loop": "safety.music.v17",
        "levels": {"residual": "TENSE", "rollback_ratio": "CALM", "final": "TENSE"},
        "inputs": {"residual_entropy": 0.6, "rollback_ratio": 0.0},
    }
    with open(cwd / "logs/safety_music_events.jsonl", "a") as f:
        f.write(json.dumps(safety) + "\nnot json\n")
    with open(cwd / "logs/rmb_events.jsonl", "a") as f:
        f.write("not json\n")
    r = subprocess.run(
        [PY, str(ROOT / "tools/merge_rmb_safety_v2.py"), "--config", str(CONFIG_URE)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    loop = UreLoop(config.load(CONFIG_URE, env={}))
    tick = loop.tick()
    loop.close()
    with open(cwd / "logs/resonance_events_v2.jsonl", "a") as f:
        f.write("not json\n")
    return tick


def test_every_exposition_passes_promtool(workdir, procs, private_stack):
    require_tool("promtool")  # skip (or fail, LUMEN_REQUIRE_OPS_TOOLS=1) before starting anything
    ports = {
        "/metrics": start(procs, RMB_EXPORTER, CONFIG_RMB),
        "/metrics_ure": start(procs, URE_EXPORTER, CONFIG_URE),
    }
    for path, port in ports.items():  # before any event: NaN gauges, still well-formed
        text = scrape(port, path)
        assert promtool_check(text) == (0, ""), (path, text)
        assert set(BLUEPRINT[path]) <= set(unlabelled_samples(text))
    tick = feed(workdir)

    def fed(path):
        m = unlabelled_samples(scrape(ports[path], path))
        if path == "/metrics":
            return m["rmb_events_total"] == 60
        return m["ure_residual_entropy_last"] == tick["phase_field"]["residual_entropy"]

    for path, port in ports.items():
        wait_until(lambda path=path: fed(path), timeout=30, what=f"{path} to count the events")
        text = scrape(port, path)
        assert promtool_check(text) == (0, ""), (path, text)
        assert len(helps(text)) == len(set(helps(text)))

    # Track A's fake-stream exporter (make exporter.v17.serve), run as the Makefile runs it.
    env = private_stack(ports=("FAKE_EXPORTER_PORT",))
    r = run_make(workdir, "metrics.fake.v17", "exporter.v17.serve", env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    fake = int(env["FAKE_EXPORTER_PORT"])
    wait_until(
        lambda: unlabelled_samples(scrape(fake, "/metrics"))["rmb_events_total"] > 0,
        timeout=30,
        what="the fake stream's exporter to count its events",
    )
    text = scrape(fake, "/metrics")
    assert promtool_check(text) == (0, ""), text
    assert "process rmb_exporter_fake" in requests.get(f"http://127.0.0.1:{fake}/", timeout=5).text


def test_the_lint_is_real(workdir):
    """The oracle above catches the URE exporter's former exposition: the same family name
    once per stream."""
    require_tool("promtool")
    twice = (
        "# HELP ure_exporter_log_lines_total Lines.\n# TYPE ure_exporter_log_lines_total counter\n"
        'ure_exporter_log_lines_total{stream="v2",status="valid"} 1\n'
    ) * 2
    rc, out = promtool_check(twice)
    assert rc != 0 and "second HELP line" in out


def test_one_family_per_name_with_every_stream(workdir):
    feed(workdir)
    exp = UreExporter(config.load(CONFIG_URE, env={})["paths"])
    while exp.poll_once():
        pass
    text = exp.app("GET", "/metrics_ure", {})[2].decode()
    exp.run(stopped())
    assert len(helps(text)) == len(set(helps(text)))
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    lines = {
        (s.labels["stream"], s.labels["status"]): s.value
        for s in fams["ure_exporter_log_lines"].samples
    }
    assert lines == {
        ("v2", "valid"): 62,  # 60 RMB events and 1 Safety Music tick merged, 1 URE tick
        ("v2", "rejected"): 1,
        ("safety", "valid"): 1,
        ("safety", "rejected"): 1,
        ("rmb", "valid"): 60,
        ("rmb", "rejected"): 1,
    }
    for name in (
        "ure_exporter_rejects",
        "ure_exporter_file_rotations",
        "ure_exporter_file_truncates",
        "ure_exporter_checkpoints_written",
        "ure_exporter_checkpoint_errors",
        "ure_exporter_log_gap_bytes",
        "ure_exporter_log_bytes_behind",
    ):
        assert {s.labels["stream"] for s in fams[name].samples} == {"v2", "safety", "rmb"}, name


def test_gauges_without_a_value_are_nan_never_zero(workdir):
    rmb = RmbExporter("logs/rmb_events.jsonl", GATES)
    ure = UreExporter(config.load(CONFIG_URE, env={})["paths"])
    rmb.poll_once()
    ure.poll_once()
    m = unlabelled_samples(rmb.app("GET", "/metrics", {})[2].decode())
    u = unlabelled_samples(ure.app("GET", "/metrics_ure", {})[2].decode())
    assert m["rmb_events_total"] == 0 and math.isnan(m["rmb_residual_entropy_last"])
    for name in ("ure_residual_entropy_last", "ure_harmony_index", "ure_coherence_level"):
        assert math.isnan(u[name]), name
    assert math.isnan(u["ure_rmb_residual_entropy_last"])
    assert m["rmb_last_event_timestamp_seconds"] == 0  # the epoch: "never", for staleness rules
    tick = feed(workdir)
    while rmb.poll_once() + ure.poll_once():
        pass
    newest = json.loads((workdir / "logs/rmb_events.jsonl").read_text().splitlines()[-2])
    m = unlabelled_samples(rmb.app("GET", "/metrics", {})[2].decode())
    u = unlabelled_samples(ure.app("GET", "/metrics_ure", {})[2].decode())
    assert m["rmb_residual_entropy_last"] == newest["resonance_v3"]["residual_entropy"]
    assert u["ure_rmb_residual_entropy_last"] == newest["resonance_v3"]["residual_entropy"]
    assert u["ure_residual_entropy_last"] == tick["phase_field"]["residual_entropy"]
    assert u["ure_harmony_index"] == tick["harmony_index"]
    rmb.run(stopped())
    ure.run(stopped())


def test_a_checkpoint_of_an_empty_log_resumes_as_no_value():
    """A checkpoint written before NaN held residual_last 0.0 with no event: not a value."""
    assert RmbStats({"by_type": {}, "residual_last": 0.0}).residual_last is None
    st = RmbStats({"by_type": {"observe": 3}, "residual_last": 0.0})
    assert st.residual_last == 0.0  # a real 0.0 after events stays
    assert RmbStats(RmbStats().to_state()).residual_last is None


def test_landing_page_build_info_and_standard_collectors_on_an_own_registry(workdir):
    exps = [
        RmbExporter("logs/rmb_events.jsonl", GATES),
        RmbExporter("logs/other.jsonl", GATES, consumer="second"),  # two in one process
    ]
    version = metadata.version("lumen")
    status, headers, body = exps[1].app("GET", "/", {})
    assert status == 200 and dict(headers)["Content-Type"].startswith("text/html")
    page = body.decode()
    assert "<title>Lumen RMB exporter</title>" in page and "process second" in page
    assert f"Lumen {version}" in page and '<a href="metrics">' in page
    assert exps[0].app("GET", "/nothing", {})[0] == 404
    for exp in exps:
        text = exp.app("GET", "/metrics", {})[2].decode()
        names = {f.name for f in text_string_to_metric_families(text)}
        assert {"process_cpu_seconds", "process_resident_memory_bytes", "python_info"} <= names
        assert "python_gc_objects_collected" in names
        info = [x for x in text.splitlines() if x.startswith("lumen_build_info{")]
        assert info == [
            f'lumen_build_info{{python_version="{platform.python_version()}",'
            f'version="{version}"}} 1.0'
        ]
        exp.run(stopped())
    # prometheus_client's global registry is left alone.
    glob = generate_latest(prometheus_client.REGISTRY).decode()
    assert "lumen_build_info" not in glob and "rmb_events_total" not in glob


def test_the_landing_page_links_to_the_metrics_live(workdir, procs):
    for script, cfg, path in (
        (URE_EXPORTER, CONFIG_URE, "/metrics_ure"),
        (RMB_EXPORTER, CONFIG_RMB, "/metrics"),
    ):
        port = start(procs, script, cfg)
        base = f"http://127.0.0.1:{port}/"
        r = requests.get(base, timeout=5)
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
        href = re.search(r'<a href="([^"]+)">Metrics</a>', r.text).group(1)
        assert urljoin(base, href) == base + path.lstrip("/")
        assert set(BLUEPRINT[path]) <= set(unlabelled_samples(scrape(port, path)))
        assert requests.head(base, timeout=5).status_code == 200
