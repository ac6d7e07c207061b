"""Track C Safety Music: level bands at every edge, the windowed rollback ratio, events that
carry their inputs, every config value used, bad configs, flat tick cost, the metrics
source, restart, the make lifecycle, bad lines and rotation, and the sound (OSC, MIDI, WAV).
"""

import copy
import json
import math
import os
import signal
import socket
import subprocess
import threading
import time
import wave
from datetime import datetime, timezone

import jsonschema
import mido
import numpy as np
import pytest
import yaml
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import ThreadingOSCUDPServer

from lumen.safety import sound
from lumen.safety.levels import levels, level_from
from lumen.safety.loop import SafetyLoop, load_config
from conftest import CONFIG_RMB, PY, ROOT, free_port, pid_alive, pids_in, run_make, wait_until

LOOP = ROOT / "safety/safety_music_loop.py"
RENDER = ROOT / "safety/safety_music_render.py"
EXPORTER = ROOT / "exporters/rmb_exporter_v17.py"
EMITTER = ROOT / "rmb/rmb_emitter.py"
CONFIG = ROOT / "configs/safety_music_v17.yaml"
SAMPLE = json.loads((ROOT / "tests/fixtures/rmb_sample.json").read_text())
SMAP = json.loads((ROOT / "configs/midi_map_v18.json").read_text())
EVENT_SCHEMA = json.loads((ROOT / "schemas/safety_music_event_v1.json").read_text())
RMB_LOG = "logs/rmb_events.jsonl"
CHANNEL = "logs/safety_music_events.jsonl"
T = 1_700_000_000.0  # a fixed "now" for in-process ticks (in the past: real processes
# reading these events must not find them ahead of their clock)


# ------------------------------------------------------------------------ helpers
def iso(t):
    return datetime.fromtimestamp(t, timezone.utc).isoformat()


def rmb_event(t, event_type="observe", residual=0.3):
    e = copy.deepcopy(SAMPLE)
    e["ts"] = iso(t)
    e["event_type"] = event_type
    e["resonance_v3"]["residual_entropy"] = residual
    return e


def append_lines(path, lines):
    """Append raw byte lines (newline added); returns the bytes written."""
    data = b"".join(x + b"\n" for x in lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        f.write(data)
    return len(data)


def append_events(path, evts):
    return append_lines(path, [json.dumps(e).encode() for e in evts])


def read_jsonl(path):
    """Complete lines of a JSONL file that another process may still be writing."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return [json.loads(x) for x in data[: data.rfind(b"\n") + 1].splitlines() if x.strip()]


def _set(node, dotted, value):
    keys = [int(k) if k.isdigit() else k for k in dotted.split(".")]
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value


def cfg_copy(where, name="safety.yaml", **changes):
    """A copy of the shipped config with dotted keys changed (`a__b__0__c` = a.b.0.c)."""
    cfg = yaml.safe_load(CONFIG.read_text())
    for k, v in changes.items():
        _set(cfg, k.replace("__", "."), v)
    p = where / "cfgs" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(cfg))
    return p


def tick_once(cfg, now, source=None):
    loop = SafetyLoop(cfg, source)
    try:
        return loop.tick(now=now)
    finally:
        loop.close()


def validate_event(evt):
    jsonschema.validate(evt, EVENT_SCHEMA, format_checker=jsonschema.FormatChecker())


@pytest.fixture
def cfg():
    return load_config(CONFIG)


# ------------------------------------------------------------- level mapping (pure)
EDGES = [
    # (which input, value, level)
    ("residual", 0.0, "CALM"),
    ("residual", 0.55, "CALM"),  # equal to a band max: that band
    ("residual", 0.5500001, "TENSE"),  # just above: the next
    ("residual", 0.85, "TENSE"),
    ("residual", 0.8500001, "ALERT"),
    ("residual", 1.0, "ALERT"),
    ("residual", None, "UNDEFINED"),
    ("ratio", 0.0, "CALM"),
    ("ratio", 0.02, "CALM"),
    ("ratio", 1 / 50, "CALM"),  # 1 rollback in 50 events is exactly the edge
    ("ratio", 0.0200001, "TENSE"),
    ("ratio", 0.05, "TENSE"),
    ("ratio", 5 / 100, "TENSE"),
    ("ratio", 0.0500001, "ALERT"),
    ("ratio", 1.0, "ALERT"),
    ("ratio", None, "UNDEFINED"),
]


@pytest.mark.parametrize("which,value,expected", EDGES)
def test_level_at_every_band_edge(cfg, which, value, expected):
    m = cfg["mapping"]
    bands = (
        m["residual_entropy"]["bands"] if which == "residual" else m["rollback_ratio"]["thresholds"]
    )
    assert level_from(value, bands) == expected
    # The same through levels(): the other input undefined, so final is this one.
    lv = levels(value, None, m) if which == "residual" else levels(None, value, m)
    assert lv["residual" if which == "residual" else "rollback_ratio"] == expected
    assert lv["final"] == expected


@pytest.mark.parametrize(
    "residual,ratio,expected",
    [
        ((0.30, "CALM"), (0.01, "CALM"), "CALM"),
        ((0.30, "CALM"), (0.03, "TENSE"), "TENSE"),
        ((0.60, "TENSE"), (0.01, "CALM"), "TENSE"),
        ((0.90, "ALERT"), (0.00, "CALM"), "ALERT"),
        ((0.30, "CALM"), (0.50, "ALERT"), "ALERT"),
        ((0.60, "TENSE"), (0.06, "ALERT"), "ALERT"),
        ((0.90, "ALERT"), (0.04, "TENSE"), "ALERT"),
        ((None, "UNDEFINED"), (0.03, "TENSE"), "TENSE"),
        ((None, "UNDEFINED"), (0.00, "CALM"), "CALM"),
        ((0.30, "CALM"), (None, "UNDEFINED"), "CALM"),
        ((0.90, "ALERT"), (None, "UNDEFINED"), "ALERT"),
        ((None, "UNDEFINED"), (None, "UNDEFINED"), "UNDEFINED"),
    ],
)
def test_final_is_the_worst_defined_level(cfg, residual, ratio, expected):
    lv = levels(residual[0], ratio[0], cfg["mapping"])
    assert lv == {"residual": residual[1], "rollback_ratio": ratio[1], "final": expected}


# ------------------------------------------------- the window, in process, fixed now
def test_five_percent_rollbacks_is_tense_and_one_more_is_alert(workdir, cfg):
    log = workdir / RMB_LOG
    append_events(
        log,
        [
            rmb_event(T - 100 + i * 0.5, "rollback" if i % 20 == 0 else "observe")
            for i in range(100)
        ],
    )
    loop = SafetyLoop(cfg)
    try:
        e = loop.tick(now=T)
        assert e["inputs"]["window_events"] == 100 and e["inputs"]["window_rollbacks"] == 5
        assert e["inputs"]["rollback_ratio"] == 0.05
        assert e["levels"] == {"residual": "CALM", "rollback_ratio": "TENSE", "final": "TENSE"}
        append_events(log, [rmb_event(T - 1, "rollback")])  # 6 / 101: just above 5 %
        e = loop.tick(now=T + 0.5)
        assert (e["inputs"]["window_events"], e["inputs"]["window_rollbacks"]) == (101, 6)
        assert e["levels"]["rollback_ratio"] == "ALERT" and e["levels"]["final"] == "ALERT"
        assert e["changed"] is True and e["previous"] == "TENSE"
    finally:
        loop.close()


def test_rollbacks_older_than_the_window_stop_counting(workdir, cfg):
    log = workdir / RMB_LOG
    append_events(log, [rmb_event(T - 400 + i * 0.1, "rollback") for i in range(30)])
    loop = SafetyLoop(cfg)
    try:
        e = loop.tick(now=T - 390)  # the burst is in the window then
        assert (e["inputs"]["window_events"], e["inputs"]["window_rollbacks"]) == (30, 30)
        assert e["levels"]["rollback_ratio"] == "ALERT"
        append_events(log, [rmb_event(T - 60 + i, "observe") for i in range(50)])
        e = loop.tick(now=T)  # 400 s later than the burst, window_s is 300
        assert (e["inputs"]["window_events"], e["inputs"]["window_rollbacks"]) == (50, 0)
        assert e["inputs"]["rollback_ratio"] == 0.0
        assert e["levels"]["rollback_ratio"] == "CALM" and e["levels"]["final"] == "CALM"
        assert e["changed"] is True and e["previous"] == "ALERT"
    finally:
        loop.close()


def test_empty_window_is_undefined_not_calm(workdir, cfg):
    e = tick_once(cfg, T)  # no log at all
    assert e["inputs"]["rollback_ratio"] is None and e["inputs"]["residual_entropy"] is None
    assert e["inputs"]["window_events"] == 0
    assert e["levels"] == {
        "residual": "UNDEFINED",
        "rollback_ratio": "UNDEFINED",
        "final": "UNDEFINED",
    }
    # Only old events: the ratio is undefined, the residual (last event) is not, so the
    # final level is the defined one.
    append_events(workdir / RMB_LOG, [rmb_event(T - 1000 + i, "observe", 0.7) for i in range(20)])
    e = tick_once(cfg, T)
    assert e["inputs"]["rollback_ratio"] is None and e["inputs"]["window_events"] == 0
    assert e["levels"] == {"residual": "TENSE", "rollback_ratio": "UNDEFINED", "final": "TENSE"}


def test_events_carry_inputs_validate_and_mark_changes(workdir, cfg):
    log = workdir / RMB_LOG
    loop = SafetyLoop(cfg)
    try:
        first = loop.tick(now=T)
        append_events(
            log,
            [rmb_event(T + i * 0.01, "rollback" if i < 3 else "observe", 0.4) for i in range(60)]
            + [rmb_event(T + 1, "observe", 0.62)],
        )
        second = loop.tick(now=T + 2)
        third = loop.tick(now=T + 2.5)
    finally:
        loop.close()
    written = read_jsonl(workdir / CHANNEL)
    assert written == [first, second, third]
    for e in written:
        validate_event(e)
        assert e["loop"] == "safety.music.v17" and e["inputs"]["source"] == "log"
        assert e["inputs"]["window_s"] == 300
    assert first["changed"] is False and first["previous"] is None
    assert first["levels"]["final"] == "UNDEFINED"
    assert second["inputs"] == {
        "source": "log",
        "residual_entropy": 0.62,
        "rollback_ratio": 3 / 61,
        "window_s": 300,
        "window_events": 61,
        "window_rollbacks": 3,
    }
    assert second["levels"] == {"residual": "TENSE", "rollback_ratio": "TENSE", "final": "TENSE"}
    assert second["changed"] is True and second["previous"] == "UNDEFINED"
    assert third["changed"] is False and third["previous"] == "TENSE"
    assert datetime.fromisoformat(third["ts"]).timestamp() == T + 2.5
    # The schema is a real check, not a formality.
    bad = copy.deepcopy(second)
    bad["levels"]["final"] = "LOUD"
    with pytest.raises(jsonschema.ValidationError):
        validate_event(bad)


# --------------------------------------------------------- every config value is used
def test_band_maxima_and_levels_come_from_the_config(workdir):
    append_events(
        workdir / RMB_LOG,
        [
            rmb_event(T - 50 + i * 0.5, "rollback" if i % 20 == 0 else "observe", 0.5)
            for i in range(100)
        ],
    )
    base = tick_once(load_config(CONFIG), T)
    assert base["levels"] == {"residual": "CALM", "rollback_ratio": "TENSE", "final": "TENSE"}
    for f in (workdir / "logs/.offsets").glob("*"):
        f.unlink()  # each config below reads the same log from the start
    c = load_config(
        cfg_copy(
            workdir,
            "a.yaml",
            mapping__residual_entropy__bands__0__max=0.45,
            mapping__rollback_ratio__thresholds__1__max=0.04,
        )
    )
    e = tick_once(c, T)
    assert e["levels"] == {"residual": "TENSE", "rollback_ratio": "ALERT", "final": "ALERT"}
    for f in (workdir / "logs/.offsets").glob("*"):
        f.unlink()
    c = load_config(
        cfg_copy(
            workdir,
            "b.yaml",
            mapping__rollback_ratio__thresholds__0__max=0.06,
            mapping__rollback_ratio__thresholds__0__level="TENSE",
            mapping__rollback_ratio__thresholds__1__max=0.5,
            mapping__rollback_ratio__thresholds__1__level="CALM",
        )
    )
    e = tick_once(c, T)  # 5 % now falls in the first band, whose level is TENSE
    assert e["levels"]["rollback_ratio"] == "TENSE"
    assert e["inputs"]["rollback_ratio"] == 0.05


def test_window_s_decides_which_events_count(workdir):
    log = workdir / RMB_LOG
    append_events(
        log,
        [rmb_event(T - 400 + i * 0.1, "rollback") for i in range(30)]
        + [rmb_event(T - 60 + i, "observe") for i in range(50)],
    )
    e = tick_once(load_config(CONFIG), T)
    assert (e["inputs"]["window_events"], e["inputs"]["window_rollbacks"]) == (50, 0)
    for f in (workdir / "logs/.offsets").glob("*"):
        f.unlink()
    e = tick_once(load_config(cfg_copy(workdir, mapping__rollback_ratio__window_s=500)), T)
    assert e["inputs"]["window_s"] == 500
    assert (e["inputs"]["window_events"], e["inputs"]["window_rollbacks"]) == (80, 30)
    assert e["levels"]["rollback_ratio"] == "ALERT"


def test_input_log_and_output_channel_paths_are_honoured(workdir):
    append_events(workdir / "feeds/other.jsonl", [rmb_event(T - 5, "observe", 0.9)])
    c = load_config(
        cfg_copy(workdir, inputs__log="feeds/other.jsonl", output__channel="out/elsewhere.jsonl")
    )
    e = tick_once(c, T)
    assert e["inputs"]["window_events"] == 1 and e["levels"]["final"] == "ALERT"
    assert read_jsonl(workdir / "out/elsewhere.jsonl") == [e]
    assert not (workdir / CHANNEL).exists()


class FakeTime:
    """A clock that moves only when the loop sleeps (stop.wait) or a tick says so."""

    def __init__(self):
        self.t, self.waits = 100.0, []

    def __call__(self):
        return self.t

    def is_set(self):
        return False

    def wait(self, s):
        self.waits.append(s)
        self.t += s
        return False


@pytest.mark.parametrize("hz", [20, 5, 2])
def test_loop_hz_sets_the_tick_period(workdir, hz):
    """loop.hz from the config is the period the loop sleeps to; a slow tick (the machine
    busy) is followed by one immediate tick, not by a burst that makes up the missed ones."""
    conf = cfg_copy(workdir, f"hz{hz}.yaml", loop__hz=hz, output__channel=f"logs/hz{hz}.jsonl")
    loop = SafetyLoop(load_config(conf))
    fake = FakeTime()
    tick = loop.tick

    def slow_fifth_tick():
        if loop.ticks == 4:
            fake.t += 3.5 / hz  # the fifth tick takes three and a half periods
        return tick()

    loop.tick = slow_fifth_tick
    try:
        loop.run(fake, ready=lambda: None, max_ticks=9, clock=fake)
    finally:
        loop.close()
    assert loop.ticks == 9 and len(read_jsonl(workdir / f"logs/hz{hz}.jsonl")) == 9
    period = 1.0 / hz
    assert fake.waits[:4] == pytest.approx([period] * 4)
    assert fake.waits[4] == 0.0  # late: the next tick at once ...
    assert fake.waits[5:] == pytest.approx([period] * 3)  # ... then the rate again


def test_loop_process_ticks_as_asked(workdir):
    conf = cfg_copy(workdir, "p.yaml", loop__hz=20, output__channel="logs/p.jsonl")
    r = subprocess.run(
        [PY, str(LOOP), "--config", str(conf), "--ticks", "8", "--name", "p"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert len(read_jsonl(workdir / "logs/p.jsonl")) == 8


def test_recording_sinks_follow_the_config(workdir):
    """midi_file / wav_file paths, sound_bridge and recording_s are all used."""
    smap = copy.deepcopy(SMAP)
    smap["levels"]["CALM"]["notes"] = [50, 54, 57]
    smap["levels"]["CALM"]["program"] = 11
    smap["levels"]["CALM"]["tempo_bpm"] = 90
    (workdir / "maps").mkdir()
    (workdir / "maps/map.json").write_text(json.dumps(smap))
    conf = cfg_copy(
        workdir,
        output__sound_bridge=str(workdir / "maps/map.json"),
        output__midi_file={"enabled": True, "path": "rec/live.mid"},
        output__wav_file={"enabled": True, "path": "rec/live.wav"},
        output__recording_s=2,
    )  # at 2 Hz: the last 4 ticks
    log = workdir / RMB_LOG
    loop = SafetyLoop(load_config(conf))
    try:
        append_events(log, [rmb_event(T - 1, "observe", 0.95)])
        for i in range(6):
            assert loop.tick(now=T + i * 0.5)["levels"]["final"] == "ALERT"
        append_events(log, [rmb_event(T + 3, "observe", 0.1)])
        for i in range(6, 10):
            assert loop.tick(now=T + i * 0.5)["levels"]["final"] == "CALM"
    finally:
        loop.close()  # writes the recording
    mid = mido.MidiFile(workdir / "rec/live.mid")
    msgs = list(mid)
    assert {m.note for m in msgs if m.type == "note_on"} == {50, 54, 57}  # no ALERT: aged out
    assert [m.program for m in msgs if m.type == "program_change"] == [11]
    # The live file's tempo is the configured map's too (90 bpm: 666 667 us a beat).
    assert [m.tempo for m in mid.tracks[0] if m.type == "set_tempo"] == [666_667]
    with wave.open(str(workdir / "rec/live.wav")) as w:
        assert w.getframerate() == SMAP["render"]["sample_rate"]
        assert 1.9 <= w.getnframes() / w.getframerate() <= 2.1


# --------------------------------------------------------------------- bad configs
BAD_CONFIGS = [
    (
        "level_loud",
        {"mapping__residual_entropy__bands__1__level": "LOUD"},
        "mapping.residual_entropy.bands.1.level",
    ),
    (
        "not_increasing",
        {"mapping__rollback_ratio__thresholds__1__max": 0.02},
        "mapping.rollback_ratio.thresholds",
    ),
    (
        "decreasing",
        {"mapping__residual_entropy__bands__1__max": 0.5},
        "mapping.residual_entropy.bands",
    ),
    (
        "short_last_band",
        {"mapping__residual_entropy__bands__2__max": 0.95},
        "mapping.residual_entropy.bands",
    ),
    ("hz_type", {"loop__hz": "fast"}, "loop.hz"),
    ("window_type", {"mapping__rollback_ratio__window_s": "5m"}, "mapping.rollback_ratio.window_s"),
]


@pytest.mark.parametrize("name,changes,key", BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS])
def test_bad_config_exits_2_with_one_line(workdir, name, changes, key):
    conf = cfg_copy(workdir, f"{name}.yaml", **changes)
    r = subprocess.run(
        [PY, str(LOOP), "--config", str(conf), "--ticks", "1"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert str(conf) in lines[0] and key in lines[0], lines[0]
    assert not (workdir / CHANNEL).exists()


# ------------------------------------------------------------ tick cost, structurally
def test_tick_reads_only_appended_bytes(workdir, cfg):
    subprocess.run(
        [
            PY,
            str(EMITTER),
            "--config",
            str(CONFIG_RMB),
            "--count",
            "50000",
            "--unthrottled",
            "--quiet",
            "--name",
            "emit",
        ],
        cwd=workdir,
        check=True,
        timeout=60,
    )
    log = workdir / RMB_LOG
    size = log.stat().st_size
    loop = SafetyLoop(cfg)
    try:
        read = 0
        for _ in range(50):  # catch up (bounded per tick)
            loop.tick()
            read += loop.input.last_tick_bytes
            if read >= size:
                break
        assert read == size
        ev_before = loop.tick()["inputs"]["window_events"]
        assert loop.input.last_tick_bytes == 0
        assert ev_before == 50000
        n = append_events(log, [rmb_event(time.time(), "observe") for _ in range(10)])
        e = loop.tick()
        assert loop.input.last_tick_bytes == n
        assert e["inputs"]["window_events"] == ev_before + 10
        loop.tick()
        assert loop.input.last_tick_bytes == 0
    finally:
        loop.close()


# ------------------------------------------------------------------ metrics source
def _answers(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def _events_total(port):
    import requests

    for line in requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        if line.startswith("rmb_events_total "):
            return float(line.split()[1])
    return None


def test_metrics_source_uses_counter_deltas(procs, workdir):
    log = workdir / RMB_LOG
    old = [rmb_event(T - 3600 + i, "rollback" if i % 2 else "observe", 0.3) for i in range(39)]
    append_events(log, old + [rmb_event(T - 3600 + 39, "rollback", 0.6)])  # 20 of 40: 50 %
    port = free_port()
    p = procs.start(EXPORTER, "--config", CONFIG_RMB, "--port", port, "--host", "127.0.0.1")
    wait_until(lambda: p.poll() is not None or _answers(port), what="exporter port")
    assert p.poll() is None, p.stderr.read().decode()
    wait_until(lambda: _events_total(port) == 40, what="40 events exported")
    url = f"http://127.0.0.1:{port}/metrics"
    conf = cfg_copy(workdir, inputs__metrics_url=url)  # inputs.source stays "log"
    loop = SafetyLoop(load_config(conf, {"inputs.source": "metrics"}))  # what --source does
    try:
        e = loop.tick(now=T)  # one scrape: no delta yet
        assert e["inputs"]["source"] == "metrics"
        assert (
            e["inputs"]["rollback_ratio"] is None and e["levels"]["rollback_ratio"] == "UNDEFINED"
        )
        assert e["inputs"]["residual_entropy"] == 0.6 and e["levels"]["final"] == "TENSE"
        append_events(log, [rmb_event(T + i, "observe", 0.3) for i in range(10)])
        wait_until(lambda: _events_total(port) == 50, what="50 events exported")
        e = loop.tick(now=T + 1)
        assert (e["inputs"]["window_events"], e["inputs"]["window_rollbacks"]) == (10, 0)
        assert e["inputs"]["rollback_ratio"] == 0.0  # not 0.5 (or 20/50): deltas only
        assert e["levels"] == {"residual": "CALM", "rollback_ratio": "CALM", "final": "CALM"}
        append_events(
            log, [rmb_event(T + 20 + i, "rollback" if i < 5 else "observe", 0.3) for i in range(10)]
        )
        wait_until(lambda: _events_total(port) == 60, what="60 events exported")
        e = loop.tick(now=T + 2)  # delta over the whole window: 20 events, 5 rollbacks
        assert (e["inputs"]["window_events"], e["inputs"]["window_rollbacks"]) == (20, 5)
        assert e["levels"]["rollback_ratio"] == "ALERT"

        # The real process, with the --source flag over a config that says `log`.
        pconf = cfg_copy(
            workdir, "proc.yaml", inputs__metrics_url=url, output__channel="logs/metrics_proc.jsonl"
        )
        r = subprocess.run(
            [
                PY,
                str(LOOP),
                "--config",
                str(pconf),
                "--source",
                "metrics",
                "--hz",
                "20",
                "--ticks",
                "3",
            ],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 0, r.stderr
        out = read_jsonl(workdir / "logs/metrics_proc.jsonl")
        assert len(out) == 3 and all(x["inputs"]["source"] == "metrics" for x in out)
        assert out[-1]["inputs"]["residual_entropy"] == 0.3

        # The exporter goes away: the last deltas hold while they are in the window ...
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0
        e = loop.tick(now=T + 10)
        assert loop.input.scrape_errors == 1
        assert (e["inputs"]["window_events"], e["inputs"]["window_rollbacks"]) == (20, 5)
        # ... and once every scrape is older than window_s, the ratio is undefined again.
        e = loop.tick(now=T + 2 + 301)
        assert loop.input.scrape_errors == 2
        assert (
            e["inputs"]["rollback_ratio"] is None and e["levels"]["rollback_ratio"] == "UNDEFINED"
        )
        assert e["inputs"]["window_events"] == 0
    finally:
        loop.close()


# ------------------------------------------------------------------------- restart
def test_restart_keeps_the_window_without_rereading(workdir, cfg):
    append_events(
        workdir / RMB_LOG,
        [rmb_event(T - 200 + i, "rollback" if i % 10 == 0 else "observe") for i in range(150)],
    )
    loop = SafetyLoop(cfg)
    try:
        first = loop.tick(now=T)
        assert loop.input.last_tick_bytes > 0
    finally:
        loop.close()
    assert (first["inputs"]["window_events"], first["inputs"]["window_rollbacks"]) == (150, 15)
    loop = SafetyLoop(cfg)
    try:
        again = loop.tick(now=T + 1)
        assert (
            loop.input.last_tick_bytes == 0
        )  # nothing re-read: the window came from the checkpoint
        assert (again["inputs"]["window_events"], again["inputs"]["window_rollbacks"]) == (150, 15)
        assert again["levels"] == first["levels"]
        assert again["previous"] == first["levels"]["final"] and again["changed"] is False
        # The restored window still ages: at T+150 the events before T-150 (50 of them) are gone.
        later = loop.tick(now=T + 150)
        assert later["inputs"]["window_events"] == 150 - 50
    finally:
        loop.close()


# ------------------------------------------------------------- make lifecycle
@pytest.fixture
def make_env(workdir, private_stack):
    return workdir, private_stack(ports=(), stop="safety.music.stop", SAFETY_HZ=10)


def test_make_start_stop_lifecycle(make_env):
    cwd, env = make_env
    r = run_make(cwd, "safety.music.start", env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "[safety] music loop start" in r.stdout
    pid = pids_in(cwd / "run")["safety_music"]
    assert pid_alive(pid)
    out = wait_until(
        lambda: len(read_jsonl(cwd / CHANNEL)) >= 3 and read_jsonl(cwd / CHANNEL),
        what="safety music events",
    )
    for e in out:
        validate_event(e)
    r = run_make(cwd, "safety.music.start", env=env, timeout=60)  # twice is harmless
    assert r.returncode == 0 and "already running" in r.stdout, r.stdout + r.stderr
    assert pids_in(cwd / "run")["safety_music"] == pid
    r = run_make(cwd, "safety.music.stop", env=env)
    assert r.returncode == 0 and "[safety] music loop stop" in r.stdout
    assert not pid_alive(pid)
    assert not (cwd / "run/safety_music.pid").exists()
    r = run_make(cwd, "safety.music.stop", env=env)  # stopping twice is fine too
    assert r.returncode == 0 and "[safety] music loop stop" in r.stdout


# ------------------------------------------------------- bad lines and rotation
def test_process_survives_bad_lines_and_rotation(procs, workdir):
    log = workdir / RMB_LOG
    now = time.time()
    append_events(log, [rmb_event(now, "observe") for _ in range(20)])
    p = procs.start(LOOP, "--config", CONFIG, "--hz", "20")
    out = workdir / CHANNEL

    def last_counts(ev, rb=None):
        def check():
            evs = read_jsonl(out)
            if (
                evs
                and evs[-1]["inputs"]["window_events"] == ev
                and (rb is None or evs[-1]["inputs"]["window_rollbacks"] == rb)
            ):
                return evs

        return check

    wait_until(last_counts(20), what="20 events in the window")
    schema_bad = rmb_event(now)
    schema_bad["resonance_v3"]["residual_entropy"] = 7
    append_lines(
        log,
        [
            b"garbage here",
            b"\xff\xfe\xfa not utf-8",
            json.dumps(schema_bad).encode(),
            json.dumps(rmb_event(now)).encode(),
        ],
    )
    wait_until(last_counts(21), what="the good line after the bad ones")
    os.rename(log, str(log) + ".1")  # rename rotation
    append_events(log, [rmb_event(time.time(), "rollback", 0.9) for _ in range(5)])
    evs = wait_until(last_counts(26, 5), what="events from the new file")
    assert evs[-1]["levels"]["final"] == "ALERT"
    n = len(evs)
    wait_until(lambda: len(read_jsonl(out)) >= n + 5, what="the loop to keep ticking")
    assert p.poll() is None
    recs = [
        json.loads(x) for x in (workdir / "logs/rejects/rmb_events.jsonl").read_text().splitlines()
    ]
    assert [r["reason"] for r in recs] == ["json", "utf8", "schema"]
    assert all(r["consumer"] == "safety_music" for r in recs)
    assert recs[0]["line"] == "garbage here" and "line_b64" in recs[1]
    # SIGTERM: a clean stop (exit 0), the PID file removed.
    assert pids_in(workdir / "run")["safety_music"] == p.pid
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=10) == 0
    assert not (workdir / "run/safety_music.pid").exists()


# ------------------------------------------------------------------------- OSC
def test_osc_receives_the_final_level(workdir):
    got, custom = [], []
    disp = Dispatcher()
    disp.map("/lumen/safety/level", lambda addr, *args: got.append(args))
    disp.map("/studio/level", lambda addr, *args: custom.append(args))
    server = ThreadingOSCUDPServer(("127.0.0.1", 0), disp)
    th = threading.Thread(target=server.serve_forever, daemon=True)
    th.start()
    try:
        port = server.server_address[1]
        off = load_config(
            cfg_copy(workdir, "off.yaml", output__osc__port=port, output__channel="logs/off.jsonl")
        )
        tick_once(off, T)  # osc.enabled false: nothing is sent
        on = load_config(
            cfg_copy(workdir, "on.yaml", output__osc__enabled=True, output__osc__port=port)
        )
        loop = SafetyLoop(on)
        try:
            sent = [loop.tick(now=T)]
            append_events(workdir / RMB_LOG, [rmb_event(T + 1, "rollback", 0.2)])
            sent.append(loop.tick(now=T + 2))
        finally:
            loop.close()
        wait_until(lambda: len(got) >= 2, what="two OSC messages")
        assert [g[0] for g in got] == [e["levels"]["final"] for e in sent] == ["UNDEFINED", "ALERT"]
        assert got[1][1] == pytest.approx(0.2) and got[1][2] == 1.0 and got[1][3] == 1
        assert got[0][1] == -1.0 and got[0][3] == 0
        # output.osc.address is the config's, not a constant.
        other = load_config(
            cfg_copy(
                workdir,
                "addr.yaml",
                output__osc__enabled=True,
                output__osc__port=port,
                output__osc__address="/studio/level",
                output__channel="logs/addr.jsonl",
            )
        )
        e = tick_once(other, T + 3)
        wait_until(lambda: custom, what="an OSC message at the configured address")
        assert custom[0][0] == e["levels"]["final"] == "ALERT" and len(got) == 2
    finally:
        server.shutdown()
        server.server_close()
        th.join(timeout=5)


# ----------------------------------------------------------------- MIDI and WAV
def _midi_timeline(mid):
    """[(seconds, level, msg)] of all tracks merged, the seconds from the file's tempo map
    (mido's reading), the level from the last marker (conductor track)."""
    out, t, level = [], 0.0, None
    for msg in mid:
        t += msg.time
        if msg.type == "marker":
            level = msg.text
        out.append((t, level, msg))
    return out


def _onsets(x, sr):
    """Pulse onsets: a frame above 1 % of the peak after at least 50 ms of silence."""
    frame = int(0.005 * sr)
    n = len(x) // frame
    env = np.abs(x[: n * frame].astype(np.float64)).reshape(n, frame).max(axis=1)
    active = env > 0.01 * env.max()
    count, quiet = 0, 10
    for a in active:
        if a:
            if quiet >= 10:
                count += 1
            quiet = 0
        else:
            quiet += 1
    return count


def _peaks(x, sr, k=3, mask_hz=15.0):
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1.0 / sr)
    out = []
    for _ in range(k):
        i = int(np.argmax(spec))
        out.append(freqs[i])
        spec[np.abs(freqs - freqs[i]) < mask_hz] = 0
    return sorted(out)


def test_render_midi_has_exactly_the_mapped_notes_and_programs():
    segs = [("ALERT", 3.0), ("UNDEFINED", 2.0), ("CALM", 3.0)]
    mid = sound.render_midi(segs, SMAP)
    tl = _midi_timeline(mid)
    on = [(t, lv, m) for t, lv, m in tl if m.type == "note_on"]
    assert {m.note for _, _, m in on} == set(SMAP["levels"]["ALERT"]["notes"]) | set(
        SMAP["levels"]["CALM"]["notes"]
    )
    assert [m.program for _, _, m in tl if m.type == "program_change"] == [
        SMAP["levels"][lv]["program"] for lv, _ in segs
    ]
    # UNDEFINED is silence: no note starts between 3 s and 5 s.
    assert [t for t, _, _ in on if t < 3] and [t for t, _, _ in on if t >= 5]
    assert not [t for t, _, _ in on if 3 - 1e-6 <= t < 5 - 1e-6]
    assert all(lv != "UNDEFINED" for _, lv, _ in on)
    # Each note_on has its note_off.
    offs = [m for _, _, m in tl if m.type == "note_off"]
    assert sorted(m.note for m in offs) == sorted(m.note for _, _, m in on)


def test_make_render_wav_and_midi(workdir):
    base = math.floor(time.time()) - 40  # whole and half seconds: exact 8 s stretches
    evts = []
    for j, level in enumerate(("CALM", "TENSE", "ALERT")):
        for i in range(16):
            evts.append(
                {
                    "ts": iso(base + j * 8 + i * 0.5),
                    "loop": "safety.music.v17",
                    "levels": {"residual": level, "rollback_ratio": level, "final": level},
                    "changed": i == 0 and j > 0,
                    "previous": None,
                }
            )
    lines = [json.dumps(e).encode() for e in evts]
    lines.insert(20, b"not an event")
    append_lines(workdir / CHANNEL, lines)
    r = run_make(workdir, "safety.music.render", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "48 events" in r.stdout and "1 bad lines skipped" in r.stdout, r.stdout
    mid = mido.MidiFile(workdir / "logs/safety_music_render.mid")
    tl = _midi_timeline(mid)
    notes = {m.note for _, _, m in tl if m.type == "note_on"}
    assert notes == {n for lv in ("CALM", "TENSE", "ALERT") for n in SMAP["levels"][lv]["notes"]}
    assert [m.program for _, _, m in tl if m.type == "program_change"] == [0, 48, 56]
    with wave.open(str(workdir / "logs/safety_music_render.wav")) as w:
        sr = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    assert abs(len(x) / sr - 24.0) < 0.01
    counts = {}
    for j, level in enumerate(("CALM", "TENSE", "ALERT")):
        spec = SMAP["levels"][level]
        # MIDI: note_on spacing is one beat of the level's tempo, in the file's tempo map.
        starts = sorted({round(t, 6) for t, lv, m in tl if m.type == "note_on" and lv == level})
        beat = 60 / spec["tempo_bpm"]
        assert all(abs(d - beat) <= 1e-5 for d in np.diff(starts)), (level, np.diff(starts))
        assert j * 8 - 1e-6 <= starts[0] and starts[-1] < (j + 1) * 8
        # WAV: the stretch's three strongest frequencies are the level's notes ...
        stretch = x[j * 8 * sr : (j + 1) * 8 * sr]
        for got, n in zip(_peaks(stretch, sr), sorted(spec["notes"])):
            assert abs(got - sound.note_hz(n)) <= 3.0, (level, got, sound.note_hz(n))
        # ... and it pulses at the level's tempo.
        counts[level] = _onsets(stretch, sr)
        assert counts[level] == math.ceil(8 * spec["tempo_bpm"] / 60), (level, counts)
        assert len(starts) == counts[level]
    assert counts["CALM"] < counts["TENSE"] < counts["ALERT"]


def test_render_with_no_events_in_the_stretch_fails_clearly(workdir):
    old = time.time() - 3600
    append_lines(
        workdir / CHANNEL,
        [
            json.dumps(
                {
                    "ts": iso(old + i),
                    "loop": "safety.music.v17",
                    "levels": {"residual": "CALM", "rollback_ratio": "CALM", "final": "CALM"},
                }
            ).encode()
            for i in range(10)
        ],
    )
    r = subprocess.run(
        [PY, str(RENDER), "--config", str(CONFIG)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no safety music events" in lines[0] and CHANNEL in lines[0]
    r = run_make(workdir, "safety.music.render", timeout=60)
    assert r.returncode != 0 and "no safety music events" in r.stderr and "Error 1" in r.stderr
    assert not (workdir / "logs/safety_music_render.wav").exists()
    assert not (workdir / "logs/safety_music_render.mid").exists()
    # The stretch is the last MINUTES: widening it finds the events.
    r = run_make(workdir, "safety.music.render", "MINUTES=90", timeout=60)
    assert r.returncode == 0 and "10 events" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize(
    "residual,ratio", [("0.3", "0.01"), ("0.7", "-"), ("-", "-"), ("0.95", "0.5"), ("0.55", "0.0")]
)
def test_safety_levels_script_prints_the_loops_mapping(residual, ratio):
    cfg = yaml.safe_load((ROOT / "configs/safety_music_v17.yaml").read_text())
    r = subprocess.run(
        [str(PY), str(ROOT / "safety/safety_levels.py"), residual, ratio],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr

    def value(text):
        return None if text == "-" else float(text)

    want = levels(value(residual), value(ratio), cfg["mapping"])
    assert json.loads(r.stdout) == want


@pytest.mark.parametrize("bad", ["2", "-0.1", "nan", "x"])
def test_safety_levels_script_refuses_a_value_outside_0_1(bad):
    r = subprocess.run(
        [str(PY), str(ROOT / "safety/safety_levels.py"), bad, "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "residual" in r.stderr and "Traceback" not in r.stderr
