"""Every endpoint the collector serves, swept with hostile values: no answer is a 500 (issue 14).

The routes come from Flask's url_map (a new endpoint is swept without touching
this file), every method each allows; path parameters from the rule, query
parameters and body fields from collector/openapi.json. Each value goes into
one parameter at a time, the others left valid, against the real collector,
broker and database of tests/e2e/web_fleet.py. A 4xx from the API must carry
the JSON error shape {"error": message}.
"""

import http.client
import json
import time
import urllib.parse

from tests.e2e.web_fleet import TOKEN, fleet  # noqa: F401 (fleet: a fixture)

# Already percent-encoded for a URL: NUL, lone surrogates (UTF-8 of U+D800, U+DC00),
# bytes that are not UTF-8, extreme dates, huge numbers, nesting, long and empty
# strings, wrong types, characters that mean something to HTTP or a shell.
URL_VALUES = [
    "%00", "pump%00-01", "%ED%A0%80", "a%ED%B0%80", "%FF%FE",
    "0001-01-01T00:00:00Z", "0001-01-01T00:00:00%2B23:59", "9999-12-31T23:59:59Z", "9999-12-31T23:59:59-23:59",
    "100000000000000000000", "1e20", "-1", "-1000", "0", "-0s", "-99999999999d", "-" + "9" * 5000 + "d",
    "1e308", "18446744073709551616", "-9223372036854775809", "9223372036854775808", "Infinity", "NaN",
    "%5B" * 1000 + "%5D" * 1000, "a" * 100_000, "9" * 100_000, "",
    "%5B%5D", "%7B%7D", "true", "null", "%20", "%0D%0AX-Injected:%201", "..%2F..%2Fetc%2Fpasswd", "%25", "%3Cscript%3E",
]

# Pairs of these go into from and to together: the edges of the accepted range, offsets that
# cross them, the epoch, relative times, and a value of each other form.
RANGE_VALUES = [
    "1900-01-01T00:00:00Z", "1900-01-01T00:00:00%2B23:59", "1900-01-01T23:59:59-23:59", "9999-12-31T00:00:00Z",
    "9999-12-30T00:00:00-23:00", "9999-12-30T23:00:00-23:59", "0", "1", "-0s", "-366d", "-367d", "999999999999999",
    "0001-01-01T00:00:00Z",
]

# JSON texts for body fields: NUL, lone surrogates, huge numbers, deep nesting, long strings, wrong types.
JSON_VALUES = [
    '"\\u0000"', '"a\\u0000b"', '"\\ud800"', '"\\udc00x"', '"\\ud800\\udc00"',
    "1e308", "1e400", "-1e400", str(2 ** 64), str(-2 ** 63 - 1), "1e20", "-1", "0", "0.5",
    "true", "null", "[]", "{}", '""', '"%s"' % ("a" * 100_000), '"%s"' % ("a" * 60_000),
    "[" * 1000 + "]" * 1000, '{"a":' * 1000 + "1" + "}" * 1000, "[" * 50 + "]" * 50,
    '{"\\u0000": 1}', '{"\\ud800": 1}', '{"hz": 1e400}', '{"hz": "\\ud800"}', '{"hz": %s}' % ("[" * 900 + "]" * 900),
    '"0001-01-01T00:00:00Z"',
]

# Whole bodies: empty, not UTF-8, encoded surrogates, truncated, not JSON, a BOM.
RAW_BODIES = [
    b"", b"\x00", b"\xff\xfe{}", b'{"cmd": "\xed\xa0\x80"}', b"[" * 100_000, b'"\\ud800"', b"null", b"[]", b"1e400",
    b"NaN", b'\xef\xbb\xbf{"cmd": "wake"}', b'{"cmd": "wake"', b'{"cmd": "wake", "cmd": "reboot", "x": 1}',
    b"x" * 70_000,
]

SAMPLE_PATH = {"device_id": "pump-01", "cmd_id": "no-such-command", "filename": "style.css"}
VALID_BODY = {"cmd": "set_rate", "args": {"hz": 800}}


def _rules():
    """(rule, methods) of every route the collector's app serves, from Flask's url_map."""
    from collector.metrics import Metrics
    from collector.queries import Queries
    from collector.web import create_app

    q = Queries("postgresql:///nowhere")   # never connected: the app is built only for its url_map
    try:
        app = create_app(q, Metrics())
        return [(r.rule, sorted(r.methods), sorted(r.arguments)) for r in app.url_map.iter_rules()]
    finally:
        q.close()


def _openapi():
    with open(__import__("collector").__path__[0] + "/openapi.json") as f:
        return json.load(f)


def _query_names(doc, rule, method):
    """Query parameters openapi.json declares for this route and method (GET's for HEAD), plus an unknown one."""
    if not rule.startswith("/api/v1/"):
        return ["x"]
    path = rule[len("/api/v1"):].replace("<", "{").replace(">", "}")
    op = doc["paths"].get(path, {}).get("get" if method == "HEAD" else method.lower(), {})
    return [p["name"] for p in op.get("parameters", []) if p["in"] == "query"] + ["undocumented"]


def _body_fields(doc, rule, method):
    path = rule[len("/api/v1"):].replace("<", "{").replace(">", "}")
    op = doc["paths"].get(path, {}).get(method.lower(), {})
    schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    return sorted(schema.get("properties", {}))


class Sweep:
    """Sends the requests and keeps every answer that breaks the rules."""

    def __init__(self, base):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port
        self.sent = 0
        self.bad = []

    def send(self, method, path, body=None, token=None, content_type="application/json"):
        headers = {}
        if body is not None:
            headers["Content-Type"] = content_type
        if token is not None:
            headers["Authorization"] = "Bearer " + token
        conn = http.client.HTTPConnection(self.host, self.port, timeout=15)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for k, v in headers.items():
                conn.putheader(k, v)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            r = conn.getresponse()
            status, ctype, text = r.status, r.getheader("Content-Type", ""), r.read()
        finally:
            conn.close()
        self.sent += 1
        self.check(method, path, body, status, ctype, text)
        return status

    def check(self, method, path, body, status, ctype, text):
        what = "%s %s%s -> %d" % (method, path[:150], " body %r" % body[:80] if body else "", status)
        if status >= 500:
            self.bad.append("%s: %s" % (what, text[:300]))
            return
        if 400 <= status < 500 and path.startswith("/api/") and method != "HEAD":
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            if "application/json" not in ctype or not isinstance(parsed, dict) or list(parsed) != ["error"] \
                    or not isinstance(parsed["error"], str) or not parsed["error"].strip():
                self.bad.append("%s: not the JSON error shape: %s %r" % (what, ctype, text[:200]))
            elif "Traceback" in parsed["error"]:
                self.bad.append("%s: a traceback reached the client" % what)


def _path(rule, values):
    out = rule
    for name, v in values.items():
        out = out.replace("<%s>" % name, v).replace("<path:%s>" % name, v)
    return out


def test_web_every_endpoint_answers_hostile_values_without_a_500(fleet):
    started = time.monotonic()
    doc = _openapi()
    sweep = Sweep(fleet.url)
    rules = _rules()
    assert len(rules) >= 15, rules   # the url_map was read, not an empty app
    for rule, methods, arguments in rules:
        for method in methods:
            body = json.dumps(VALID_BODY).encode() if method == "POST" else None
            tokens = (None, "wrong", TOKEN) if method == "POST" else (None,)
            for token in tokens:
                # path parameters, one at a time
                for arg in arguments:
                    for v in URL_VALUES:
                        sweep.send(method, _path(rule, dict(SAMPLE_PATH, **{arg: v})), body, token)
                # query parameters, one at a time, on a valid path
                base = _path(rule, SAMPLE_PATH)
                names = _query_names(doc, rule, method)
                for name in names:
                    for v in URL_VALUES:
                        sweep.send(method, base + "?" + name + "=" + v, body, token)
                    sweep.send(method, base + "?" + name, body, token)   # no value at all
                if "from" in names and "to" in names and method == "GET":   # HEAD runs the same view
                    for start in RANGE_VALUES:
                        for end in RANGE_VALUES:
                            sweep.send(method, base + "?from=%s&to=%s" % (start, end), body, token)
                if method != "POST" or not rule.startswith("/api/v1/"):
                    continue
                # body fields, one at a time, then whole hostile bodies and content types
                for field in _body_fields(doc, rule, method):
                    for v in JSON_VALUES:
                        text = json.dumps(dict(VALID_BODY, **{field: "@@"})).replace('"@@"', v)
                        sweep.send(method, base, text.encode(), token)
                for v in JSON_VALUES:
                    sweep.send(method, base, ('{"cmd": "set_rate", "args": {"hz": %s}}' % v).encode(), token)
                for raw in RAW_BODIES:
                    sweep.send(method, base, raw, token)
                for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1",
                              "multipart/form-data; boundary=x", "\x7f"):
                    sweep.send(method, base, json.dumps(VALID_BODY).encode(), token, content_type=ctype)
    took = time.monotonic() - started
    assert not sweep.bad, "%d of %d answers broke the rules, e.g.:\n%s" % (
        len(sweep.bad), sweep.sent, "\n".join(sweep.bad[:40]))
    assert sweep.sent > 2000
    # ~8 s on an idle 2-core machine, ~20 s beside other test runs; the bound only catches a hang
    assert took < 90, "the sweep of %d requests took %.0f s" % (sweep.sent, took)


def test_web_write_endpoints_refuse_without_the_token_whatever_the_body(fleet):
    from collector.web import MAX_BODY

    sweep = Sweep(fleet.url)
    for rule, methods, _ in _rules():
        if "POST" not in methods:
            continue
        base = _path(rule, SAMPLE_PATH)
        for raw in RAW_BODIES + [v.encode() for v in JSON_VALUES]:
            too_big = len(raw) > MAX_BODY   # refused by size before anything else is looked at
            assert sweep.send("POST", base, raw) == (413 if too_big else 401), (rule, raw[:80])
            assert sweep.send("POST", base, raw, token="wrong") == (413 if too_big else 403), (rule, raw[:80])
    # odd tokens: empty (no token: 401), NUL (a header waitress refuses: 400), not ASCII, 100 KB
    base = _path("/api/v1/devices/<device_id>/commands", SAMPLE_PATH)
    for token, expected in (("", 401), ("\x00", 400), ("\xff" * 100, 403), ("x" * 100_000, 403), ("Bearer x", 403)):
        assert sweep.send("POST", base, json.dumps(VALID_BODY).encode(), token=token) == expected, repr(token[:20])
    assert not sweep.bad, "\n".join(sweep.bad[:20])
