"""The alert receiver (issue 17, point 3): Alertmanager's webhook -> logs/alerts.jsonl and OSC.

The payload mapping and the deduplication table-driven (lumen.alerts, lumen.alert_server in
process); then the real process: every bad request is a JSON 4xx counted by reason and the
process keeps serving, a client that trickles its body is cut off at the deadline, SIGTERM
is a clean exit, and the deduplication survives a restart (rebuilt from the log's tail,
bounded). End to end with the real Prometheus and Alertmanager: tests/test_ops.py."""

import json
import re
import select
import signal
import socket
import subprocess
import time

import pytest
import requests
import yaml
from pythonosc.osc_message import OscMessage

from lumen import alerts, config, events
from lumen.alert_server import Receiver
from conftest import (
    require_tool,
    PY,
    ROOT,
    free_port,
    hermetic_env,
    merged_env,
    pid_alive,
    pids_in,
    run_make,
    unlabelled_samples,
    wait_until,
)

RECEIVER = ROOT / "tools/alert_receiver.py"
CONFIG = ROOT / "configs/alert_receiver_v18.yaml"
EVENT_SCHEMA = events.Validator.named("alert_event_v1.json")
T0, T1 = "2025-03-01T10:00:00.123456789Z", "2025-03-01T11:30:00Z"
END = "2025-03-01T10:20:00Z"
ZERO = "0001-01-01T00:00:00Z"  # Go's zero time: Alertmanager's endsAt of a firing alert


def alert(status="firing", fp="a1", starts=T0, ends=ZERO, labels=None, notes=None, **extra):
    labels = {"alertname": "RMBRollbackSpike", "severity": "critical"} if labels is None else labels
    a = {
        "status": status,
        "labels": labels,
        "annotations": {"summary": "rollbacks"} if notes is None else notes,
        "startsAt": starts,
        "endsAt": ends,
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": fp,
    }
    a.update(extra)
    return a


def payload(*alerts_, status="firing", **top):
    p = {
        "version": "4",
        "groupKey": '{}/{}:{alertname="RMBRollbackSpike"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "lumen",
        "groupLabels": {"alertname": "RMBRollbackSpike"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts_),
    }
    p.update(top)
    return p


def body(obj):
    return json.dumps(obj).encode()


# ------------------------------------------------------------------ the mapping
@pytest.mark.parametrize(
    "a, want",
    [
        (  # a firing alert: its endsAt (Go's zero time) is no end
            alert(),
            dict(status="firing", alertname="RMBRollbackSpike", severity="critical",
                 summary="rollbacks", fingerprint="a1", starts_at=T0, ends_at=None),
        ),
        (  # resolved: the end it gives
            alert("resolved", ends=END),
            dict(status="resolved", severity="critical", starts_at=T0, ends_at=END),
        ),
        (  # resolved with no usable end
            alert("resolved", ends=ZERO),
            dict(status="resolved", ends_at=None),
        ),
        (  # firing with a future endsAt (Prometheus' resend timeout): still no end
            alert(ends=END),
            dict(status="firing", ends_at=None),
        ),
        (  # no severity label, no summary annotation, no alertname: empty strings
            alert(labels={"job": "rmb_v17"}, notes={"description": "d"}),
            dict(alertname="", severity="", summary="", labels={"job": "rmb_v17"}),
        ),
        (  # annotations null (a sender other than Alertmanager)
            alert(notes=None) | {"annotations": None},
            dict(summary=""),
        ),
        (  # no endsAt at all
            {k: v for k, v in alert("resolved").items() if k != "endsAt"},
            dict(status="resolved", ends_at=None),
        ),
        (  # unicode and odd characters pass through untouched
            alert(labels={"alertname": "Überlast ♪", "severity": "warning", "x": "a\nb"},
                  notes={"summary": "ça \u0000 va"}),
            dict(alertname="Überlast ♪", severity="warning", summary="ça \u0000 va"),
        ),
    ],
)  # fmt: skip
def test_each_alert_becomes_one_event_of_the_contract(a, want):
    p, err = alerts.parse_payload(body(payload(a)))
    assert err is None, err
    (ev,) = alerts.to_events(p, "2025-03-01T12:00:00+00:00")
    assert EVENT_SCHEMA.error(ev) is None
    assert list(ev) == [
        "ts", "status", "alertname", "severity", "summary", "fingerprint", "starts_at",
        "ends_at", "labels", "receiver", "group_key",
    ]  # fmt: skip
    assert ev["ts"] == "2025-03-01T12:00:00+00:00"
    assert ev["receiver"] == "lumen" and ev["group_key"] == payload()["groupKey"]
    assert ev["labels"] == a["labels"]
    for k, v in want.items():
        assert ev[k] == v, k


def test_a_payload_of_many_alerts_is_one_event_each_in_order():
    p, _ = alerts.parse_payload(body(payload(alert(fp="x"), alert("resolved", fp="y", ends=END))))
    evs = alerts.to_events(p, "2025-03-01T12:00:00Z")
    assert [(e["fingerprint"], e["status"]) for e in evs] == [("x", "firing"), ("y", "resolved")]
    assert alerts.to_events(alerts.parse_payload(body(payload()))[0], "2025-03-01T12:00:00Z") == []


def nested(n):
    """[[[...]]], n lists deep."""
    v = []
    for _ in range(n - 1):
        v = [v]
    return v


DEEP = b'{"version":"4","deep":' + b"[" * 1000 + b"]" * 1000 + b"}"


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"", "json"),
        (b"not json", "json"),
        (b'{"version": "4", ', "json"),
        (b"\xff\xfe{}", "utf8"),
        (b'{"version": "4", "receiver": "caf\xe9"}', "utf8"),
        (b"[1, 2]", "not_object"),
        (b'"4"', "not_object"),
        (b"[" * 1000 + b"]" * 1000, "not_object"),
        (b"[" * 5000 + b"]" * 5000, "json"),  # deeper than the parser goes
        (DEEP, "json"),  # valid otherwise, but 1000 levels deep
        (body(payload(alert(), deep=nested(alerts.MAX_DEPTH))), "json"),  # valid, too deep
        (body(payload(alert(labels={"a": nested(900)}))), "json"),
        (body(payload(version="5")), "version"),
        (body(payload(version=4)), "version"),
        (body({k: v for k, v in payload().items() if k != "version"}), "version"),
        (body({k: v for k, v in payload().items() if k != "alerts"}), "schema"),
        (body({k: v for k, v in payload().items() if k != "groupKey"}), "schema"),
        (body(payload(alerts={"a": 1})), "schema"),
        (body(payload(alert("pending"))), "schema"),
        (body(payload(alert(labels={"alertname": 1}))), "schema"),
        (body(payload(alert(labels={"a": {"b": "c"}}))), "schema"),
        (body(payload(alert(starts="yesterday"))), "schema"),
        (body(payload(alert(starts="2025-03-01 10:00:00"))), "schema"),  # no T, no zone
        (body(payload(alert(fp=""))), "schema"),
        (body(payload(alert(fp="f" * 65))), "schema"),
        (body(payload({k: v for k, v in alert().items() if k != "fingerprint"})), "schema"),
        (body(payload(alert(), receiver=None)), "schema"),
    ],
)  # fmt: skip
def test_a_body_that_is_not_a_notification_is_a_reason_and_one_line(raw, reason):
    p, err = alerts.parse_payload(raw)
    assert p is None and err[0] == reason, err
    assert err[0] in alerts.BAD_REASONS
    assert "\n" not in err[1] and len(err[1]) <= alerts.MAX_MESSAGE


def test_a_long_bad_value_is_cut_in_the_message():
    _, err = alerts.parse_payload(body(payload(alert(labels={"a": ["x" * 100_000]}))))
    assert err[0] == "schema" and len(err[1]) <= alerts.MAX_MESSAGE


# ------------------------------------------------------------------ dedupe, in process
def receiver(tmp_path, osc_port=None, max_keys=10_000, log="logs/alerts.jsonl"):
    env = {"ALERT_OSC": "true", "ALERT_OSC_PORT": str(osc_port)} if osc_port else {}
    (tmp_path / log).parent.mkdir(parents=True, exist_ok=True)
    cfg = config.load(CONFIG, env=env, overrides={"log": str(tmp_path / log)})
    cfg["dedupe"]["max_keys"] = max_keys
    return Receiver(cfg)


def lines(path):
    out = []
    for raw in path.read_bytes().splitlines():
        ev, err = events.parse(raw, EVENT_SCHEMA)
        assert err is None, (raw, err)
        out.append(ev)
    return out


def post(rx, obj):
    status, headers, data = rx.post(rx.path, {}, body(obj))
    return status, json.loads(data)


A0, A0_END = alert(fp="A", starts=T0), alert("resolved", fp="A", starts=T0, ends=END)
A1, A1_END = alert(fp="A", starts=T1), alert("resolved", fp="A", starts=T1, ends=END)
B0 = alert(fp="B", starts=T0, labels={"alertname": "RMBResidualHigh", "severity": "warning"})

# Each step: the alerts of one notification -> the (fingerprint, status, starts_at) written.
DEDUPE = [
    ([A0], [("A", "firing", T0)]),
    ([A0], []),  # repeat_interval: the same episode again
    ([A0, B0], [("B", "firing", T0)]),  # the group changed: only the new alert is new
    ([A0, A0], []),  # twice in one notification
    ([A0_END, B0], [("A", "resolved", T0)]),
    ([A0_END], []),  # the resolution again
    ([A0], []),  # a late copy of the firing episode already logged
    ([A1], [("A", "firing", T1)]),  # fires again: a new episode (startsAt)
    ([A1_END, A1_END], [("A", "resolved", T1)]),
]


def test_one_line_per_firing_episode_and_one_per_resolution(tmp_path):
    rx = receiver(tmp_path)
    log = tmp_path / "logs/alerts.jsonl"
    written, dups = 0, 0
    for i, (batch, want) in enumerate(DEDUPE):
        status, answer = post(rx, payload(*batch))
        assert status == 200 and answer["ok"], (i, answer)
        new = lines(log)[written:] if log.exists() else []
        assert [alerts.key(e) for e in new] == want, i
        assert answer == {"ok": True, "written": len(want), "duplicates": len(batch) - len(want)}
        written += len(want)
        dups += len(batch) - len(want)
    m = metrics(rx)
    assert m["alert_receiver_duplicates_total"] == dups
    assert m["alert_receiver_payloads_total"] == len(DEDUPE)
    assert m['alert_receiver_lines_total{status="firing"}'] == 3
    assert m['alert_receiver_lines_total{status="resolved"}'] == 2
    assert m["alert_receiver_dedupe_keys"] == 5


def metrics(rx):
    """{name or name{labels}: value} of the receiver's exposition."""
    status, headers, data = rx.app("GET", "/metrics", {})
    assert status == 200
    out = {}
    for ln in data.decode().splitlines():
        if ln and not ln.startswith("#"):
            name, value = ln.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_the_seen_set_is_bounded_least_recently_seen_first():
    seen = alerts.Seen(2)
    seen.add(("a", "firing", T0))
    seen.add(("b", "firing", T0))
    assert seen.hit(("a", "firing", T0))  # a is now the most recent
    seen.add(("c", "firing", T0))
    assert len(seen) == 2
    assert ("a", "firing", T0) in seen and ("c", "firing", T0) in seen
    assert ("b", "firing", T0) not in seen


def test_rebuild_reads_the_newest_lines_of_the_log_and_its_rotation(tmp_path):
    log = tmp_path / "alerts.jsonl"
    evs = [
        alerts.to_events(alerts.parse_payload(body(payload(alert(fp=f"f{i}"))))[0], T1)[0]
        for i in range(6)
    ]
    older = b"".join(json.dumps(e).encode() + b"\n" for e in evs[:2])
    (tmp_path / "alerts.jsonl.1").write_bytes(older)
    log.write_bytes(
        json.dumps(evs[2]).encode() + b"\nnot json\n{}\n"
        + b"".join(json.dumps(e).encode() + b"\n" for e in evs[3:])
        + b'{"torn": '  # a writer died mid line: not read
    )  # fmt: skip
    seen = alerts.Seen(100)
    assert seen.rebuild(log) == (6 + 2, 2)  # six events and two bad lines read
    assert all(alerts.key(e) in seen for e in evs)
    small = alerts.Seen(3)
    small.rebuild(log)
    assert [alerts.key(e) in small for e in evs] == [False] * 3 + [True] * 3
    assert alerts.Seen(5).rebuild(tmp_path / "missing.jsonl") == (0, 0)


def test_make_logs_rotate_rotates_the_alert_log_and_the_dedupe_still_sees_it(tmp_path):
    """ops/logrotate rotates logs/alerts.jsonl like the other logs (rename, delaycompress),
    so after a rotation the receiver's rebuild on start still finds every written key."""
    require_tool("logrotate")
    evs = [
        alerts.to_events(alerts.parse_payload(body(payload(alert(fp=f"r{i}"))))[0], T1)[0]
        for i in range(4)
    ]
    log = tmp_path / "logs/alerts.jsonl"
    log.parent.mkdir()
    log.write_bytes(b"".join(json.dumps(e).encode() + b"\n" for e in evs))
    r = run_make(tmp_path, "logs.rotate", env=hermetic_env())
    assert r.returncode == 0, r.stdout + r.stderr
    assert not log.exists() and (tmp_path / "logs/alerts.jsonl.1").exists()
    seen = alerts.Seen(100)
    assert seen.rebuild(log) == (4, 0)
    assert all(alerts.key(e) in seen for e in evs)


# ------------------------------------------------------------------ OSC
def osc_listener():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.1)
    return s


def osc_messages(sock, got):
    """Read what arrived into `got` [(address, params)]; returns `got`."""
    while True:
        try:
            data = sock.recv(65536)
        except (socket.timeout, BlockingIOError):
            return got
        m = OscMessage(data)
        got.append((m.address, list(m.params)))


def test_each_new_line_is_one_osc_message_and_a_failed_send_is_counted(tmp_path, capfd):
    sock = osc_listener()
    rx = receiver(tmp_path, osc_port=sock.getsockname()[1])
    long = "s" * 5000
    for batch in ([A0], [A0], [A0_END, alert(fp="C", notes={"summary": long})]):
        assert post(rx, payload(*batch))[0] == 200
    got = []
    wait_until(lambda: len(osc_messages(sock, got)) >= 3, timeout=10, what="three OSC messages")
    assert got[:2] == [
        ("/lumen/alert/firing", ["RMBRollbackSpike", "critical", "rollbacks"]),
        ("/lumen/alert/resolved", ["RMBRollbackSpike", "critical", "rollbacks"]),
    ]
    assert got[2][0] == "/lumen/alert/firing" and got[2][1][2] == "s" * 1000  # cut
    assert len(got) == 3  # the repeat sent nothing
    sock.close()

    class Broken:
        def send_message(self, address, args):
            raise OSError(101, "Network is unreachable")

    rx.osc.client = Broken()
    for fp in ("D", "E"):
        status, answer = post(rx, payload(alert(fp=fp)))
        assert status == 200 and answer["written"] == 1  # the line is written regardless
    m = metrics(rx)
    assert m["alert_receiver_osc_errors_total"] == 2 and m["alert_receiver_osc_messages_total"] == 3
    err = capfd.readouterr().err
    assert err.count("OSC to 127.0.0.1") == 1 and "Network is unreachable" in err  # said once


def test_a_log_that_cannot_be_written_is_503_and_the_retry_writes_it(tmp_path):
    rx = receiver(tmp_path)
    (tmp_path / "alerts.jsonl").mkdir()  # not a file: every write fails (EISDIR)
    rx.log = str(tmp_path / "alerts.jsonl")
    status, answer = post(rx, payload(A0))
    assert status == 503 and answer["ok"] is False and answer["status"] == 503
    assert "retry" in answer["error"]
    assert metrics(rx)["alert_receiver_write_errors_total"] == 1
    (tmp_path / "alerts.jsonl").rmdir()  # fixed: Alertmanager's retry lands
    assert post(rx, payload(A0))[1]["written"] == 1
    assert [alerts.key(e) for e in lines(tmp_path / "alerts.jsonl")] == [("A", "firing", T0)]
    rx.log = str(tmp_path / "gone" / "alerts.jsonl")  # its directory removed: made again
    assert post(rx, payload(B0))[1]["written"] == 1


# ------------------------------------------------------------------ the process
def config_copy(tmp_path, **changes):
    """A copy of the shipped config with `changes` ({"receiver.request_timeout_s": 1})."""
    cfg = yaml.safe_load(CONFIG.read_text())
    for dotted, value in changes.items():
        *path, last = dotted.split(".")
        node = cfg
        for k in path:
            node = node[k]
        node[last] = value
    p = tmp_path / "alert_receiver.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def start_receiver(procs, *args, config_file=CONFIG, **env):
    """The receiver as a process in procs.cwd on a free port; (Popen, base URL) once it
    answers /healthz."""
    port = free_port()
    p = procs.start(
        RECEIVER, "--config", config_file, "--port", port, "--host", "127.0.0.1", *args,
        env=hermetic_env(**env),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def up():
        if p.poll() is not None:
            return True
        try:
            return requests.get(f"{base}/healthz", timeout=2).json() == {"ok": True}
        except requests.RequestException:
            return False

    wait_until(up, timeout=30, what="the alert receiver to answer /healthz")
    assert p.poll() is None, p.stderr.read().decode()
    return p, base


def scrape(base):
    r = requests.get(f"{base}/metrics", timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    return r.text


def bad_requests(base):
    out = {}
    for ln in scrape(base).splitlines():
        if ln.startswith("alert_receiver_bad_requests_total{"):
            out[ln.split('"')[1]] = float(ln.rsplit(" ", 1)[1])
    return out


def raw_request(base, data):
    """Send `data` on one connection; (status, headers, body) of the answer."""
    host, port = base.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(data)
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines_ = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines_[1:])}
    return int(lines_[0].split()[1]), headers, rest


def assert_json_error(status, headers, data, expected):
    assert status == expected, data
    assert headers["content-type"] == "application/json"
    got = json.loads(data)
    assert got == {"ok": False, "error": got["error"], "status": expected}
    assert got["error"] and "\n" not in got["error"]


def test_bad_requests_are_json_4xx_counted_by_reason_and_the_process_serves_on(tmp_path, procs):
    cfg = config_copy(tmp_path, **{"receiver.max_body_bytes": 4096})
    p, base = start_receiver(procs, config_file=cfg)
    url = f"{base}/alerts"
    cases = [  # (method, url, body, headers, status, reason)
        ("POST", url, b"not json", {}, 400, "json"),
        ("POST", url, b"\xff\xfe{\x00}", {}, 400, "utf8"),
        ("POST", url, b"[]", {}, 400, "not_object"),
        ("POST", url, body(payload(version="3")), {}, 400, "version"),
        ("POST", url, body({"version": "4", "alerts": "none"}), {}, 400, "schema"),
        ("POST", url, body(payload(alert(labels={"a": 1}))), {}, 400, "schema"),
        ("POST", url, b'{"version":"4","x":' + b"[" * 1000 + b"]" * 1000 + b"}", {}, 400, "json"),
        ("POST", url, body(payload(alert(notes={"summary": "x" * 5000}))), {}, 413, "oversize"),
        ("GET", url, None, {}, 405, "method"),
        ("PUT", url, b"{}", {}, 405, None),  # the HTTP layer's 405: not the app's count
        ("POST", f"{base}/other", body(payload(A0)), {}, 404, "path"),
        ("GET", f"{base}/favicon.ico", None, {}, 404, "path"),
    ]
    want = dict.fromkeys(alerts.BAD_REASONS, 0)
    for method, u, data, headers, status, reason in cases:
        r = requests.request(method, u, data=data, headers=headers, timeout=10)
        assert_json_error(
            r.status_code, {"content-type": r.headers["Content-Type"]}, r.content, status
        )
        if reason:
            want[reason] += 1
    # A chunked body and a bad Content-Length: the HTTP layer answers, the counter knows.
    st, hd, data = raw_request(
        base,
        b"POST /alerts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\n{}\r\n0\r\n\r\n",
    )
    assert_json_error(st, hd, data, 411)
    st, hd, data = raw_request(
        base, b"POST /alerts HTTP/1.1\r\nHost: x\r\nContent-Length: -3\r\n\r\n{}"
    )
    assert_json_error(st, hd, data, 400)
    want["framing"] += 2
    assert bad_requests(base) == want
    # Still serving, and nothing was written by any of it.
    r = requests.post(url, data=body(payload(A0)), timeout=10)
    assert r.status_code == 200 and r.json() == {"ok": True, "written": 1, "duplicates": 0}
    assert len(lines(procs.cwd / "logs/alerts.jsonl")) == 1
    assert p.poll() is None
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == 0
    assert b"Traceback" not in p.stderr.read()


def trickling(port, n):
    """`n` connections each in the middle of a POST of 1000 bytes."""
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"POST /alerts HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        out.append(s)
    return out


def test_the_exposition_passes_promtool_and_the_landing_page_says_what_this_is(procs):
    from test_exposition import promtool_check  # here: test_exposition imports this module

    p, base = start_receiver(procs)
    assert promtool_check(scrape(base)) == (0, "")  # before any notification
    requests.post(f"{base}/alerts", data=body(payload(A0, A0_END)), timeout=10)
    requests.post(f"{base}/alerts", data=b"{", timeout=10)
    text = scrape(base)
    assert promtool_check(text) == (0, ""), text
    assert "lumen_build_info{" in text and "process_cpu_seconds_total" in text
    page = requests.get(f"{base}/", timeout=10)
    assert page.status_code == 200 and "POST Alertmanager's webhook to /alerts" in page.text


def test_clients_trickling_their_body_hold_no_thread(tmp_path, procs):
    # A deadline far beyond the test: the trickling clients stay open throughout.
    cfg = config_copy(tmp_path, **{"receiver.request_timeout_s": 300})
    p, base = start_receiver(procs, config_file=cfg)
    slow = trickling(int(base.rsplit(":", 1)[1]), 16)  # more than the server's workers
    for s in slow:
        s.sendall(b" ")
    r = requests.post(f"{base}/alerts", data=body(payload(A0)), timeout=60)
    assert r.status_code == 200 and r.json()["written"] == 1
    assert not select.select(slow, [], [], 0)[0]  # they are still waiting, unanswered
    for s in slow:
        s.close()


def test_a_client_trickling_its_body_is_cut_off_at_the_deadline(tmp_path, procs):
    deadline = 1.0
    cfg = config_copy(tmp_path, **{"receiver.request_timeout_s": deadline})
    p, base = start_receiver(procs, config_file=cfg)
    slow = trickling(int(base.rsplit(":", 1)[1]), 3)
    answers = []
    t0 = time.monotonic()
    # One byte a tenth of a second on each: only a deadline for the whole request stops them.
    while len(answers) < len(slow) and time.monotonic() - t0 < 30 * deadline:
        answers += select.select([s for s in slow if s not in answers], [], [], 0.1)[0]
        for s in slow:
            if s not in answers:
                try:
                    s.send(b" ")
                except OSError:
                    answers.append(s)
    assert len(answers) == len(slow), "a client sending a byte every 0.1 s was not cut off"
    for s in slow:
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
        s.close()
        if data:  # cut off mid-request: told why
            head, _, rest = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 ") and json.loads(rest)["status"] == 408
    assert bad_requests(base)["timeout"] == len(slow)
    assert not (procs.cwd / "logs/alerts.jsonl").exists()  # nothing half-read was taken
    assert p.poll() is None


def test_the_dedupe_survives_a_restart_bounded(tmp_path, procs):
    cfg = config_copy(tmp_path, **{"dedupe.max_keys": 2})
    p, base = start_receiver(procs, config_file=cfg)
    x, y, z = (alert(fp=f, starts=T0) for f in "XYZ")
    for a in (x, y, z):
        assert (
            requests.post(f"{base}/alerts", data=body(payload(a)), timeout=10).json()["written"]
            == 1
        )
    # A second receiver of the same log is refused while the first runs: their dedupe
    # would disagree.
    second = procs.start(RECEIVER, "--config", cfg, "--port", free_port(), env=hermetic_env())
    assert second.wait(timeout=30) == 2
    err = second.stderr.read().decode().strip()
    assert "\n" not in err and "already running" in err and f"pid {p.pid}" in err
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == 0
    assert not (procs.cwd / "run/alert_receiver.pid").exists()

    p, base = start_receiver(procs, config_file=cfg)
    assert b"2 alert keys read back" in p.stdout.readline()

    def post_(a):
        r = requests.post(f"{base}/alerts", data=body(payload(a)), timeout=10)
        assert r.status_code == 200
        return r.json()["written"]

    assert [post_(a) for a in (z, y)] == [0, 0]  # re-sent after the restart: not logged again
    assert post_(alert("resolved", fp="Z", starts=T0, ends=END)) == 1
    # Bounded: two keys are kept, so the oldest (X) was forgotten and is logged again.
    assert post_(x) == 1
    keys = [alerts.key(e) for e in lines(procs.cwd / "logs/alerts.jsonl")]
    assert keys == [
        ("X", "firing", T0), ("Y", "firing", T0), ("Z", "firing", T0),
        ("Z", "resolved", T0), ("X", "firing", T0),
    ]  # fmt: skip
    m = unlabelled_samples(scrape(base))
    assert m["alert_receiver_duplicates_total"] == 2 and m["alert_receiver_dedupe_keys"] == 2


def test_bad_config_is_one_line_and_exit_2(tmp_path, procs):
    for env, needle in (
        ({"ALERT_RECEIVER_PORT": "http"}, "receiver.port"),
        ({"ALERT_OSC_HOST": "nohost.invalid"}, "osc.host: cannot resolve"),
        ({"ALERT_LOG": str(tmp_path / "missing" / "dir" / "alerts.jsonl")}, "log: directory"),
    ):
        r = subprocess.run(
            [PY, str(RECEIVER)], cwd=tmp_path, env=merged_env(hermetic_env(**env)),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr
    r = subprocess.run([PY, str(RECEIVER), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "Alertmanager" in r.stdout and "--config" in r.stdout


def test_make_targets_start_and_stop_it_under_supervision(workdir, private_stack):
    env = private_stack(ports=("ALERT_RECEIVER_PORT",), **hermetic_env())
    r = run_make(workdir, "alerts.receiver", env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    port = env["ALERT_RECEIVER_PORT"]
    r = requests.post(f"http://127.0.0.1:{port}/alerts", data=body(payload(A0)), timeout=10)
    assert r.status_code == 200 and r.json()["written"] == 1
    assert [alerts.key(e) for e in lines(workdir / "logs/alerts.jsonl")] == [("A", "firing", T0)]
    status = run_make(workdir, "status", env=env).stdout
    row = r"^alert_receiver\s+(STARTING|RUNNING)\s.*\s%s\s+logs/proc/alert_receiver.log$" % port
    assert re.search(row, status, re.M), status
    pid = pids_in(workdir / "run")["alert_receiver"]
    r = run_make(workdir, "alerts.receiver.stop", env=env)
    assert r.returncode == 0 and "alert_receiver stopped" in r.stdout
    assert not pid_alive(pid)
