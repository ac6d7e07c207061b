"""Track A: the restore and exit checks of blueprint section 0 (and sections 9, 15, 24);
run by tools/tracka_v17.py (its --help lists the commands), one function a command
(COMMANDS): init, fake, slo, kpi, exit.

Reads configs/trackA_v17.yaml (stream, fake stream, checks), configs/rmb_v17.yaml (KPI
CSV path, the live queue), configs/resonance_v3.policy.yaml. The stream is read from its
end back to the start of the longest window (lumen.recent), so a check costs the same on
a 1 GB log as on a small one.

slo.report, kpi.snapshot and trackA.exit first say in one line which stream they read
and wait for it only while it can still change (lumen/tracka_stream.py). Exit status of
slo: 0 PASS, 1 FAIL, 3 NO_DATA (no verdict: not a pass); of exit: 0 PASS, 1 FAIL (a
NO_DATA check fails the gate); kpi records a row whatever the verdict (0). metrics.fake.v17
never writes over the live queue.
"""

import csv
import importlib
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from lumen import DEPENDENCIES, HINT, config, slo, timefmt
from lumen.tracka_stream import FAKE_WRITER, exporter_problem, gather, live_queue, same

KPI_FIELDS_HEAD = ["ts", "stream", "window_s", "events", "rollbacks", "rmb_residual_entropy_last"]


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
            problems.append(f"missing Python package {mod} ({HINT})")
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
    if same(out, live_queue(args)):
        raise config.ConfigError(
            f"stream {out} is the live queue (configs/rmb_v17.yaml paths.queue): "
            "metrics.fake.v17 would replace it with fake events; unset STREAM"
        )
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
            FAKE_WRITER,
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


def report(cfg, args, policies, tag):
    rows, stats, why = gather(cfg, args, policies, tag)
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
EXIT_STATUS = {"PASS": 0, "FAIL": 1, "NO_DATA": 3}  # NO_DATA: no verdict, not a pass


def cmd_slo(cfg, args):
    policies = load_policies(cfg)
    rows, stats, why, verdicts = report(cfg, args, policies, "slo")
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
    result = slo.overall(verdicts)
    print(f"[slo] RESULT = {result}")
    return EXIT_STATUS[result]


# -------------------------------------------------------------------- kpi
def cmd_kpi(cfg, args):
    policies = load_policies(cfg)
    rows, stats, why, verdicts = report(cfg, args, policies, "kpi")
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
    _, _, why, verdicts = report(cfg, args, policies, "exit")
    for v in verdicts:
        problem = None
        if v.status == "FAIL":
            problem = f"{v.metric} = {v.value:.4f} > {v.threshold:g} (action: {v.action})"
        elif v.status == "NO_DATA":
            problem = f"{v.metric}: not enough data ({why or f'{v.events} events'})"
        check(f"slo {v.id}", problem)
    check("kpi.snapshot", _check_kpi(cfg, args))
    if not args.no_exporter:
        check("exporter.v17.serve", exporter_problem(cfg))
    if failed:
        print("[exit] RESULT = FAIL")
        for f in failed:
            print(f"[exit]   - {f}")
        return 1
    print("[exit] RESULT = PASS")
    return 0


COMMANDS = {"init": cmd_init, "fake": cmd_fake, "slo": cmd_slo, "kpi": cmd_kpi, "exit": cmd_exit}
