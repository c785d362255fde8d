# The device configuration: one JSON file on the board (/config.json), validated at
# boot. Every bad value gets its own console line naming the key, what it holds and
# what is allowed; load() then raises ConfigError with all of them, and the device
# does not start the application on a half-valid config.
# Only needed at boot: app.main() drops this module afterwards (~9 KB of heap).

import json

from fieldwatch.wire import contract, topics

# key: (type, default or REQUIRED, check) -- check returns None or a message
REQUIRED = object()

RATES = contract.ADXL_RATES_HZ
RANGES = contract.ADXL_RANGES_G


class ConfigError(Exception):
    """Config file missing, not JSON, or with bad values (`problems`: one line each)."""

    def __init__(self, problems):
        super().__init__("; ".join(problems))
        self.problems = problems


def _str(lo, hi):
    def check(v):
        if not isinstance(v, str) or not lo <= len(v) <= hi:
            return "a string of %d..%d characters" % (lo, hi)
    return check


def _int(lo, hi):
    def check(v):
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            return "an integer %d..%d" % (lo, hi)
    return check


def _one_of(options):
    def check(v):
        if isinstance(v, bool) or v not in options:
            return "one of " + ", ".join([str(o) for o in options])
    return check


def _device_id(v):
    if not topics.valid_device_id(v):
        return "1..32 of a-z 0-9 - _, starting with a letter or digit"


def _broker(v):
    # mqtt://host[:port]
    if not isinstance(v, str) or not v.startswith("mqtt://") or len(v) <= 7:
        return "mqtt://host or mqtt://host:port"
    hp = v[7:]
    if ":" in hp:
        host, port = hp.rsplit(":", 1)
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            return "mqtt://host:port with a port 1..65535"


SCHEMA = (
    ("device_id", REQUIRED, _device_id),
    ("wifi_ssid", REQUIRED, _str(1, 32)),
    ("wifi_password", "", _str(0, 64)),
    ("broker", REQUIRED, _broker),
    ("mqtt_user", None, _str(1, 64)),            # null: anonymous
    ("mqtt_password", None, _str(0, 64)),
    ("ntp_host", "pool.ntp.org", _str(1, 64)),   # null: no NTP (GPS time only)
    ("rate_hz", 800, _one_of(RATES)),
    ("range_g", 16, _one_of(RANGES)),
    ("window_s", 1, _int(1, 60)),
    ("wave_every_s", 3600, _int(0, 86400)),
    ("wave_samples", 1024, _int(16, contract.MAX_WAVE_SAMPLES)),
    ("i2c_sda", 21, _int(0, 39)),
    ("i2c_scl", 22, _int(0, 39)),
    ("adxl_int1", 4, _int(0, 39)),
    ("gps_rx", 16, _int(0, 39)),
    ("gps_tx", 17, _int(0, 39)),
    ("gps_baud", 9600, _one_of((4800, 9600, 19200, 38400, 57600, 115200))),
    ("outbox_kb", 256, _int(16, 2048)),
    ("wdt_ms", 30000, _int(5000, 120000)),
    ("status_every_s", 30, _int(1, 86400)),      # retained status republished, s (the Pi's status.interval_s)
)


def validate(raw):
    """Check a decoded config dict; return (config with defaults, list of problems)."""
    problems = []
    cfg = {}
    if not isinstance(raw, dict):
        return cfg, ["config: the file must hold one JSON object"]
    known = [k for k, _, _ in SCHEMA]
    for key in raw:
        if key not in known:
            problems.append("config: unknown key %r (typo?)" % key)
    for key, default, check in SCHEMA:
        if key not in raw:
            if default is REQUIRED:
                problems.append("config: %s is missing; it must be %s" % (key, check(None) or "set"))
            else:
                cfg[key] = default
            continue
        v = raw[key]
        why = None if (v is None and (default is None or key == "ntp_host")) else check(v)
        if why:
            problems.append("config: %s = %s is wrong; it must be %s" % (key, _show(v), why))
        else:
            cfg[key] = v
    if not problems and cfg["i2c_sda"] == cfg["i2c_scl"]:
        problems.append("config: i2c_sda and i2c_scl are both pin %d" % cfg["i2c_sda"])
    if not problems:
        cfg["broker_host"], cfg["broker_port"] = broker_host_port(cfg["broker"])
    return cfg, problems


def _show(v):
    s = json.dumps(v)
    return s if len(s) <= 40 else s[:37] + "..."


def load(path="/config.json", echo=print):
    """Read and validate the config file; print each problem; raise ConfigError if any."""
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError:
        echo("config: %s not found (copy config.example.json there)" % path)
        raise ConfigError(["%s not found" % path])
    except ValueError as e:
        echo("config: %s is not valid JSON (%s)" % (path, e))
        raise ConfigError(["not JSON"])
    cfg, problems = validate(raw)
    for p in problems:
        echo(p)
    if problems:
        raise ConfigError(problems)
    return cfg


# Written beside fieldwatch/mqtturl.py (the CPython parser) because MicroPython has no
# urllib; the board's URL carries no user or password (mqtt_user, mqtt_password).
def broker_host_port(url):
    """'mqtt://host:port' -> (host, port); port 1883 when absent."""
    hp = url[7:]
    if ":" in hp:
        host, port = hp.rsplit(":", 1)
        return host, int(port)
    return hp, 1883
