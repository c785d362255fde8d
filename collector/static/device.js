/* Device page: RMS trend, latest spectrum, GPS track (uPlot, vendored), logs, commands, delivery gaps.
   Everything is fetched from the JSON API every few seconds; text goes in with textContent only. */
"use strict";

const DEV = document.getElementById("device").dataset.device;
const API = "/api/v1/devices/" + encodeURIComponent(DEV);
const AXES = [["x", "#d62728"], ["y", "#2ca02c"], ["z", "#1f77b4"]];
const plots = {};
const UNIT_S = {s: 1, m: 60, h: 3600, d: 86400};
let rmsRange = null;   /* [from, to] of the chosen window, epoch s: the x axis spans it even with one point */

function small(u, vals) { return vals.map((v) => (v === 0 ? "0" : Math.abs(v) < 0.01 ? v.toExponential(1) : String(+v.toPrecision(3)))); }

function chartWidth(el) { return Math.max(320, el.clientWidth || 800); }

/* Create the chart once, then only give it new data; recreate when the series change. */
function draw(key, elId, emptyId, data, makeOpts) {
  const el = document.getElementById(elId);
  const empty = !data || !data[1] || !data[1].length;
  document.getElementById(emptyId).hidden = !empty;
  el.hidden = empty;
  if (empty) return;
  const shape = data.length;   /* new series: a new chart; new points: setData */
  const p = plots[key];
  if (p && p.shape === shape) { p.plot.setData(data); return; }
  if (p) p.plot.destroy();
  el.replaceChildren();
  plots[key] = {shape: shape, plot: new uPlot(makeOpts(chartWidth(el)), data, el)};
}

function fact(dl, name, value) {
  dl.appendChild(FW.el("dt", name));
  dl.appendChild(FW.el("dd", value === null || value === undefined ? "" : value));
}

function showDevice(body) {
  const d = body.device;
  const st = FW.state(d);
  const s = document.getElementById("state");
  s.textContent = st;
  s.className = "state " + st;
  const stale = FW.statusStale(d);   /* data arrives, but the state and buffer figures are old */
  const m = document.getElementById("status-stale");
  m.textContent = stale;
  m.hidden = !stale;
  const dl = document.getElementById("facts");
  dl.replaceChildren();
  fact(dl, "last seen", FW.age(d.last_seen_age_s) + " (" + FW.time(d.last_seen) + ")");
  fact(dl, "firmware", d.fw);
  fact(dl, "hardware", d.hw);
  fact(dl, "boot / next seq", d.boot === null ? "" : d.boot + " / " + d.next_seq);
  fact(dl, "last reset", d.reset_reason);
  fact(dl, "messages / readings / windows per min", d.messages_1m + " / " + d.readings_1m + " / " + d.windows_1m);
  fact(dl, "buffered (oldest)", d.buf_depth === null ? "" : d.buf_depth + " (" + FW.seconds(d.buf_oldest_s) + ")");
  fact(dl, "drops", d.buf_drops);
  fact(dl, "clock skew", d.clock_skew_ms === null ? "" : (d.clock_skew_ms / 1000).toFixed(1) + " s");
  fact(dl, "health", Object.entries(d.health || {}).map(([k, v]) => k + "=" + v).join(", "));
  const g = document.getElementById("gaps");
  if (d.missing === null || d.missing === undefined) g.textContent = "Delivery gaps: unknown until the device reports its status.";
  else if (!d.missing) g.textContent = "Delivery gaps: none — every key of boot " + d.boot + " below " + d.next_seq + " is stored.";
  else g.textContent = "Delivery gaps in boot " + d.boot + ": " + d.missing + " keys missing (" +
    body.gaps.map((r) => (r[0] === r[1] ? r[0] : r[0] + "–" + r[1])).join(", ") +
    (body.gaps.length >= 100 ? ", …" : "") + "); the device reports " + (d.buf_depth || 0) + " records still buffered.";

  const logs = body.logs.map((l) => {
    const tr = FW.row([FW.time(l.ts), FW.el("span", l.level, "level " + l.level), l.text]);
    tr.className = "log";
    return tr;
  });
  FW.fill(document.querySelector("#logs tbody"), logs, "No log lines.", 3);
  const cmds = body.commands.map((c) => FW.row([FW.time(c.sent_at || c.result_at), c.cmd, JSON.stringify(c.args),
    FW.el("span", c.state, "cmd " + c.state),
    c.state === "failed" ? c.error : (c.detail === null || c.detail === undefined ? "" : JSON.stringify(c.detail)), c.id]));
  FW.fill(document.querySelector("#commands tbody"), cmds, "No commands sent.", 6);

  const w = body.latest_window;
  document.getElementById("spectrum-time").textContent = w ? "window of " + FW.time(w.ts) : "";
  let spectrum = null;
  if (w) {
    const centres = [];
    for (let i = 0; i + 1 < w.band_hz.length; i++) centres.push((w.band_hz[i] + w.band_hz[i + 1]) / 2);
    spectrum = [centres].concat(AXES.map(([a]) => w[a + "_bands"] || centres.map(() => null)));
  }
  draw("spectrum", "spectrum-chart", "spectrum-empty", spectrum, (width) => ({
    width: width, height: 220,
    scales: {x: {time: false}},
    axes: [{label: "band centre, Hz"}, {label: "band energy, g²", size: 70, values: small}],
    series: [{label: "Hz"}].concat(AXES.map(([a, colour]) => ({label: a, stroke: colour, width: 2, points: {show: true, size: 6}}))),
  }));
}

async function refreshRms() {
  const [from, bucket] = document.getElementById("window").value.split("|");
  const now = Date.now() / 1000;
  rmsRange = [now - Number(from.slice(1, -1)) * UNIT_S[from.slice(-1)], now];
  const agg = await FW.get(API + "/aggregates?bucket=" + bucket + "&from=" + encodeURIComponent(from));
  const xs = agg.items.map((r) => Date.parse(r.bucket) / 1000);
  const data = [xs].concat(AXES.map(([a]) => agg.items.map((r) => r[a + "_rms"])));
  draw("rms", "rms-chart", "rms-empty", xs.length ? data : null, (width) => ({
    width: width, height: 240,
    scales: {x: {time: true, range: (u, min, max) => (rmsRange ? rmsRange.slice() : [min, max])}},
    axes: [{}, {label: "RMS, g", size: 60, values: small}],
    series: [{}].concat(AXES.map(([a, colour]) => ({label: a + " RMS", stroke: colour, width: 2, points: {show: true, size: 5}}))),
  }));
}

async function refreshTrack() {
  const t = await FW.get(API + "/track");
  const lon = t.fixes.map((f) => f.lon), lat = t.fixes.map((f) => f.lat);
  draw("track", "track-chart", "track-empty", lon.length ? [null, [lon, lat]] : null, (width) => ({
    mode: 2, width: width, height: 320,
    scales: {x: {time: false}, y: {}},
    axes: [{label: "longitude, °", values: (u, vals) => vals.map((v) => v.toFixed(5))},
           {label: "latitude, °", size: 90, values: (u, vals) => vals.map((v) => v.toFixed(5))}],
    series: [null, {label: "fixes", stroke: "#1f77b4", width: 2, points: {show: true, size: 6},
      facets: [{scale: "x", auto: true}, {scale: "y", auto: true}]}],
  }));
}

async function refresh() {
  const body = await FW.get(API);
  showDevice(body);
  await Promise.all([refreshRms(), refreshTrack()]);
}

document.getElementById("window").addEventListener("change", () => refreshRms().catch((e) => FW.setConn(e.message, false)));
FW.poll(refresh);
