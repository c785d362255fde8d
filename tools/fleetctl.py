"""`fleetctl`: the operator's command line for a Fieldwatch fleet, through the collector's HTTP API.

    fleetctl devices                          the fleet and its health
    fleetctl device pump-01                   one device: facts, delivery gaps, recent logs and commands
    fleetctl tail pump-01 --kind features     follow a device's telemetry (Ctrl-C stops)
    fleetctl send pump-01 set_rate hz=800     send a command and wait for the device's result
    fleetctl quarantine                       what the collector rejected, and why

The collector is found at --url (default $FLEETCTL_URL or http://127.0.0.1:8080);
--token (default $FLEETCTL_TOKEN) is the collector's web.api_token for `send`,
or its web.read_token when reads are protected. --json prints the API's JSON.
"""

import argparse
import datetime
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from fieldwatch.wire.codec import COMMANDS  # the wire contract's command names

DEFAULT_URL = "http://127.0.0.1:8080"

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_TIMEOUT, EXIT_CMD_FAILED = 0, 1, 2, 3, 4


class Failure(Exception):
    """Something the user can act on: printed as one message, exit status 1 unless given."""

    def __init__(self, message, status=EXIT_FAIL):
        super().__init__(message)
        self.status = status


class Api:
    """A tiny client of /api/v1 over urllib."""

    def __init__(self, url, token=None, timeout=10.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, method, path, body=None, query=None, timeout=None):
        """The parsed JSON answer, or Failure with the collector's message and what to do."""
        url = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", "Bearer " + self.token)
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as r:
                text = r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            raise Failure(self._http_error(e)) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise Failure("cannot reach the collector at %s (%s). Is it running? Give its address with --url "
                          "or FLEETCTL_URL." % (self.url, reason)) from None
        try:
            return json.loads(text)
        except ValueError:
            raise Failure("%s did not answer with JSON: is it a Fieldwatch collector?" % url) from None

    def _http_error(self, e):
        try:
            message = json.loads(e.read().decode("utf-8", "replace"))["error"]
        except (ValueError, KeyError, TypeError):
            message = e.reason
        hint = ""
        if e.code == 401:
            hint = " Pass the collector's token with --token or FLEETCTL_TOKEN."
        elif e.code == 403:
            hint = " Check the token (--token / FLEETCTL_TOKEN) against the collector's web.api_token."
        elif e.code == 404 and "no API endpoint" in str(message):
            hint = " Is %s a Fieldwatch collector of this version?" % self.url
        return "%s (HTTP %d).%s" % (message, e.code, hint)


# ---- output --------------------------------------------------------------------

def table(rows, columns):
    """Rows of dicts as an aligned text table; columns: [(header, key or function)]."""
    cells = [[h for h, _ in columns]]
    for r in rows:
        cells.append([_cell(f(r) if callable(f) else r.get(f)) for _, f in columns])
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d$")


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return "%.4g" % v
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"))
    if isinstance(v, str) and _ISO.match(v):   # API times -> "2026-11-23 10:57:08.960Z"
        t = datetime.datetime.fromisoformat(v).astimezone(datetime.timezone.utc)
        return t.strftime("%Y-%m-%d %H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)
    return "".join(ch if ch.isprintable() else "\\x%02x" % ord(ch) for ch in str(v))   # no terminal escapes


def _age(s):
    if s is None:
        return ""
    return "%.0f s ago" % s if s < 90 else ("%.0f min ago" % (s / 60) if s < 5400 else "%.1f h ago" % (s / 3600))


def _state(d):
    if d.get("online"):
        return "online"
    return "sleeping" if d.get("state") == "sleeping" else ("unknown" if d.get("state") == "unknown" else "offline")


def _print_json(obj):
    print(json.dumps(obj, indent=2, sort_keys=True))


DEVICE_COLUMNS = [
    ("DEVICE", "device_id"), ("STATE", _state), ("LAST SEEN", lambda d: _age(d.get("last_seen_age_s"))),
    ("FW", "fw"), ("MSG/MIN", "messages_1m"), ("READ/MIN", "readings_1m"), ("WIN/MIN", "windows_1m"),
    ("BUFFERED", "buf_depth"), ("OLDEST", lambda d: None if d.get("buf_oldest_s") is None else "%.0f s" % d["buf_oldest_s"]),
    ("DROPS", "buf_drops"),
    ("SKEW", lambda d: None if d.get("clock_skew_ms") is None else "%.1f s" % (d["clock_skew_ms"] / 1000)),
    ("MISSING", "missing"),
]


# ---- commands ------------------------------------------------------------------

def cmd_devices(api, a):
    """List the fleet."""
    body = api.call("GET", "/api/v1/devices")
    if a.json:
        return _print_json(body)
    if not body["devices"]:
        print("No device has reported to %s yet." % api.url)
        return
    print(table(body["devices"], DEVICE_COLUMNS))


def cmd_device(api, a):
    """Show one device."""
    body = api.call("GET", "/api/v1/devices/" + urllib.parse.quote(a.device, safe=""))
    if a.json:
        return _print_json(body)
    d = body["device"]
    print(table([d], DEVICE_COLUMNS))
    print("\nhardware %s, boot %s, next seq %s, last reset %s, health %s" % (
        _cell(d.get("hw")), _cell(d.get("boot")), _cell(d.get("next_seq")), _cell(d.get("reset_reason")),
        _cell(d.get("health"))))
    if body["gaps"]:
        print("delivery gaps in boot %s: %s" % (d["boot"], ", ".join(
            str(f) if f == l else "%d-%d" % (f, l) for f, l in body["gaps"])))
    else:
        print("delivery gaps: none")
    print("\nRecent logs")
    print(table(body["logs"][:10], [("TIME", "ts"), ("LEVEL", "level"), ("TEXT", "text")]))
    print("\nRecent commands")
    print(table(body["commands"][:10], [("SENT", "sent_at"), ("CMD", "cmd"), ("ARGS", "args"), ("STATE", "state"),
                                        ("RESULT", lambda c: c["error"] if c["state"] == "failed" else c["detail"]),
                                        ("ID", "id")]))


TAIL_COLUMNS = {
    "readings": [("TS", "ts"), ("BOOT", "boot"), ("SEQ", "seq"), ("NAME", "name"), ("VALUE", "value")],
    "features": [("TS", "ts"), ("SEQ", "seq"), ("X RMS", "x_rms"), ("Y RMS", "y_rms"), ("Z RMS", "z_rms"),
                 ("X PEAK", "x_peak"), ("X DOM HZ", "x_dom_hz")],
    "fixes": [("TS", "ts"), ("SEQ", "seq"), ("LAT", "lat"), ("LON", "lon"), ("ALT M", "alt_m"), ("SATS", "sats")],
    "logs": [("TS", "ts"), ("SEQ", "seq"), ("LEVEL", "level"), ("TEXT", "text")],
}


def cmd_tail(api, a):
    """Print a device's records as they arrive (from --since), until Ctrl-C or --count records."""
    path = "/api/v1/devices/%s/telemetry" % urllib.parse.quote(a.device, safe="")
    since = "-" + a.since if re.fullmatch(r"\d+[smhd]", a.since) else a.since   # 5m -> the API's -5m
    seen, shown, header = set(), 0, False
    while True:
        page_from, offset = since, 0
        while True:
            body = api.call("GET", path, query={"kind": a.kind, "from": page_from, "limit": 1000, "offset": offset})
            new = [r for r in body["items"] if (r["boot"], r["seq"]) not in seen]
            for r in new:
                seen.add((r["boot"], r["seq"]))
                if a.json:
                    print(json.dumps(r, sort_keys=True), flush=True)
                else:
                    lines = table([r], TAIL_COLUMNS[a.kind]).splitlines()
                    if not header:
                        print("\n".join(lines[:2]))
                        header = True
                    print(lines[2], flush=True)
                shown += 1
                if a.count and shown >= a.count:
                    return
                since = r["ts"]
            if body["next_offset"] is None:
                break
            offset = body["next_offset"]
        if a.once:
            return
        time.sleep(a.interval)


def _arg_value(text):
    try:
        return json.loads(text)          # 800 -> 800, 6.25 -> 6.25, "x" stays text below
    except ValueError:
        return text


def cmd_send(api, a):
    """Send a command, then wait for the device's result."""
    args = {}
    for kv in a.args:
        key, eq, value = kv.partition("=")
        if not eq or not key:
            raise Failure("arguments are key=value, e.g. hz=800; got %r" % kv, EXIT_USAGE)
        args[key] = _arg_value(value)
    dev = urllib.parse.quote(a.device, safe="")
    sent = api.call("POST", "/api/v1/devices/%s/commands" % dev, body={"cmd": a.command, "args": args})
    c = sent["command"]
    if not a.json:
        print("sent %s %s to %s (id %s)" % (a.command, json.dumps(args), a.device, c["id"]), flush=True)
    if a.no_wait:
        if a.json:
            _print_json(sent)
        return
    end = time.monotonic() + a.wait
    while c["state"] == "sent" and time.monotonic() < end:
        wait = max(1, min(30, int(end - time.monotonic())))
        c = api.call("GET", "/api/v1/commands/" + urllib.parse.quote(c["id"], safe=""), query={"wait": wait},
                     timeout=wait + 10)["command"]
    if a.json:
        _print_json({"command": c})
    if c["state"] == "sent":
        raise Failure("no result from %s within %.0f s; the command stays in the log (fleetctl device %s shows it "
                      "when the result comes)" % (a.device, a.wait, a.device), EXIT_TIMEOUT)
    if c["state"] == "failed":
        raise Failure("%s refused %s: %s" % (a.device, a.command, c["error"]), EXIT_CMD_FAILED)
    if not a.json:
        print("ok: %s" % json.dumps(c["detail"]))


def cmd_quarantine(api, a):
    """List rejected messages."""
    q = {"limit": a.limit}
    if a.device:
        q["device"] = a.device
    if a.code:
        q["code"] = a.code
    body = api.call("GET", "/api/v1/quarantine", query=q)
    if a.json:
        return _print_json(body)
    if not body["items"]:
        print("Nothing rejected.")
        return
    print(table(body["items"], [("RECEIVED", "recv_ts"), ("TIMES", "times"), ("TOPIC", "topic"), ("CODE", "code"),
                                ("REASON", "reason"), ("BYTES", "size")]))


def parser():
    """The argument parser (also used by the docs test)."""
    p = argparse.ArgumentParser(prog="fleetctl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="exit status: 0 done, 1 collector unreachable or request refused, 2 bad usage, "
                                       "3 no result in time, 4 the device reported the command failed")
    p.add_argument("--url", default=os.environ.get("FLEETCTL_URL", DEFAULT_URL),
                   help="collector address (default $FLEETCTL_URL or %s)" % DEFAULT_URL)
    p.add_argument("--token", default=os.environ.get("FLEETCTL_TOKEN"), help="API token (default $FLEETCTL_TOKEN)")
    p.add_argument("--json", action="store_true", help="print the API's JSON instead of tables")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each HTTP answer (default 10)")
    sub = p.add_subparsers(dest="what", metavar="command", required=True)
    sub.add_parser("devices", help="list the fleet and its health")
    s = sub.add_parser("device", help="show one device")
    s.add_argument("device")
    s = sub.add_parser("tail", help="follow a device's telemetry")
    s.add_argument("device")
    s.add_argument("--kind", choices=tuple(TAIL_COLUMNS), default="readings", help="record kind (default readings)")
    s.add_argument("--since", default="5m", help="start: how long ago (30s, 5m, 2h, 1d), an ISO 8601 time or ms since "
                                                 "the epoch (default 5m)")
    s.add_argument("--interval", type=float, default=2.0, help="seconds between polls (default 2)")
    s.add_argument("--count", type=int, default=0, help="stop after this many records (default: never)")
    s.add_argument("--once", action="store_true", help="print what is there and stop")
    s = sub.add_parser("send", help="send a command and wait for its result")
    s.add_argument("device")
    s.add_argument("command", choices=COMMANDS)
    s.add_argument("args", nargs="*", metavar="key=value", help="command arguments, e.g. hz=800")
    s.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the result (default 30)")
    s.add_argument("--no-wait", action="store_true", help="return once the command is sent")
    s = sub.add_parser("quarantine", help="show rejected messages")
    s.add_argument("--limit", type=int, default=20, help="how many (default 20, at most 1000)")
    s.add_argument("--device", help="only this device id")
    s.add_argument("--code", help="only this error code, e.g. bad_json")
    return p


def main(argv=None):
    """Entry point of the `fleetctl` console script."""
    a = parser().parse_args(argv)
    api = Api(a.url, a.token, a.timeout)
    run = {"devices": cmd_devices, "device": cmd_device, "tail": cmd_tail, "send": cmd_send,
           "quarantine": cmd_quarantine}[a.what]
    try:
        run(api, a)
    except Failure as e:
        print("fleetctl: %s" % e, file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:  # e.g. piped into head
        return EXIT_OK
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
