# What a device uses of wire contract v1: the encoders of the messages it sends, and
# the decoders of the two it receives (cmd, ack).
#
# Common subset of CPython and MicroPython; shipped to the board with contract.py and
# topics.py (tools/flash.py), and nothing else of the package: the validators of
# telemetry, the wave decoder and the encoders of cmd and ack (validate.py) are never
# called on a board and would cost it ~5 KB of heap.

import struct

from fieldwatch.wire import topics
from fieldwatch.wire.contract import (
    ADXL_RANGES_G, ADXL_RATES_HZ, COMMANDS, MAX_CMD_ID, MAX_PAYLOAD, MAX_TS_MS, MAX_U32,
    MAX_WAVE_SAMPLES, TIME_QUALITY, VERSION, WAVE_HEADER, WAVE_MAGIC, check_version, dumps,
    fail, get_int, get_list, head, is_int, is_text, loads, show)


# ---- encoding what a device sends ---------------------------------------------------

def encode_readings(dev, boot, seq, t0, tq, readings):
    """readings: list of [dt_ms, name, value]; record i gets key (boot, seq + i)."""
    m = head(dev, boot, seq, t0, tq)
    m["r"] = readings
    return dumps(m)


def encode_fixes(dev, boot, seq, t0, tq, fixes):
    """fixes: list of fix dicts (dt, mode, lat_e7, lon_e7, optional alt_mm ...)."""
    m = head(dev, boot, seq, t0, tq)
    m["f"] = fixes
    return dumps(m)


def encode_features(dev, boot, seq, t0, tq, windows):
    """windows: list of feature-window dicts (dt, len_ms, rate_hz, n, x/y/z, band_hz)."""
    m = head(dev, boot, seq, t0, tq)
    m["w"] = windows
    return dumps(m)


def encode_logs(dev, boot, seq, t0, tq, lines):
    """lines: list of [dt_ms, level, text]."""
    m = head(dev, boot, seq, t0, tq)
    m["l"] = lines
    return dumps(m)


def encode_result(dev, boot, seq, t0, tq, cmd_id, cmd, ok, detail=None, error=None):
    """The answer to command cmd_id; a record of its own."""
    m = head(dev, boot, seq, t0, tq)
    m.update({"id": cmd_id, "cmd": cmd, "ok": ok})
    if detail is not None:
        m["detail"] = detail
    if not ok:
        m["error"] = error
    return dumps(m)


def encode_status(dev, boot, seq, t0, tq, state, fw, hw, reset, depth, oldest_s, drops, health=None):
    """Birth / last-will / health message.  seq is the next key the device will assign."""
    m = head(dev, boot, seq, t0, tq)
    m.update({"state": state, "fw": fw, "hw": hw, "reset": reset,
              "buf": {"depth": depth, "oldest_s": oldest_s, "drops": drops},
              "health": health or {}})
    return dumps(m)


def encode_wave(dev, boot, seq, t0, tq, rate_hz, scale_g, range_g, axes, n, samples):
    """samples: bytes-like of n*axes little-endian int16, interleaved x0 y0 z0 x1 ..."""
    if len(samples) != 2 * n * axes:
        raise ValueError("samples hold %d bytes, expected %d" % (len(samples), 2 * n * axes))
    return wave_head(dev, boot, seq, t0, tq, rate_hz, scale_g, range_g, axes, n) + bytes(samples)


def wave_head(dev, boot, seq, t0, tq, rate_hz, scale_g, range_g, axes, n):
    """What a waveform block carries before its samples (bytes): the header, then the device id.

    The firmware writes a block as wave_head() + the samples straight from its window
    buffer, so that the two are never joined in RAM.
    """
    d = dev.encode()
    return struct.pack(WAVE_HEADER, WAVE_MAGIC, VERSION, TIME_QUALITY.index(tq), boot, seq, t0,
                       int(rate_hz * 1000 + 0.5), scale_g, n, axes, range_g, len(d)) + d


# ---- decoding what a device receives -------------------------------------------------

def check_envelope(topic_name, payload, kinds=None):
    """(device id, kind) of a message's topic, checked with its size; WireError if not acceptable.

    kinds: the kinds the receiver takes (others are bad_topic); None for any v1 kind.
    validate.decode() starts with the same checks.
    """
    parsed = topics.parse(topic_name)
    if parsed is None or (kinds is not None and parsed[1] not in kinds):
        fail("bad_topic", "not a fieldwatch v1 %stopic: %s"
             % (" or ".join(kinds) + " " if kinds else "", show(topic_name)))
    dev, kind = parsed
    if not topics.valid_device_id(dev):
        fail("bad_device_id", "device id %s: 1..%d of a-z 0-9 - _" % (show(dev), topics.DEVICE_ID_MAX))
    if len(payload) > MAX_PAYLOAD:
        fail("oversize", "%d bytes; the limit is %d" % (len(payload), MAX_PAYLOAD))
    return dev, kind


def decode_downlink(topic_name, payload):
    """Validate a cmd or ack message for a device; return its dict form or raise WireError.

    The same answers as validate.decode() gives for these two kinds; any other topic
    is bad_topic here (a device subscribes to nothing else).
    """
    dev, kind = check_envelope(topic_name, payload, ("cmd", "ack"))
    msg = loads(payload)
    if kind == "cmd":
        return decode_cmd(dev, msg)
    return decode_ack(dev, msg)


def decode_cmd(dev, msg):
    """The dict form of a parsed cmd message for device dev, or WireError."""
    if not isinstance(msg, dict):
        fail("bad_type", "payload must be a JSON object")
    check_version(msg.get("v"))
    cid = msg.get("id")
    if not is_text(cid, 1, MAX_CMD_ID):
        fail("bad_value", "cmd.id must be a string of 1..%d characters" % MAX_CMD_ID)
    name = msg.get("cmd")
    if name not in COMMANDS:
        fail("unknown_command", "cmd=%s; one of %s" % (show(name), ", ".join(COMMANDS)))
    args = msg.get("args", {})
    if not isinstance(args, dict):
        fail("bad_type", "cmd.args must be an object")
    check_args(name, args)
    return {"kind": "cmd", "dev": dev, "id": cid, "cmd": name, "args": args,
            "ts": get_int(msg, "ts", 0, MAX_TS_MS, "cmd")}


def check_args(name, args):
    """Raise WireError unless args suit command `name` (docs/wire.md, "cmd")."""
    allowed = {"set_rate": ("hz",), "set_range": ("g",), "sleep": ("s",), "capture": ("n",)}.get(name, ())
    for k in args:
        if k not in allowed:
            fail("bad_argument", "%s takes no argument %s" % (name, show(k)))
    if name == "set_rate" and args.get("hz") not in ADXL_RATES_HZ:
        fail("bad_argument", "set_rate.hz=%s; one of %s" % (
            show(args.get("hz")), ", ".join([str(r) for r in ADXL_RATES_HZ])))
    if name == "set_range" and (not is_int(args.get("g")) or args.get("g") not in ADXL_RANGES_G):
        fail("bad_argument", "set_range.g=%s; one of 2, 4, 8, 16" % show(args.get("g")))
    # Every argument problem is bad_argument, so a device answers them all alike.
    if name == "sleep" and "s" in args:
        _int_arg(args, "s", 1, 86400, name)
    if name == "capture" and "n" in args:
        _int_arg(args, "n", 16, MAX_WAVE_SAMPLES, name)


def _int_arg(args, key, lo, hi, name):
    x = args[key]
    if not is_int(x) or not lo <= x <= hi:
        fail("bad_argument", "%s.%s=%s; an integer %d..%d" % (name, key, show(x), lo, hi))


def decode_ack(dev, msg):
    """The dict form of a parsed ack message for device dev (ranges as tuples), or WireError."""
    if not isinstance(msg, dict):
        fail("bad_type", "payload must be a JSON object")
    check_version(msg.get("v"))
    if msg.get("dev") != dev:
        fail("device_mismatch", "payload dev=%s but topic device is %s" % (show(msg.get("dev")), show(dev)))
    ranges = get_list(msg, "ranges", "ack", 1000)
    out = []
    for r in ranges:
        if not isinstance(r, list) or len(r) != 3:
            fail("bad_type", "ack.ranges entries are [boot, first_seq, last_seq]")
        for x in r:
            if not is_int(x):
                fail("bad_type", "ack.ranges values are integers, got %s" % show(x))
            if x < 0 or x > MAX_U32:
                fail("out_of_range", "ack.ranges value %d outside 0..2^32-1" % x)
        if r[1] > r[2]:
            fail("bad_value", "ack range %s runs backwards" % show(r))
        out.append((r[0], r[1], r[2]))
    return {"kind": "ack", "dev": dev, "ranges": out}


def covers(ranges, boot, seq):
    """True when (boot, seq) lies inside one of the ranges."""
    for b, lo, hi in ranges:
        if b == boot and lo <= seq <= hi:
            return True
    return False
