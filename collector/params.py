"""Checking the API's query parameters: pure functions, each failure a precise ParamError.

A ParamError becomes a 400 response whose message names the parameter, what
was given and what is accepted.
"""

import datetime as _dt
import re

from fieldwatch.wire.contract import MAX_NAME

MAX_LIMIT = 1000            # rows per page at most
MAX_OFFSET = 10_000_000
MAX_BUCKETS = 10_000        # buckets one aggregate answer may hold
MAX_RANGE_DAYS = 366        # longest time range one request may ask for
MAX_TOPIC_DEVICE = 200      # characters of a quarantined topic's device id kept (collector/batch.py)
MAX_CODE = 64               # characters of an error code
# Times a request may name: before any record (device times start at the epoch minus
# a day, docs/wire.md) and a day short of Python's last date, so that no offset, span
# or conversion of an accepted time can leave the years 1..9999.
TIME_MIN = _dt.datetime(1900, 1, 1, tzinfo=_dt.timezone.utc)
TIME_MAX = _dt.datetime(9999, 12, 31, tzinfo=_dt.timezone.utc)
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)

# Bucket names -> seconds.
BUCKETS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "6h": 21600, "1d": 86400}

_REL = re.compile(r"^-(\d{1,12})(s|m|h|d)$")
_READING_NAME = re.compile(r"[a-z][a-z0-9_]{0,%d}" % (MAX_NAME - 1))
_CODE = re.compile(r"[a-z][a-z0-9_]{0,%d}" % (MAX_CODE - 1))
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ParamError(ValueError):
    """A query parameter or body field that cannot be used; str() is the message for the client."""


def show(v, n=60):
    """A short, safe rendering of a bad value for a message: repr, cut at n characters."""
    v = str(v)
    return repr(v if len(v) <= n else v[:n] + "...")


def check_known(args, known):
    """Refuse parameters the endpoint does not take (a typo would otherwise be silently ignored)."""
    for k in args:
        if k not in known:
            raise ParamError("unknown parameter %s; this endpoint takes %s" % (show(k), ", ".join(sorted(known)) or "none"))


def integer(args, key, default, lo, hi):
    """An integer parameter within lo..hi."""
    raw = args.get(key)
    if raw is None:
        return default
    if not re.fullmatch(r"-?\d{1,19}", raw.strip()):
        raise ParamError("%s must be a whole number from %d to %d, got %s" % (key, lo, hi, show(raw)))
    v = int(raw)
    if not lo <= v <= hi:
        raise ParamError("%s must be from %d to %d, got %d" % (key, lo, hi, v))
    return v


def limit_offset(args, default_limit=100):
    """(limit, offset) for pagination: limit 1..MAX_LIMIT, offset 0..MAX_OFFSET."""
    return integer(args, "limit", default_limit, 1, MAX_LIMIT), integer(args, "offset", 0, 0, MAX_OFFSET)


def choice(args, key, default, choices):
    """A parameter among fixed choices."""
    raw = args.get(key)
    if raw is None:
        return default
    if raw not in choices:
        raise ParamError("%s must be one of %s, got %s" % (key, ", ".join(choices), show(raw)))
    return raw


def text(args, key, max_len, what):
    """A free-text parameter: 1..max_len characters without NUL (PostgreSQL text cannot hold one).

    what says in the message what the parameter is.
    """
    raw = args.get(key)
    if raw is None:
        return None
    if not 0 < len(raw) <= max_len or "\x00" in raw or any(0xD800 <= ord(c) <= 0xDFFF for c in raw):
        raise ParamError("%s must be 1..%d characters without NUL (%s), got %s" % (key, max_len, what, show(raw)))
    return raw


def reading_name(args, key="name"):
    """A reading name as the wire contract has them: 1..32 of a-z 0-9 _, starting with a letter."""
    raw = args.get(key)
    if raw is not None and not _READING_NAME.fullmatch(raw):
        raise ParamError("%s must be a reading name: 1..%d characters of a-z 0-9 _, starting with a letter; got %s"
                         % (key, MAX_NAME, show(raw)))
    return raw


def error_code(args, key="code"):
    """A quarantine error code like bad_json: 1..64 of a-z 0-9 _, starting with a letter."""
    raw = args.get(key)
    if raw is not None and not _CODE.fullmatch(raw):
        raise ParamError("%s must be an error code like bad_json: 1..%d characters of a-z 0-9 _, starting with a "
                         "letter; got %s" % (key, MAX_CODE, show(raw)))
    return raw


def _z(t):
    return t.isoformat().replace("+00:00", "Z")


def _out_of_range(key, raw):
    return ParamError("%s %s is out of range: times from %s to %s are accepted"
                      % (key, show(raw), _z(TIME_MIN), _z(TIME_MAX)))


def _in_range(key, raw, t):
    # Compared as aware datetimes (no conversion, so no overflow whatever the offset).
    if not TIME_MIN <= t <= TIME_MAX:
        raise _out_of_range(key, raw)
    return t


def parse_time(key, raw, now):
    """A time: ISO 8601 with a zone (2026-11-23T10:00:00Z), ms since the epoch, or relative (-15m, -2h, -7d).

    Accepted from TIME_MIN to TIME_MAX (1900-01-01 to 9999-12-31, UTC).
    """
    raw = raw.strip()
    m = _REL.match(raw)
    if m:
        try:
            t = now - _dt.timedelta(seconds=int(m.group(1)) * _UNIT_S[m.group(2)])
        except OverflowError:
            raise ParamError("%s %s reaches before year 1; ask for less" % (key, show(raw))) from None
        return _in_range(key, raw, t)
    if re.fullmatch(r"\d{1,15}", raw):
        try:
            t = _EPOCH + _dt.timedelta(milliseconds=int(raw))
        except OverflowError:   # past year 9999
            raise _out_of_range(key, raw) from None
        return _in_range(key, raw, t)
    try:
        t = _dt.datetime.fromisoformat(raw.replace("Z", "+00:00") if raw.endswith("Z") else raw)
    except ValueError:
        t = None
    if t is not None:
        if t.tzinfo is None:
            raise ParamError("%s %s has no time zone; add Z or an offset like +02:00" % (key, show(raw)))
        return _in_range(key, raw, t)
    raise ParamError("%s must be an ISO 8601 time with a zone (2026-11-23T10:00:00Z), milliseconds since "
                     "the epoch, or relative like -15m, -2h, -7d; got %s" % (key, show(raw)))


def time_range(args, now, default_span_s=3600):
    """(start, end) from `from` and `to`; defaults: the last default_span_s seconds up to now."""
    end = parse_time("to", args["to"], now) if args.get("to") is not None else now
    start = (parse_time("from", args["from"], now) if args.get("from") is not None
             else end - _dt.timedelta(seconds=default_span_s))
    if start >= end:
        raise ParamError("from (%s) must be before to (%s)" % (start.isoformat(), end.isoformat()))
    if end - start > _dt.timedelta(days=MAX_RANGE_DAYS):
        raise ParamError("the range from %s to %s is longer than %d days; ask for less"
                         % (start.isoformat(), end.isoformat(), MAX_RANGE_DAYS))
    return start, end


def bucket(args, start, end, default="1m"):
    """Bucket width in seconds, checked so that the range holds at most MAX_BUCKETS buckets."""
    name = choice(args, "bucket", default, tuple(BUCKETS))
    secs = BUCKETS[name]
    n = (end - start).total_seconds() / secs
    if n > MAX_BUCKETS:
        raise ParamError("bucket %s over this range makes %d buckets, more than %d; use a wider bucket or a "
                         "shorter range" % (name, int(n), MAX_BUCKETS))
    return name, secs


MAX_BODY_DEPTH = 8          # nesting of a JSON request body ({"args": {"hz": 800}} is 2)
_MAX_EXACT_INT = 2 ** 53    # integers a double holds exactly (the wire contract's bound)


def json_body(raw):
    """A request body parsed as strict JSON: UTF-8, RFC 8259 (no NaN), at most MAX_BODY_DEPTH deep, clean text.

    Every string (keys too) must be valid Unicode without NUL, every number fit a
    double: what passes can be stored in PostgreSQL and sent to a device as is.
    """
    from fieldwatch.wire.contract import WireError, loads

    try:
        body = loads(raw)
    except WireError:   # bad UTF-8, not JSON, NaN / Infinity, trailing text, nesting past the parser's limit
        raise ParamError("the body is not valid JSON: send UTF-8 JSON (RFC 8259, no NaN or Infinity) nested at most "
                         "%d levels" % MAX_BODY_DEPTH) from None
    todo = [(body, "", 0)]   # iterative: a deep body cannot exhaust the stack here
    while todo:
        x, where, depth = todo.pop()
        if isinstance(x, (dict, list)):
            if depth >= MAX_BODY_DEPTH:
                raise ParamError("the body nests deeper than %d levels at %s" % (MAX_BODY_DEPTH, where or "its top"))
            items = x.items() if isinstance(x, dict) else enumerate(x)
            for k, v in items:
                if isinstance(k, str):
                    _check_body_text(k, (where + "." if where else "") + k[:40])
                    todo.append((v, (where + "." if where else "") + k[:40], depth + 1))
                else:
                    todo.append((v, "%s[%d]" % (where, k), depth + 1))
        elif isinstance(x, str):
            _check_body_text(x, where or "its top")
        elif isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
            raise ParamError("the body holds a number too large for a double at %s" % (where or "its top"))
        elif isinstance(x, int) and not isinstance(x, bool) and not -_MAX_EXACT_INT <= x <= _MAX_EXACT_INT:
            raise ParamError("the body holds an integer beyond +-2^53 at %s; integers that large do not fit a "
                             "double" % (where or "its top"))
    return body


def _check_body_text(s, where):
    for c in s:
        o = ord(c)
        if o == 0 or 0xD800 <= o <= 0xDFFF:
            raise ParamError("the body holds a lone surrogate or a NUL at %s; text must be valid Unicode without NUL"
                             % where.encode("ascii", "backslashreplace").decode())
