"""Issue 17, point 1: Safety Music heard on the live page (lumen/api/static/sound.js).

In headless Chromium (Debian's chromium, driven by Playwright) on the page the API serves
over a seeded SQLite store, each level is rendered with an OfflineAudioContext through
`LumenSound.renderLevel` (8 s at 22 050 Hz), the samples are brought back to Python and
measured with numpy, beside the WAV render of the same levels (lumen/safety/sound.py):
the chord's notes are the strongest pitches, the note rate is the plan's pulse count,
loudness and spectral centroid are ordered as the map says, UNDEFINED is silent. The two
alert motifs differ from each other and from every level; a level change crossfades with
no gap and no click; the controls start sound only on a click, mute and set the volume
through the master gain, and keep their state over a reload. OfflineAudioContext renders
are deterministic; the live parts are polled with deadlines.

Chromium runs with the same flags as the other page tests: no --autoplay-policy flag is
needed, Playwright's click is a user gesture, which is what the page waits for.
"""

import base64
import json
import math
import time

import numpy as np
import pytest
import requests

from conftest import ROOT, free_port, wait_until
from lumen import storage, timefmt
from lumen.safety import sound
from test_live_page import browser_page, rmb_row, screenshot, seed, serve

SR = 22050
SECS = 8.0
LEVELS = ("CALM", "TENSE", "ALERT")
SMAP = sound.load_map(ROOT / "configs/midi_map_v18.json")
HF_CUT = 7000.0  # Hz: above every partial the levels in the crossfade tests play (checked)

# Render in the page: a level, a motif or a sequence of levels, on an OfflineAudioContext;
# the samples come back as base64 of their float32 bytes.
RENDER = """async ([what, arg, secs, sr, xfade]) => {
  const L = window.LumenSound, map = await (await fetch('/api/sound')).json();
  const ctx = new OfflineAudioContext(1, Math.round(secs * sr), sr);
  let info = null;
  if (what === 'level') info = L.renderLevel(ctx, arg[0], map, arg[1], arg[2]);
  else if (what === 'motif') info = L.renderMotif(ctx, arg, 0);
  else info = L.renderSequence(ctx, arg, map, 0, undefined, xfade === null ? undefined : xfade);
  const x = (await ctx.startRendering()).getChannelData(0), b = new Uint8Array(x.buffer);
  let s = '';
  for (let i = 0; i < b.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, b.subarray(i, i + 0x8000));
  }
  return { info, b64: btoa(s) };
}"""


def render(page, what, arg, secs=SECS, xfade=None):
    """(samples as float64, what the render function returned)."""
    r = page.evaluate(RENDER, [what, arg, secs, SR, xfade])
    x = np.frombuffer(base64.b64decode(r["b64"]), dtype=np.float32).astype(np.float64)
    assert len(x) == round(secs * SR)
    return x, r["info"]


def level(page, name, start=0.0, secs=SECS, total=SECS):
    return render(page, "level", [name, start, secs], total)


# ---------------------------------------------------------------- features (numpy)
def rms(x):
    return float(np.sqrt(np.mean(x**2)))


def centroid(x):
    power = np.abs(np.fft.rfft(x)) ** 2
    return float((power * np.fft.rfftfreq(len(x), 1 / SR)).sum() / power.sum())


def onsets(x, hop=0.005):
    """Onset times (s) from an energy envelope (RMS per 5 ms): a rise above a quarter of
    the loudest frame, after the envelope fell below a twentieth of it."""
    n = int(hop * SR)
    frames = len(x) // n
    env = np.sqrt((x[: frames * n].reshape(frames, n) ** 2).mean(axis=1))
    hi, lo = 0.25 * env.max(), 0.05 * env.max()
    out, armed = [], True
    for i, v in enumerate(env):
        if armed and v > hi:
            out.append(i * hop)
            armed = False
        elif not armed and v < lo:
            armed = True
    return out


def pitches(x, lo=36, hi=108):
    """{MIDI note: power in its semitone band, the strongest band 1}."""
    power = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    out = {}
    for n in range(lo, hi + 1):
        c = sound.note_hz(n)
        out[n] = power[(f >= c * 2 ** (-0.5 / 12)) & (f < c * 2 ** (0.5 / 12))].sum()
    top = max(out.values())
    return {n: v / top for n, v in out.items()}


def strongest(x, a, b):
    """The strongest pitch of x between a and b seconds."""
    prof = pitches(x[int(a * SR) : int(b * SR)])
    return max(prof, key=prof.get)


def similarity(a, b):
    """Cosine of two pitch profiles (1: the same pitches in the same proportions)."""
    u, v = np.array(list(a.values())), np.array(list(b.values()))
    return float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))


def high_jumps(x):
    """Sample-to-sample jumps of what is above HF_CUT: no note's partial is there, a click
    (a step in the signal) puts energy at every frequency."""
    spec = np.fft.rfft(x)
    spec[np.fft.rfftfreq(len(x), 1 / SR) < HF_CUT] = 0
    return np.abs(np.diff(np.fft.irfft(spec, len(x))))


def wav(segs):
    samples, sr = sound.render_wav(segs, SMAP)
    assert sr == SR
    return samples.astype(np.float64) / 32767


# ---------------------------------------------------------------- the page
def seed_store(path, level="TENSE"):
    """RMB rows and Safety Music rows at `level` over the last minute (host alpha)."""
    now = time.time()
    seed(path, [rmb_row(now - 1 - 3 * i, "alpha", 0.3, "observe", i) for i in range(20)])
    store = storage.SqliteStore(path, "alpha")
    with store.transaction():
        rows = []
        for i in range(30):
            t = now - 1 - 2 * i
            rows.append((timefmt.format(t), t, level, level, "CALM", 0.7, 0.01, "fp-s", i * 100))
        store.insert("safety", rows)
    store.close()


@pytest.fixture
def site(workdir, procs):
    seed_store(workdir / "data/lumen.db")
    return serve(procs, "alpha")


@pytest.fixture
def page(site):
    errors = []
    with browser_page(errors) as p:
        p.goto(site)
        p.wait_for_function("window.LumenSound && LumenSound.state().loaded", timeout=30_000)
        yield p
        assert errors == []


# ---------------------------------------------------------------- the tests
def test_api_serves_the_sound_map_the_loop_uses(workdir, procs):
    from jsonschema import validate

    seed_store(workdir / "data/lumen.db")
    base = serve(procs, "alpha").rstrip("/")
    r = requests.get(f"{base}/api/sound", timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    body = r.json()
    assert body == sound.for_page(SMAP)
    shipped = json.loads((ROOT / "configs/midi_map_v18.json").read_text())
    for name, spec in shipped["levels"].items():
        assert body["levels"][name]["notes"] == spec["notes"]
        assert body["levels"][name]["tempo_bpm"] == spec["tempo_bpm"]
    assert body["render"] == {"gate": shipped["render"]["gate"], "sample_rate": SR}
    doc = requests.get(f"{base}/openapi.json", timeout=5).json()
    ok = doc["paths"]["/api/sound"]["get"]["responses"]["200"]
    validate(body, ok["content"]["application/json"]["schema"])
    assert "304" in doc["paths"]["/api/sound"]["get"]["responses"]
    tag = {"If-None-Match": r.headers["ETag"]}
    assert requests.get(f"{base}/api/sound", headers=tag, timeout=5).status_code == 304
    bad = requests.get(f"{base}/api/sound?level=CALM", timeout=5)
    assert bad.status_code == 400 and "unknown parameter" in bad.json()["error"]
    assert requests.get(f"{base}/static/sound.js", timeout=5).status_code == 200


def api_config(workdir, sound_map):
    text = (ROOT / "configs/api_v18.yaml").read_text()
    assert "sound_map: configs/midi_map_v18.json" in text
    path = workdir / "api.yaml"
    path.write_text(text.replace("configs/midi_map_v18.json", str(sound_map)))
    return path


def test_api_sound_map_comes_from_the_config_and_a_bad_one_stops_it(workdir, procs):
    seed_store(workdir / "data/lumen.db")
    mine = json.loads((ROOT / "configs/midi_map_v18.json").read_text())
    mine["levels"]["CALM"].update(notes=[48, 52, 55], tempo_bpm=72)
    (workdir / "mine.json").write_text(json.dumps(mine))
    port = free_port()
    api = procs.start(
        ROOT / "api/read_only.py",
        "--config",
        api_config(workdir, "mine.json"),  # relative: from the working directory
        "--port",
        port,
        env={"LUMEN_DB": "data/lumen.db", "LUMEN_DB_URL": None},
    )
    wait_until(lambda: (workdir / "run/api.pid").exists() or api.poll() is not None, what="api")
    assert api.poll() is None, api.stderr.read().decode(errors="replace")
    calm = requests.get(f"http://127.0.0.1:{port}/api/sound", timeout=5).json()["levels"]["CALM"]
    assert calm["notes"] == [48, 52, 55] and calm["tempo_bpm"] == 72

    mine["levels"]["TENSE"]["tempo_bpm"] = 0
    (workdir / "bad.json").write_text(json.dumps(mine))
    bad = procs.start(
        ROOT / "api/read_only.py", "--config", api_config(workdir, "bad.json"), "--port", 0
    )
    _, err = bad.communicate(timeout=60)
    lines = err.decode().strip().splitlines()
    assert bad.returncode == 2 and len(lines) == 1, err
    assert "bad.json" in lines[0] and "levels.TENSE.tempo_bpm" in lines[0]


def test_each_level_sounds_as_the_map_and_the_wav_render_say(page):
    assert page.evaluate("fetch('/api/sound').then(r => r.json())") == sound.for_page(SMAP)
    browser = {name: level(page, name) for name in LEVELS}
    # UNDEFINED is silence, in the browser as in the WAV.
    silent, pulses = level(page, "UNDEFINED")
    assert pulses == [] and not np.any(silent)
    assert not np.any(wav([("UNDEFINED", SECS)]))
    # The WAV: each level alone (its note rate and centroid), and the three in one render
    # (one normalisation, so their loudness can be compared).
    alone = {name: wav([(name, SECS)]) for name in LEVELS}
    together = wav([(name, SECS) for name in LEVELS])
    n = round(SECS * SR)
    wav_rms = {name: rms(together[i * n : (i + 1) * n]) for i, name in enumerate(LEVELS)}
    feats = {}
    for name in LEVELS:
        x, onset_times = browser[name]
        spec = SMAP["levels"][name]
        plan = sound.plan([(name, SECS)], SMAP)
        # The plan's pulses, at the plan's seconds; heard as many onsets as in the WAV.
        assert onset_times == pytest.approx([plan.seconds(p.on) for p in plan.pulses], abs=1e-6)
        heard, heard_wav = onsets(x), onsets(alone[name])
        assert len(heard) == len(heard_wav) == len(plan.pulses), (name, heard, heard_wav)
        bpm = 60 / np.median(np.diff(heard))
        assert bpm == pytest.approx(spec["tempo_bpm"], rel=0.03), name
        assert 60 / np.median(np.diff(heard_wav)) == pytest.approx(spec["tempo_bpm"], rel=0.03)
        # The harmony: the chord's notes are the strongest pitches, in both renders.
        for samples in (x, alone[name]):
            prof = pitches(samples)
            strongest = sorted(prof, key=prof.get, reverse=True)[: len(spec["notes"])]
            assert sorted(strongest) == sorted(spec["notes"]), (name, strongest)
        assert 0 < np.max(np.abs(x)) < 1  # no clipping
        feats[name] = {
            "rate": len(heard) / SECS,
            "rms": rms(x),
            "centroid": centroid(x),
            "wav_centroid": centroid(alone[name]),
        }
        # The piano family is the WAV's own voice: the same spectrum.
        if page.evaluate(f"LumenSound.timbreOf({spec['program']})") == "piano":
            assert feats[name]["centroid"] == pytest.approx(feats[name]["wav_centroid"], rel=0.02)
    by = lambda key: [feats[name][key] for name in LEVELS]  # noqa: E731
    # The map: tempo CALM < TENSE < ALERT, velocity too; ALERT's notes are the highest.
    assert [SMAP["levels"][x]["tempo_bpm"] for x in LEVELS] == sorted(
        SMAP["levels"][x]["tempo_bpm"] for x in LEVELS
    )
    assert by("rate") == sorted(by("rate")) and len(set(by("rate"))) == 3
    assert by("rms") == sorted(by("rms")) and len(set(by("rms"))) == 3
    assert [wav_rms[x] for x in LEVELS] == sorted(wav_rms.values())
    assert by("centroid") == sorted(by("centroid")) and len(set(by("centroid"))) == 3
    assert by("wav_centroid") == sorted(by("wav_centroid"))
    # Each level differs from the others in what it plays.
    profs = {name: pitches(browser[name][0]) for name in LEVELS}
    for a in LEVELS:
        for b in LEVELS:
            if a < b:
                assert similarity(profs[a], profs[b]) < 0.5, (a, b)


def test_the_two_motifs_differ_from_each_other_and_from_the_levels(page):
    motifs = page.evaluate("LumenSound.MOTIFS")
    levels = {name: pitches(level(page, name)[0]) for name in LEVELS}
    profs, moves = {}, {}
    for kind in ("firing", "resolved"):
        x, length = render(page, "motif", kind, 1.5)
        notes = motifs[kind]["notes"]
        assert length == pytest.approx(max(at + d for at, d, _ in notes))
        assert np.any(x[: int(length * SR)]) and not np.any(x[int(length * SR) + 2 :])
        profs[kind] = pitches(x)
        # The pitch moves as the motif says: the first note's against the last chord's.
        first, last = notes[0], notes[-1]
        heard_first = strongest(x, first[0], first[0] + first[1])
        heard_last = strongest(x, last[0], last[0] + last[1])
        assert heard_first in first[2] and heard_last in last[2], (kind, heard_first, heard_last)
        moves[kind] = heard_last - heard_first
    assert moves["firing"] > 0 > moves["resolved"]  # rises, falls
    assert similarity(profs["firing"], profs["resolved"]) < 0.5
    for kind, prof in profs.items():
        for name, lv in levels.items():
            assert similarity(prof, lv) < 0.5, (kind, name)


CHANGES = [("CALM", "TENSE", 3.3), ("TENSE", "ALERT", 3.0)]  # the old level sounds at both


@pytest.mark.parametrize("old,new,at", CHANGES)
def test_a_level_change_crossfades_without_gap_or_click(page, old, new, at):
    total = 6.0
    xfade = page.evaluate("LumenSound.XFADE_S")
    assert 0.3 <= xfade <= 0.5
    # No partial of either level reaches HF_CUT.
    for name in (old, new):
        spec = SMAP["levels"][name]
        partials = page.evaluate(
            f"LumenSound.TIMBRES[LumenSound.timbreOf({spec['program']})].partials.length"
        )
        assert max(sound.note_hz(n) for n in spec["notes"]) * partials < HF_CUT
    x, changes = render(page, "sequence", [[old, at], [new, total - at]], total)
    assert changes == [at]
    before, old_on = level(page, old, 0.0, at, total)
    after, new_on = level(page, new, at, total - at, total)
    a, f = int(at * SR), int((at + xfade) * SR) + 1
    # The live engine plays renderLevel's notes (renderLevel cuts its last pulse at its end):
    # the old level's up to its last beat before the change, the new level's alone once the
    # crossfade is over.
    end_old, end_new = int(old_on[-1] * SR), int(new_on[-1] * SR)
    np.testing.assert_allclose(x[:end_old], before[:end_old], atol=1e-6)
    np.testing.assert_allclose(x[f:end_new], after[f:end_new], atol=1e-6)
    # During the crossfade both are heard: neither the old level alone nor the new one.
    window = slice(a, f)
    assert rms(x[window] - before[window]) > 1e-4 and rms(x[window] - after[window]) > 1e-4
    # No gap: sound within 20 ms of the change, and over the change window.
    assert np.max(np.abs(x[a : a + int(0.02 * SR)])) > 1e-4
    assert rms(x[a - SR // 2 : f + SR // 2]) > 0
    # No click: no jump above what the levels' own notes make.
    steady_hi = max(high_jumps(level(page, name)[0]).max() for name in (old, new))
    steady = sum(np.abs(np.diff(level(page, name)[0])).max() for name in (old, new))
    bound = 4 * steady_hi + 1e-6
    near = slice(a - SR // 2, f + SR // 2)
    assert high_jumps(x)[near].max() <= bound, (high_jumps(x)[near].max(), bound)
    assert np.abs(np.diff(x[near])).max() <= steady
    # A cut instead of a crossfade is a click this check sees.
    cut, _ = render(page, "sequence", [[old, at], [new, total - at]], total, xfade=0)
    assert high_jumps(cut)[near].max() > 10 * bound


CONTROLS = """() => { const s = LumenSound.state(), b = document.getElementById('sound-toggle');
  return Object.assign(s, { label: b.textContent, pressed: b.getAttribute('aria-pressed'),
    slider: document.getElementById('sound-volume').value, made: window.audioContexts }); }"""
# Count every AudioContext the page makes (OfflineAudioContext is another class).
COUNT_CONTEXTS = """window.audioContexts = 0;
window.AudioContext = class extends window.AudioContext {
  constructor(...a) { super(...a); window.audioContexts += 1; } };"""


def until(page, cond, timeout=20_000):
    """The controls' state once the JS expression `cond` (over `s`, the state) holds."""
    return page.wait_for_function(
        f"() => {{ const s = ({CONTROLS})(); return ({cond}) ? s : null; }}", timeout=timeout
    ).json_value()


def test_controls_start_on_a_click_mute_set_the_volume_and_survive_a_reload(site):
    errors = []
    with browser_page(errors) as page:
        page.add_init_script(COUNT_CONTEXTS)
        page.goto(site)
        # The page plays the level app.js got from /api/series (the seeded TENSE).
        s = until(page, "s.loaded && s.level === 'TENSE'")
        # Before a click: no AudioContext at all, nothing playing, a motif does nothing.
        assert s["made"] == 0 and not s["started"] and s["context"] is None
        assert s["label"] == "▶ Listen" and s["pressed"] == "false" and not s["playing"]
        assert page.evaluate("LumenSound.playMotif('firing')") is False
        assert page.evaluate("window.audioContexts") == 0

        page.click("#sound-toggle")
        s = until(page, "s.context === 'running' && s.playing && Math.abs(s.gain - 0.5) < 1e-3")
        assert s["made"] == 1 and s["label"] == "■ Mute" and s["pressed"] == "true"
        assert s["volume"] == 0.5 and not s["muted"]
        # The scheduler runs on the audio clock: TENSE's pulses are scheduled, one a beat.
        until(page, "s.pulses >= 3")
        assert page.evaluate("LumenSound.playMotif('firing')") is True
        assert page.evaluate("LumenSound.playMotif('resolved')") is True
        assert page.evaluate("LumenSound.playMotif('paging')") is False
        assert until(page, "s.motifs === 2")["motifs"] == 2

        # The volume slider sets the master gain.
        page.evaluate(
            "() => { const v = document.getElementById('sound-volume'); v.value = '0.3';"
            " v.dispatchEvent(new Event('input')); }"
        )
        s = until(page, "Math.abs(s.gain - 0.3) < 1e-3")
        assert s["volume"] == 0.3
        # Mute: the master gain goes to 0, the scheduler stops, motifs do nothing.
        page.click("#sound-toggle")
        s = until(page, "s.gain === 0 && !s.playing")
        assert s["muted"] and s["label"] == "▶ Unmute" and s["pressed"] == "false"
        assert page.evaluate("LumenSound.playMotif('firing')") is False
        assert json.loads(page.evaluate("localStorage.getItem('lumen.sound')")) == {
            "volume": 0.3,
            "muted": True,
        }
        screenshot(page, "live_sound_muted.png")

        # A reload keeps the volume and the mute, and makes no AudioContext before a click.
        page.reload()
        s = until(page, "s.loaded")
        assert s["made"] == 0 and not s["started"] and s["muted"] and s["volume"] == 0.3
        assert s["slider"] == "0.3" and s["label"] == "▶ Listen"
        page.click("#sound-toggle")
        s = until(page, "s.context === 'running' && s.playing && Math.abs(s.gain - 0.3) < 1e-3")
        assert not s["muted"] and s["label"] == "■ Mute" and s["made"] == 1
        screenshot(page, "live_sound.png")
    assert errors == []


def test_the_page_plays_silence_when_the_levels_are_old(workdir, procs):
    """No Safety Music row in the last three steps: UNDEFINED (silence), not the last level."""
    path = workdir / "data/lumen.db"
    seed_store(path)
    db = storage.connect(path)
    db.execute("UPDATE safety SET t = t - 600")
    db.commit()
    db.close()
    errors = []
    with browser_page(errors) as page:
        page.goto(serve(procs, "alpha"))
        page.wait_for_function("window.lumen.renders >= 1 && window.lumen.series", timeout=30_000)
        # The stored rows say TENSE, but the newest is ten minutes old: what plays is silence.
        series = page.evaluate("window.lumen.series")
        assert series["safety"] and all(b["level"] == "TENSE" for b in series["safety"])
        assert page.evaluate("LumenSound.state().level") == "UNDEFINED"
        assert math.isfinite(series["step_s"])
    assert errors == []
