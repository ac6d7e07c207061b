// Lumen live page: polls the read-only API every few seconds and redraws the charts.
// No build step; uPlot is vendored (lumen/api/static/vendor/uplot-1.6.31, MIT).
"use strict";
const WINDOW = "15m", STEP = "10s", REFRESH_MS = 5000;
const LEVEL_COLOR = { CALM: "#2ea043", TENSE: "#d29922", ALERT: "#f85149", UNDEFINED: "#3b4660" };
const charts = {};
// Test hooks: ready once every chart has data; host: the host shown ("" for all of them);
// hosts: the hosts /api/hosts lists.
window.lumen = { ready: false, renders: 0, points: 0, errors: [], host: "", hosts: [] };
let host = "";  // the chosen host ("" = all hosts), passed as host= to series, slo and rmb

function width(id) { return document.getElementById(id).clientWidth || 800; }

function bands(u) {  // SAFE / WATCH / RISK backgrounds on the residual chart
  const ctx = u.ctx, { left, top, width: w, height: h } = u.bbox;
  for (const [lo, hi, color] of [[0, 0.55, "rgba(46,160,67,0.12)"], [0.55, 0.85, "rgba(210,153,34,0.14)"], [0.85, 1, "rgba(248,81,73,0.16)"]]) {
    const y1 = u.valToPos(hi, "y", true), y0 = u.valToPos(lo, "y", true);
    ctx.fillStyle = color; ctx.fillRect(left, y1, w, y0 - y1);
  }
}

function sloLine(u) {  // the 0.05 rollback-ratio SLO on the right axis
  const y = u.valToPos(0.05, "ratio", true), { left, width: w } = u.bbox, ctx = u.ctx;
  ctx.save(); ctx.strokeStyle = "#f85149"; ctx.setLineDash([6, 4]); ctx.beginPath();
  ctx.moveTo(left, y); ctx.lineTo(left + w, y); ctx.stroke(); ctx.restore();
}

function axes(extra) {
  const base = { stroke: "#8a96ad", grid: { stroke: "#243049" }, ticks: { stroke: "#243049" } };
  return [Object.assign({}, base), Object.assign({}, base), ...(extra || []).map(e => Object.assign({}, base, e))];
}

let xRange = null;  // every chart spans the whole window, aligned with the level strip

function make(id, opts, data) {
  if (!charts[id]) {
    opts.width = width(id); opts.height = 220;
    opts.scales = Object.assign({ x: { time: true, range: () => xRange } }, opts.scales);
    charts[id] = new uPlot(opts, data, document.getElementById(id));
  } else {
    charts[id].setData(data);
  }
  charts[id].setScale("x", { min: xRange[0], max: xRange[1] });
}

function drawStrip(rows, lo, hi) {
  const c = document.getElementById("strip"), ctx = c.getContext("2d");
  c.width = c.clientWidth; const w = c.width, h = c.height;
  ctx.fillStyle = LEVEL_COLOR.UNDEFINED; ctx.fillRect(0, 0, w, h);
  const span = Math.max(1, hi - lo);
  for (let i = 0; i < rows.length; i++) {
    const x0 = (rows[i].t - lo) / span * w, x1 = i + 1 < rows.length ? (rows[i + 1].t - lo) / span * w : w;
    ctx.fillStyle = LEVEL_COLOR[rows[i].level] || LEVEL_COLOR.UNDEFINED; ctx.fillRect(x0, 0, Math.max(1, x1 - x0), h);
  }
}

async function getJSON(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
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

async function refresh() {
  const status = document.getElementById("status"), shown = host;
  try {
    const [s, slo, newest, hosts] = await Promise.all([
      getJSON(withHost(`/api/series?window=${WINDOW}&step=${STEP}`)), getJSON(withHost("/api/slo")),
      getJSON(withHost("/api/rmb?limit=15")), getJSON(`/api/hosts?window=${WINDOW}`).catch(() => null)]);
    if (shown !== host) return;  // another host was chosen meanwhile: its refresh draws
    showHosts(hosts);
    const now = Date.now() / 1000;
    xRange = [now - s.window_s, now];
    const r = s.rmb, t = r.map(b => b.t);
    make("residual", { series: [{}, { label: "residual mean", stroke: "#79c0ff", width: 2 }, { label: "residual max", stroke: "#a371f7" }],
      scales: { y: { range: [0, 1] } }, axes: axes(), hooks: { drawClear: [bands] } },
      [t, r.map(b => b.residual_mean), r.map(b => b.residual_max)]);
    make("events", { series: [{}, { label: "events", stroke: "#79c0ff", fill: "rgba(121,192,255,0.15)" },
      { label: "rollbacks", stroke: "#f85149" }, { label: "rollback ratio", stroke: "#d29922", scale: "ratio", width: 2 }],
      scales: { ratio: { range: [0, 0.25] } }, axes: axes([{ scale: "ratio", side: 1, grid: { show: false } }]), hooks: { draw: [sloLine] } },
      [t, r.map(b => b.events), r.map(b => b.rollbacks), r.map(b => b.ratio)]);
    const u = s.ure, tu = u.map(b => b.t);
    make("ure", { series: [{}, { label: "harmony", stroke: "#3fb950", width: 2 }, { label: "coherence", stroke: "#79c0ff", width: 2 },
      { label: "hz", stroke: "#d29922", scale: "hz" }, { label: "actions", stroke: "#f85149", scale: "hz", points: { show: true }, width: 0 }],
      scales: { y: { range: [0, 1] }, hz: { range: [0, 10] } }, axes: axes([{ scale: "hz", side: 1, grid: { show: false } }]) },
      [tu, u.map(b => b.harmony), u.map(b => b.coherence), u.map(b => b.hz), u.map(b => b.actions || null)]);
    drawStrip(s.safety, now - s.window_s, now);
    document.querySelector("#slo tbody").innerHTML = slo.verdicts.map(v =>
      `<tr><td>${v.id}</td><td>${v.metric}</td><td>${fmt(v.value, 4)} / ${v.threshold}</td><td class="${v.status}">${v.status}</td></tr>`).join("")
      + `<tr><td colspan="3">overall</td><td class="${slo.result}">${slo.result}</td></tr>`;
    document.querySelector("#newest tbody").innerHTML = newest.items.map(e =>
      `<tr><td>${e.ts.replace("T", " ").slice(0, 23)}</td><td>${e.event_type}</td><td>${fmt(e.residual, 3)}</td><td>${e.risk}</td></tr>`).join("");
    window.lumen.points = t.length + tu.length + s.safety.length;
    window.lumen.renders += 1;
    window.lumen.ready = t.length > 0 && tu.length > 0 && s.safety.length > 0;
    window.lumen.host = host;
    status.className = "";
    status.textContent = `updated ${new Date().toLocaleTimeString()} · ${r.reduce((a, b) => a + b.events, 0)} events in ${WINDOW}`
      + (host ? ` on ${host}` : "");
  } catch (e) {
    window.lumen.errors.push(String(e));
    status.className = "err"; status.textContent = `cannot reach the API: ${e.message}`;
  }
}

document.getElementById("host").addEventListener("change", e => { host = e.target.value; refresh(); });
refresh();
setInterval(refresh, REFRESH_MS);
window.addEventListener("resize", () => { for (const id in charts) charts[id].setSize({ width: width(id), height: 220 }); });
