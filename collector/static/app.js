/* Fieldwatch status page: shared helpers. Every value is written with textContent
   (never innerHTML): nothing a device sends can become markup. */
"use strict";

const FW = {
  refreshMs: Number(document.body.dataset.refreshMs) || 3000,

  token() { return window.localStorage.getItem("fieldwatch_token") || ""; },

  /* GET a JSON API path; throws an Error carrying .status and the API's message. */
  async get(path) {
    const headers = {};
    const t = FW.token();
    if (t) headers["Authorization"] = "Bearer " + t;
    const r = await fetch(path, {headers: headers, cache: "no-store"});
    let body;
    try { body = await r.json(); } catch (e) { body = {error: r.status + " " + r.statusText}; }
    if (!r.ok) {
      const err = new Error(body.error || (r.status + " " + r.statusText));
      err.status = r.status;
      throw err;
    }
    return body;
  },

  /* A new element holding text (as text), with an optional class. */
  el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  },

  /* A table row of cells; a cell may be a string/number or a ready element. */
  row(cells) {
    const tr = document.createElement("tr");
    for (const c of cells) {
      if (c instanceof Node) { const td = document.createElement("td"); td.appendChild(c); tr.appendChild(td); }
      else tr.appendChild(FW.el("td", c === null || c === undefined ? "" : c));
    }
    return tr;
  },

  /* Replace the rows of a tbody; `empty` is shown as one row when there are none. */
  fill(tbody, rows, empty, cols) {
    tbody.replaceChildren();
    if (!rows.length) {
      const td = FW.el("td", empty);
      td.colSpan = cols;
      const tr = document.createElement("tr");
      tr.appendChild(td);
      tbody.appendChild(tr);
    }
    for (const r of rows) tbody.appendChild(r);
  },

  age(s) {
    if (s === null || s === undefined) return "";
    s = Math.max(0, s);
    if (s < 90) return Math.round(s) + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    if (s < 172800) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  },

  seconds(s) { return s === null || s === undefined ? "" : (s < 100 ? s.toFixed(1) : Math.round(s)) + " s"; },

  time(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toLocaleString();
  },

  num(v, digits) { return v === null || v === undefined ? "" : Number(v).toFixed(digits); },

  /* The state a device shows: online only while it says so and has been heard recently. */
  state(d) {
    if (d.online) return "online";
    if (d.state === "sleeping") return "sleeping";
    if (d.state === "online") return "offline";   /* says online, but silent for too long */
    return d.state === "unknown" ? "unknown" : "offline";
  },

  /* The header's indicator: level "ok" (green), "warn" (amber: the page is live but the collector
     is not ready) or "bad" (red: the page could not update). */
  setConn(text, level) {
    const c = document.getElementById("conn");
    c.textContent = text;
    c.className = "conn " + (level === true ? "ok" : level || "bad");
  },

  /* What /readyz says is not ok, as short phrases ([] when ready; .level "bad" when the broker or
     the database is down, else "warn"); the reason if it cannot be read. */
  async notReady() {
    let r, body;
    try {
      r = await fetch("/readyz", {cache: "no-store"});
      body = await r.json();
    } catch (e) {
      return Object.assign(["readiness unknown"], {level: "warn"});
    }
    const down = Object.assign([], {level: "warn"});
    if (body.ready) return down;
    if (body.broker !== "ok" && body.broker !== "not used") down.push("broker " + body.broker);
    if (body.database !== "ok") down.push("database " + String(body.database).slice(0, 80));
    if (down.length) down.level = "bad";
    if (body.ingest && body.ingest !== "ok") down.push("ingest " + body.ingest);
    if (body.waiting_for) down.push("starting: waiting for " + body.waiting_for);
    if (!down.length) down.push("not ready (HTTP " + r.status + ")");
    return down;
  },

  /* How long ago the device's last status arrived, s (server clock: last_seen_age_s plus the
     time between the status and the last message); null if it never sent one. */
  statusAge(d) {
    if (!d.status_at || !d.last_seen) return null;
    return d.last_seen_age_s + Math.max(0, (Date.parse(d.last_seen) - Date.parse(d.status_at)) / 1000);
  },

  /* "status stale (last N min ago)" when a device heard within the online window has no status
     newer than web.status_stale_s (data-status-stale-s); "" otherwise. */
  statusStale(d) {
    const stale = Number(document.body.dataset.statusStaleS) || 90;
    const window_s = Number(document.body.dataset.onlineWindowS) || 120;
    if (d.last_seen_age_s === null || d.last_seen_age_s === undefined || d.last_seen_age_s > window_s) return "";
    const age = FW.statusAge(d);
    if (age === null) return "no status received";
    return age > stale ? "status stale (last " + FW.age(age) + ")" : "";
  },

  askToken() {
    const f = document.getElementById("token-form");
    f.hidden = false;
    f.onsubmit = (ev) => {
      ev.preventDefault();
      window.localStorage.setItem("fieldwatch_token", document.getElementById("token-input").value);
      f.hidden = true;
    };
  },

  /* Run fn now and every refreshMs; show how the last run went. */
  poll(fn) {
    const run = async () => {
      try {
        const [, down] = await Promise.all([fn(), FW.notReady()]);
        const when = "updated " + new Date().toLocaleTimeString();
        if (down.length) FW.setConn("live, but " + down.join(" · ") + " · " + when, down.level);
        else FW.setConn("live · " + when, "ok");
      } catch (e) {
        FW.setConn("not updated: " + e.message, false);
        if (e.status === 401 || e.status === 403) FW.askToken();
      } finally {
        window.setTimeout(run, FW.refreshMs);
      }
    };
    run();
  },
};
