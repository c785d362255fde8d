"""A small fleet in a real database, for the web tests: real MQTT messages through the real collector.

`start_fleet(broker, db_url)` starts the collector (with its web server and an
API token) on a private broker and database, publishes a known fleet through
the wire contract (status, feature windows with band energies, readings, GPS
fixes, log lines carrying markup, a deliberate gap in the keys, quarantined
messages with markup in the topic), waits until the collector has confirmed
every record, and returns a `Fleet` holding what was sent, so tests compute
every expected figure from it instead of hard-coding numbers.
"""

import json
import random
import time
import urllib.error
import urllib.request

import pytest

from fieldwatch.devservices.broker import Broker
from fieldwatch.devservices.collector import CollectorProcess
from fieldwatch.devservices.ports import free_port
from fieldwatch.tools.loadgen import ConfirmingPublisher
from fieldwatch.wire import codec, topics

TOKEN = "test-write-token-%d" % random.randrange(1 << 30)
MARKUP_LOG = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
MARKUP_DEVICE = "<script>alert(1)<"       # breaks the device-id rules: quarantined, shown on the quarantine page
MARKUP_FW = '0.9<i id="fwx">b</i>'        # a firmware version may hold any text: shown as text everywhere


class Fleet:
    """What start_fleet() sent, and the running collector."""

    def __init__(self):
        self.collector = None
        self.publisher = None
        self.url = None            # http://127.0.0.1:PORT
        self.db = None
        self.broker = None
        self.now_ms = None
        self.windows = {}          # dev -> [(seq, ts_ms, window dict)]
        self.readings = {}         # dev -> [(seq, ts_ms, name, value)]
        self.fixes = {}            # dev -> [(seq, ts_ms, fix dict)]
        self.logs = {}             # dev -> [(seq, ts_ms, level, text)]
        self.status = {}           # dev -> (boot, next_seq, fw)
        self.gaps = {}             # dev -> [[first, last]] never sent
        self.quarantined = []      # (topic, code)
        self.messages = {}         # dev -> [[ts_ms of each record] per message sent]

    def stop(self):
        """Stop the publisher and the collector."""
        if self.publisher is not None:
            self.publisher.stop()
        if self.collector is not None:
            self.collector.terminate()


@pytest.fixture(scope="module")
def fleet(pg_cluster):
    """The fleet on its own broker and database, for one test module (import it there)."""
    broker = Broker()
    broker.start()
    db = pg_cluster.create_database()
    f = None
    try:
        f = start_fleet(broker, db)
        f.broker = broker
        yield f
    finally:
        if f is not None:
            f.stop()
        broker.cleanup()
        pg_cluster.drop_database(db)


def get(url, token=None, timeout=10):
    """(status, parsed JSON or text) of a GET."""
    return request("GET", url, token=token, timeout=timeout)


def request(method, url, body=None, token=None, timeout=10, raw_body=None, content_type="application/json"):
    """(status, parsed JSON or text) of one HTTP request; error statuses are returned, not raised."""
    data = raw_body if raw_body is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", content_type)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, text, ctype = r.status, r.read().decode(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        status, text, ctype = e.code, e.read().decode(), e.headers.get("Content-Type", "")
    return status, (json.loads(text, parse_constant=_not_json) if "json" in ctype else text)


def _not_json(name):
    # Python's json accepts NaN and Infinity; browsers (and RFC 8259) do not.
    raise AssertionError("the API answered with %s, which is not JSON" % name)


def _window(i, dev_factor):
    rms = round(0.01 * (i + 1) * dev_factor, 5)
    bands = [round(rms * rms * f, 8) for f in (0.5, 0.3, 0.2)]
    return {"len_ms": 1000, "rate_hz": 800, "n": 800, "band_hz": [0, 50, 200, 400],
            "x": {"rms": rms, "peak": rms * 3, "crest": 3.0, "dom_hz": 29.5, "bands": bands},
            "y": {"rms": rms / 2, "peak": rms * 1.5, "crest": 3.0, "dom_hz": 29.5, "bands": [b / 4 for b in bands]},
            "z": {"rms": rms * 2, "peak": rms * 6, "crest": 3.0, "dom_hz": 29.5, "bands": [b * 4 for b in bands]}}


def start_fleet(broker, db_url, extra_env=None):
    """Start the collector and publish the fleet; returns a Fleet (call .stop() when done)."""
    f = Fleet()
    f.db = db_url
    port = free_port()
    f.url = "http://127.0.0.1:%d" % port
    env = {"COLLECTOR_WEB_API_TOKEN": TOKEN}
    env.update(extra_env or {})
    f.collector = CollectorProcess(broker.url, db_url, client_id="web-test-%d" % port,
                                   web_listen="127.0.0.1:%d" % port, extra_env=env).start()
    try:
        _publish(f, broker)
    except BaseException:
        f.stop()
        raise
    return f


def _publish(f, broker):
    pub = f.publisher = ConfirmingPublisher(broker.url, "web-fleet-%d" % random.randrange(1 << 30))
    pub.start()
    now = f.now_ms = int(time.time() * 1000)
    # pump-01, boot 3: ten feature windows a minute apart, readings, fixes, logs, then a gap, then readings.
    dev, boot = "pump-01", 3
    wins = [(i, now - (10 - i) * 60_000, _window(i, 1.0)) for i in range(10)]
    f.windows[dev] = wins
    pub.send(dev, "features", boot, 0, 9, codec.encode_features(
        dev, boot, 0, now, "ntp", [dict(w, dt=ts - now) for _, ts, w in wins]))
    reads = [(10 + i, now - (10 - i) * 1000, "temp_c", 20.0 + i / 4) for i in range(10)]
    pub.send(dev, "readings", boot, 10, 19, codec.encode_readings(
        dev, boot, 10, now, "ntp", [[ts - now, n, v] for _, ts, n, v in reads]))
    fixes = [(20 + i, now - (5 - i) * 1000, {"mode": 3, "lat_e7": 525200000 + i * 1000, "lon_e7": 134050000 + i * 2000,
                                              "alt_mm": 34500, "speed_mmps": 1200, "sats": 9}) for i in range(5)]
    pub.send(dev, "fix", boot, 20, 24, codec.encode_fixes(
        dev, boot, 20, now, "gps", [dict(fx, dt=ts - now) for _, ts, fx in fixes]))
    logs = [(25, now - 500, "info", "boot ok"), (26, now - 400, "warning", MARKUP_LOG)]
    pub.send(dev, "log", boot, 25, 26, codec.encode_logs(dev, boot, 25, now, "ntp", [[ts - now, l, t] for _, ts, l, t in logs]))
    late = [(30, now - 300, "temp_c", 22.0), (31, now - 200, "temp_c", 22.5)]   # 27..29 never sent: a gap
    pub.send(dev, "readings", boot, 30, 31, codec.encode_readings(dev, boot, 30, now, "ntp", [[ts - now, n, v] for _, ts, n, v in late]))
    f.messages[dev] = [[ts for _, ts, _ in wins], [r[1] for r in reads], [r[1] for r in fixes], [r[1] for r in logs],
                       [r[1] for r in late]]
    f.readings[dev] = reads + late
    f.fixes[dev] = fixes
    f.logs[dev] = logs
    f.gaps[dev] = [[27, 29]]
    f.status[dev] = (boot, 32, "1.4.2")
    # pump-02, boot 1: readings only, no gap.
    reads2 = [(i, now - (4 - i) * 1000, "vbat_v", 3.7 - i / 100) for i in range(4)]
    pub.send("pump-02", "readings", 1, 0, 3, codec.encode_readings(
        "pump-02", 1, 0, now, "ntp", [[ts - now, n, v] for _, ts, n, v in reads2]))
    f.readings["pump-02"] = reads2
    f.messages["pump-02"] = [[r[1] for r in reads2]]
    f.status["pump-02"] = (1, 4, MARKUP_FW)
    f.gaps["pump-02"] = []
    for d, (b, nxt, fw) in f.status.items():
        pub.client.publish(topics.topic(d, "status"), codec.encode_status(
            d, b, nxt, now, "ntp", "online", fw, "pi-adxl345", "power_on", 5, 1.5, 0, {"fifo_overruns": 1}),
            qos=1, retain=True)
    # Quarantine: markup in the topic's device id, and broken JSON.
    pub.client.publish("fieldwatch/v1/%s/log" % MARKUP_DEVICE, b'{"v":1}', qos=1)
    pub.client.publish("fieldwatch/v1/pump-02/telemetry/readings", b"{not json", qos=1)
    f.quarantined = [("fieldwatch/v1/%s/log" % MARKUP_DEVICE, "bad_device_id"),
                     ("fieldwatch/v1/pump-02/telemetry/readings", "bad_json")]
    assert pub.wait_confirmed(30), "the collector did not confirm the fleet's records"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status, body = get(f.url + "/api/v1/devices")
        q = get(f.url + "/api/v1/quarantine")[1]
        if status == 200 and len(body["devices"]) == 2 and all(d["fw"] for d in body["devices"]) \
                and q["count"] >= len(f.quarantined):
            return
        time.sleep(0.1)
    raise AssertionError("the fleet's status and quarantine did not arrive: %r" % (body,))
