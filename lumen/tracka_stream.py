"""Track A's stream and waits: which stream slo.report, kpi.snapshot and trackA.exit read
(said in one line before anything else), and whether to wait for it (lumen/tracka.py).

The checks read the fake stream (configs/trackA_v17.yaml `stream`) unless STREAM= names
another; the live queue is configs/rmb_v17.yaml paths.queue (logs/rmb_events.jsonl). They
wait, up to checks.wait_s, for the stream to hold fresh data, and the fake exporter to
count events, only while that can still happen: a writer of the stream (metrics.fake.v17,
run/metrics_fake.pid, or its temp file; for the live queue any process of this state
directory) or the fake exporter runs here, or another command runs in this terminal
session (section 0 starts `make metrics.fake.v17 exporter.v17.serve &` beside the checks;
lumen.proc.session_busy). Otherwise the answer is decided at once. Reads only.
"""

import time
from pathlib import Path

from lumen import config, events, slo, vocab
from lumen.proc import session_busy
from lumen.recent import recent_events
from lumen.supervise import pid_alive, read_pid

FAKE_WRITER = "metrics_fake"  # the process name of metrics.fake.v17 (run/metrics_fake.pid)
FAKE_EXPORTER = "rmb_exporter_fake"  # exporter.v17.serve's process (the Makefile's name)


def live_queue(args):
    """The live queue (configs/rmb_v17.yaml paths.queue, overrides applied)."""
    return config.load(args.rmb_config, "rmb_v17")["paths"]["queue"]


def same(a, b):
    """Whether paths a and b name the same file (neither need exist)."""
    return Path(a).resolve() == Path(b).resolve()


def stream_line(cfg, args, tag):
    """The line said before anything else: which stream the checks read."""
    stream, live = cfg["stream"], live_queue(args)
    if same(stream, live):
        return f"[{tag}] reading the live queue {stream}"
    return (
        f"[{tag}] reading the fake stream {stream} (make metrics.fake.v17 writes it); "
        f"the live queue is STREAM={live}"
    )


def alive(name):
    """Whether run/NAME.pid names a live process."""
    pid = read_pid(name)
    return pid is not None and pid_alive(pid)


def may_change(stream, live):
    """Whether `stream` can still get events: a process of this state directory that may
    write it runs (for the live queue: any; else the fake writer, metrics_fake, or its
    temp file is there), or another command runs in this terminal session (section 0
    starts `make metrics.fake.v17` in the background beside the checks)."""
    if same(stream, live):
        writing = any(alive(p.stem) for p in Path("run").glob("*.pid"))
    else:
        out = Path(stream)
        writing = alive(FAKE_WRITER) or out.with_name(f".{out.name}.tmp").exists()
    return writing or session_busy()


def _look(stream, span, chk, validator, now):
    """(events, stats, why there is no verdict or None) of the stream at `now`."""
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
    return evs, stats, why


def gather(cfg, args, policies, tag, now_fn=time.time):
    """Wait (bounded, and only while the stream can still change) for fresh data; returns
    (events as (t, residual, rollback), stats, why there is no verdict or None)."""
    chk = cfg["checks"]
    span = max(slo.window_s(p["evaluate"]["metric"]) for p in policies)
    validator = events.Validator.named("rmb_event_v1.json")
    stream, live = cfg["stream"], live_queue(args)
    print(stream_line(cfg, args, tag), flush=True)
    deadline = time.monotonic() + chk["wait_s"]
    said = False
    while True:
        now = now_fn()
        evs, stats, why = _look(stream, span, chk, validator, now)
        if why and not may_change(stream, live):
            # Nothing can change it from now on: read once more (a writer that ended just
            # before the check has written all it will) and decide.
            now = now_fn()
            evs, stats, why = _look(stream, span, chk, validator, now)
            if why:
                why += ", and nothing here is writing it"
            break
        if why is None or time.monotonic() >= deadline:
            break
        if not said:
            print(f"[{tag}] waiting up to {chk['wait_s']:g}s for {stream}: {why}", flush=True)
            said = True
        time.sleep(0.25)
    rows = [
        (t, e["resonance_v3"]["residual_entropy"], e["event_type"] == vocab.ROLLBACK)
        for t, e in evs
    ]
    return rows, dict(stats, now=now, span=span, newest_evt=evs[0][1] if evs else None), why


def _scrape(url):
    """None if the exporter at url counts events, else the problem."""
    import requests

    try:
        text = requests.get(url, timeout=2).text
    except requests.RequestException as e:
        return f"exporter.v17.serve not answering at {url} ({type(e).__name__})"
    for line in text.splitlines():
        if line.startswith("rmb_events_total ") and float(line.split()[1]) > 0:
            return None
    return f"{url} counts no events yet"


def exporter_problem(cfg):
    """None if the fake exporter counts events; else the problem, at once when the
    exporter is not running here and nothing else runs in this session to start it."""
    host = cfg["exporter"]["host"]
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{host}:{cfg['exporter']['port']}/metrics"
    deadline = time.monotonic() + cfg["checks"]["wait_s"]
    while True:
        problem = _scrape(url)
        if problem and not (alive(FAKE_EXPORTER) or session_busy()):
            problem = _scrape(url)  # once more, after the check (as gather does)
            if problem and "not answering" in problem:
                problem += ": it is not running here (make exporter.v17.serve starts it)"
            return problem
        if problem is None or time.monotonic() >= deadline:
            return problem
        time.sleep(0.25)
