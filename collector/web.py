"""The status page, the JSON API, /metrics and the health checks, served by the collector (Flask behind waitress).

Pages are shells: their data comes from the JSON API (collector/api.py),
fetched every few seconds by the page's script and written with textContent,
so nothing a device sends can inject markup; what templates render themselves
goes through Jinja's autoescaping. Every asset (script, style, the vendored
uPlot chart library) is served from collector/static: no CDN.
"""

import logging
import threading

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from collector.api import create_api
from collector.metrics import PrometheusExport, prometheus_text
from fieldwatch.wire import topics

log = logging.getLogger("collector.web")

REFRESH_MS = 3000   # how often the pages fetch fresh data
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def create_app(queries, metrics, version="0.1.0", link=None, api_token="", read_token=""):
    """The Flask app; `queries` answers from the database, `metrics` from this process, `link` is the MQTT link."""
    app = Flask(__name__)
    app.register_blueprint(create_api(queries, metrics, link, api_token, read_token))
    export = PrometheusExport(metrics, broker_connected=(lambda: link.connected.is_set()) if link else None,
                              device_last_seen=queries.last_seen)
    page = {"version": version, "refresh_ms": REFRESH_MS, "online_window_s": queries.online_window_s,
            "token_needed": bool(read_token)}

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
        if not topics.valid_device_id(device_id):
            return render_template("notfound.html", what="device id", name=device_id, **page), 404
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
        """Ready: the database answers, the MQTT link is connected and commits go through; 503 naming what is not."""
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
        return jsonify(out), 200 if out["ready"] else 503

    @app.get("/metrics")
    def prometheus():
        body, content_type = prometheus_text(export)
        return app.response_class(body, content_type=content_type)

    return app


def serve(app, listen, threads=8):
    """Serve app on 'host:port' with waitress in a daemon thread; returns the server."""
    from waitress.server import create_server

    host, _, port = listen.rpartition(":")
    server = create_server(app, host=host or "127.0.0.1", port=int(port), threads=threads, ident="fieldwatch")
    t = threading.Thread(target=server.run, name="web", daemon=True)
    t.start()
    return server
