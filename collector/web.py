"""The status page, the JSON API, /metrics and the health checks, served by the collector (Flask behind waitress).

Pages are shells: their data comes from the JSON API (collector/api.py),
fetched every few seconds by the page's script and written with textContent,
so nothing a device sends can inject markup; what templates render themselves
goes through Jinja's autoescaping. Every asset (script, style, the vendored
uPlot chart library) is served from collector/static: no CDN.
"""

import json
import logging
import threading

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from collector.api import create_api
from collector.metrics import PrometheusExport, prometheus_text
from fieldwatch.wire import codec, topics

log = logging.getLogger("collector.web")

REFRESH_MS = 3000   # how often the pages fetch fresh data
# A device heard recently whose last status is older than this, s, shows "status stale" (default of
# web.status_stale_s: three times the 30 s status interval of the firmware and the Pi agent).
STATUS_STALE_S = 90
# Largest request body, bytes: a command is one MQTT message, and no message is larger.
# waitress refuses a longer body from its Content-Length before reading it (serve());
# Flask's MAX_CONTENT_LENGTH is the same bound for any other WSGI server.
MAX_BODY = codec.MAX_PAYLOAD
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def create_app(queries, metrics, version="0.1.0", link=None, api_token="", read_token="", starting=None,
               status_stale_s=STATUS_STALE_S):
    """The Flask app; `queries` answers from the database, `metrics` from this process, `link` is the MQTT link.

    starting: a function returning what the start-up still waits for (None once ingesting), for /readyz.
    status_stale_s: a device's status older than this, s, is shown as stale on the pages.
    """
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.register_blueprint(create_api(queries, metrics, link, api_token, read_token))
    export = PrometheusExport(metrics, broker_connected=(lambda: link.connected.is_set()) if link else None,
                              device_last_seen=queries.last_seen)
    page = {"version": version, "refresh_ms": REFRESH_MS, "online_window_s": queries.online_window_s,
            "token_needed": bool(read_token), "status_stale_s": status_stale_s}

    @app.after_request
    def security_headers(resp):
        # Defence in depth behind textContent/autoescaping: pages run only the app's own scripts.
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        if resp.mimetype == "text/html":
            resp.headers.setdefault("Content-Security-Policy", CSP)
            resp.headers.setdefault("X-Frame-Options", "DENY")
        return resp

    @app.errorhandler(HTTPException)
    def http_error(e):
        # API clients get JSON errors (405, 404 ...); pages the usual HTML.
        if not request.path.startswith("/api/"):
            return e
        if e.code == 404:
            msg = "no API endpoint %s %s; see /api/v1/openapi.json" % (request.method, request.path[:200])
        elif e.code == 413:
            msg = body_too_large(request.content_length)
        elif e.code == 405:
            msg = "Method Not Allowed: %s %s; allowed: %s" % (
                request.method, request.path[:200], ", ".join(sorted(set(e.valid_methods or ()) - {"HEAD", "OPTIONS"})))
        else:
            msg = "%s: %s %s" % (e.name, request.method, request.path[:200])
        return jsonify(error=msg), e.code

    @app.get("/")
    def overview():
        devices, error = [], None
        if read_token:  # reads are protected: the script fetches the rows with the token
            error = "Loading…"
        else:
            try:
                devices = queries.devices()
            except Exception as e:  # the page still loads; its script keeps trying
                error = "The database is not reachable (%s); retrying." % (str(e).strip().splitlines() or ["?"])[0][:200]
        return render_template("overview.html", devices=devices, devices_error=error, **page)

    @app.get("/devices/<device_id>")
    def device_page(device_id):
        shown = device_id if len(device_id) <= 64 else device_id[:64] + "…"
        if not topics.valid_device_id(device_id):
            return render_template("notfound.html", invalid=True, name=shown, **page), 404
        if not read_token:   # with protected reads the page's script asks the API, with the token
            try:
                known = queries.device_exists(device_id)
            except Exception:  # the database is away: the page loads, and its script keeps trying
                known = True
            if not known:
                return render_template("notfound.html", invalid=False, name=shown, **page), 404
        return render_template("device.html", device_id=device_id, **page)

    @app.get("/quarantine")
    def quarantine_page():
        return render_template("quarantine.html", **page)

    @app.get("/healthz")
    def healthz():
        """Alive: the web thread answers (says nothing about broker or database)."""
        return jsonify(ok=True)

    @app.get("/readyz")
    def readyz():
        """Ready: started, the database answers, the MQTT link is connected and commits go through; 503 naming what is not."""
        out = {}
        try:
            out["database"] = "ok" if queries.ping() else "not answering"
        except Exception as e:  # any database failure means not ready
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            out["database"] = "unreachable: " + first
        if link is None:
            out["broker"] = "not used"
        else:
            out["broker"] = "ok" if link.connected.is_set() else "not connected"
        failing = metrics.commit_failure()
        out["ingest"] = "ok" if failing is None else "commits failing for %.0f s: %s" % failing
        out["ready"] = out["database"] == "ok" and out["broker"] in ("ok", "not used") and failing is None
        waiting_for = starting() if starting is not None else None
        if waiting_for:
            out["waiting_for"] = waiting_for
            out["ready"] = False
        return jsonify(out), 200 if out["ready"] else 503

    @app.get("/metrics")
    def prometheus():
        body, content_type = prometheus_text(export)
        return app.response_class(body, content_type=content_type)

    return app


def body_too_large(length):
    """The 413 message for a request body of length bytes (None: unknown, e.g. chunked)."""
    size = "%d bytes" % length if length else "longer than %d bytes" % MAX_BODY
    return "the request body is %s; at most %d bytes are accepted" % (size, MAX_BODY)


def _json_error_channel():
    """A waitress channel whose own error answers (413, 431, 400 bad header ...) are JSON like the app's."""
    from waitress.channel import HTTPChannel
    from waitress.task import ErrorTask

    class JsonErrorTask(ErrorTask):
        def execute(self):
            e = self.request.error
            if e.code == 413:
                msg = body_too_large(self.request.content_length)
            else:
                msg = "%s: %s" % (e.reason, e.body)
            body = json.dumps({"error": msg}).encode()
            self.status = "%d %s" % (e.code, e.reason)
            self.response_headers.append(("Content-Type", "application/json"))
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class JsonErrorChannel(HTTPChannel):
        error_task_class = JsonErrorTask

    return JsonErrorChannel


def serve(app, listen, threads=8):
    """Serve app on 'host:port' with waitress in a daemon thread; returns the server.

    waitress answers a body over MAX_BODY with 413 from its Content-Length, before
    reading it (max_request_body_size refuses from that size on, hence + 1).
    """
    from waitress.server import create_server

    host, _, port = listen.rpartition(":")
    server = create_server(app, host=host or "127.0.0.1", port=int(port), threads=threads, ident="fieldwatch",
                           max_request_body_size=MAX_BODY + 1)
    server.channel_class = _json_error_channel()
    t = threading.Thread(target=server.run, name="web", daemon=True)
    t.start()
    return server
