// Lumen live page: the charts and tables of the read-only API, kept current by its event
// stream (/api/stream, server-sent events), or by polling every few seconds where the
// stream is not available. No build step; uPlot is vendored (lumen/api/static/vendor/uplot-1.6.31, MIT).
//
// Live: an EventSource on /api/stream. Its `hello` (a fresh stream) loads everything once
// from the list endpoints; then `rmb` events fill the newest-events table, `alert` events
// the Alerts card (and play the alert's motif through window.LumenSound, when present),
// `level` events set the Safety Music level (LumenSound.setLevel), `slo` events the SLO
// table; `reset` (rows missed beyond what a reconnect replays) loads the lists again. The
// charts are /api/series: fetched again when new data arrived, at most every DRAW_MS. On a
// dropped connection the browser reconnects by itself and sends Last-Event-ID: the server
// replays what was missed. When EventSource is missing, or the stream fails STREAM_FAILS
// times in a row, the page polls every REFRESH_MS instead and tries the stream again after
// STREAM_RETRY_MS (passing the last event id it saw). Requests revalidate (ETag, 304).
//
// What is drawn: complete time buckets only. The bucket still in progress (and one that
// ended less than SETTLE_S ago, whose last events may not be stored yet) holds only part
// of its events, so drawn it would look like a drop; it is left out, and the newest point
// is at most one step + SETTLE_S old (the status line still counts every stored event).
// A bucket that began before the window is cut by it, and left out too.
// The x axis ends now and starts at the window's start, or at the first bucket when the
// data is younger than the window; all charts and the level strip share that range, and
// the same left and right axis widths, so one instant is at one x position everywhere.
"use strict";
const WINDOW = "15m", STEP = "10s", REFRESH_MS = 5000;
const DRAW_MS = 5000;  // live: the charts are fetched again at most this often, when data arrived
const IDLE_DRAW_MS = 30000;  // live: ... and this often without new data (the x axis moves on)
const STREAM_FAILS = 5, STREAM_RETRY_MS = 20000;  // failures in a row before polling; retry after
const NEWEST = 15, ALERTS = 10;  // rows of the newest-events table and of the Alerts card
const SEEN_MAX = 20000;  // rmb events remembered for the test hook (stream.rmb)
const SETTLE_S = 2;  // the ingester's lag: a bucket counts as complete this long after its end
const SLO_RATIO = 0.05;  // RMB-ROLL-001, the dashed line on the rollback-ratio axis
const RATIO_TOPS = [0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1];
const AXIS_PX = 60;  // width of every chart's left and right axis
const LEVEL_COLOR = { CALM: "#2ea043", TENSE: "#d29922", ALERT: "#f85149", UNDEFINED: "#3b4660" };
const charts = {};
// Test hooks: ready once every chart has data; host: the host shown ("" for all of them);
// hosts: the hosts /api/hosts lists; charts: the uPlot instances; series: the last
// /api/series answer, now: the instant it was drawn for (s); xRange: [from, to] of every
// chart; strip: the level strip's range, its drawn area (CSS px from the page's left) and
// first bucket. stream: the event stream (mode "stream" or "polling", state, opens, hellos,
// resets, errors, lastId, rmb: the ts of each rmb event received, in order); played: each
// alert motif asked for ({motif, id, alertname, sound: whether LumenSound was there});
// levels: each level set ({level, host, sound}); alerts: the Alerts card's items.
window.lumen = { ready: false, renders: 0, points: 0, errors: [], host: "", hosts: [], charts,
  series: null, now: null, xRange: null, strip: null, settle_s: SETTLE_S,
  stream: { mode: "", state: "off", opens: 0, hellos: 0, resets: 0, errors: 0, lastId: null, rmb: [] },
  played: [], levels: [], alerts: [] };
let host = "";  // the chosen host ("" = all hosts), passed as host= to every request
let xRange = null;
let strip = null;  // what drawStrip drew last, redrawn on resize

function width(id) { return document.getElementById(id).clientWidth || 800; }

function bands(u) {  // SAFE / WATCH / RISK backgrounds on the residual chart
  const ctx = u.ctx, { left, width: w } = u.bbox;
  for (const [lo, hi, color] of [[0, 0.55, "rgba(46,160,67,0.12)"], [0.55, 0.85, "rgba(210,153,34,0.14)"], [0.85, 1, "rgba(248,81,73,0.16)"]]) {
    const y1 = u.valToPos(hi, "y", true), y0 = u.valToPos(lo, "y", true);
    ctx.fillStyle = color; ctx.fillRect(left, y1, w, y0 - y1);
  }
}

function sloLine(u) {  // the rollback-ratio SLO on the right axis
  const y = u.valToPos(SLO_RATIO, "ratio", true), { left, width: w } = u.bbox, ctx = u.ctx;
  ctx.save(); ctx.strokeStyle = "#f85149"; ctx.setLineDash([6, 4]); ctx.beginPath();
  ctx.moveTo(left, y); ctx.lineTo(left + w, y); ctx.stroke(); ctx.restore();
}

// The ratio axis: from 0 to the smallest of RATIO_TOPS above both the data and the SLO
// line, with 15 % headroom (a ratio of 0.35 gets 0.5, a spike's 0.7 gets 1); never above 1.
function ratioTop(dataMax) {
  const want = Math.max(dataMax || 0, SLO_RATIO) * 1.15;
  return RATIO_TOPS.find(top => top >= want) || 1;
}

function axes(right) {  // x, the left y axis, and a right axis (blank when `right` is not given)
  const base = { stroke: "#8a96ad", grid: { stroke: "#243049" }, ticks: { stroke: "#243049" } };
  const blank = { scale: "y", values: (u, splits) => splits.map(() => ""), ticks: { show: false } };
  return [Object.assign({}, base), Object.assign({}, base, { size: AXIS_PX }),
    Object.assign({}, base, { side: 1, size: AXIS_PX, grid: { show: false } }, right || blank)];
}

// A legend value: the hovered bucket's; not hovering, the newest bucket's (`zero`: a
// missing value there means 0, as for the actions series drawn without its zeros).
function legendValue(d, zero) {
  return (u, v, si, idx) => {
    const col = u.data[si];
    if (idx === null || idx === undefined) v = col.length ? col[col.length - 1] : null;
    return fmt(v === null && zero && col.length ? 0 : v, d);
  };
}

function legendTime(u, v, si, idx) {
  const col = u.data[0], t = idx === null || idx === undefined ? col[col.length - 1] : v;
  return t === null || t === undefined ? "–" : new Date(t * 1000).toLocaleTimeString();
}

function line(label, stroke, d, more) {
  return Object.assign({ label, stroke, value: legendValue(d) }, more);
}

const SPECS = {
  residual: () => ({ series: [{ label: "bucket", value: legendTime },
    line("residual mean", "#79c0ff", 3, { width: 2 }), line("residual max", "#a371f7", 3)],
  scales: { y: { range: [0, 1] } }, axes: axes(), hooks: { drawClear: [bands] } }),
  events: () => ({ series: [{ label: "bucket", value: legendTime },
    line("events", "#79c0ff", 0, { fill: "rgba(121,192,255,0.15)" }), line("rollbacks", "#f85149", 0),
    line("rollback ratio", "#d29922", 4, { scale: "ratio", width: 2 })],
  scales: { ratio: { range: (u, lo, hi) => [0, ratioTop(hi)] } },
  axes: axes({ scale: "ratio" }), hooks: { draw: [sloLine] } }),
  ure: () => ({ series: [{ label: "bucket", value: legendTime },
    line("harmony", "#3fb950", 3, { width: 2 }), line("coherence", "#79c0ff", 3, { width: 2 }),
    line("hz", "#d29922", 2, { scale: "hz" }),
    line("actions", "#f85149", 0, { scale: "hz", points: { show: true }, width: 0, value: legendValue(0, true) })],
  scales: { y: { range: [0, 1] }, hz: { range: [0, 10] } }, axes: axes({ scale: "hz" }) }),
};

function draw(id, data) {
  if (!charts[id]) {
    const opts = SPECS[id]();
    opts.width = width(id); opts.height = 220;
    opts.scales = Object.assign({ x: { time: true, range: () => xRange } }, opts.scales);
    charts[id] = new uPlot(opts, data, document.getElementById(id));
  } else {
    charts[id].setData(data);
  }
  charts[id].setScale("x", { min: xRange[0], max: xRange[1] });
}

// The worst Safety Music level of each bucket over [lo, hi], drawn between the charts'
// axes (AXIS_PX from each side, as their plot areas); no bucket: "no data".
function drawStrip(rows, lo, hi, step) {
  const c = document.getElementById("strip"), ctx = c.getContext("2d");
  c.width = c.clientWidth; const w = c.width, h = c.height;
  const left = AXIS_PX, pw = Math.max(1, w - 2 * AXIS_PX), span = Math.max(1, hi - lo);
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = LEVEL_COLOR.UNDEFINED; ctx.fillRect(left, 0, pw, h);
  for (const r of rows) {
    const x0 = left + Math.max(0, (r.t - lo) / span) * pw, x1 = left + Math.min(1, (r.t + step - lo) / span) * pw;
    ctx.fillStyle = LEVEL_COLOR[r.level] || LEVEL_COLOR.UNDEFINED; ctx.fillRect(x0, 0, Math.max(1, x1 - x0), h);
  }
  strip = { rows, lo, hi, step };
  window.lumen.strip = { range: [lo, hi], left: c.getBoundingClientRect().left + left, width: pw,
    first: rows.length ? rows[0].t : null };
}

// The level Safety Music plays on the page (sound.js): the newest bucket's (the worst level
// in it so far), or UNDEFINED, silence, when the newest bucket ended more than two steps
// ago (the loop or ingest has stopped: no data is not a calm system).
function soundLevel(s, now) {
  const b = s.safety[s.safety.length - 1];
  return b && b.t + 3 * s.step_s + SETTLE_S >= now ? b.level : "UNDEFINED";
}

async function getJSON(path) {
  const r = await fetch(path, { cache: "no-cache" });  // revalidated: 304 when unchanged
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return { body: await r.json(), date: Date.parse(r.headers.get("Date")) };
}

function fmt(x, d) { return x === null || x === undefined ? "–" : Number(x).toFixed(d); }

function esc(s) {
  return String(s).replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function age(s) {
  if (s === null || s === undefined) return "–";
  if (s < 120) return `${Math.max(0, Math.round(s))} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

function withHost(path) {  // path plus host=… when one host is chosen
  return host ? `${path}${path.includes("?") ? "&" : "?"}host=${encodeURIComponent(host)}` : path;
}

// The selector and the Hosts card appear only when the store holds more than one host.
function showHosts(h) {
  if (!h) return;  // /api/hosts did not answer this time: leave things as they are
  const list = h.hosts, names = list.map(x => x.host), many = names.length > 1;
  document.getElementById("hostpick").hidden = !many;
  document.getElementById("hostcard").hidden = !many;
  window.lumen.hosts = names;
  if (!many) { host = ""; return; }
  const sel = document.getElementById("host");
  if (sel.dataset.names !== JSON.stringify(names)) {
    sel.innerHTML = `<option value="">all hosts</option>` + names.map(n => `<option value="${esc(n)}">${esc(n)}</option>`).join("");
    sel.dataset.names = JSON.stringify(names);
  }
  sel.value = host;
  document.querySelector("#hosts tbody").innerHTML = list.map(x =>
    `<tr class="${x.host === host ? "sel" : ""}"><td>${esc(x.host)}</td><td>${x.rmb.events}</td>`
    + `<td>${fmt(x.rmb.rollback_ratio, 4)}</td><td>${age(x.rmb.newest.age_s)}</td></tr>`).join("");
}

// The buckets of `rows` that are complete at `now` and inside the window.
function complete(rows, s, now) {
  return rows.filter(b => b.t >= now - s.window_s && b.t + s.step_s + SETTLE_S <= now);
}

// Now, on the API's clock (its Date header, whole seconds; + 0.5 s on average), so a
// browser whose clock is off neither drops complete buckets nor draws incomplete ones.
function serverNow(date) {
  return Number.isFinite(date) ? date / 1000 + 0.5 : Date.now() / 1000;
}

// The charts: /api/series (and /api/hosts, for the selector and the Hosts card).
async function loadCharts() {
  const shown = host;
  const [res, hosts] = await Promise.all([getJSON(withHost(`/api/series?window=${WINDOW}&step=${STEP}`)),
    getJSON(`/api/hosts?window=${WINDOW}`).catch(() => null)]);
  if (shown !== host) return false;  // another host was chosen meanwhile: its load draws
  showHosts(hosts && hosts.body);
  const s = res.body, now = serverNow(res.date);
  const r = complete(s.rmb, s, now), u = complete(s.ure, s, now), lv = complete(s.safety, s, now);
  // The axis starts at the first bucket the API has (the window's start, if older).
  const firsts = [s.rmb, s.ure, s.safety].filter(a => a.length).map(a => a[0].t);
  xRange = [firsts.length ? Math.max(now - s.window_s, Math.min(...firsts)) : now - s.window_s, now];
  const t = r.map(b => b.t), tu = u.map(b => b.t);
  draw("residual", [t, r.map(b => b.residual_mean), r.map(b => b.residual_max)]);
  draw("events", [t, r.map(b => b.events), r.map(b => b.rollbacks), r.map(b => b.ratio)]);
  draw("ure", [tu, u.map(b => b.harmony), u.map(b => b.coherence), u.map(b => b.hz), u.map(b => b.actions || null)]);
  drawStrip(lv, xRange[0], xRange[1], s.step_s);
  // The level from the newest bucket: when polling, and live until a level event came; and
  // silence (UNDEFINED) once the newest bucket is old, pushed or not: no data is not calm.
  const heard = soundLevel(s, now);
  if (!live() || !levelPushed || heard === "UNDEFINED") setLevel(heard, host);
  Object.assign(window.lumen, { series: s, now, xRange, host, points: t.length + tu.length + lv.length,
    ready: t.length > 0 && tu.length > 0 && lv.length > 0 });
  window.lumen.renders += 1;
  const status = document.getElementById("status");
  status.className = "";
  status.textContent = `updated ${new Date().toLocaleTimeString()} · ${s.rmb.reduce((a, b) => a + b.events, 0)} events in ${WINDOW}`
    + (host ? ` on ${host}` : "") + (live() ? " · live" : " · polling");
  return true;
}

function showSlo(slo) {
  document.querySelector("#slo tbody").innerHTML = slo.verdicts.map(v =>
    `<tr><td>${esc(v.id)}</td><td>${esc(v.metric)}</td><td>${fmt(v.value, 4)} / ${v.threshold}</td><td class="${esc(v.status)}">${esc(v.status)}</td></tr>`).join("")
    + `<tr><td colspan="3">overall</td><td class="${esc(slo.result)}">${esc(slo.result)}</td></tr>`;
}

// The newest RMB events: the list's rows, then each pushed row on top (once: a replayed row
// already listed is not shown twice).
let newest = [];
const rowKey = e => `${e.host}|${e.entity_id}|${e.ts}|${e.event_type}`;

function showNewest() {
  document.querySelector("#newest tbody").innerHTML = newest.map(e =>
    `<tr><td>${esc(e.ts.replace("T", " ").slice(0, 23))}</td><td>${esc(e.event_type)}</td><td>${fmt(e.residual, 3)}</td><td>${esc(e.risk)}</td></tr>`).join("");
}

function pushNewest(e) {
  const k = rowKey(e);
  if (newest.some(x => rowKey(x) === k)) return;
  newest.unshift(e);
  newest.sort((a, b) => (a.ts < b.ts ? 1 : a.ts > b.ts ? -1 : 0));
  newest = newest.slice(0, NEWEST);
  showNewest();
}

// Alerts (Alertmanager's, through the webhook receiver): newest first, firing red, resolved
// green. A new one (pushed, or found by a poll) plays its motif once.
let alerts = [], alertsLoaded = false;
const playedIds = new Set();

function showAlerts() {
  window.lumen.alerts = alerts;
  document.getElementById("alertcount").textContent = alerts.length ? `${alerts.length} newest` : "none yet";
  document.querySelector("#alerts tbody").innerHTML = alerts.map(a =>
    `<tr class="${a.status === "firing" ? "firing" : "resolved"}"><td>${esc(a.ts.replace("T", " ").slice(0, 19))}</td>`
    + `<td>${esc(a.status)}</td><td>${esc(a.alertname)}</td><td>${esc(a.severity)}</td><td>${esc(a.summary)}</td></tr>`).join("");
}

function newAlert(a) {
  if (!alerts.some(x => x.id === a.id)) {
    alerts.unshift(a);
    alerts.sort((x, y) => y.id - x.id);
    alerts = alerts.slice(0, ALERTS);
    showAlerts();
  }
  if (playedIds.has(a.id)) return;
  playedIds.add(a.id);
  const sound = window.LumenSound;
  window.lumen.played.push({ motif: a.status, id: a.id, alertname: a.alertname, sound: !!sound });
  if (sound) sound.playMotif(a.status);
}

// The Safety Music level: the worst of the hosts' current levels is what LumenSound plays.
const SEVERITY = { UNDEFINED: -1, CALM: 0, TENSE: 1, ALERT: 2 };
const levelOf = {};
let levelNow = null, levelPushed = false;

function setLevel(level, from) {
  levelOf[from || ""] = level;
  const worst = Object.values(levelOf).reduce((a, b) => ((SEVERITY[b] ?? -1) > (SEVERITY[a] ?? -1) ? b : a));
  document.getElementById("levelnow").textContent = worst;
  document.getElementById("levelnow").className = worst;
  if (worst === levelNow) return;
  levelNow = worst;
  const sound = window.LumenSound;
  window.lumen.levels.push({ level: worst, host: from || "", sound: !!sound });
  if (sound) sound.setLevel(worst);
}

// Everything from the list endpoints: on load, on a host change, after a reset, and each
// poll when there is no stream.
async function refresh() {
  const status = document.getElementById("status"), shown = host;
  try {
    const [slo, rows, al] = await Promise.all([getJSON(withHost("/api/slo")),
      getJSON(withHost(`/api/rmb?limit=${NEWEST}`)), getJSON(withHost(`/api/alerts?limit=${ALERTS}`))]);
    if (shown !== host) return;  // another host was chosen meanwhile: its refresh draws
    showSlo(slo.body);
    newest = rows.body.items;
    showNewest();
    // The first load shows what is there; after it, polling plays what is new.
    for (const a of al.body.items.slice().reverse()) {
      if (!alertsLoaded) playedIds.add(a.id);
      newAlert(a);
    }
    alertsLoaded = true;
    showAlerts();
    await loadCharts();
    lastDraw = Date.now();
  } catch (e) {
    window.lumen.errors.push(String(e));
    status.className = "err"; status.textContent = `cannot reach the API: ${e.message}`;
  }
}

// ------------------------------------------------------------------ the event stream
let es = null, fails = 0, pollTimer = null, retryTimer = null, drawTimer = null, lastDraw = 0, dirty = false;
const S = window.lumen.stream;

function live() { return S.mode === "stream" && S.state === "open"; }

function startPolling() {
  S.mode = "polling";
  if (!pollTimer) { refresh(); pollTimer = setInterval(refresh, REFRESH_MS); }
}

function stopPolling() {
  if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
}

// The charts, again, once DRAW_MS have passed since the last time, when data arrived.
function changed() {
  dirty = true;
  if (drawTimer) return;
  drawTimer = setTimeout(() => {
    drawTimer = null;
    if (!live()) return;  // polling draws by itself
    dirty = false;
    lastDraw = Date.now();
    loadCharts().catch(e => window.lumen.errors.push(String(e)));
  }, Math.max(0, lastDraw + DRAW_MS - Date.now()));
}

function on(name, handle) {
  es.addEventListener(name, e => {
    S.lastId = e.lastEventId || S.lastId;
    try { handle(JSON.parse(e.data)); } catch (err) { window.lumen.errors.push(`${name}: ${err}`); }
  });
}

function openStream() {
  if (retryTimer) { clearTimeout(retryTimer); retryTimer = null; }
  if (es) es.close();
  const params = new URLSearchParams();
  if (host) params.set("host", host);
  if (S.lastId) params.set("last_event_id", S.lastId);  // a new EventSource sends no Last-Event-ID
  const url = "/api/stream" + (params.toString() ? `?${params}` : "");
  S.state = "connecting"; S.mode = S.mode || "stream";
  es = new EventSource(url);
  es.onopen = () => { S.state = "open"; S.opens += 1; fails = 0; };
  es.onerror = () => {
    S.errors += 1; fails += 1;
    S.state = es.readyState === EventSource.CLOSED ? "closed" : "connecting";
    if (es.readyState === EventSource.CLOSED || fails >= STREAM_FAILS) {
      es.close(); es = null; S.state = "off";
      startPolling();
      retryTimer = setTimeout(openStream, STREAM_RETRY_MS);
    }
  };
  on("hello", h => {
    S.hellos += 1; S.state = "open"; fails = 0;
    const wasPolling = S.mode === "polling";
    S.mode = "stream";
    stopPolling();
    if (!h.resumed) refresh();  // a fresh stream: what is there now, then what comes
    else if (wasPolling) changed();
  });
  on("rmb", e => {
    S.rmb.push(e.ts);
    if (S.rmb.length > SEEN_MAX) S.rmb.splice(0, S.rmb.length - SEEN_MAX);
    pushNewest(e);
    changed();
  });
  on("level", e => {
    if (!levelPushed) for (const k of Object.keys(levelOf)) delete levelOf[k];  // the bucket's guess
    levelPushed = true;
    setLevel(e.level, e.host);
    changed();
  });
  on("alert", e => newAlert(e));
  on("slo", showSlo);
  on("reset", () => { S.resets += 1; refresh(); });
}

function start() {
  if (typeof window.EventSource !== "function") startPolling();
  else openStream();
  // Live, the charts are drawn again now and then even without new data (the axis moves).
  setInterval(() => { if (live() && Date.now() - lastDraw >= IDLE_DRAW_MS) changed(); }, IDLE_DRAW_MS / 2);
}

document.getElementById("host").addEventListener("change", e => {
  host = e.target.value;
  newest = []; alerts = []; alertsLoaded = false; levelPushed = false;
  for (const k of Object.keys(levelOf)) delete levelOf[k];
  if (es) { S.lastId = null; openStream(); }  // another filter: a fresh stream, its hello loads
  else refresh();
});
start();
window.addEventListener("resize", () => {
  for (const id in charts) charts[id].setSize({ width: width(id), height: 220 });
  if (strip) drawStrip(strip.rows, strip.lo, strip.hi, strip.step);
});
