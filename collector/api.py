"""The JSON API under /api/v1 (docs/api.md; collector/openapi.json describes it).

Reads answer from the database through collector.queries; the one write,
sending a command, logs it in the command log (collector.store.CommandLog)
and publishes it to the device through the collector's MQTT link. Every
error is JSON {"error": message} with the status that fits: 400 bad
parameter or body, 401 no token, 403 wrong token, 404 unknown device or
command, 413 body too large (collector/web.py), 503 broker or database away.
"""

import datetime as dt
import hmac
import math
import re
import time
import uuid
from decimal import Decimal
from pathlib import Path

import psycopg
from flask import Blueprint, Response, jsonify, request
from psycopg_pool import PoolTimeout

from collector import params
from collector.params import ParamError
from collector.schema import API_TELEMETRY
from collector.store import CommandLog
from fieldwatch.wire import codec, topics
from fieldwatch.wire.contract import is_text

OPENAPI = Path(__file__).with_name("openapi.json")
RECENT_LOGS = 50
RECENT_COMMANDS = 20
MAX_WAIT_S = 30
# Ids of commands sent through the API: they go into the result URL, so only characters
# a URL path carries as they are (a UUID, the default, fits).
_API_CMD_ID = re.compile(r"[A-Za-z0-9._:-]{1,%d}" % codec.MAX_CMD_ID)


class ApiError(Exception):
    """An error answer: HTTP status and a message for the client."""

    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def jsonable(value):
    """Values made strict-JSON-friendly: times as ISO 8601 strings, decimals as floats, infinities as "+Inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("+Inf" if value > 0 else "-Inf")
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def _now():
    return dt.datetime.now(dt.timezone.utc)


def create_api(queries, metrics, link=None, api_token="", read_token=""):
    """The /api/v1 blueprint. link: the collector's MqttLink (commands), or None to refuse them."""
    bp = Blueprint("api", __name__, url_prefix="/api/v1")
    command_log = CommandLog(queries.pool)

    def token_from_request():
        auth = request.headers.get("Authorization", "")
        return auth[7:].strip() if auth.lower().startswith("bearer ") else None

    def require(tokens, what):
        given = token_from_request()
        if given is None:
            raise ApiError(401, "%s needs a token: send the header 'Authorization: Bearer <token>'" % what,
                           {"WWW-Authenticate": 'Bearer realm="fieldwatch"'})
        if not any(t and hmac.compare_digest(given.encode(), t.encode()) for t in tokens):
            raise ApiError(403, "the token is not valid for %s" % what)

    @bp.before_request
    def check_read_token():
        if read_token and request.method in ("GET", "HEAD") and request.endpoint != "api.openapi":
            require((read_token, api_token), "reading the API")

    @bp.errorhandler(ApiError)
    def api_error(e):
        resp = jsonify(error=e.message)
        resp.status_code = e.status
        resp.headers.update(e.headers)
        return resp

    @bp.errorhandler(ParamError)
    def param_error(e):
        return jsonify(error=str(e)), 400

    @bp.errorhandler(psycopg.OperationalError)
    @bp.errorhandler(PoolTimeout)
    def database_away(e):
        return jsonify(error="the database is not reachable; try again shortly"), 503

    def device_or_404(device_id):
        if not topics.valid_device_id(device_id):
            raise ApiError(400, "%r is not a valid device id: 1..32 characters of a-z 0-9 - _, starting with "
                                "a letter or digit" % device_id[:64])
        d = queries.device(device_id)
        if d is None:
            raise ApiError(404, "no device %r has reported to this collector" % device_id)
        return d

    @bp.get("/openapi.json")
    def openapi():
        return Response(OPENAPI.read_bytes(), mimetype="application/json")

    @bp.get("/status")
    def status():
        params.check_known(request.args, ())
        return jsonify(counts=queries.table_counts(), metrics=jsonable(metrics.snapshot()),
                       broker_connected=bool(link and link.connected.is_set()))

    @bp.get("/devices")
    def devices():
        params.check_known(request.args, ())
        return jsonify(devices=jsonable(queries.devices()), online_window_s=queries.online_window_s)

    @bp.get("/devices/<device_id>")
    def device(device_id):
        params.check_known(request.args, ())
        d = device_or_404(device_id)
        gaps = []
        if d["boot"] is not None and d["next_seq"] is not None and d["missing"]:
            gaps = queries.gaps(device_id, d["boot"], d["next_seq"])
        return jsonify(device=jsonable(d), gaps=gaps, latest_window=jsonable(queries.latest_window(device_id)),
                       logs=jsonable(queries.logs(device_id, RECENT_LOGS)),
                       commands=[_command_view(c) for c in queries.commands(device_id, RECENT_COMMANDS)])

    @bp.get("/devices/<device_id>/telemetry")
    def telemetry(device_id):
        params.check_known(request.args, ("kind", "from", "to", "limit", "offset", "name"))
        kind = params.choice(request.args, "kind", "readings", tuple(API_TELEMETRY))
        name = params.reading_name(request.args)
        if name is not None and kind != "readings":
            raise ParamError("name filters readings only; drop it or use kind=readings")
        start, end = params.time_range(request.args, _now())
        limit, offset = params.limit_offset(request.args)
        device_or_404(device_id)
        rows = queries.telemetry(device_id, kind, start, end, limit, offset, name)
        return jsonify(device_id=device_id, kind=kind, **{"from": start.isoformat()}, to=end.isoformat(),
                       limit=limit, offset=offset, count=len(rows),
                       next_offset=offset + len(rows) if len(rows) == limit else None, items=jsonable(rows))

    @bp.get("/devices/<device_id>/aggregates")
    def aggregates(device_id):
        params.check_known(request.args, ("source", "bucket", "from", "to", "name"))
        source = params.choice(request.args, "source", "features", ("features", "readings"))
        name = params.reading_name(request.args)
        if name is not None and source != "readings":
            raise ParamError("name filters readings only; drop it or use source=readings")
        start, end = params.time_range(request.args, _now())
        bucket_name, secs = params.bucket(request.args, start, end)
        device_or_404(device_id)
        if source == "features":
            rows = queries.vibration_buckets(device_id, start, end, secs)
        else:
            rows = queries.reading_buckets(device_id, start, end, secs, name)
        return jsonify(device_id=device_id, source=source, bucket=bucket_name, bucket_s=secs,
                       **{"from": start.isoformat()}, to=end.isoformat(), items=jsonable(rows))

    @bp.get("/devices/<device_id>/track")
    def track(device_id):
        params.check_known(request.args, ("from", "to", "limit"))
        start, end = params.time_range(request.args, _now(), default_span_s=86400)
        limit = params.integer(request.args, "limit", params.MAX_LIMIT, 1, params.MAX_LIMIT)
        device_or_404(device_id)
        rows = queries.track(device_id, start, end, limit)
        return jsonify(device_id=device_id, **{"from": start.isoformat()}, to=end.isoformat(), count=len(rows),
                       fixes=jsonable(rows))

    @bp.get("/devices/<device_id>/commands")
    def device_commands(device_id):
        params.check_known(request.args, ("limit",))
        limit = params.integer(request.args, "limit", RECENT_COMMANDS, 1, params.MAX_LIMIT)
        device_or_404(device_id)
        return jsonify(device_id=device_id, commands=[_command_view(c) for c in queries.commands(device_id, limit)])

    @bp.post("/devices/<device_id>/commands")
    def send_command(device_id):
        if not api_token:
            raise ApiError(403, "sending commands is disabled: set web.api_token (COLLECTOR_WEB_API_TOKEN) "
                                "in the collector's configuration")
        require((api_token,), "sending commands")
        params.check_known(request.args, ())
        device_or_404(device_id)
        must_be = 'the body must be a JSON object like {"cmd": "set_rate", "args": {"hz": 800}} ' \
                  "with Content-Type: application/json"
        if not request.is_json:
            raise ParamError(must_be)
        body = params.json_body(request.get_data(cache=False))   # at most MAX_CONTENT_LENGTH bytes (web.py)
        if not isinstance(body, dict):
            raise ParamError(must_be)
        for k in body:
            if k not in ("cmd", "args", "id"):
                raise ParamError("unknown field %r in the body; fields: cmd, args, id" % k[:40])
        cmd, args = body.get("cmd"), body.get("args", {})
        if not isinstance(cmd, str):
            raise ParamError("cmd must be one of %s" % ", ".join(codec.COMMANDS))
        if not isinstance(args, dict):
            raise ParamError("args must be a JSON object, e.g. {\"hz\": 800}")
        cmd_id = body.get("id", str(uuid.uuid4()))
        if not isinstance(cmd_id, str) or not _API_CMD_ID.fullmatch(cmd_id):
            raise ParamError("id must be a string of 1..%d characters of A-Z a-z 0-9 . _ : - (it is part of the "
                             "result URL), got %s" % (codec.MAX_CMD_ID, params.show(cmd_id)))
        try:
            payload = codec.encode_cmd(cmd_id, cmd, args, int(time.time() * 1000))
        except codec.WireError as e:
            raise ParamError("%s: %s" % (e.code, e.detail)) from None
        if link is None or not link.connected.is_set():
            raise ApiError(503, "the collector is not connected to the MQTT broker; the command was not sent")
        if not command_log.log(cmd_id, device_id, cmd, args):
            raise ApiError(409, "a command with id %r exists already; ids must be unique" % cmd_id)
        try:
            info = link.publish(topics.topic(device_id, "cmd"), payload, qos=1)
        except ValueError as e:   # not even queued
            command_log.forget(cmd_id)
            raise ApiError(503, "the command could not be published: %s" % e) from None
        try:
            info.wait_for_publish(timeout=5)
        except (RuntimeError, ValueError):
            pass  # the link lost the broker just now: the message stays queued and goes out on reconnect
        c = _command_view(queries.command(cmd_id))
        c["published"] = info.is_published()   # False: queued, not yet acknowledged by the broker
        result_url = "/api/v1/commands/" + cmd_id   # _API_CMD_ID: nothing in it needs quoting
        resp = jsonify(command=c, result_url=result_url)
        resp.status_code = 202
        resp.headers["Location"] = result_url
        return resp

    @bp.get("/commands/<cmd_id>")
    def command(cmd_id):
        params.check_known(request.args, ("wait",))
        wait = params.integer(request.args, "wait", 0, 0, MAX_WAIT_S)
        if not is_text(cmd_id, 1, codec.MAX_CMD_ID):
            raise ParamError("command id must be 1..%d characters without NUL, got %s"
                             % (codec.MAX_CMD_ID, params.show(cmd_id)))
        end = time.monotonic() + wait
        while True:
            c = queries.command(cmd_id)
            if c is None:
                raise ApiError(404, "no command with id %r in the command log" % cmd_id[:64])
            if c["result_at"] is not None or time.monotonic() >= end:
                return jsonify(command=_command_view(c))
            time.sleep(0.2)

    @bp.get("/quarantine")
    def quarantine():
        params.check_known(request.args, ("limit", "offset", "device", "code"))
        limit, offset = params.limit_offset(request.args, 50)
        device = params.text(request.args, "device", params.MAX_TOPIC_DEVICE,
                             "the device id as it appeared in the topic")
        rows = queries.quarantine(limit, offset, device, params.error_code(request.args))
        return jsonify(limit=limit, offset=offset, count=len(rows),
                       next_offset=offset + len(rows) if len(rows) == limit else None, items=jsonable(rows))

    return bp


def _command_view(c):
    """A command log row with its state: sent (waiting for the result), ok or failed."""
    c = jsonable(dict(c))
    c["state"] = "sent" if c["result_at"] is None else ("ok" if c["ok"] else "failed")
    return c
