"""The status page and its JSON, served by the collector process (Flask behind waitress).

Every value a device sent is rendered through Jinja's autoescaping: a device id
or log line holding markup shows as text.
"""

import logging
import threading
from decimal import Decimal

from flask import Flask, jsonify, render_template

log = logging.getLogger("collector.web")


def create_app(queries, metrics, version="0.1.0"):
    """The Flask app; `queries` answers from the database, `metrics` from this process."""
    app = Flask(__name__)

    @app.get("/")
    def overview():
        return render_template("overview.html", devices=queries.devices(), counts=queries.table_counts(),
                               metrics=metrics.snapshot(), quarantine=queries.quarantine(20), version=version)

    @app.get("/api/v1/devices")
    def api_devices():
        return jsonify(devices=[_jsonable(d) for d in queries.devices()])

    @app.get("/api/v1/status")
    def api_status():
        return jsonify(counts=queries.table_counts(), metrics=metrics.snapshot())

    @app.get("/healthz")
    def healthz():
        return jsonify(ok=True)

    @app.get("/readyz")
    def readyz():
        try:
            db = queries.ping()
        except Exception as e:  # any database failure means not ready
            return jsonify(ready=False, database=str(e).splitlines()[0] if str(e) else "unreachable"), 503
        return jsonify(ready=db, database="ok"), 200 if db else 503

    return app


def _jsonable(row):
    out = {}
    for k, v in row.items():
        if hasattr(v, "isoformat"):
            v = v.isoformat()
        elif isinstance(v, Decimal):
            v = float(v)
        out[k] = v
    return out


def serve(app, listen):
    """Serve app on 'host:port' with waitress in a daemon thread; returns the server."""
    from waitress.server import create_server

    host, _, port = listen.rpartition(":")
    server = create_server(app, host=host or "127.0.0.1", port=int(port), threads=4, ident="fieldwatch")
    t = threading.Thread(target=server.run, name="web", daemon=True)
    t.start()
    return server
