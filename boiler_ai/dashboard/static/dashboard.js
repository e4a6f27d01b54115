// boiler-ai dashboard: polls the dashboard process (never the daemon) and draws with uPlot.
"use strict";

const MODE_LABEL = { active: "AI IN CONTROL", disabled: "DCS IN CONTROL", shadow: "SHADOW", releasing: "HANDING BACK" };
const TREND_TITLE = {
  boiler_efficiency_pct: "Boiler efficiency (%)", o2_economiser_pct: "O2 at economiser outlet (%)",
  co_ppm: "CO (ppm)", nox_mg_nm3: "NOx (mg/Nm3)", main_steam_temp_c: "Main steam temperature (degC)",
  reheat_steam_temp_c: "Hot reheat temperature (degC)",
};
const STATUS_MS = 1000;
const TREND_MS = 2000;
const REFETCH_MS = 60000;  // the whole window now and then, so the client drops what the server dropped

const $ = (id) => document.getElementById(id);
const fmt = (x, d = 3) => (x === null || x === undefined ? "-" : Number(x).toFixed(d));
let trend = null;
let charts = {};
let lastFull = 0;

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

function showStatus(s) {
  $("source").textContent = `source: ${s.source}` + (s.lost ? ` - ${s.lost} decisions missing from the log` : "");
  const mode = $("mode");
  if (s.seq === null) {
    mode.textContent = "waiting for decisions";
    mode.dataset.mode = "";
    mode.className = "mode mode-unknown";
    return;
  }
  const stale = s.age_s !== null && s.age_s > s.stale_after_s;
  mode.textContent = MODE_LABEL[s.mode] || s.mode;
  mode.dataset.mode = s.mode;
  mode.dataset.status = s.ai_status;
  mode.className = `mode mode-${s.mode}` + (stale ? " stale" : "");
  $("unit").textContent = s.unit_id;
  $("reason-code").textContent = `AI_STATUS ${s.ai_status}  AI_REASON ${s.ai_reason.code}`;
  $("reason").textContent = s.ai_reason.text;
  $("reason-action").textContent = s.ai_reason.action;
  $("seq").textContent = `decision ${s.seq}`;
  $("age").textContent = stale ? `NO NEW DECISION FOR ${s.age_s.toFixed(0)} s` : s.time_utc;
  $("headline").textContent = s.headline;

  const body = $("mvs").tBodies[0];
  body.replaceChildren();
  for (const mv of s.mvs) {
    const row = body.insertRow();
    row.dataset.mv = mv.mv;
    const ai = mv.written !== null ? mv.written : mv.read_back;
    const lim = mv.limits;
    // greyed: out of the AI's hands (taken back by the operator, or its DCS loop not available)
    if (mv.handed_back || mv.binding.some((b) => b.bound === "unavailable")) row.className = "handed-back";
    cell(row, mv.mv);
    cell(row, mv.unit);
    cell(row, fmt(mv.u_dcs), "num");
    cell(row, fmt(ai), "num");
    cell(row, ai === null || mv.u_dcs === null ? "-" : fmt(ai - mv.u_dcs), "num");
    cell(row, fmt(mv.requested), "num");
    cell(row, fmt(mv.projected), "num");
    cell(row, lim ? `${lim.min} .. ${lim.max}, \u00b1${lim.max_deviation}` : "-");
    cell(row, mv.note || mv.binding.map((b) => b.text + (b.by >= 5e-4 ? ` (held back ${fmt(b.by)})` : "")).join("; "),
         "binding");
  }
  const rows = s.constraints.filter((c) => c.kind !== "mv");
  $("rows").textContent = rows.length ? "Rules at their limit: " +
    rows.map((c) => `${c.name}` + (c.by >= 5e-4 ? ` (request ${fmt(c.by)} past it)` : "")).join("; ") : "";

  const t = s.trust;
  $("spread").textContent = !t ? "model did not run" : t.spread === null ? "no ensemble" : fmt(t.spread);
  $("distance").textContent = s.envelope_distance === null ? "-" : fmt(s.envelope_distance);
  $("ooe").textContent = !t ? "-" : t.out_of_training_envelope.length ? t.out_of_training_envelope.join(", ") : "none";
  $("model").textContent = s.model;

  const rel = $("releases").tBodies[0];
  rel.replaceChildren();
  const names = Object.keys(s.releases).sort((a, b) => s.releases[b] - s.releases[a]);
  for (const name of names) {
    const row = rel.insertRow();
    cell(row, name);
    cell(row, s.releases_text[name]);
    cell(row, s.releases[name], "num");
  }
  if (!names.length) cell(rel.insertRow(), "no release in the window");
}

function chartOpts(title, width) {
  return {
    title, width, height: 170,
    scales: { x: { time: true } },
    series: [{}, { label: title, stroke: "#1f4e9c", width: 1.5, spanGaps: false }],
    legend: { show: false },
    cursor: { drag: { x: true, y: false } },
  };
}

function drawTrends() {
  const box = $("trends");
  const width = Math.max(320, Math.floor(box.clientWidth / 2) - 16);
  const series = Object.assign({}, trend.signals,
    { spread: trend.spread, envelope_distance: trend.envelope_distance, ai_status: trend.ai_status });
  for (const [name, values] of Object.entries(series)) {
    let c = charts[name];
    const data = [trend.time, values];
    if (!c) {
      const el = document.createElement("div");
      el.className = "trend";
      el.id = `trend-${name}`;
      box.appendChild(el);
      const title = TREND_TITLE[name] || { spread: "Ensemble spread", envelope_distance: "Training-envelope distance",
        ai_status: "AI_STATUS (0 DCS, 1 shadow, 2 AI, 3 handing back)" }[name] || name;
      const plot = new uPlot(chartOpts(title, width), data, el);
      plot.over.addEventListener("click", () => {
        const i = plot.cursor.idx;
        if (i !== null && i !== undefined) explain(trend.seq[i]);
      });
      c = charts[name] = { el, plot };
    } else {
      c.plot.setData(data);
    }
    c.el.dataset.points = values.filter((v) => v !== null).length;
  }
}

async function refreshTrend() {
  const now = Date.now();
  if (trend === null || now - lastFull > REFETCH_MS) {
    trend = await getJSON("/api/trend");
    lastFull = now;
  } else {
    const last = trend.seq.length ? trend.seq[trend.seq.length - 1] : -1;
    const more = await getJSON(`/api/trend?after=${last}`);
    for (const key of ["seq", "time", "ai_status", "ai_reason", "spread", "envelope_distance"]) {
      trend[key].push(...more[key]);
    }
    for (const name of Object.keys(more.signals)) trend.signals[name].push(...more.signals[name]);
  }
  drawTrends();
}

async function explain(seq) {
  $("explain-seq").value = seq;
  const out = $("explain");
  out.dataset.seq = "";
  try {
    const r = await getJSON(`/api/explain/${seq}`);
    out.textContent = r.text;
    out.dataset.seq = seq;
  } catch (e) {
    out.textContent = `decision ${seq}: ${e.message}`;
  }
}

async function loop(fn, ms) {
  try { await fn(); } catch (e) { console.error(e); }
  setTimeout(() => loop(fn, ms), ms);
}

$("explain-form").addEventListener("submit", (e) => { e.preventDefault(); explain($("explain-seq").value); });
$("explain-latest").addEventListener("click", async () => {
  const s = await getJSON("/api/status");
  if (s.seq !== null) explain(s.seq);
});
loop(async () => showStatus(await getJSON("/api/status")), STATUS_MS);
loop(refreshTrend, TREND_MS);
