/* Quarantine page: what was rejected and why, newest first. */
"use strict";

async function refresh() {
  const q = await FW.get("/api/v1/quarantine?limit=200");
  const rows = q.items.map((m) => {
    const tr = FW.row([FW.time(m.recv_ts), m.times, FW.el("code", m.topic), m.device_id, FW.el("code", m.code),
      m.reason, m.size, FW.el("code", m.preview)]);
    tr.className = "qrow";
    return tr;
  });
  FW.fill(document.getElementById("quarantine-body"), rows, "Nothing rejected.", 8);
}

FW.poll(refresh);
