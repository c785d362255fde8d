# Encoder, decoder and validator for wire contract v1 payloads.
#
# Common subset of CPython and MicroPython (the firmware imports this module).
# decode() is the one validator every side uses: the collector calls it on each
# message it receives, the device on each command and delivery confirmation.
# It returns a plain dict, or raises WireError with a machine-readable `code`
# and a human-readable `detail`.

import json
import math
import struct
import sys

from fieldwatch.wire import topics

VERSION = 1

# ---- limits (docs/wire.md, "Limits") ----------------------------------------
MAX_PAYLOAD = 65536          # bytes, any message
MAX_RECORDS = 500            # records per batched message
MAX_WAVE_SAMPLES = 4096      # samples per axis in one waveform block
MAX_NAME = 32                # reading / health counter name length
MAX_LOG_TEXT = 512           # characters of one log line
MAX_CMD_ID = 36
MAX_DT_MS = 86400000         # |record time - t0| within one message, ms
MAX_U32 = 4294967295
MIN_TS_MS = 1577836800000    # 2020-01-01T00:00:00Z: wall-clock times before this are absurd
MAX_FUTURE_MS = 86400000     # a wall-clock time more than 1 day after receipt is absurd
MAX_TS_MS = 2 ** 62          # t0 and every record time lie in 0..2^62 ms
MAX_EXACT_INT = 2 ** 53      # integers a double holds exactly; larger ones are out_of_range
MAX_DETAIL_DEPTH = 8         # nesting of a command result's detail object

# ---- enumerations ------------------------------------------------------------
# Time quality of a device's clock when it stamped a record.
#   gps  from a GPS fix; ntp  NTP-synchronised; rtc  kept by the RTC since an earlier
#   sync (may drift); none  never set: times are milliseconds since boot, not epoch.
TIME_QUALITY = ("none", "rtc", "ntp", "gps")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
STATES = ("online", "offline", "sleeping")
RESET_REASONS = ("power_on", "hard", "watchdog", "soft", "brownout", "panic",
                 "deep_sleep", "unknown")
ADXL_RATES_HZ = (6.25, 12.5, 25, 50, 100, 200, 400, 800, 1600, 3200)
ADXL_RANGES_G = (2, 4, 8, 16)
AXES = ("x", "y", "z")
FEATURE_KEYS = ("rms", "peak", "crest", "dom_hz")
COMMANDS = ("set_rate", "set_range", "sleep", "wake", "capture", "flush", "reboot")

# Waveform block header, little-endian (docs/wire.md, "wave"):
#   magic "FW", version u8, time quality u8, boot u32, seq u32, t0 ms i64,
#   rate mHz u32, scale g/count f32, samples per axis u16, axes u8, range g u8,
#   device id length u8; then the device id; then int16 samples x0 y0 z0 x1 ...
WAVE_HEADER = "<2sBBIIqIfHBBB"
WAVE_HEADER_SIZE = struct.calcsize(WAVE_HEADER)  # 33
WAVE_MAGIC = b"FW"


class WireError(Exception):
    """A payload that breaks the contract: `code` names the rule, `detail` says how."""

    def __init__(self, code, detail):
        super().__init__(code + ": " + detail)
        self.code = code
        self.detail = detail


# ---- small checks --------------------------------------------------------------

def _fail(code, detail):
    raise WireError(code, detail)


def _check_version(v):
    # The integer 1: not true, not 1.0 (both compare equal to 1 in Python).
    if not _is_int(v) or v != VERSION:
        _fail("bad_version", "v=%s; this contract is v%d" % (_show(v), VERSION))


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x):
    return (isinstance(x, int) or isinstance(x, float)) and not isinstance(x, bool)


def _int(obj, key, lo, hi, where):
    x = obj.get(key)
    if not _is_int(x):
        _fail("bad_type", "%s.%s must be an integer, got %s" % (where, key, _show(x)))
    if x < lo or x > hi:
        _fail("out_of_range", "%s.%s=%d outside %d..%d" % (where, key, x, lo, hi))
    return x


def _num(x, where, lo=None, hi=None):
    if not _is_num(x):
        _fail("bad_type", "%s must be a number, got %s" % (where, _show(x)))
    if isinstance(x, float) and not math.isfinite(x):
        _fail("not_finite", "%s is %s; only finite numbers are allowed" % (where, x))
    if isinstance(x, int) and not -MAX_EXACT_INT <= x <= MAX_EXACT_INT:
        _fail("out_of_range", "%s=%d: integers beyond +-2^53 do not fit a double" % (where, x))
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        _fail("out_of_range", "%s=%s outside %s..%s" % (where, x, lo, hi))
    return x


def _opt_int(obj, key, lo, hi, where):
    if obj.get(key) is None:
        return None
    return _int(obj, key, lo, hi, where)


def _name(x, where):
    # Reading and counter names: 1..32 of a-z 0-9 _ starting with a letter.
    if not isinstance(x, str) or not 0 < len(x) <= MAX_NAME:
        _fail("bad_name", "%s must be a name of 1..%d characters, got %s" % (where, MAX_NAME, _show(x)))
    for i in range(len(x)):
        c = ord(x[i])
        if 97 <= c <= 122 or (i > 0 and (48 <= c <= 57 or c == 95)):
            continue
        _fail("bad_name", "%s=%s: use a-z, 0-9 and _, starting with a letter" % (where, _show(x)))
    return x


def _show(x):
    # A short, safe rendering of a bad value for an error message.
    s = repr(x)
    if len(s) > 40:
        s = s[:37] + "..."
    return s


def _text(x, lo, hi):
    # A string of lo..hi characters without NUL or UTF-16 surrogates (from \ud800-style
    # escapes): neither can be stored as PostgreSQL text or re-encoded as UTF-8.
    if not isinstance(x, str) or not lo <= len(x) <= hi:
        return False
    for c in x:
        o = ord(c)
        if o == 0 or 0xD800 <= o <= 0xDFFF:
            return False
    return True


def _json_value(x, where, depth):
    # A command result's free-form detail: finite numbers, clean strings, bounded nesting.
    if depth > MAX_DETAIL_DEPTH:
        _fail("bad_value", "%s nests deeper than %d" % (where, MAX_DETAIL_DEPTH))
    if isinstance(x, dict):
        for k in x:
            if not _text(k, 0, MAX_LOG_TEXT):
                _fail("bad_value", "%s has a bad key %s" % (where, _show(k)))
            _json_value(x[k], where + "." + k, depth + 1)
    elif isinstance(x, list):
        for i in range(len(x)):
            _json_value(x[i], "%s[%d]" % (where, i), depth + 1)
    elif isinstance(x, str):
        if not _text(x, 0, MAX_LOG_TEXT):
            _fail("bad_value", "%s must be at most %d characters, no NUL or lone surrogates" % (where, MAX_LOG_TEXT))
    elif x is not None and not isinstance(x, bool):
        _num(x, where)


def _list(obj, key, where, max_len):
    x = obj.get(key)
    if not isinstance(x, list):
        _fail("bad_type", "%s.%s must be a list, got %s" % (where, key, _show(x)))
    if not 0 < len(x) <= max_len:
        _fail("bad_batch", "%s.%s has %d entries; 1..%d allowed" % (where, key, len(x), max_len))
    return x


def check_time(ts, tq, now_ms, where):
    """Reject an absurd wall-clock time (before 2020, or > 1 day after now_ms)."""
    if tq == "none" or now_ms is None:
        return
    if ts < MIN_TS_MS:
        _fail("absurd_time", "%s=%d ms is before 2020-01-01" % (where, ts))
    if ts > now_ms + MAX_FUTURE_MS:
        _fail("absurd_time", "%s=%d ms is %d s after receipt" % (where, ts, (ts - now_ms) // 1000))


# ---- the common record header ---------------------------------------------------

def _header(msg, dev, kind, now_ms):
    # v, dev, boot, seq, t0, tq: shared by every device-to-collector message.
    if not isinstance(msg, dict):
        _fail("bad_type", "payload must be a JSON object")
    _check_version(msg.get("v"))
    pdev = msg.get("dev")
    if pdev != dev:
        _fail("device_mismatch", "payload dev=%s but topic device is %s" % (_show(pdev), _show(dev)))
    tq = msg.get("tq")
    if tq not in TIME_QUALITY:
        _fail("bad_value", "tq=%s; one of %s" % (_show(tq), ", ".join(TIME_QUALITY)))
    out = {
        "kind": kind,
        "dev": dev,
        "boot": _int(msg, "boot", 0, MAX_U32, kind),
        "seq": _int(msg, "seq", 0, MAX_U32, kind),
        "t0": _int(msg, "t0", 0, MAX_TS_MS, kind),
        "tq": tq,
    }
    check_time(out["t0"], tq, now_ms, kind + ".t0")
    return out


def _dt(x, where):
    if not _is_int(x):
        _fail("bad_type", "%s must be an integer of ms, got %s" % (where, _show(x)))
    if x < -MAX_DT_MS or x > MAX_DT_MS:
        _fail("out_of_range", "%s=%d ms; |dt| <= %d" % (where, x, MAX_DT_MS))
    return x


def _records(h, items, now_ms, one):
    # Expand a batch: record i has key (boot, seq + i) and time t0 + dt.
    if h["seq"] + len(items) - 1 > MAX_U32:
        _fail("out_of_range", "seq %d + %d records passes 2^32-1" % (h["seq"], len(items)))
    recs = []
    for i in range(len(items)):
        where = "%s[%d]" % (h["kind"], i)
        rec = one(items[i], where)
        rec["seq"] = h["seq"] + i
        rec["ts"] = h["t0"] + rec.pop("dt")
        if rec["ts"] < 0:
            _fail("out_of_range", "%s.ts=%d ms is negative (t0 + dt < 0)" % (where, rec["ts"]))
        check_time(rec["ts"], h["tq"], now_ms, where + ".ts")
        recs.append(rec)
    h["records"] = recs
    return h


def _reading(item, where):
    if not isinstance(item, list) or len(item) != 3:
        _fail("bad_type", "%s must be [dt_ms, name, value]" % where)
    return {"dt": _dt(item[0], where + ".dt"), "name": _name(item[1], where + ".name"),
            "value": _num(item[2], where + ".value")}


def _fix(item, where):
    if not isinstance(item, dict):
        _fail("bad_type", "%s must be an object" % where)
    mode = item.get("mode")
    if not _is_int(mode):
        _fail("bad_type", "%s.mode must be an integer, got %s" % (where, _show(mode)))
    if mode not in (2, 3):
        _fail("bad_value", "%s.mode=%s; 2 (2D) or 3 (3D)" % (where, _show(mode)))
    return {
        "dt": _dt(item.get("dt"), where + ".dt"),
        "mode": mode,
        "lat_e7": _int(item, "lat_e7", -900000000, 900000000, where),
        "lon_e7": _int(item, "lon_e7", -1800000000, 1800000000, where),
        "alt_mm": _opt_int(item, "alt_mm", -1000000, 100000000, where),
        "speed_mmps": _opt_int(item, "speed_mmps", 0, 1000000, where),
        "track_cdeg": _opt_int(item, "track_cdeg", 0, 35999, where),
        "eph_mm": _opt_int(item, "eph_mm", 0, 100000000, where),
        "epv_mm": _opt_int(item, "epv_mm", 0, 100000000, where),
        "sats": _opt_int(item, "sats", 0, 255, where),
    }


def _window(item, where):
    if not isinstance(item, dict):
        _fail("bad_type", "%s must be an object" % where)
    rec = {
        "dt": _dt(item.get("dt"), where + ".dt"),
        "len_ms": _int(item, "len_ms", 1, 3600000, where),
        "rate_hz": _num(item.get("rate_hz"), where + ".rate_hz", 0.1, 100000),
        "n": _int(item, "n", 1, 10000000, where),
    }
    edges = item.get("band_hz")
    nb = None
    if edges is not None:
        if not isinstance(edges, list) or not 2 <= len(edges) <= 33:
            _fail("bad_type", "%s.band_hz must be a list of 2..33 edges" % where)
        prev = -1
        for j in range(len(edges)):
            e = _num(edges[j], "%s.band_hz[%d]" % (where, j), 0, 100000)
            if e <= prev:
                _fail("bad_value", "%s.band_hz must increase" % where)
            prev = e
        nb = len(edges) - 1
    rec["band_hz"] = edges
    seen = 0
    for ax in AXES:
        a = item.get(ax)
        if a is None:
            rec[ax] = None
            continue
        seen += 1
        aw = where + "." + ax
        if not isinstance(a, dict):
            _fail("bad_type", "%s must be an object" % aw)
        f = {}
        for k in FEATURE_KEYS:
            f[k] = _num(a.get(k), aw + "." + k, 0)
        bands = a.get("bands")
        if bands is not None:
            if nb is None or not isinstance(bands, list) or len(bands) != nb:
                _fail("bad_value", "%s.bands needs band_hz and one value per band" % aw)
            for j in range(nb):
                _num(bands[j], "%s.bands[%d]" % (aw, j), 0)
        f["bands"] = bands
        rec[ax] = f
    if not seen:
        _fail("bad_value", "%s has no axis (x, y or z)" % where)
    return rec


def _log(item, where):
    if not isinstance(item, list) or len(item) != 3:
        _fail("bad_type", "%s must be [dt_ms, level, text]" % where)
    if item[1] not in LOG_LEVELS:
        _fail("bad_value", "%s.level=%s; one of %s" % (where, _show(item[1]), ", ".join(LOG_LEVELS)))
    text = item[2]
    if not _text(text, 0, MAX_LOG_TEXT):
        _fail("bad_value", "%s.text must be a string of at most %d characters, no NUL or lone surrogates"
              % (where, MAX_LOG_TEXT))
    return {"dt": _dt(item[0], where + ".dt"), "level": item[1], "text": text}


# ---- decoding -----------------------------------------------------------------

def decode(topic_name, payload, now_ms=None):
    """Validate one message; return its dict form (see docs/wire.md) or raise WireError.

    now_ms: receipt time in ms since the epoch; when given, absurd wall-clock
    times (before 2020, more than a day ahead) are rejected.
    """
    parsed = topics.parse(topic_name)
    if parsed is None:
        _fail("bad_topic", "not a fieldwatch v1 topic: %s" % _show(topic_name))
    dev, kind = parsed
    if not topics.valid_device_id(dev):
        _fail("bad_device_id", "device id %s: 1..%d of a-z 0-9 - _" % (_show(dev), topics.DEVICE_ID_MAX))
    if len(payload) > MAX_PAYLOAD:
        _fail("oversize", "%d bytes; the limit is %d" % (len(payload), MAX_PAYLOAD))
    if kind == "wave":
        return decode_wave(dev, payload, now_ms)
    msg = _loads(payload)
    if kind == "cmd":
        return _decode_cmd(dev, msg)
    if kind == "ack":
        return _decode_ack(dev, msg)
    h = _header(msg, dev, kind, now_ms)
    if kind == "readings":
        return _records(h, _list(msg, "r", kind, MAX_RECORDS), now_ms, _reading)
    if kind == "fix":
        return _records(h, _list(msg, "f", kind, MAX_RECORDS), now_ms, _fix)
    if kind == "features":
        return _records(h, _list(msg, "w", kind, MAX_RECORDS), now_ms, _window)
    if kind == "log":
        return _records(h, _list(msg, "l", kind, MAX_RECORDS), now_ms, _log)
    if kind == "result":
        return _decode_result(h, msg)
    return _decode_status(h, msg)


def _no_constant(name):
    raise ValueError("%s is not JSON" % name)


def _loads(payload):
    # Strict UTF-8 JSON, the same verdict on both interpreters.  MicroPython's parser
    # checks UTF-8 itself and has no NaN / Infinity; CPython's json.loads(bytes) would
    # accept a BOM, UTF-16/32 and encoded surrogates, and parses NaN and Infinity.
    # (MicroPython is laxer on some malformed JSON, e.g. trailing commas: producers
    # must write RFC 8259 JSON.)
    try:
        if sys.implementation.name == "micropython":
            return json.loads(payload)
        if not isinstance(payload, str):
            payload = str(payload, "utf-8")
        return json.loads(payload, parse_constant=_no_constant)
    except Exception:  # ValueError, UnicodeError, RecursionError (deep nesting)
        _fail("bad_json", "payload is not valid UTF-8 JSON")


def _decode_result(h, msg):
    cid = msg.get("id")
    if not _text(cid, 1, MAX_CMD_ID):
        _fail("bad_value", "result.id must be the command id (1..%d chars)" % MAX_CMD_ID)
    if msg.get("cmd") not in COMMANDS:
        _fail("bad_value", "result.cmd=%s is not a command" % _show(msg.get("cmd")))
    ok = msg.get("ok")
    if not isinstance(ok, bool):
        _fail("bad_type", "result.ok must be true or false")
    detail = msg.get("detail")
    if detail is not None:
        if not isinstance(detail, dict):
            _fail("bad_type", "result.detail must be an object")
        _json_value(detail, "result.detail", 1)
    error = msg.get("error")
    if not ok and not _text(error, 1, MAX_LOG_TEXT):
        _fail("bad_value", "result.error must say why the command failed (1..%d characters)" % MAX_LOG_TEXT)
    h.update({"id": cid, "cmd": msg["cmd"], "ok": ok, "detail": detail,
              "error": error if not ok else None})
    h["records"] = [{"seq": h["seq"], "ts": h["t0"]}]
    return h


def _decode_status(h, msg):
    state = msg.get("state")
    if state not in STATES:
        _fail("bad_value", "status.state=%s; one of %s" % (_show(state), ", ".join(STATES)))
    fw = msg.get("fw")
    if not _text(fw, 1, 32):
        _fail("bad_value", "status.fw must be a version string of 1..32 characters")
    hw = msg.get("hw")
    if not _text(hw, 1, 32):
        _fail("bad_value", "status.hw must name the hardware (1..32 characters)")
    reset = msg.get("reset")
    if reset not in RESET_REASONS:
        _fail("bad_value", "status.reset=%s; one of %s" % (_show(reset), ", ".join(RESET_REASONS)))
    buf = msg.get("buf")
    if not isinstance(buf, dict):
        _fail("bad_type", "status.buf must be an object")
    h.update({
        "state": state, "fw": fw, "hw": hw, "reset": reset,
        "buf": {
            "depth": _int(buf, "depth", 0, MAX_U32, "status.buf"),
            "oldest_s": _num(buf.get("oldest_s", 0), "status.buf.oldest_s", 0),
            "drops": _int(buf, "drops", 0, MAX_U32, "status.buf"),
        },
    })
    health = msg.get("health", {})
    if not isinstance(health, dict) or len(health) > 32:
        _fail("bad_type", "status.health must be an object of at most 32 counters")
    hl = {}
    for k in health:
        _name(k, "status.health key")
        hl[k] = _int(health, k, 0, 2 ** 53, "status.health")
    h["health"] = hl
    return h


def _decode_cmd(dev, msg):
    if not isinstance(msg, dict):
        _fail("bad_type", "payload must be a JSON object")
    _check_version(msg.get("v"))
    cid = msg.get("id")
    if not _text(cid, 1, MAX_CMD_ID):
        _fail("bad_value", "cmd.id must be a string of 1..%d characters" % MAX_CMD_ID)
    name = msg.get("cmd")
    if name not in COMMANDS:
        _fail("unknown_command", "cmd=%s; one of %s" % (_show(name), ", ".join(COMMANDS)))
    args = msg.get("args", {})
    if not isinstance(args, dict):
        _fail("bad_type", "cmd.args must be an object")
    check_args(name, args)
    return {"kind": "cmd", "dev": dev, "id": cid, "cmd": name, "args": args,
            "ts": _int(msg, "ts", 0, MAX_TS_MS, "cmd")}


def check_args(name, args):
    """Raise WireError unless args suit command `name` (docs/wire.md, "cmd")."""
    allowed = {"set_rate": ("hz",), "set_range": ("g",), "sleep": ("s",), "capture": ("n",)}.get(name, ())
    for k in args:
        if k not in allowed:
            _fail("bad_argument", "%s takes no argument %s" % (name, _show(k)))
    if name == "set_rate" and args.get("hz") not in ADXL_RATES_HZ:
        _fail("bad_argument", "set_rate.hz=%s; one of %s" % (
            _show(args.get("hz")), ", ".join([str(r) for r in ADXL_RATES_HZ])))
    if name == "set_range" and (not _is_int(args.get("g")) or args.get("g") not in ADXL_RANGES_G):
        _fail("bad_argument", "set_range.g=%s; one of 2, 4, 8, 16" % _show(args.get("g")))
    # Every argument problem is bad_argument, so a device answers them all alike.
    if name == "sleep" and "s" in args:
        _int_arg(args, "s", 1, 86400, name)
    if name == "capture" and "n" in args:
        _int_arg(args, "n", 16, MAX_WAVE_SAMPLES, name)


def _int_arg(args, key, lo, hi, name):
    x = args[key]
    if not _is_int(x) or not lo <= x <= hi:
        _fail("bad_argument", "%s.%s=%s; an integer %d..%d" % (name, key, _show(x), lo, hi))


def _decode_ack(dev, msg):
    if not isinstance(msg, dict):
        _fail("bad_type", "payload must be a JSON object")
    _check_version(msg.get("v"))
    if msg.get("dev") != dev:
        _fail("device_mismatch", "payload dev=%s but topic device is %s" % (_show(msg.get("dev")), _show(dev)))
    ranges = _list(msg, "ranges", "ack", 1000)
    out = []
    for r in ranges:
        if not isinstance(r, list) or len(r) != 3:
            _fail("bad_type", "ack.ranges entries are [boot, first_seq, last_seq]")
        for x in r:
            if not _is_int(x):
                _fail("bad_type", "ack.ranges values are integers, got %s" % _show(x))
            if x < 0 or x > MAX_U32:
                _fail("out_of_range", "ack.ranges value %d outside 0..2^32-1" % x)
        if r[1] > r[2]:
            _fail("bad_value", "ack range %s runs backwards" % _show(r))
        out.append((r[0], r[1], r[2]))
    return {"kind": "ack", "dev": dev, "ranges": out}


def decode_wave(dev, payload, now_ms=None):
    """Validate a binary waveform block; samples come back as the raw little-endian int16 bytes."""
    if len(payload) < WAVE_HEADER_SIZE:
        _fail("bad_wave", "%d bytes is shorter than the %d-byte header" % (len(payload), WAVE_HEADER_SIZE))
    (magic, ver, tqc, boot, seq, t0, rate_mhz, scale, n, axes, range_g,
     dlen) = struct.unpack_from(WAVE_HEADER, payload, 0)
    if magic != WAVE_MAGIC:
        _fail("bad_wave", "magic %s is not b'FW'" % _show(magic))
    if ver != VERSION:
        _fail("bad_version", "wave version %d; this contract is v%d" % (ver, VERSION))
    if tqc >= len(TIME_QUALITY):
        _fail("bad_value", "wave time quality code %d; 0..3" % tqc)
    pdev = bytes(payload[WAVE_HEADER_SIZE:WAVE_HEADER_SIZE + dlen])
    if pdev != dev.encode():
        _fail("device_mismatch", "payload dev=%s but topic device is %s" % (_show(pdev), _show(dev)))
    if not 1 <= axes <= 3:
        _fail("bad_wave", "axes=%d; 1..3" % axes)
    if not 1 <= n <= MAX_WAVE_SAMPLES:
        _fail("bad_wave", "n=%d samples per axis; 1..%d" % (n, MAX_WAVE_SAMPLES))
    if range_g not in ADXL_RANGES_G and range_g != 0:
        _fail("bad_wave", "range_g=%d; 0, 2, 4, 8 or 16" % range_g)
    if not 100 <= rate_mhz <= 100000000:
        _fail("bad_wave", "rate %d mHz outside 0.1 Hz..100 kHz" % rate_mhz)
    if not math.isfinite(scale) or not 0 < scale < 1:
        _fail("bad_wave", "scale %s g/count must be in (0, 1)" % scale)
    start = WAVE_HEADER_SIZE + dlen
    want = start + 2 * n * axes
    if len(payload) != want:
        _fail("bad_wave", "%d bytes; header says %d" % (len(payload), want))
    if not 0 <= t0 <= MAX_TS_MS:
        _fail("out_of_range", "wave.t0=%d outside 0..2^62" % t0)
    tq = TIME_QUALITY[tqc]
    check_time(t0, tq, now_ms, "wave.t0")
    return {
        "kind": "wave", "dev": dev, "boot": boot, "seq": seq, "t0": t0, "tq": tq,
        "rate_hz": rate_mhz / 1000, "scale_g": scale, "n": n, "axes": axes, "range_g": range_g,
        "samples": bytes(payload[start:]),
        "records": [{"seq": seq, "ts": t0}],
    }


# ---- encoding -------------------------------------------------------------------
# Encoders build the payload exactly as the contract shows it.  JSON is written
# compactly (no spaces); field order does not matter to any decoder.

def _dumps(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def _head(dev, boot, seq, t0, tq):
    return {"v": VERSION, "dev": dev, "boot": boot, "seq": seq, "t0": t0, "tq": tq}


def encode_readings(dev, boot, seq, t0, tq, readings):
    """readings: list of [dt_ms, name, value]; record i gets key (boot, seq + i)."""
    m = _head(dev, boot, seq, t0, tq)
    m["r"] = readings
    return _dumps(m)


def encode_fixes(dev, boot, seq, t0, tq, fixes):
    """fixes: list of fix dicts (dt, mode, lat_e7, lon_e7, optional alt_mm ...)."""
    m = _head(dev, boot, seq, t0, tq)
    m["f"] = fixes
    return _dumps(m)


def encode_features(dev, boot, seq, t0, tq, windows):
    """windows: list of feature-window dicts (dt, len_ms, rate_hz, n, x/y/z, band_hz)."""
    m = _head(dev, boot, seq, t0, tq)
    m["w"] = windows
    return _dumps(m)


def encode_logs(dev, boot, seq, t0, tq, lines):
    """lines: list of [dt_ms, level, text]."""
    m = _head(dev, boot, seq, t0, tq)
    m["l"] = lines
    return _dumps(m)


def encode_result(dev, boot, seq, t0, tq, cmd_id, cmd, ok, detail=None, error=None):
    """The answer to command cmd_id; a record of its own."""
    m = _head(dev, boot, seq, t0, tq)
    m.update({"id": cmd_id, "cmd": cmd, "ok": ok})
    if detail is not None:
        m["detail"] = detail
    if not ok:
        m["error"] = error
    return _dumps(m)


def encode_status(dev, boot, seq, t0, tq, state, fw, hw, reset, depth, oldest_s, drops, health=None):
    """Birth / last-will / health message.  seq is the next key the device will assign."""
    m = _head(dev, boot, seq, t0, tq)
    m.update({"state": state, "fw": fw, "hw": hw, "reset": reset,
              "buf": {"depth": depth, "oldest_s": oldest_s, "drops": drops},
              "health": health or {}})
    return _dumps(m)


def encode_cmd(cmd_id, cmd, args, ts):
    """A command for a device; args are checked against the contract first."""
    if cmd not in COMMANDS:
        _fail("unknown_command", "cmd=%s; one of %s" % (_show(cmd), ", ".join(COMMANDS)))
    check_args(cmd, args)
    return _dumps({"v": VERSION, "id": cmd_id, "cmd": cmd, "args": args, "ts": ts})


def encode_ack(dev, ranges):
    """Delivery confirmation: ranges of (boot, first_seq, last_seq) now in the database."""
    return _dumps({"v": VERSION, "dev": dev, "ranges": [list(r) for r in ranges]})


def encode_wave(dev, boot, seq, t0, tq, rate_hz, scale_g, range_g, axes, n, samples):
    """samples: bytes-like of n*axes little-endian int16, interleaved x0 y0 z0 x1 ..."""
    d = dev.encode()
    if len(samples) != 2 * n * axes:
        raise ValueError("samples hold %d bytes, expected %d" % (len(samples), 2 * n * axes))
    head = struct.pack(WAVE_HEADER, WAVE_MAGIC, VERSION, TIME_QUALITY.index(tq), boot, seq, t0,
                       int(rate_hz * 1000 + 0.5), scale_g, n, axes, range_g, len(d))
    return head + d + bytes(samples)


# ---- delivery-confirmation ranges -------------------------------------------------

def ranges_of(keys):
    """Compress (boot, seq) keys into sorted (boot, first, last) inclusive runs."""
    keys = sorted(set(keys))
    out = []
    for boot, seq in keys:
        if out and out[-1][0] == boot and out[-1][2] + 1 == seq:
            out[-1][2] = seq
        else:
            out.append([boot, seq, seq])
    return [tuple(r) for r in out]


def covers(ranges, boot, seq):
    """True when (boot, seq) lies inside one of the ranges."""
    for b, lo, hi in ranges:
        if b == boot and lo <= seq <= hi:
            return True
    return False
