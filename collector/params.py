"""Checking the API's query parameters: pure functions, each failure a precise ParamError.

A ParamError becomes a 400 response whose message names the parameter, what
was given and what is accepted.
"""

import datetime as _dt
import re

MAX_LIMIT = 1000            # rows per page at most
MAX_OFFSET = 10_000_000
MAX_BUCKETS = 10_000        # buckets one aggregate answer may hold
MAX_RANGE_DAYS = 366        # longest time range one request may ask for

# Bucket names -> seconds.
BUCKETS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "6h": 21600, "1d": 86400}

_REL = re.compile(r"^-(\d+)(s|m|h|d)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ParamError(ValueError):
    """A query parameter or body field that cannot be used; str() is the message for the client."""


def _show(v, n=60):
    v = str(v)
    return repr(v if len(v) <= n else v[:n] + "...")


def check_known(args, known):
    """Refuse parameters the endpoint does not take (a typo would otherwise be silently ignored)."""
    for k in args:
        if k not in known:
            raise ParamError("unknown parameter %s; this endpoint takes %s" % (_show(k), ", ".join(sorted(known)) or "none"))


def integer(args, key, default, lo, hi):
    """An integer parameter within lo..hi."""
    raw = args.get(key)
    if raw is None:
        return default
    if not re.fullmatch(r"-?\d{1,19}", raw.strip()):
        raise ParamError("%s must be a whole number from %d to %d, got %s" % (key, lo, hi, _show(raw)))
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
        raise ParamError("%s must be one of %s, got %s" % (key, ", ".join(choices), _show(raw)))
    return raw


def parse_time(key, raw, now):
    """A time: ISO 8601 with a zone (2026-11-23T10:00:00Z), ms since the epoch, or relative (-15m, -2h, -7d)."""
    raw = raw.strip()
    m = _REL.match(raw)
    if m:
        try:
            return now - _dt.timedelta(seconds=int(m.group(1)) * _UNIT_S[m.group(2)])
        except OverflowError:
            raise ParamError("%s %s reaches before year 1; ask for less" % (key, _show(raw))) from None
    if re.fullmatch(r"\d{1,15}", raw):
        try:
            return _dt.datetime.fromtimestamp(int(raw) / 1000, _dt.timezone.utc)
        except (OverflowError, OSError, ValueError):
            pass
    else:
        try:
            t = _dt.datetime.fromisoformat(raw.replace("Z", "+00:00") if raw.endswith("Z") else raw)
        except ValueError:
            t = None
        if t is not None:
            if t.tzinfo is None:
                raise ParamError("%s %s has no time zone; add Z or an offset like +02:00" % (key, _show(raw)))
            return t
    raise ParamError("%s must be an ISO 8601 time with a zone (2026-11-23T10:00:00Z), milliseconds since "
                     "the epoch, or relative like -15m, -2h, -7d; got %s" % (key, _show(raw)))


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
