"""Track A: the restore and exit checks of blueprint section 0 (and sections 9, 15, 24);
run by tools/tracka_v17.py (its --help lists the commands), one function a command
(COMMANDS): init, fake, slo, kpi, exit.

Reads configs/trackA_v17.yaml (stream, fake stream, checks), configs/rmb_v17.yaml (KPI
CSV path), configs/resonance_v3.policy.yaml. The stream is read from its end back to the
start of the longest window (lumen.recent), so a check costs the same on a 1 GB log as on
a small one. slo.report, kpi.snapshot and trackA.exit wait (up to checks.wait_s) for the
stream to hold fresh data: section 0 starts them while the fake stream is still being
written. slo.report exits 0 whenever it could report (trackA.exit is the gate); trackA.exit
exits 1 on FAIL, naming each failed check.
"""

import csv
import importlib
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from lumen import config, events, slo, timefmt
from lumen.recent import recent_events
from lumen import vocab

KPI_FIELDS_HEAD = ["ts", "stream", "window_s", "events", "rollbacks", "rmb_residual_entropy_last"]
DEPENDENCIES = ["yaml", "jsonschema", "jsonschema_rs", "orjson", "prometheus_client", "requests"]


def _path(p):
    """Config paths are relative to the working directory; the policy file, when not there,
    is the shipped one (config.shipped)."""
    return config.shipped(p)


def load_policies(cfg):
    return config.load(_path(cfg["checks"]["policy"]), "resonance_v3.policy")["policies"]


# ------------------------------------------------------------------- init
def cmd_init(cfg, args):
    problems = []
    if sys.version_info < (3, 10):
        problems.append(f"Python 3.10+ needed, this is {sys.version.split()[0]}")
    for mod in DEPENDENCIES:
        try:
            importlib.import_module(mod)
        except ImportError:
            problems.append(f"missing Python package {mod} (run make venv)")
    for d in ("logs", "logs/proc", "logs/rejects", "data", "run"):
        Path(d).mkdir(parents=True, exist_ok=True)
    print("[init] created logs/ data/ run/")
    seen = [
        f"{k}={os.environ[k]}"
        for k in (
            "LUMEN_TRACK",
            "RMB_EXPORTER_PORT",
            "RESIDUAL_MAX",
            "LOG_RETENTION_DAYS",
            "PROM_JOB",
        )
        if k in os.environ
    ]
    print(f"[init] restore env: {' '.join(seen) if seen else '(none sourced)'}")
    for p in problems:
        print(f"[init] FAIL {p}", file=sys.stderr)
    print(f"[feature.v17.init] RESULT = {'FAIL' if problems else 'OK'}")
    return 1 if problems else 0


# ------------------------------------------------------------------- fake
def cmd_fake(cfg, args):
    from lumen import emitter

    f = cfg["fake"]
    out = Path(cfg["stream"])
    out.parent.mkdir(parents=True, exist_ok=True)
    # A fresh stream each time, written aside and renamed into place: a reader sees the old
    # stream or the whole new one, never a mix of profiles or a half-written stream.
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.unlink(missing_ok=True)
    count = int(f["span_s"] * f["hz"])
    start = timefmt.format(time.time() - f["span_s"])
    rc = emitter.from_argv(
        [
            "--config",
            str(args.rmb_config),
            "--queue",
            str(tmp),
            "--profile",
            f["profile"],
            "--seed",
            str(f["seed"]),
            "--count",
            str(count),
            "--hz",
            str(f["hz"]),
            "--unthrottled",
            "--sim-start",
            start,
            "--name",
            "metrics_fake",
            "--quiet",
        ]
    )
    if rc == 0:
        os.replace(tmp, out)
        Path(f"{out}.1").unlink(missing_ok=True)  # an older fake stream must not be read
        print(
            f"[metrics.fake.v17] {count} {f['profile']} events over the last "
            f"{f['span_s']:g}s -> {out}"
        )
    return rc


# --------------------------------------------------------- windows + wait
def gather(cfg, policies, tag, now_fn=time.time):
    """Wait (bounded) for fresh data; returns (events as (t, residual, rollback), stats, why)."""
    chk = cfg["checks"]
    span = max(slo.window_s(p["evaluate"]["metric"]) for p in policies)
    validator = events.Validator.named("rmb_event_v1.json")
    stream = cfg["stream"]
    deadline = time.monotonic() + chk["wait_s"]
    said = False
    while True:
        now = now_fn()
        evs, stats = recent_events(stream, span, now, validator)
        newest = stats["newest"]
        if newest is None:
            why = f"no events in {stream}"
        elif now - newest > chk["freshness_s"]:
            why = (
                f"stream is stale: newest event {now - newest:.0f}s old "
                f"(freshness_s {chk['freshness_s']:g})"
            )
        elif len(evs) < chk["min_events"]:
            why = f"only {len(evs)} events in the last {span}s (min_events {chk['min_events']})"
        else:
            why = None
        if why is None or time.monotonic() >= deadline:
            rows = [
                (t, e["resonance_v3"]["residual_entropy"], e["event_type"] == vocab.ROLLBACK)
                for t, e in evs
            ]
            return rows, dict(stats, now=now, span=span, newest_evt=evs[0][1] if evs else None), why
        if not said:
            print(f"[{tag}] waiting up to {chk['wait_s']:g}s for {stream}: {why}", flush=True)
            said = True
        time.sleep(0.25)


def report(cfg, policies, tag):
    rows, stats, why = gather(cfg, policies, tag)
    verdicts = slo.evaluate(policies, rows, stats["now"], cfg["checks"]["min_events"])
    if why:
        verdicts = [
            v
            if v.status != "PASS"
            else slo.Verdict(v.id, v.metric, v.value, v.threshold, "NO_DATA", v.action, v.events)
            for v in verdicts
        ]
    return rows, stats, why, verdicts


# -------------------------------------------------------------------- slo
def cmd_slo(cfg, args):
    policies = load_policies(cfg)
    rows, stats, why, verdicts = report(cfg, policies, "slo")
    newest = stats["newest"]
    age = f", newest {stats['now'] - newest:.0f}s ago" if newest else ""
    print(
        f"[slo] {cfg['stream']}: {len(rows)} events in the last {stats['span']}s{age}"
        + (f"; {stats['bad_lines']} bad lines skipped" if stats["bad_lines"] else "")
    )
    if why:
        print(f"[slo] not enough data: {why}")
    for v in verdicts:
        print(f"[slo] {v.line()}")
    print(f"[slo] RESULT = {slo.overall(verdicts)}")
    return 0


# -------------------------------------------------------------------- kpi
def cmd_kpi(cfg, args):
    policies = load_policies(cfg)
    rows, stats, why, verdicts = report(cfg, policies, "kpi")
    kpi_path = Path(config.load(args.rmb_config, "rmb_v17")["paths"]["kpi_snapshot"])
    fields = KPI_FIELDS_HEAD + [v.metric for v in verdicts] + ["slo"]
    last = stats["newest_evt"]
    row = {
        "ts": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "stream": cfg["stream"],
        "window_s": stats["span"],
        "events": len(rows),
        "rollbacks": sum(r[2] for r in rows),
        "rmb_residual_entropy_last": last["resonance_v3"]["residual_entropy"] if last else "",
        "slo": slo.overall(verdicts),
    }
    for v in verdicts:
        row[v.metric] = "" if v.value is None else f"{v.value:.6f}"
    new = not kpi_path.exists() or kpi_path.stat().st_size == 0
    if not new:
        with open(kpi_path, newline="") as f:
            header = next(csv.reader(f), [])
        if header != fields:
            print(
                f"error: {kpi_path}: header {header} differs from {fields}; "
                f"move the file aside to start a new one",
                file=sys.stderr,
            )
            return 1
    kpi_path.parent.mkdir(parents=True, exist_ok=True)
    with open(kpi_path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        if new:
            w.writeheader()
        w.writerow(row)
    print(f"[kpi] {kpi_path}: events={row['events']} rollbacks={row['rollbacks']} slo={row['slo']}")
    print("[kpi.snapshot] RESULT = OK")
    return 0


# ------------------------------------------------------------------- exit
def _check_exporter(cfg):
    import requests

    host = cfg["exporter"]["host"]
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{host}:{cfg['exporter']['port']}/metrics"
    deadline = time.monotonic() + cfg["checks"]["wait_s"]
    while True:
        try:
            text = requests.get(url, timeout=2).text
            for line in text.splitlines():
                if line.startswith("rmb_events_total ") and float(line.split()[1]) > 0:
                    return None
            problem = f"{url} counts no events yet"
        except requests.RequestException as e:
            problem = f"exporter.v17.serve not answering at {url} ({type(e).__name__})"
        if time.monotonic() >= deadline:
            return problem
        time.sleep(0.25)


def _check_kpi(cfg, args):
    path = Path(config.load(args.rmb_config, "rmb_v17")["paths"]["kpi_snapshot"])
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        return f"no KPI snapshot ({path}): run make kpi.snapshot"
    if not rows:
        return f"{path} has no rows"
    age = time.time() - timefmt.seconds(rows[-1]["ts"])
    if age > cfg["checks"]["kpi_max_age_s"]:
        limit = cfg["checks"]["kpi_max_age_s"]
        return f"newest KPI snapshot is {age:.0f}s old (kpi_max_age_s {limit:g})"
    return None


def cmd_exit(cfg, args):
    from lumen import dashboards, validate

    failed = []

    def check(name, problem):
        print(f"[exit] {name}: {'OK' if not problem else 'FAIL: ' + problem}", flush=True)
        if problem:
            failed.append(f"{name}: {problem}")

    missing = [d for d in ("logs", "data", "run") if not Path(d).is_dir()]
    check(
        "feature.v17.init",
        f"missing {', '.join(missing)}/ (run make feature.v17.init)" if missing else None,
    )
    stale = dashboards.stale()
    check("dashboards.v3.build", f"out of date: {', '.join(stale)}" if stale else None)
    bad = validate.run(out=lambda s: None)
    check("validate.v17.schema", "; ".join(bad) if bad else None)
    policies = load_policies(cfg)
    _, _, why, verdicts = report(cfg, policies, "exit")
    for v in verdicts:
        problem = None
        if v.status == "FAIL":
            problem = f"{v.metric} = {v.value:.4f} > {v.threshold:g} (action: {v.action})"
        elif v.status == "NO_DATA":
            problem = f"{v.metric}: not enough data ({why or f'{v.events} events'})"
        check(f"slo {v.id}", problem)
    check("kpi.snapshot", _check_kpi(cfg, args))
    if not args.no_exporter:
        check("exporter.v17.serve", _check_exporter(cfg))
    if failed:
        print("[exit] RESULT = FAIL")
        for f in failed:
            print(f"[exit]   - {f}")
        return 1
    print("[exit] RESULT = PASS")
    return 0


COMMANDS = {"init": cmd_init, "fake": cmd_fake, "slo": cmd_slo, "kpi": cmd_kpi, "exit": cmd_exit}
