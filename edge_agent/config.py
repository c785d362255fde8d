"""The edge agent's settings: one TOML file, environment overrides (fieldwatch.config).

Sections and keys are listed by `edge-agent --help`. Environment variables
EDGE_AGENT_<SECTION>_<KEY> override the file, MQTT_URL overrides mqtt.url, and
the command-line flags (--device-id, --hardware, --state-dir) override both.
"""

from fieldwatch import config as cfg
from fieldwatch.wire import codec, topics

ENV_PREFIX = "EDGE_AGENT"
DEFAULT_STATE_DIR = "/var/lib/fieldwatch-agent"


def device_id(v):
    """Check a device id against the wire contract's rules."""
    if v == "":
        return v  # unset here; load() insists on it after the command-line flags
    if not topics.valid_device_id(v):
        raise ValueError("%r is not a valid device id: 1..32 characters of a-z 0-9 - _, "
                         "starting with a letter or digit" % (v,))
    return v


def text(lo, hi):
    """A checker for a string of lo..hi characters."""
    def check(v):
        if not isinstance(v, str) or not lo <= len(v) <= hi:
            raise ValueError("must be a string of %d..%d characters" % (lo, hi))
        return v
    return check


def rate_hz(v):
    """An ADXL345 output data rate."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise ValueError("must be one of %s" % ", ".join(str(r) for r in codec.ADXL_RATES_HZ)) from None
    if v not in codec.ADXL_RATES_HZ:
        raise ValueError("%s Hz is not an ADXL345 rate; one of %s" % (v, ", ".join(str(r) for r in codec.ADXL_RATES_HZ)))
    return int(v) if v.is_integer() else v


def range_g(v):
    """An ADXL345 full-scale range."""
    try:
        v = int(v)
    except (TypeError, ValueError):
        raise ValueError("must be 2, 4, 8 or 16") from None
    if v not in codec.ADXL_RANGES_G:
        raise ValueError("%d g is not an ADXL345 range; 2, 4, 8 or 16" % v)
    return v


def band_edges(v):
    """Band edges in Hz: a list (or comma-separated string) of increasing numbers from 0."""
    if isinstance(v, str):
        try:
            v = [float(x) for x in v.split(",") if x.strip()]
        except ValueError:
            raise ValueError("must be comma-separated numbers, e.g. 0,10,50,100,200,400") from None
    if not isinstance(v, list) or not 1 <= len(v) <= 32:
        raise ValueError("must be a list of 1..32 band edges in Hz (rate/2 is added as the last edge)")
    out = []
    for x in v:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 <= x <= 100000:
            raise ValueError("edges must be numbers 0..100000 Hz, got %r" % (x,))
        if out and x <= out[-1]:
            raise ValueError("edges must increase")
        out.append(float(x))
    if out[0] != 0:
        raise ValueError("the first edge must be 0")
    return out


def tcp_port(v):
    """A TCP port number, 1..65535."""
    try:
        n = int(v)
    except (TypeError, ValueError):
        raise ValueError("must be a TCP port number 1..65535, got %r" % (v,)) from None
    if isinstance(v, bool) or isinstance(v, float) and not v.is_integer() or not 1 <= n <= 65535:
        raise ValueError("must be a TCP port number 1..65535, got %r" % (v,))
    return n


def gpio_pin(v):
    """A gpiozero pin name ('GPIO17', 'BOARD11', 'J8:11') or BCM number; '' leaves the device out."""
    if isinstance(v, int) and not isinstance(v, bool):
        if not 0 <= v <= 53:
            raise ValueError("BCM pin %d does not exist; 0..53" % v)
        return v
    if not isinstance(v, str) or len(v) > 16:
        raise ValueError("must be a pin name like GPIO17 or BOARD11, a BCM number, or \"\" for none")
    v = v.strip()
    if v.isdigit():
        return gpio_pin(int(v))
    if v and not all(c.isalnum() or c in ":_" for c in v):
        raise ValueError("%r is not a pin name; like GPIO17, BOARD11 or J8:11" % v)
    return v


SCHEMA = {
    "device": {
        "id": cfg.Setting("", device_id, "device id (topic level and MQTT client id): a-z 0-9 - _, 1..32"),
        "hw": cfg.Setting("rpi-adxl345", text(1, 32), "hardware description sent in status"),
        "time_quality": cfg.Setting("auto", cfg.one_of("auto", "ntp", "rtc", "none"),
                                    "tq of our timestamps; auto asks the kernel whether the clock is synchronised"),
    },
    "mqtt": {
        "url": cfg.Setting("mqtt://127.0.0.1:1883", cfg.mqtt_url, "broker URL, mqtt[s]://[user:pass@]host[:port]",
                           env="MQTT_URL"),
        "client_id": cfg.Setting("", help="MQTT client id; the session is kept under it (default: the device id)"),
        "keepalive_s": cfg.Setting(30, cfg.at_least(5), "MQTT keepalive, s"),
        "session_expiry_s": cfg.Setting(86400, cfg.at_least(0), "how long the broker keeps our session and "
                                        "queued confirmations/commands while we are away, s"),
        "reconnect_min_s": cfg.Setting(0.5, cfg.at_least(0.05, float), "first reconnect delay, s (doubles, with jitter)"),
        "reconnect_max_s": cfg.Setting(30.0, cfg.at_least(0.1, float), "longest reconnect delay, s"),
        "max_unacked": cfg.Setting(100, cfg.at_least(1), "publishes awaiting PUBACK at most (paho's inflight is 100)"),
    },
    "outbox": {
        "state_dir": cfg.Setting(DEFAULT_STATE_DIR, text(1, 4096), "directory for the boot counter and the outbox database"),
        "max_records": cfg.Setting(200000, cfg.at_least(100), "records kept at most; when full the oldest are dropped (counted)"),
        "resend_after_s": cfg.Setting(30.0, cfg.at_least(1.0, float), "resend a record not confirmed this long after sending, s"),
        "batch_records": cfg.Setting(500, cfg.at_least(1), "records per message at most (contract limit 500)"),
        "backlog_records_per_s": cfg.Setting(500.0, cfg.at_least(1.0, float),
                                             "pace of backlog (old or resent records) behind live data, records/s"),
        "ack_settle_s": cfg.Setting(1.0, cfg.at_least(0.0, float),
                                    "after a reconnect, wait this long for queued confirmations before resending, s"),
        "exit_drain_s": cfg.Setting(5.0, cfg.at_least(0.0, float),
                                    "on SIGTERM, keep sending and wait for confirmations this long, s"),
    },
    "sensor": {
        "hardware": cfg.Setting("real", cfg.one_of("real", "sim"), "accelerometer: real (ADXL345 on I2C) or sim (simulated chip)"),
        "rate_hz": cfg.Setting(800, rate_hz, "output data rate, Hz (ADXL345 rates; <= 800 on I2C)"),
        "range_g": cfg.Setting(4, range_g, "full-scale range, g"),
        "watermark": cfg.Setting(16, cfg.at_least(1), "FIFO watermark, samples (1..31)"),
        "poll_ms": cfg.Setting(20, cfg.at_least(1), "FIFO read interval, ms, at most: the agent reads when the 32-sample FIFO is half full (20 ms at 800 Hz, 10 ms at 1600 Hz) if that is sooner"),
        "sim_source": cfg.Setting("synthetic", help="simulated chip's signal: synthetic (pump bearing), counter, rest (1 g on z), or the path of a CWRU CSV recording"),
    },
    "features": {
        "window_ms": cfg.Setting(1000, cfg.at_least(10), "feature window length, ms"),
        "band_hz": cfg.Setting([0, 10, 50, 100, 200, 400], band_edges,
                               "band edges, Hz; rate/2 is appended (\"0,10,50\" in the environment)"),
        "remove_dc": cfg.Setting(True, help="remove the mean (gravity) before rms/peak/bands, as docs/wire.md defines them"),
    },
    "wave": {
        "every_s": cfg.Setting(600.0, cfg.at_least(0.0, float), "capture a waveform block this often, s (0: only on command)"),
        "samples": cfg.Setting(1024, cfg.at_least(16), "samples per axis in a block (16..4096)"),
    },
    "status": {
        "interval_s": cfg.Setting(30.0, cfg.at_least(1.0, float), "republish status with buffer and health figures, s"),
        "readings_interval_s": cfg.Setting(60.0, cfg.at_least(0.0, float),
                                           "CPU temperature reading (if the board has one) this often, s; 0: off"),
    },
    "logs": {
        "ship_per_s": cfg.Setting(0.5, cfg.at_least(0.001, float),
                                  "log records shipped on the logs topic, per second on average (the rest are "
                                  "counted in health logs_suppressed and summed up in the next shipped one)"),
        "ship_burst": cfg.Setting(20, cfg.at_least(1), "log records shipped in a burst at most"),
    },
    "gps": {
        "enabled": cfg.Setting(True, help="read fixes from gpsd (absent gpsd is retried, never fatal)"),
        "host": cfg.Setting("127.0.0.1", text(1, 253), "gpsd host"),
        "port": cfg.Setting(2947, tcp_port, "gpsd port"),
        "interval_s": cfg.Setting(10.0, cfg.at_least(0.1, float), "record the newest fix this often, s"),
        "reconnect_max_s": cfg.Setting(30.0, cfg.at_least(0.5, float), "longest wait between gpsd connection attempts, s"),
    },
    "indicator": {
        "enabled": cfg.Setting(True, help="status LED and event button through gpiozero (GPIOZERO_PIN_FACTORY "
                               "picks the pin library; --hardware sim uses gpiozero's MockFactory)"),
        "led_pin": cfg.Setting("GPIO17", gpio_pin, "status LED pin: on = online, slow blink = offline (buffering), "
                               "fast blink = error; \"\" for none"),
        "button_pin": cfg.Setting("GPIO27", gpio_pin, "event button pin (to ground, internal pull-up); a press "
                                  "stores a button_press reading; \"\" for none"),
        "capture_on_press": cfg.Setting(True, help="a button press also captures a waveform block"),
    },
}


def load(path=None, environ=None, overrides=None):
    """The effective configuration; overrides {(section, key): value} (command-line flags) win.

    Raises cfg.ConfigError naming the bad key.
    """
    conf = cfg.load(SCHEMA, path, ENV_PREFIX, environ)
    for (section, key), value in (overrides or {}).items():
        if value is None:
            continue
        try:
            conf[section][key] = SCHEMA[section][key].check(value)
        except ValueError as e:
            raise cfg.ConfigError("%s.%s %s (from the command line)" % (section, key, e)) from None
    if not conf["device"]["id"]:
        raise cfg.ConfigError("device.id must be set (TOML [device] id, EDGE_AGENT_DEVICE_ID or --device-id)")
    if conf["sensor"]["watermark"] > 31:
        raise cfg.ConfigError("sensor.watermark %d must be at most 31 (the FIFO holds 32)" % conf["sensor"]["watermark"])
    if conf["wave"]["samples"] > codec.MAX_WAVE_SAMPLES:
        raise cfg.ConfigError("wave.samples %d must be at most %d" % (conf["wave"]["samples"], codec.MAX_WAVE_SAMPLES))
    if conf["outbox"]["batch_records"] > codec.MAX_RECORDS:
        raise cfg.ConfigError("outbox.batch_records %d must be at most %d" % (conf["outbox"]["batch_records"],
                                                                             codec.MAX_RECORDS))
    if conf["mqtt"]["reconnect_max_s"] < conf["mqtt"]["reconnect_min_s"]:
        raise cfg.ConfigError("mqtt.reconnect_max_s must not be below mqtt.reconnect_min_s")
    return conf


def describe():
    """Every setting with its default and environment variable, for --help."""
    return cfg.describe(SCHEMA, ENV_PREFIX)
