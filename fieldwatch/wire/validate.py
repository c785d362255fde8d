# What only the collector and the tools use of wire contract v1: decode() and the
# validators of every kind a device sends (telemetry, log, result, status, wave), and
# the encoders of what the collector and the operator send down (cmd, ack).
#
# Common subset of CPython and MicroPython (the golden vectors run it on the Unix
# port too), but never shipped to a board: a device needs only device.py.
# decode() is the one validator the collector calls on each message it receives. It
# returns a plain dict, or raises WireError with a machine-readable `code` and a
# human-readable `detail`.

import math
import struct

from fieldwatch.wire.contract import (
    ADXL_RANGES_G, AXES, COMMANDS, FEATURE_KEYS, LIST_KEY, LOG_LEVELS, MAX_CMD_ID,
    MAX_DETAIL_DEPTH, MAX_DT_MS, MAX_EXACT_INT, MAX_FUTURE_MS, MAX_LOG_TEXT, MAX_NAME,
    MAX_RECORDS, MAX_TS_MS, MAX_U32, MAX_WAVE_SAMPLES, MIN_TS_MS,
    RESET_REASONS, STATES, TIME_QUALITY, VERSION, WAVE_HEADER, WAVE_HEADER_SIZE,
    WAVE_MAGIC, check_version, dumps, fail, get_int, get_list, is_int, is_text, loads,
    show)
from fieldwatch.wire.device import check_args, check_envelope, decode_ack, decode_cmd

# Times with tq none (ms since boot) lie in 0..2^47 ms (~4,460 years). The collector places
# them at (receipt - ts) + ts, and PostgreSQL's timestamps begin in 4713 BC (~2.1e14 ms
# before 1970): bounded here, so that what validates also stores. Here and not in
# contract.py because only the collector checks it (it costs the board's heap nothing).
MAX_UNTIMED_MS = 2 ** 47

# A fix's integer fields in the order they are checked, with their ranges (docs/wire.md,
# "fix"); all but lat_e7 and lon_e7 are optional.
FIX_MODES = (2, 3)  # 2D, 3D
FIX_FIELDS = (
    ("lat_e7", -900000000, 900000000),
    ("lon_e7", -1800000000, 1800000000),
    ("alt_mm", -1000000, 100000000),
    ("speed_mmps", 0, 1000000),
    ("track_cdeg", 0, 35999),
    ("eph_mm", 0, 100000000),
    ("epv_mm", 0, 100000000),
    ("sats", 0, 255),
)
FIX_REQUIRED = ("lat_e7", "lon_e7")
FIX_RANGES = {}  # name -> (lo, hi)
for _f in FIX_FIELDS:
    FIX_RANGES[_f[0]] = (_f[1], _f[2])
del _f


# ---- small checks ----------------------------------------------------------------

def _is_num(x):
    return (isinstance(x, int) or isinstance(x, float)) and not isinstance(x, bool)


def _num(x, where, lo=None, hi=None):
    if not _is_num(x):
        fail("bad_type", "%s must be a number, got %s" % (where, show(x)))
    if isinstance(x, float) and not math.isfinite(x):
        fail("not_finite", "%s is %s; only finite numbers are allowed" % (where, x))
    if isinstance(x, int) and not -MAX_EXACT_INT <= x <= MAX_EXACT_INT:
        fail("out_of_range", "%s=%d: integers beyond +-2^53 do not fit a double" % (where, x))
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        fail("out_of_range", "%s=%s outside %s..%s" % (where, x, lo, hi))
    return x


def _opt_int(obj, key, lo, hi, where):
    if obj.get(key) is None:
        return None
    return get_int(obj, key, lo, hi, where)


def _name(x, where):
    # Reading and counter names: 1..32 of a-z 0-9 _ starting with a letter.
    if not isinstance(x, str) or not 0 < len(x) <= MAX_NAME:
        fail("bad_name", "%s must be a name of 1..%d characters, got %s" % (where, MAX_NAME, show(x)))
    for i in range(len(x)):
        c = ord(x[i])
        if 97 <= c <= 122 or (i > 0 and (48 <= c <= 57 or c == 95)):
            continue
        fail("bad_name", "%s=%s: use a-z, 0-9 and _, starting with a letter" % (where, show(x)))
    return x


def _json_value(x, where, depth):
    # A command result's free-form detail: finite numbers, clean strings, bounded nesting.
    if depth > MAX_DETAIL_DEPTH:
        fail("bad_value", "%s nests deeper than %d" % (where, MAX_DETAIL_DEPTH))
    if isinstance(x, dict):
        for k in x:
            if not is_text(k, 0, MAX_LOG_TEXT):
                fail("bad_value", "%s has a bad key %s" % (where, show(k)))
            _json_value(x[k], where + "." + k, depth + 1)
    elif isinstance(x, list):
        for i in range(len(x)):
            _json_value(x[i], "%s[%d]" % (where, i), depth + 1)
    elif isinstance(x, str):
        if not is_text(x, 0, MAX_LOG_TEXT):
            fail("bad_value", "%s must be at most %d characters, no NUL or lone surrogates" % (where, MAX_LOG_TEXT))
    elif x is not None and not isinstance(x, bool):
        _num(x, where)


def check_time(ts, tq, now_ms, where):
    """Reject an absurd wall-clock time (before 2020, or > 1 day after now_ms), or a tq none time past 2^47 ms."""
    if tq == "none":
        # ms since boot: no wall-clock check, only the bound the database needs (MAX_UNTIMED_MS).
        if ts > MAX_UNTIMED_MS:
            fail("out_of_range", "%s=%d ms with tq none (ms since boot) is past 2^47 ms" % (where, ts))
        return
    if now_ms is None:
        return
    if ts < MIN_TS_MS:
        fail("absurd_time", "%s=%d ms is before 2020-01-01" % (where, ts))
    if ts > now_ms + MAX_FUTURE_MS:
        fail("absurd_time", "%s=%d ms is %d s after receipt" % (where, ts, (ts - now_ms) // 1000))


# ---- the common record header ---------------------------------------------------

def _header(msg, dev, kind, now_ms):
    # v, dev, boot, seq, t0, tq: shared by every device-to-collector message.
    if not isinstance(msg, dict):
        fail("bad_type", "payload must be a JSON object")
    check_version(msg.get("v"))
    pdev = msg.get("dev")
    if pdev != dev:
        fail("device_mismatch", "payload dev=%s but topic device is %s" % (show(pdev), show(dev)))
    tq = msg.get("tq")
    if tq not in TIME_QUALITY:
        fail("bad_value", "tq=%s; one of %s" % (show(tq), ", ".join(TIME_QUALITY)))
    out = {
        "kind": kind,
        "dev": dev,
        "boot": get_int(msg, "boot", 0, MAX_U32, kind),
        "seq": get_int(msg, "seq", 0, MAX_U32, kind),
        "t0": get_int(msg, "t0", 0, MAX_TS_MS, kind),
        "tq": tq,
    }
    check_time(out["t0"], tq, now_ms, kind + ".t0")
    return out


def _dt(x, where):
    if not is_int(x):
        fail("bad_type", "%s must be an integer of ms, got %s" % (where, show(x)))
    if x < -MAX_DT_MS or x > MAX_DT_MS:
        fail("out_of_range", "%s=%d ms; |dt| <= %d" % (where, x, MAX_DT_MS))
    return x


def _records(h, items, now_ms, one):
    # Expand a batch: record i has key (boot, seq + i) and time t0 + dt.
    if h["seq"] + len(items) - 1 > MAX_U32:
        fail("out_of_range", "seq %d + %d records passes 2^32-1" % (h["seq"], len(items)))
    recs = []
    for i in range(len(items)):
        where = "%s[%d]" % (h["kind"], i)
        rec = one(items[i], where)
        rec["seq"] = h["seq"] + i
        rec["ts"] = h["t0"] + rec.pop("dt")
        if rec["ts"] < 0:
            fail("out_of_range", "%s.ts=%d ms is negative (t0 + dt < 0)" % (where, rec["ts"]))
        check_time(rec["ts"], h["tq"], now_ms, where + ".ts")
        recs.append(rec)
    h["records"] = recs
    return h


def _reading(item, where):
    if not isinstance(item, list) or len(item) != 3:
        fail("bad_type", "%s must be [dt_ms, name, value]" % where)
    return {"dt": _dt(item[0], where + ".dt"), "name": _name(item[1], where + ".name"),
            "value": _num(item[2], where + ".value")}


def _fix(item, where):
    if not isinstance(item, dict):
        fail("bad_type", "%s must be an object" % where)
    mode = item.get("mode")
    if not is_int(mode):
        fail("bad_type", "%s.mode must be an integer, got %s" % (where, show(mode)))
    if mode not in FIX_MODES:
        fail("bad_value", "%s.mode=%s; 2 (2D) or 3 (3D)" % (where, show(mode)))
    rec = {"dt": _dt(item.get("dt"), where + ".dt"), "mode": mode}
    for k, lo, hi in FIX_FIELDS:
        rec[k] = get_int(item, k, lo, hi, where) if k in FIX_REQUIRED else _opt_int(item, k, lo, hi, where)
    return rec


def _window(item, where):
    if not isinstance(item, dict):
        fail("bad_type", "%s must be an object" % where)
    rec = {
        "dt": _dt(item.get("dt"), where + ".dt"),
        "len_ms": get_int(item, "len_ms", 1, 3600000, where),
        "rate_hz": _num(item.get("rate_hz"), where + ".rate_hz", 0.1, 100000),
        "n": get_int(item, "n", 1, 10000000, where),
    }
    edges = item.get("band_hz")
    nb = None
    if edges is not None:
        if not isinstance(edges, list) or not 2 <= len(edges) <= 33:
            fail("bad_type", "%s.band_hz must be a list of 2..33 edges" % where)
        prev = -1
        for j in range(len(edges)):
            e = _num(edges[j], "%s.band_hz[%d]" % (where, j), 0, 100000)
            if e <= prev:
                fail("bad_value", "%s.band_hz must increase" % where)
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
            fail("bad_type", "%s must be an object" % aw)
        f = {}
        for k in FEATURE_KEYS:
            f[k] = _num(a.get(k), aw + "." + k, 0)
        bands = a.get("bands")
        if bands is not None:
            if nb is None or not isinstance(bands, list) or len(bands) != nb:
                fail("bad_value", "%s.bands needs band_hz and one value per band" % aw)
            for j in range(nb):
                _num(bands[j], "%s.bands[%d]" % (aw, j), 0)
        f["bands"] = bands
        rec[ax] = f
    if not seen:
        fail("bad_value", "%s has no axis (x, y or z)" % where)
    return rec


def _log(item, where):
    if not isinstance(item, list) or len(item) != 3:
        fail("bad_type", "%s must be [dt_ms, level, text]" % where)
    if item[1] not in LOG_LEVELS:
        fail("bad_value", "%s.level=%s; one of %s" % (where, show(item[1]), ", ".join(LOG_LEVELS)))
    text = item[2]
    if not is_text(text, 0, MAX_LOG_TEXT):
        fail("bad_value", "%s.text must be a string of at most %d characters, no NUL or lone surrogates"
              % (where, MAX_LOG_TEXT))
    return {"dt": _dt(item[0], where + ".dt"), "level": item[1], "text": text}


# The validator of one record of each batched kind.
_RECORD = {"readings": _reading, "fix": _fix, "features": _window, "log": _log}


# ---- decoding -----------------------------------------------------------------

def decode(topic_name, payload, now_ms=None):
    """Validate one message; return its dict form (see docs/wire.md) or raise WireError.

    now_ms: receipt time in ms since the epoch; when given, absurd wall-clock
    times (before 2020, more than a day ahead) are rejected.
    """
    dev, kind = check_envelope(topic_name, payload)
    if kind == "wave":
        return decode_wave(dev, payload, now_ms)
    msg = loads(payload)
    if kind == "cmd":
        return decode_cmd(dev, msg)
    if kind == "ack":
        return decode_ack(dev, msg)
    h = _header(msg, dev, kind, now_ms)
    one = _RECORD.get(kind)
    if one is not None:
        return _records(h, get_list(msg, LIST_KEY[kind], kind, MAX_RECORDS), now_ms, one)
    if kind == "result":
        return _decode_result(h, msg)
    return _decode_status(h, msg)


def _decode_result(h, msg):
    cid = msg.get("id")
    if not is_text(cid, 1, MAX_CMD_ID):
        fail("bad_value", "result.id must be the command id (1..%d chars)" % MAX_CMD_ID)
    if msg.get("cmd") not in COMMANDS:
        fail("bad_value", "result.cmd=%s is not a command" % show(msg.get("cmd")))
    ok = msg.get("ok")
    if not isinstance(ok, bool):
        fail("bad_type", "result.ok must be true or false")
    detail = msg.get("detail")
    if detail is not None:
        if not isinstance(detail, dict):
            fail("bad_type", "result.detail must be an object")
        _json_value(detail, "result.detail", 1)
    error = msg.get("error")
    if not ok and not is_text(error, 1, MAX_LOG_TEXT):
        fail("bad_value", "result.error must say why the command failed (1..%d characters)" % MAX_LOG_TEXT)
    h.update({"id": cid, "cmd": msg["cmd"], "ok": ok, "detail": detail,
              "error": error if not ok else None})
    h["records"] = [{"seq": h["seq"], "ts": h["t0"]}]
    return h


def _decode_status(h, msg):
    state = msg.get("state")
    if state not in STATES:
        fail("bad_value", "status.state=%s; one of %s" % (show(state), ", ".join(STATES)))
    fw = msg.get("fw")
    if not is_text(fw, 1, 32):
        fail("bad_value", "status.fw must be a version string of 1..32 characters")
    hw = msg.get("hw")
    if not is_text(hw, 1, 32):
        fail("bad_value", "status.hw must name the hardware (1..32 characters)")
    reset = msg.get("reset")
    if reset not in RESET_REASONS:
        fail("bad_value", "status.reset=%s; one of %s" % (show(reset), ", ".join(RESET_REASONS)))
    buf = msg.get("buf")
    if not isinstance(buf, dict):
        fail("bad_type", "status.buf must be an object")
    h.update({
        "state": state, "fw": fw, "hw": hw, "reset": reset,
        "buf": {
            "depth": get_int(buf, "depth", 0, MAX_U32, "status.buf"),
            "oldest_s": _num(buf.get("oldest_s", 0), "status.buf.oldest_s", 0),
            "drops": get_int(buf, "drops", 0, MAX_U32, "status.buf"),
        },
    })
    health = msg.get("health", {})
    if not isinstance(health, dict) or len(health) > 32:
        fail("bad_type", "status.health must be an object of at most 32 counters")
    hl = {}
    for k in health:
        _name(k, "status.health key")
        hl[k] = get_int(health, k, 0, 2 ** 53, "status.health")
    h["health"] = hl
    return h


def decode_wave(dev, payload, now_ms=None):
    """Validate a binary waveform block; samples come back as the raw little-endian int16 bytes."""
    if len(payload) < WAVE_HEADER_SIZE:
        fail("bad_wave", "%d bytes is shorter than the %d-byte header" % (len(payload), WAVE_HEADER_SIZE))
    (magic, ver, tqc, boot, seq, t0, rate_mhz, scale, n, axes, range_g,
     dlen) = struct.unpack_from(WAVE_HEADER, payload, 0)
    if magic != WAVE_MAGIC:
        fail("bad_wave", "magic %s is not b'FW'" % show(magic))
    if ver != VERSION:
        fail("bad_version", "wave version %d; this contract is v%d" % (ver, VERSION))
    if tqc >= len(TIME_QUALITY):
        fail("bad_value", "wave time quality code %d; 0..3" % tqc)
    pdev = bytes(payload[WAVE_HEADER_SIZE:WAVE_HEADER_SIZE + dlen])
    if pdev != dev.encode():
        fail("device_mismatch", "payload dev=%s but topic device is %s" % (show(pdev), show(dev)))
    if not 1 <= axes <= 3:
        fail("bad_wave", "axes=%d; 1..3" % axes)
    if not 1 <= n <= MAX_WAVE_SAMPLES:
        fail("bad_wave", "n=%d samples per axis; 1..%d" % (n, MAX_WAVE_SAMPLES))
    if range_g not in ADXL_RANGES_G and range_g != 0:
        fail("bad_wave", "range_g=%d; 0, 2, 4, 8 or 16" % range_g)
    if not 100 <= rate_mhz <= 100000000:
        fail("bad_wave", "rate %d mHz outside 0.1 Hz..100 kHz" % rate_mhz)
    if not math.isfinite(scale) or not 0 < scale < 1:
        fail("bad_wave", "scale %s g/count must be in (0, 1)" % scale)
    start = WAVE_HEADER_SIZE + dlen
    want = start + 2 * n * axes
    if len(payload) != want:
        fail("bad_wave", "%d bytes; header says %d" % (len(payload), want))
    if not 0 <= t0 <= MAX_TS_MS:
        fail("out_of_range", "wave.t0=%d outside 0..2^62" % t0)
    tq = TIME_QUALITY[tqc]
    check_time(t0, tq, now_ms, "wave.t0")
    return {
        "kind": "wave", "dev": dev, "boot": boot, "seq": seq, "t0": t0, "tq": tq,
        "rate_hz": rate_mhz / 1000, "scale_g": scale, "n": n, "axes": axes, "range_g": range_g,
        "samples": bytes(payload[start:]),
        "records": [{"seq": seq, "ts": t0}],
    }


def encode_cmd(cmd_id, cmd, args, ts):
    """A command for a device; args are checked against the contract first."""
    if cmd not in COMMANDS:
        fail("unknown_command", "cmd=%s; one of %s" % (show(cmd), ", ".join(COMMANDS)))
    check_args(cmd, args)
    return dumps({"v": VERSION, "id": cmd_id, "cmd": cmd, "args": args, "ts": ts})


def encode_ack(dev, ranges):
    """Delivery confirmation: ranges of (boot, first_seq, last_seq) now in the database."""
    return dumps({"v": VERSION, "dev": dev, "ranges": [list(r) for r in ranges]})


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


