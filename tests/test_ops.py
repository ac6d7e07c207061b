"""Ops files checked by the real tools (promtool, amtool, docker-compose, Kubernetes
schemas), and an end-to-end run: the Lumen stack with a real Prometheus and Alertmanager.

A missing tool is a visible skip locally and a failure when LUMEN_REQUIRE_OPS_TOOLS=1 (CI).
"""

import contextlib
import http.server
import json
import os
import signal
import subprocess
import threading
import time
from typing import NamedTuple

import pytest
import requests
import yaml

from conftest import (
    CONFIG_RMB,
    PY,
    ROOT,
    free_port,
    require_tool,
    unlabelled_samples,
    wait_until,
)
from lumen import timefmt, vocab
from test_alerts import lines, osc_listener, osc_messages, start_receiver

OPS = ROOT / "ops"


def run(*args, cwd=ROOT):
    return subprocess.run(
        list(map(str, args)), cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_generated_ops_files_are_current():
    r = run(PY, ROOT / "tools/ops_build.py", "--check")
    assert r.returncode == 0, r.stderr
    r = run(PY, ROOT / "tools/dashboards_v3_build.py", "--check")
    assert r.returncode == 0, r.stderr


def test_promtool_accepts_config_and_rules():
    promtool = require_tool("promtool")
    r = run(promtool, "check", "config", OPS / "prometheus/prometheus.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    prom = yaml.safe_load((OPS / "prometheus/prometheus.yml").read_text())
    assert [j["job_name"] for j in prom["scrape_configs"]] == [
        "rmb_v17",
        "ure_v18",
        "alert_receiver",
    ]
    assert prom["scrape_configs"][2]["static_configs"][0]["targets"] == ["localhost:9411"]
    compose = yaml.safe_load((OPS / "prometheus/prometheus.compose.yml").read_text())
    assert [sc["static_configs"][0]["targets"] for sc in compose["scrape_configs"]] == [
        ["lumen-exporters:9409"],
        ["ure-exporter:9410"],
        ["alert-receiver:9411"],
    ]
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "localhost:9093"
    ]
    r = run(promtool, "check", "rules", *sorted((OPS / "prometheus/rules").glob("*.rules.yml")))
    assert (
        r.returncode == 0
        and "SUCCESS: 2 rules found" in r.stdout
        and "SUCCESS: 5 rules found" in r.stdout
    )


def test_many_hosts_scrape_the_alert_receivers_they_name(tmp_path):
    """A hosts file's `alerts:` is optional: the alert_receiver job scrapes the hosts that
    name one (labelled with the host), and is left out when none does."""
    from lumen import ops_build

    scrape = OPS / "prometheus/scrape.yml"
    f = tmp_path / "hosts.yml"
    f.write_text(
        "hosts:\n"
        "  - {id: a, rmb: 'a:9409', ure: 'a:9410', alerts: 'a:9411'}\n"
        "  - {id: b, rmb: 'b:9409', ure: 'b:9410'}\n"
    )
    cfg = yaml.safe_load(ops_build.prometheus_config(scrape, many=ops_build.load_hosts(f)))
    jobs = {j["job_name"]: j["static_configs"] for j in cfg["scrape_configs"]}
    assert jobs["alert_receiver"] == [{"targets": ["a:9411"], "labels": {"host": "a"}}]
    assert [sc["labels"]["host"] for sc in jobs["ure_v18"]] == ["a", "b"]
    f.write_text("hosts:\n  - {id: b, rmb: 'b:9409', ure: 'b:9410'}\n")
    cfg = yaml.safe_load(ops_build.prometheus_config(scrape, many=ops_build.load_hosts(f)))
    assert [j["job_name"] for j in cfg["scrape_configs"]] == ["rmb_v17", "ure_v18"]
    f.write_text("hosts:\n  - {id: b, rmb: 'b:9409', ure: 'b:9410', alerts: 'nope'}\n")
    with pytest.raises(ValueError, match=r"hosts\[0\]\.alerts: expected host:port"):
        ops_build.load_hosts(f)


def test_promtool_rule_unit_tests_pass():
    r = run(
        require_tool("promtool"), "test", "rules", "rules_test.yml", cwd=OPS / "prometheus/tests"
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_prometheus_rule_resources_match_the_plain_rules():
    for plain, cr in (
        ("rmb_v17.rules.yml", "rmb_v17_rules.yaml"),
        ("recording_v18.rules.yml", "recording_rules_v18.yaml"),
    ):
        p = yaml.safe_load((OPS / "prometheus/rules" / plain).read_text())
        c = yaml.safe_load((OPS / "prometheus/rules" / cr).read_text())
        assert c["apiVersion"] == "monitoring.coreos.com/v1" and c["kind"] == "PrometheusRule"
        assert c["spec"]["groups"] == p["groups"]
    rules = yaml.safe_load((OPS / "prometheus/rules/rmb_v17.rules.yml").read_text())
    exprs = {r["alert"]: r["expr"] for r in rules["groups"][0]["rules"]}
    # The residual alert follows the emitter's gate, exported by the RMB exporter.
    assert "rmb_safety_gate_residual_entropy_max" in exprs["RMBResidualHigh"]


def routes(amtool, cfg, labels):
    """The receivers `amtool config routes test` names for `labels`, in order."""
    r = run(amtool, "config", "routes", "test", f"--config.file={cfg}", *labels)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.strip().split(",")


def alert_label_sets():
    """alertname and labels of every alerting rule of the project, and an alert of no rule
    with no severity."""
    out = [["alertname=SomethingElse"], ["alertname=Odd", "severity=info"]]
    for f in sorted((OPS / "prometheus/rules").glob("*.rules.yml")):
        for g in yaml.safe_load(f.read_text())["groups"]:
            for rule in g["rules"]:
                if "alert" in rule:
                    labels = {"alertname": rule["alert"], **rule.get("labels", {})}
                    out.append([f"{k}={v}" for k, v in labels.items()])
    return out


def test_alertmanager_config_and_routing(tmp_path):
    amtool = require_tool("amtool")
    cfg = OPS / "alertmanager/alertmanager.yml"
    for f in (cfg, OPS / "alertmanager/alertmanager.compose.yml"):
        r = run(amtool, "check-config", f)
        assert r.returncode == 0, r.stdout + r.stderr
    text = cfg.read_text()
    body = "\n".join(x for x in text.splitlines() if not x.lstrip().startswith("#"))
    assert "${" not in body and "hooks.slack.com" not in body  # no secrets, no env syntax
    for labels, receiver in (
        (["severity=critical", "alertname=RMBRollbackSpike"], "pagerduty"),
        (["severity=warning", "alertname=RMBResidualHigh"], "team-slack"),
    ):
        assert routes(amtool, cfg, labels) == ["lumen", receiver]
    am = yaml.safe_load(text)
    assert am["inhibit_rules"][0]["source_matchers"] == ['severity="critical"']
    # Every alert reaches Lumen's alert receiver AND the receiver it reached before the
    # `lumen` route: the same routing with that route taken out.
    lumen = am["route"]["routes"][0]
    assert lumen["receiver"] == "lumen" and lumen["continue"] is True and "matchers" not in lumen
    before = dict(am, route=dict(am["route"], routes=am["route"]["routes"][1:]))
    (tmp_path / "before.yml").write_text(yaml.safe_dump(before))
    for labels in alert_label_sets():
        old = routes(amtool, tmp_path / "before.yml", labels)
        assert "lumen" not in old and routes(amtool, cfg, labels) == ["lumen", *old], labels
    (hook,) = next(r for r in am["receivers"] if r["name"] == "lumen")["webhook_configs"]
    assert hook == {"url": "http://127.0.0.1:9411/alerts", "send_resolved": True}
    receiver_cfg = yaml.safe_load((ROOT / "configs/alert_receiver_v18.yaml").read_text())
    assert (
        receiver_cfg["receiver"]["port"] == 9411 and receiver_cfg["receiver"]["path"] == "/alerts"
    )
    # The compose stack's Alertmanager reaches the receiver by its service name.
    compose_am = yaml.safe_load((OPS / "alertmanager/alertmanager.compose.yml").read_text())
    (hook,) = next(r for r in compose_am["receivers"] if r["name"] == "lumen")["webhook_configs"]
    assert hook["url"] == "http://alert-receiver:9411/alerts"
    assert dict(compose_am, receivers=None) == dict(am, receivers=None)


def compose_config(tmp_path, *overrides, **env):
    """`docker-compose config` of docker-compose.yml (plus override files), rendered with
    only `env` set: a clean environment and an empty --env-file, so neither the caller's
    variables nor a local .env change what the defaults are."""
    env_file = env.pop("env_file", None)
    if env_file is None:
        env_file = tmp_path / "empty.env"
        env_file.write_text("")
    files = [a for f in ("docker-compose.yml", *overrides) for a in ("-f", ROOT / f)]
    cmd = [require_tool("docker-compose"), "--env-file", env_file, *files, "config"]
    return subprocess.run(
        list(map(str, cmd)),
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def compose_services(tmp_path, *overrides, **env):
    r = compose_config(tmp_path, *overrides, **env)
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)["services"]


def published_ports(service):
    """[(host_ip, published port)] of a rendered service, from either port syntax
    (docker-compose v1 renders "127.0.0.1:9409:9409/tcp", v2 a mapping). An empty host_ip
    means every interface."""
    out = []
    for p in service.get("ports", []):
        if isinstance(p, dict):
            out.append((p.get("host_ip", ""), str(p.get("published", ""))))
            continue
        parts = str(p).split("/")[0].rsplit(":", 2)
        out.append((parts[0], parts[1]) if len(parts) == 3 else ("", parts[0]))
    return out


def test_docker_compose_config_is_accepted(tmp_path):
    services = compose_services(tmp_path, GRAFANA_ADMIN_PASSWORD="pw")
    assert {
        "lumen-exporters",
        "lumen-api",
        "alert-receiver",
        "prometheus",
        "alertmanager",
        "grafana",
    } <= set(services)
    mounts = services["alertmanager"]["volumes"]
    (am,) = [m for m in mounts if "/etc/alertmanager/alertmanager.yml" in str(m)]
    source = am["source"] if isinstance(am, dict) else am.split(":")[0]
    assert source.endswith("ops/alertmanager/alertmanager.compose.yml"), am
    assert published_ports(services["lumen-exporters"]) == [("127.0.0.1", "9409")]


def test_compose_publishes_every_port_on_loopback_unless_lumen_bind(tmp_path):
    services = compose_services(tmp_path, GRAFANA_ADMIN_PASSWORD="pw")
    ports = {name: published_ports(s) for name, s in services.items()}
    assert {p for ps in ports.values() for _, p in ps} == {
        "9409",
        "9410",
        "8088",
        "9411",
        "9090",
        "9093",
        "3000",
    }
    for name, s in services.items():
        assert "network_mode" not in s and "expose" not in s, name
        for host, port in ports[name]:
            assert host == "127.0.0.1", f"{name} publishes {port} on {host or 'all interfaces'}"
    # LUMEN_BIND opens them up, as documented.
    services = compose_services(tmp_path, GRAFANA_ADMIN_PASSWORD="pw", LUMEN_BIND="0.0.0.0")
    assert {h for s in services.values() for h, _ in published_ports(s)} == {"0.0.0.0"}


def test_compose_grafana_has_no_anonymous_access_and_no_default_password(tmp_path):
    for env in ({}, {"GRAFANA_ADMIN_PASSWORD": ""}):
        r = compose_config(tmp_path, **env)
        assert r.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in r.stderr, (env, r.stderr)
    services = compose_services(tmp_path, GRAFANA_ADMIN_PASSWORD="s3cret-from-env")
    env = services["grafana"]["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret-from-env"
    assert str(env.get("GF_AUTH_ANONYMOUS_ENABLED", "false")).lower() == "false"
    assert "env_file" not in services["grafana"]
    # .env.example is the template for the git-ignored .env: as shipped (no password) it
    # does not start; filled in, the stack is the default one.
    example = (ROOT / ".env.example").read_text()
    assert "\nGRAFANA_ADMIN_PASSWORD=\n" in example
    r = compose_config(tmp_path, env_file=ROOT / ".env.example")
    assert r.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in r.stderr
    filled = tmp_path / "filled.env"
    filled.write_text(
        example.replace("\nGRAFANA_ADMIN_PASSWORD=\n", "\nGRAFANA_ADMIN_PASSWORD=x\n")
    )
    services = compose_services(tmp_path, env_file=filled)
    assert {h for s in services.values() for h, _ in published_ports(s)} == {"127.0.0.1"}


def test_compose_prometheus_lifecycle_api_is_opt_in(tmp_path):
    def flags(services):
        return [f for f in services["prometheus"]["command"] if f.startswith("--web.enable-")]

    assert flags(compose_services(tmp_path, GRAFANA_ADMIN_PASSWORD="pw")) == []
    override = "ops/compose/prometheus-lifecycle.yml"
    services = compose_services(tmp_path, override, GRAFANA_ADMIN_PASSWORD="pw")
    assert flags(services) == ["--web.enable-lifecycle"]
    assert published_ports(services["prometheus"]) == [("127.0.0.1", "9090")]


def test_container_commands_are_console_scripts_of_the_package():
    """The image holds Lumen as an installed wheel (no source tree): every Lumen command in
    compose and the k8s manifests is one of the wheel's console scripts."""
    import tomllib

    scripts = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    commands = [svc["command"] for svc in compose.values() if svc.get("build")]
    for doc in yaml.safe_load_all((ROOT / "ops/k8s/rmb-v17/deploy.yaml").read_text()):
        for c in (
            (doc or {}).get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        ):
            commands.append(c["command"])
    assert len(commands) >= 10
    for cmd in commands:
        words = cmd[2].replace("&&", " ").split() if cmd[:2] == ["sh", "-c"] else cmd[:1]
        named = [w for w in words if w.startswith("lumen-") or w.startswith("/")]
        assert named and all(w in scripts for w in named), cmd
        assert not any("/app/" in w for w in cmd), cmd


def test_env_files_are_git_ignored():
    if run("git", "rev-parse", "--is-inside-work-tree").returncode != 0:
        pytest.skip("not a git work tree")
    for name in (".env", ".env.local", ".env.production"):
        assert run("git", "check-ignore", "-q", name).returncode == 0, f"{name} is not ignored"
    assert (ROOT / ".env.example").is_file()
    assert run("git", "check-ignore", "-q", ".env.example").returncode == 1


def test_kubernetes_manifests_validate_and_argo_points_at_them():
    kv = ROOT / ".venv/bin/kubernetes-validate"
    files = sorted((OPS / "k8s/rmb-v17").glob("*.yaml"))
    r = run(kv, *files)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("passed") == len(files) == 3
    kinds = {yaml.safe_load(f.read_text())["kind"] for f in files}
    assert kinds == {"Deployment", "Service", "ConfigMap"}
    svc = yaml.safe_load((OPS / "k8s/rmb-v17/service.yaml").read_text())
    assert svc["spec"]["ports"][0]["port"] == 9409
    app = yaml.safe_load((OPS / "argo/app-rmb-v17.yaml").read_text())
    assert app["kind"] == "Application" and (ROOT / app["spec"]["source"]["path"]).is_dir()


def test_dashboards_are_valid_grafana_json():
    d = json.loads((OPS / "grafana/dashboards/resonance_memory_bridge_v17.json").read_text())
    assert d["uid"] and d["schemaVersion"] >= 36
    assert {v["name"] for v in d["templating"]["list"]} == {"datasource", "loki"}
    panels = {p["title"]: p for p in d["panels"]}
    for p in d["panels"]:
        assert (
            set(p["gridPos"]) == {"x", "y", "w", "h"}
            and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        )
    steps = panels["rmb_residual_entropy_last"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, 0.55, 0.85]
    steps = panels["rmb_rollback_total"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1] == {"color": "red", "value": 5}
    logs = [p for p in d["panels"] if p["type"] == "logs"]
    assert logs and logs[0]["datasource"]["uid"] == "${loki}"
    u = json.loads((OPS / "grafana/dashboards/ure_v18.json").read_text())
    assert {t["expr"] for p in u["panels"] for t in p["targets"]} >= {
        "ure_residual_entropy_last",
        "ure_harmony_index",
        "ure_coherence_level",
    }


# ---------------------------------------------------------------- end to end
class Sink(http.server.BaseHTTPRequestHandler):
    """Alertmanager's webhook target: records what each receiver was sent."""

    got = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Sink.got.append((self.path.strip("/"), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *a):
        pass


class E2E(NamedTuple):
    sink: http.server.HTTPServer  # every receiver but `lumen`
    prom: str  # base URLs
    am: str
    receiver: str  # Lumen's alert receiver, a real process (logs/alerts.jsonl in procs.cwd)
    emitter: subprocess.Popen


def _e2e(tmp_path, procs, profile, osc_port=None, alert_window=None):
    """The stack: RMB exporter and emitter (`profile`), the alert receiver (OSC to
    `osc_port` if given), Alertmanager, Prometheus. `alert_window`: the alert rules'
    window instead of 5m, so an alert can resolve within a test."""
    prom_bin, am_bin = (
        require_tool("prometheus"),
        require_tool("alertmanager", "prometheus-alertmanager"),
    )
    Sink.got = []
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    exp_port, prom_port, am_port = free_port(), free_port(), free_port()
    work = tmp_path / "work"
    work.mkdir()
    procs.cwd = work
    procs.start(
        ROOT / "exporters/rmb_exporter_v17.py",
        "--config",
        CONFIG_RMB,
        "--port",
        exp_port,
        "--host",
        "127.0.0.1",
    )
    emitter = procs.start(
        ROOT / "rmb/rmb_emitter.py",
        "--config",
        CONFIG_RMB,
        "--profile",
        profile,
        "--hz",
        50,
        "--seed",
        1,
    )
    osc = {"ALERT_OSC": "true", "ALERT_OSC_PORT": osc_port} if osc_port else {}
    _, receiver = start_receiver(procs, **osc)
    # The project's routing with the paging receivers swapped for a local webhook (no
    # network), `lumen` kept and pointed at the real receiver, and the waits shortened so
    # the test is quick; `lumen` repeats every 2 s, which the receiver must not log again.
    am = yaml.safe_load((OPS / "alertmanager/alertmanager.yml").read_text())
    am["global"]["resolve_timeout"] = "10s"
    am["route"]["group_wait"] = "1s"
    for route in am["route"]["routes"]:
        if route["receiver"] == "lumen":
            route.update(group_wait="1s", group_interval="1s", repeat_interval="2s")
    sink_url = f"http://127.0.0.1:{sink.server_address[1]}"
    am["receivers"] = [
        {
            "name": r["name"],
            "webhook_configs": [
                {"url": f"{receiver}/alerts" if r["name"] == "lumen" else f"{sink_url}/{r['name']}"}
            ],
        }
        for r in am["receivers"]
    ]
    (tmp_path / "am.yml").write_text(yaml.safe_dump(am))
    # The project's rules, with `for:` shortened from minutes to seconds (the promtool
    # unit tests prove the real durations); scraped and evaluated every second.
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    for f in (OPS / "prometheus/rules").glob("*.rules.yml"):
        text = f.read_text().replace("for: 2m", "for: 3s").replace("for: 3m", "for: 3s")
        if alert_window and f.name == "rmb_v17.rules.yml":
            text = text.replace("[5m]", f"[{alert_window}]")
        (rules_dir / f.name).write_text(text)
    prom = yaml.safe_load((OPS / "prometheus/prometheus.yml").read_text())
    prom["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    prom["rule_files"] = [str(rules_dir / "*.rules.yml")]
    prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{am_port}"]
    prom["scrape_configs"] = [
        {"job_name": "rmb_v17", "static_configs": [{"targets": [f"127.0.0.1:{exp_port}"]}]}
    ]
    (tmp_path / "prom.yml").write_text(yaml.safe_dump(prom))
    for cmd in (
        [
            am_bin,
            f"--config.file={tmp_path / 'am.yml'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
            f"--storage.path={tmp_path / 'am'}",
        ],
        [
            prom_bin,
            f"--config.file={tmp_path / 'prom.yml'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        ],
    ):
        p = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        procs.started.append(p)
    return E2E(
        sink, f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{am_port}", receiver, emitter
    )


def _query(prom, q):
    try:
        r = requests.get(f"{prom}/api/v1/query", params={"query": q}, timeout=5).json()
    except requests.RequestException:  # not up yet
        return []
    return r["data"]["result"]


def test_spike_alert_reaches_alertmanager_and_recording_rules_compute(tmp_path, procs):
    sink, prom, am, _, _ = _e2e(tmp_path, procs, "spike")
    try:

        def alert_in_am():
            try:
                alerts = requests.get(f"{am}/api/v2/alerts", timeout=2).json()
            except requests.RequestException:
                return False
            return [a for a in alerts if a["labels"]["alertname"] == "RMBRollbackSpike"]

        alerts = wait_until(
            alert_in_am, timeout=90, interval=0.5, what="RMBRollbackSpike in Alertmanager"
        )
        assert alerts[0]["labels"]["severity"] == "critical"
        wait_until(
            lambda: any(r == "pagerduty" for r, _ in Sink.got),
            timeout=30,
            what="the critical alert routed to the pagerduty receiver",
        )
        ratio = float(_query(prom, "rollback_ratio_5m")[0]["value"][1])
        counters = float(_query(prom, "rmb_rollback_total / rmb_events_total")[0]["value"][1])
        assert 0.5 < ratio < 0.95 and abs(ratio - counters) < 0.15
        sd = wait_until(lambda: _query(prom, "residual_stddev_10m"), timeout=10, what="stddev")
        assert 0.02 < float(sd[0]["value"][1]) < 0.08  # U(0.80, 0.98) has stddev 0.052
    finally:
        sink.shutdown()


def test_steady_stream_fires_no_alert(tmp_path, procs):
    sink, prom, am, receiver, _ = _e2e(tmp_path, procs, "steady")
    try:
        # Wait until the rules have had data for longer than the shortened `for:`.
        wait_until(
            lambda: _query(prom, "rollback_ratio_5m"),
            timeout=60,
            interval=0.5,
            what="recording rules to have data",
        )
        t0 = time.monotonic()
        wait_until(lambda: time.monotonic() - t0 > 8, timeout=15, what="8 s of evaluations")
        assert _query(prom, "ALERTS") == []
        assert requests.get(f"{am}/api/v2/alerts", timeout=5).json() == []
        assert float(_query(prom, "rollback_ratio_5m")[0]["value"][1]) < 0.05
        assert not (procs.cwd / "logs/alerts.jsonl").exists()  # nothing to hear
    finally:
        sink.shutdown()


def test_spike_alert_is_logged_and_heard_then_its_resolution(tmp_path, procs):
    """Issue 17: RMBRollbackSpike fires -> one `firing` line in logs/alerts.jsonl, one OSC
    message, and the live page (headless Chromium, on the stream of the API over what the
    ingester stored) plays the firing motif; it resolves (the emitter stops; the rule's
    window is 10 s here) -> one `resolved` line, its OSC message and the resolution's
    motif on the page. Alertmanager's repeats are not logged or played again."""
    from test_live_page import browser_page

    sock = osc_listener()
    e = _e2e(tmp_path, procs, "spike", osc_port=sock.getsockname()[1], alert_window="10s")
    log, got, errors, api = procs.cwd / "logs/alerts.jsonl", [], [], free_port()
    procs.start(ROOT / "tools/storage/ingest_tail_v18.py")
    procs.start(ROOT / "api/read_only.py", "--port", api)

    def spike(status):
        evs = lines(log) if log.exists() else []  # each one checked against the schema
        return [
            ev for ev in evs if ev["alertname"] == "RMBRollbackSpike" and ev["status"] == status
        ]

    def heard(address):
        osc_messages(sock, got)
        return [m for m in got if m[0] == address and m[1][0] == "RMBRollbackSpike"]

    def played(status):
        return page.evaluate(
            "s => lumen.played.filter(p => p.alertname === 'RMBRollbackSpike' && p.motif === s)",
            status,
        )

    def api_up():
        try:
            return requests.get(f"http://127.0.0.1:{api}/healthz", timeout=2).status_code
        except requests.RequestException:  # not listening yet
            return None

    with contextlib.ExitStack() as stack:
        stack.callback(e.sink.shutdown)
        stack.callback(sock.close)
        page = stack.enter_context(browser_page(errors))
        wait_until(api_up, timeout=60, interval=0.3, what="the API")
        page.goto(f"http://127.0.0.1:{api}/")
        page.wait_for_function(
            "() => lumen.stream && lumen.stream.mode === 'stream'", timeout=60_000
        )

        wait_until(lambda: spike(vocab.FIRING), timeout=120, interval=0.5, what="a firing line")
        (firing,) = wait_until(lambda: heard("/lumen/alert/firing"), timeout=30, what="OSC firing")
        assert firing[1] == ["RMBRollbackSpike", "critical", "RMB rollback ratio >= 10% (5m)"]
        wait_until(
            lambda: any(r == "pagerduty" for r, _ in Sink.got),
            timeout=30,
            what="the alert at its old receiver too",
        )
        wait_until(
            lambda: (
                unlabelled_samples(requests.get(f"{e.receiver}/metrics", timeout=5).text)[
                    "alert_receiver_duplicates_total"
                ]
                >= 1
            ),
            timeout=60,
            interval=0.5,
            what="Alertmanager to repeat the notification (repeat_interval 2s)",
        )
        (f,) = spike(vocab.FIRING)  # one line, whatever Alertmanager repeated
        assert f["severity"] == "critical" and f["receiver"] == "lumen" and f["ends_at"] is None
        assert f["labels"]["job"] == "rmb_v17" and f["summary"] == firing[1][2]
        (pf,) = wait_until(lambda: played("firing"), timeout=60, what="the page's firing motif")

        e.emitter.send_signal(signal.SIGTERM)  # no more events: the ratio falls to 0
        assert e.emitter.wait(timeout=30) == 0
        (r,) = wait_until(lambda: spike(vocab.RESOLVED), timeout=120, interval=0.5, what="resolved")
        (res,) = wait_until(lambda: heard("/lumen/alert/resolved"), timeout=30, what="OSC resolved")
        assert res[1] == firing[1]
        assert (r["fingerprint"], r["starts_at"]) == (f["fingerprint"], f["starts_at"])
        assert r["ends_at"] and timefmt.parse(r["ends_at"]) >= timefmt.parse(r["starts_at"])
        assert len(spike(vocab.FIRING)) == 1 and len(heard("/lumen/alert/firing")) == 1
        # The page heard both, once each, from the rows the ingester stored and the API pushed.
        (pr,) = wait_until(lambda: played("resolved"), timeout=60, what="the page's resolution")
        assert pf["id"] != pr["id"] and len(played("firing")) == 1
        shown = page.locator("#alerts tbody tr").all_inner_texts()
        assert sum("RMBRollbackSpike" in row for row in shown) == 2
    assert errors == []
