# Wire contract v1: every number, name and limit of docs/wire.md, the error type, and
# the small checks both sides of the contract share.
#
# Common subset of CPython and MicroPython; shipped to the board (tools/flash.py).
# What a device encodes and decodes is in device.py, what only the collector and the
# tools use in validate.py; codec.py gathers all of it as one API for CPython code.
# Everything here is kept small on purpose: it sits in a 100 KB device heap.

import json
import struct
import sys

VERSION = 1

# ---- limits (docs/wire.md, "Limits") ----------------------------------------
MAX_PAYLOAD = 65536          # bytes, any message
MAX_RECORDS = 500            # records per batched message
MAX_WAVE_SAMPLES = 4096      # samples per axis in one waveform block
MAX_NAME = 32                # reading / health counter name length
MAX_LOG_TEXT = 512           # characters of one log line
MAX_CMD_ID = 36
MAX_DT_MS = 86400000         # |record time - t0| within one message, ms
MAX_U32 = 4294967295         # boot and seq are u32 (2^32 - 1)
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

# ---- record kinds (docs/wire.md, "Record keys" and the kinds' sections) ---------
# Kinds whose messages carry records with keys (boot, seq). The order is fixed: the
# ESP32's flash ring stores a record's kind as its index here (firmware/ring.py).
RECORD_KINDS = ("readings", "fix", "wave", "features", "log", "result")
# Kinds whose message carries exactly one record.
SINGLE_RECORD_KINDS = ("result", "wave")
# Batched kinds and the key of their record list: record i of the list has key
# (boot, seq + i) and time t0 + dt.
LIST_KEY = {"readings": "r", "fix": "f", "features": "w", "log": "l"}

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


# ---- small checks shared by device.py and validate.py -----------------------------

def fail(code, detail):
    """Raise WireError(code, detail)."""
    raise WireError(code, detail)


def check_version(v):
    """Raise bad_version unless v is the integer 1 (not true, not 1.0)."""
    if not is_int(v) or v != VERSION:
        fail("bad_version", "v=%s; this contract is v%d" % (show(v), VERSION))


def is_int(x):
    """True for an int that is not a bool."""
    return isinstance(x, int) and not isinstance(x, bool)


def get_int(obj, key, lo, hi, where):
    """obj[key], which must be an integer in lo..hi (bad_type / out_of_range)."""
    x = obj.get(key)
    if not is_int(x):
        fail("bad_type", "%s.%s must be an integer, got %s" % (where, key, show(x)))
    if x < lo or x > hi:
        fail("out_of_range", "%s.%s=%d outside %d..%d" % (where, key, x, lo, hi))
    return x


def get_list(obj, key, where, max_len):
    """obj[key], which must be a list of 1..max_len entries (bad_type / bad_batch)."""
    x = obj.get(key)
    if not isinstance(x, list):
        fail("bad_type", "%s.%s must be a list, got %s" % (where, key, show(x)))
    if not 0 < len(x) <= max_len:
        fail("bad_batch", "%s.%s has %d entries; 1..%d allowed" % (where, key, len(x), max_len))
    return x


def show(x):
    """A short, safe rendering of a bad value for an error message."""
    s = repr(x)
    if len(s) > 40:
        s = s[:37] + "..."
    return s


def is_text(x, lo, hi):
    """True for a string of lo..hi characters without NUL or UTF-16 surrogates.

    Surrogates come from \\ud800-style escapes; neither they nor NUL can be stored as
    PostgreSQL text or re-encoded as UTF-8.
    """
    if not isinstance(x, str) or not lo <= len(x) <= hi:
        return False
    for c in x:
        o = ord(c)
        if o == 0 or 0xD800 <= o <= 0xDFFF:
            return False
    return True


def _no_constant(name):
    raise ValueError("%s is not JSON" % name)


def loads(payload):
    """Parse strict UTF-8 JSON (bytes or str), the same verdict on both interpreters; bad_json."""
    # MicroPython's parser checks UTF-8 itself and has no NaN / Infinity; CPython's
    # json.loads(bytes) would accept a BOM, UTF-16/32 and encoded surrogates, and parses
    # NaN and Infinity. (MicroPython is laxer on some malformed JSON, e.g. trailing
    # commas: producers must write RFC 8259 JSON.)
    try:
        if sys.implementation.name == "micropython":
            return json.loads(payload)
        if not isinstance(payload, str):
            payload = str(payload, "utf-8")
        return json.loads(payload, parse_constant=_no_constant)
    except Exception:  # ValueError, UnicodeError, RecursionError (deep nesting)
        fail("bad_json", "payload is not valid UTF-8 JSON")


# ---- encoding helpers ---------------------------------------------------------------
# Encoders build the payload exactly as the contract shows it. JSON is written
# compactly (no spaces); field order does not matter to any decoder.

def dumps(obj):
    """obj as compact JSON bytes."""
    return json.dumps(obj, separators=(",", ":")).encode()


def head(dev, boot, seq, t0, tq):
    """The header every device-to-collector JSON message starts with (a dict)."""
    return {"v": VERSION, "dev": dev, "boot": boot, "seq": seq, "t0": t0, "tq": tq}
