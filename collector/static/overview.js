/* Fleet overview: every device's health, refreshed from /api/v1/devices without reloading the page. */
"use strict";

function deviceRow(d) {
  const link = FW.el("a", d.device_id);
  link.href = "/devices/" + encodeURIComponent(d.device_id);
  const st = FW.state(d);
  const state = document.createElement("span");
  state.appendChild(FW.el("span", st, "state " + st));
  const stale = FW.statusStale(d);   /* data arrives, but the state and buffer figures are old */
  if (stale) state.append(" ", FW.el("span", stale, "stale"));
  const gaps = d.missing === null || d.missing === undefined ? "" : (d.missing ? d.missing + " missing" : "none");
  const tr = FW.row([link, state, FW.age(d.last_seen_age_s), d.fw, d.hw, d.boot, d.messages_1m, d.readings_1m,
    d.windows_1m, d.buf_depth, FW.seconds(d.buf_oldest_s), d.buf_drops,
    d.clock_skew_ms === null ? "" : (d.clock_skew_ms / 1000).toFixed(1) + " s", gaps]);
  tr.className = "device";
  tr.dataset.device = d.device_id;
  tr.dataset.state = st;
  if (stale) tr.dataset.stale = stale;
  return tr;
}

async function refresh() {
  const [devs, status] = await Promise.all([FW.get("/api/v1/devices"), FW.get("/api/v1/status")]);
  const rows = devs.devices.map(deviceRow);
  FW.fill(document.getElementById("devices-body"), rows, "No device has reported yet.", 14);
  const online = devs.devices.filter((d) => FW.state(d) === "online").length;
  const m = status.metrics, c = m.counters;
  document.getElementById("summary").textContent =
    devs.devices.length + " devices, " + online + " online · broker " +
    (status.broker_connected ? "connected" : "NOT connected") + " · database " + (m.db_ok ? "ok" : "not yet written / unreachable") +
    " · received " + c.messages_received + " messages, quarantined " + c.messages_quarantined +
    " · rows written " + c.rows_written + " (duplicates dropped " + c.rows_duplicate + ")" +
    " · last commit lag " + Math.round(m.lag_s * 1000) + " ms";
  const head = document.getElementById("counts-head"), body = document.getElementById("counts-body");
  head.replaceChildren();
  body.replaceChildren();
  for (const [t, n] of Object.entries(status.counts)) {
    head.appendChild(FW.el("th", t));
    body.appendChild(FW.el("td", n));
  }
}

FW.poll(refresh);
