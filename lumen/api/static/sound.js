// Lumen live page: Safety Music heard in the browser, with the Web Audio API. No assets, no
// libraries, no build step. Reads the sound map from /api/sound (the API's `api.sound_map`,
// by default configs/midi_map_v18.json, the map the Safety Music loop and the WAV render
// use); writes nothing but its own localStorage key ("lumen.sound": volume and mute).
// It does not fetch levels: the page (app.js) calls LumenSound.setLevel with the newest one.
//
// The sound, as the WAV render plays it (lumen/safety/sound.py, plan() and render_wav()):
// a pulse of the level's chord on each beat of its tempo_bpm (a beat is the MIDI Set Tempo
// value, round(60e6 / bpm) whole microseconds, as in the MIDI file), held `render.gate` of
// a beat (round(gate x 480) ticks), each note at velocity / 127 divided among the chord's
// notes, sine partials shaped by an envelope. UNDEFINED (no notes, velocity 0) is silence.
//
// Timbre, by the General MIDI program's family (program >> 3); each mix scaled to the same
// RMS as the WAV's (partials 1 and 0.2), so loudness follows the velocity, not the timbre:
//   piano   families 0 piano, 1 chromatic percussion, 3 guitar, 4 bass, 13 ethnic,
//           14 percussive, 15 effects: the WAV's own voice, partials 1, 0.2; 10 ms attack,
//           decay exp(-3 t / d) over the note's d seconds (+ a 5 ms fade at its end, where
//           the WAV stops at 5 % of the peak);
//   strings families 5 strings, 6 ensemble, 9 pipe, 11 pad: partials 1/k, k = 1..6 (a soft
//           sawtooth); attack min(80 ms, d/3), sustained, released over min(60 ms, d/4);
//   brass   families 2 organ, 7 brass, 8 reed, 10 lead, 12 synth effects: partials 1, .8,
//           .6, .45, .3, .2, .12, .07 (bright); 20 ms attack, 0.75 sustain after a 50 ms
//           decay, released over min(40 ms, d/4).
// So the shipped map sounds CALM on the piano voice (what the WAV plays), TENSE on strings,
// ALERT on brass.
//
// Live playback ("A Tale of Two Clocks"): a timer every 25 ms schedules, on the
// AudioContext's clock, every pulse that starts within the next 100 ms (1.5 s while the
// tab is hidden, where browsers slow timers to about one a second); a timer that ran late
// skips the beats it missed rather than playing them at once. A
// level change crossfades: the old level keeps its beat for 400 ms while its gain ramps to
// 0, the new one starts at once and ramps from 0 to 1 (each level has a fade-in and a
// fade-out gain of its own, so two quick changes never jump). A master gain carries the
// volume (linear, 0..1) and mute (0), changed over 30 ms. Alert motifs (playMotif) go
// through the master gain too, over the level's music.
//
// The pure renders (renderLevel, renderMotif, renderSequence) schedule the same notes on
// any BaseAudioContext, an OfflineAudioContext included: the tests render them in
// headless Chromium and measure the samples (tests/test_live_sound.py).
"use strict";
(function () {
  const TICKS_PER_BEAT = 480;  // lumen/safety/sound.py TICKS_PER_BEAT
  const LOOKAHEAD_S = 0.1, TIMER_MS = 25;
  const HIDDEN_LOOKAHEAD_S = 1.5;  // a hidden tab's timers run about once a second
  const XFADE_S = 0.4;  // a level change's crossfade
  const RAMP_S = 0.03;  // volume and mute
  const START_S = 0.03;  // a change is heard this long after it is asked for (time to schedule)
  const HEADROOM = 0.3;  // a chord at velocity 127: peaks below 1 with a motif over it
  const LEVELS = ["CALM", "TENSE", "ALERT", "UNDEFINED"];
  const WAV_RMS2 = 1 + 0.2 * 0.2;  // sum of squares of the WAV's partials

  function tail(t, d, r) { return Math.min(1, Math.max(0, (d - t) / r)); }
  const TIMBRES = {
    piano: { partials: [1, 0.2],
      env: (t, d) => Math.min(1, t / 0.01) * Math.exp(-3 * t / d) * tail(t, d, 0.005) },
    strings: { partials: [1, 1 / 2, 1 / 3, 1 / 4, 1 / 5, 1 / 6],
      env: (t, d) => Math.min(1, t / Math.min(0.08, d / 3)) * tail(t, d, Math.min(0.06, d / 4)) },
    brass: { partials: [1, 0.8, 0.6, 0.45, 0.3, 0.2, 0.12, 0.07],
      env: (t, d) => Math.min(1, t / 0.02) * (0.75 + 0.25 * Math.exp(-Math.max(0, t - 0.02) / 0.05))
        * tail(t, d, Math.min(0.04, d / 4)) },
  };
  const FAMILY = ["piano", "piano", "brass", "piano", "piano", "strings", "strings", "brass",
    "brass", "strings", "brass", "strings", "brass", "piano", "piano", "piano"];
  function timbreOf(program) { return FAMILY[(program >> 3) & 15]; }

  // The firing and resolved motifs: [start s, length s, notes] at a velocity, on a program.
  // Both sound above the levels' notes (the map's highest is 78), so they stand out of them.
  const MOTIFS = {
    // an alert fires: rising tritones and a minor second, brass, loud, ending on a tritone
    firing: { program: 56, velocity: 110,
      notes: [[0, 0.12, [81]], [0.12, 0.12, [87]], [0.24, 0.12, [88]], [0.36, 0.42, [93, 87]]] },
    // resolved: a falling major triad that lands on its root chord, piano, soft
    resolved: { program: 0, velocity: 90,
      notes: [[0, 0.18, [91]], [0.18, 0.18, [88]], [0.36, 0.7, [84, 79, 76]]] },
  };

  function pyRound(x) {  // Python's round(): half to even, as plan() rounds
    const f = Math.floor(x), d = x - f;
    return d > 0.5 || (d === 0.5 && f % 2 !== 0) ? f + 1 : f;
  }
  function noteHz(n) { return 440 * Math.pow(2, (n - 69) / 12); }

  // A level's beat and the time each pulse is held, in seconds, as plan() gives them.
  function timing(spec, map) {
    const tempo = pyRound(60e6 / spec.tempo_bpm);
    const gate = (map.render && map.render.gate !== undefined) ? map.render.gate : 0.6;
    const ticks = Math.max(1, pyRound(gate * TICKS_PER_BEAT));
    return { beat: tempo / 1e6, hold: ticks * tempo / TICKS_PER_BEAT / 1e6 };
  }
  function audible(spec) { return !!spec && spec.notes.length > 0 && spec.velocity > 0; }

  const waves = new WeakMap();  // context -> {timbre: PeriodicWave}
  function periodicWave(ctx, name) {
    let mine = waves.get(ctx);
    if (!mine) { mine = {}; waves.set(ctx, mine); }
    if (!mine[name]) {
      const p = TIMBRES[name].partials, scale = Math.sqrt(WAV_RMS2 / p.reduce((a, x) => a + x * x, 0));
      const real = new Float32Array(p.length + 1), imag = new Float32Array(p.length + 1);
      p.forEach((a, k) => { imag[k + 1] = a * scale; });  // sine partials, as the WAV's
      mine[name] = ctx.createPeriodicWave(real, imag, { disableNormalization: true });
    }
    return mine[name];
  }

  // The envelope of a note of `d` seconds at peak `amp`, one point a millisecond (kept:
  // a level repeats its pulses; setValueCurveAtTime copies the array it is given).
  const curves = new Map();
  function envelope(name, d, amp) {
    const key = `${name} ${d} ${amp}`;
    if (curves.has(key)) return curves.get(key);
    const n = Math.max(2, Math.min(4000, Math.ceil(d * 1000) + 1)), env = TIMBRES[name].env;
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = amp * env(d * i / (n - 1), d);
    out[n - 1] = 0;
    if (curves.size >= 64) curves.clear();
    curves.set(key, out);
    return out;
  }

  // One pulse: the chord `notes` from `on` for `d` seconds, into `dest`.
  function schedulePulse(ctx, dest, notes, velocity, program, on, d) {
    const name = timbreOf(program), wave = periodicWave(ctx, name), g = ctx.createGain();
    // The curve is the gain's only event (nothing sounds before `on`), so a pulse that
    // starts a little late never overlaps another event (setValueCurveAtTime would throw).
    g.gain.setValueCurveAtTime(envelope(name, d, HEADROOM * velocity / 127 / notes.length), on, d);
    g.connect(dest);
    notes.forEach((note, i) => {
      const o = ctx.createOscillator();
      o.setPeriodicWave(wave);
      o.frequency.value = noteHz(note);
      o.connect(g);
      if (i === 0) o.onended = () => g.disconnect();
      o.start(on);
      o.stop(on + d);
    });
  }

  // Pure render: `level`'s pulses from startTime for `duration` s (the last one cut at the
  // end, as plan() cuts a section), into `dest` (the context's destination). Returns the
  // onsets, in seconds of the context's clock.
  function renderLevel(ctx, level, map, startTime, duration, dest) {
    const spec = map.levels[level], end = startTime + duration, onsets = [];
    if (!audible(spec)) return onsets;
    const { beat, hold } = timing(spec, map);
    for (let k = 0; ; k++) {
      const on = startTime + k * beat;
      if (on >= end) break;
      schedulePulse(ctx, dest || ctx.destination, spec.notes, spec.velocity, spec.program, on,
        Math.min(hold, end - on));
      onsets.push(on);
    }
    return onsets;
  }

  // Pure render: a motif ("firing" or "resolved") from startTime; returns its length (s).
  function renderMotif(ctx, kind, startTime, dest) {
    const m = MOTIFS[kind];
    if (!m) throw new Error(`unknown motif ${JSON.stringify(kind)}: firing or resolved`);
    let len = 0;
    for (const [at, d, notes] of m.notes) {
      schedulePulse(ctx, dest || ctx.destination, notes, m.velocity, m.program, startTime + at, d);
      len = Math.max(len, at + d);
    }
    return len;
  }

  function ramp(param, at, from, to, secs) {
    param.setValueAtTime(from, at);
    param.linearRampToValueAtTime(to, at + secs);
  }

  // The levels as the live engine plays them: a section per level, crossfaded at a change
  // over `xfade` seconds (XFADE_S; 0 is a cut, for the tests to show what a click is).
  class Player {
    constructor(ctx, out, map, xfade) {
      Object.assign(this, { ctx, out, map, sections: [], level: null, pulses: 0,
        xfade: xfade === undefined ? XFADE_S : xfade });
    }

    setLevel(level, at) {  // the level sounding from `at` on (context seconds)
      if (level === this.level) return false;
      const first = this.level === null, spec = this.map.levels[level];
      this.level = level;
      for (const s of this.sections) {
        if (s.until === Infinity) { s.until = at + this.xfade; ramp(s.fadeOut.gain, at, 1, 0, this.xfade); }
      }
      const fadeIn = this.ctx.createGain(), fadeOut = this.ctx.createGain();
      fadeIn.connect(fadeOut).connect(this.out);
      if (!first) ramp(fadeIn.gain, at, 0, 1, this.xfade);
      this.sections.push(Object.assign({ spec, fadeIn, fadeOut, start: at, k: 0, until: Infinity },
        timing(spec, this.map)));
      return true;
    }

    // Every pulse starting before `t`. Live (`now` given): beats before `now` (a late timer)
    // are skipped, and a level faded out and silent by `now` is disconnected.
    scheduleUntil(t, now) {
      for (const s of this.sections) {
        if (now !== undefined && s.start + s.k * s.beat < now) {
          s.k = Math.max(s.k, Math.ceil((now - s.start) / s.beat));
        }
        for (;;) {
          const on = s.start + s.k * s.beat;
          if (on >= Math.min(t, s.until)) break;
          s.k += 1;
          if (audible(s.spec)) {
            schedulePulse(this.ctx, s.fadeIn, s.spec.notes, s.spec.velocity, s.spec.program, on, s.hold);
            this.pulses += 1;
          }
        }
      }
      if (now === undefined) return;
      this.sections = this.sections.filter(s => {
        const done = now > s.until + s.hold;
        if (done) s.fadeOut.disconnect();
        return !done;
      });
    }
  }

  // Pure render of [[level, seconds], ...] from startTime, crossfades and all, as the live
  // engine plays it (`xfade`: XFADE_S unless given); returns the times of the changes.
  function renderSequence(ctx, segments, map, startTime, dest, xfade) {
    const player = new Player(ctx, dest || ctx.destination, map, xfade), changes = [];
    let t = startTime;
    for (const [level, seconds] of segments) {
      if (player.setLevel(level, t) && t > startTime) changes.push(t);
      t += seconds;
      player.scheduleUntil(t);
    }
    return changes;
  }

  function checkMap(map) {  // the shape the engine needs (the API validated the rest)
    if (!map || typeof map.levels !== "object") throw new Error("sound map: no levels");
    for (const lv of LEVELS) {
      const s = map.levels[lv];
      if (!s || !Array.isArray(s.notes) || !(s.tempo_bpm >= 4 && s.tempo_bpm <= 1000)
        || !(s.velocity >= 0 && s.velocity <= 127) || !(s.program >= 0 && s.program <= 127)) {
        throw new Error(`sound map: levels.${lv} is not playable`);
      }
    }
    return map;
  }

  // ----------------------------------------------------------------- the live engine
  const live = { map: null, ctx: null, master: null, motifs: null, player: null, timer: null,
    level: "UNDEFINED", muted: false, volume: 0.5, played: 0, error: null };

  function gainNow() {
    if (!live.master) return;
    const p = live.master.gain, t = live.ctx.currentTime;
    p.cancelScheduledValues(t);
    p.setValueAtTime(p.value, t);
    p.linearRampToValueAtTime(live.muted ? 0 : live.volume, t + RAMP_S);
  }

  function tick() {
    const t = live.ctx.currentTime;
    live.player.scheduleUntil(t + (document.hidden ? HIDDEN_LOOKAHEAD_S : LOOKAHEAD_S), t);
  }

  // The scheduler runs while the context exists, a map is loaded and sound is not muted.
  function run() {
    const want = !!(live.ctx && live.map && !live.muted);
    if (want && !live.player) {
      live.player = new Player(live.ctx, live.master, live.map);
      live.player.setLevel(live.level, live.ctx.currentTime + START_S);
    }
    if (want && live.timer === null) { tick(); live.timer = setInterval(tick, TIMER_MS); }
    if (!want && live.timer !== null) { clearInterval(live.timer); live.timer = null; }
  }

  const LumenSound = {
    LEVELS, TIMBRES, MOTIFS, XFADE_S, LOOKAHEAD_S, timbreOf, timing, noteHz,
    renderLevel, renderMotif, renderSequence, Player,

    load(map) {
      live.map = checkMap(map);
      if (live.player) live.player.map = live.map;
      run();
    },
    // Creates (first time) and resumes the AudioContext: call it from a user's click only.
    start() {
      if (!live.ctx) {
        const AC = window.AudioContext || window.webkitAudioContext;
        if (!AC) { live.error = "this browser has no Web Audio"; return false; }
        live.ctx = new AC();
        live.master = live.ctx.createGain();
        live.master.gain.value = live.muted ? 0 : live.volume;
        live.master.connect(live.ctx.destination);
        live.motifs = live.ctx.createGain();
        live.motifs.connect(live.master);
      }
      live.ctx.resume().catch(e => { live.error = String(e); });
      run();
      return true;
    },
    mute() { live.muted = true; gainNow(); run(); },
    unmute() { live.muted = false; gainNow(); run(); },
    setVolume(v) {
      const x = Number(v);
      if (!Number.isFinite(x)) return false;
      live.volume = Math.min(1, Math.max(0, x));
      gainNow();
      return true;
    },
    setLevel(level) {
      const lv = LEVELS.includes(level) ? level : "UNDEFINED";
      live.level = lv;
      if (live.player) live.player.setLevel(lv, live.ctx.currentTime + START_S);
      return lv === level;
    },
    // An alert's motif over the music; nothing (false) before start(), muted or without Web
    // Audio, and for a kind other than "firing" or "resolved".
    playMotif(kind) {
      if (!live.ctx || live.muted || live.ctx.state !== "running" || !MOTIFS[kind]) return false;
      renderMotif(live.ctx, kind, live.ctx.currentTime + START_S, live.motifs);
      live.played += 1;
      return true;
    },
    state() {
      return { started: !!live.ctx, context: live.ctx ? live.ctx.state : null, muted: live.muted,
        volume: live.volume, level: live.level, loaded: !!live.map, playing: live.timer !== null,
        gain: live.master ? live.master.gain.value : null,
        pulses: live.player ? live.player.pulses : 0, motifs: live.played, error: live.error };
    },
  };
  window.LumenSound = LumenSound;

  // ----------------------------------------------------------------- the page's controls
  const KEY = "lumen.sound";
  function saved() {
    try { return JSON.parse(localStorage.getItem(KEY)) || {}; } catch (e) { return {}; }
  }
  function save() {
    try { localStorage.setItem(KEY, JSON.stringify({ volume: live.volume, muted: live.muted })); } catch (e) { /* private mode */ }
  }

  function controls() {
    const button = document.getElementById("sound-toggle"), slider = document.getElementById("sound-volume");
    if (!button || !slider) return;
    const was = saved();
    if (typeof was.volume === "number") LumenSound.setVolume(was.volume);
    live.muted = was.muted === true;
    slider.value = String(live.volume);
    const label = () => {
      const s = LumenSound.state();
      button.textContent = !s.started ? "▶ Listen" : s.muted ? "▶ Unmute" : "■ Mute";
      button.setAttribute("aria-pressed", String(s.started && !s.muted));
      button.title = live.error ? `sound: ${live.error}` : !s.started
        ? "Hear the Safety Music level (sound starts on this click)" : "";
    };
    button.addEventListener("click", () => {
      if (!live.ctx || live.muted) { LumenSound.unmute(); LumenSound.start(); } else LumenSound.mute();
      save();
      label();
    });
    slider.addEventListener("input", () => { LumenSound.setVolume(slider.value); save(); });
    label();
    fetch("/api/sound", { cache: "no-store" })
      .then(r => { if (!r.ok) throw new Error(`/api/sound: HTTP ${r.status}`); return r.json(); })
      .then(map => LumenSound.load(map))
      .catch(e => { live.error = e.message; button.disabled = true; label(); });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", controls);
  else controls();
})();
