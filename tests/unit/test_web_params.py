"""collector.params: the API's query-parameter checks (pure; every failure names the parameter)."""

import datetime as dt

import pytest

from collector import params
from collector.params import ParamError

NOW = dt.datetime(2026, 11, 23, 10, 0, 0, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("raw,expected", [
    ("2026-11-23T09:00:00Z", dt.datetime(2026, 11, 23, 9, tzinfo=dt.timezone.utc)),
    ("2026-11-23T11:00:00+02:00", dt.datetime(2026, 11, 23, 9, tzinfo=dt.timezone.utc)),
    ("1763888400000", dt.datetime(2025, 11, 23, 9, tzinfo=dt.timezone.utc)),
    ("-15m", NOW - dt.timedelta(minutes=15)),
    ("-2h", NOW - dt.timedelta(hours=2)),
    ("-7d", NOW - dt.timedelta(days=7)),
    ("-30s", NOW - dt.timedelta(seconds=30)),
])
def test_web_params_time_forms(raw, expected):
    assert params.parse_time("from", raw, NOW) == expected


@pytest.mark.parametrize("raw,message", [
    ("yesterday", "from must be an ISO 8601 time"),
    ("2026-11-23T09:00:00", "has no time zone"),
    ("-5w", "from must be an ISO 8601 time"),
    ("999999999999999", "from .999999999999999. is out of range: times from 1900-01-01T00:00:00Z to 9999-12-31"),
    ("", "from must be an ISO 8601 time"),
    ("-99999999999d", "reaches before year 1"),
])
def test_web_params_bad_times_name_the_parameter(raw, message):
    with pytest.raises(ParamError, match=message):
        params.parse_time("from", raw, NOW)


def test_web_params_range_defaults_order_and_cap():
    start, end = params.time_range({}, NOW)
    assert (start, end) == (NOW - dt.timedelta(hours=1), NOW)
    start, end = params.time_range({"to": "-1h"}, NOW, default_span_s=60)
    assert end - start == dt.timedelta(seconds=60)
    with pytest.raises(ParamError, match="must be before to"):
        params.time_range({"from": "-1h", "to": "-1h"}, NOW)
    with pytest.raises(ParamError, match="longer than %d days" % params.MAX_RANGE_DAYS):
        params.time_range({"from": "-%dd" % (params.MAX_RANGE_DAYS + 1)}, NOW)


def test_web_params_limit_offset_and_integers():
    assert params.limit_offset({}) == (100, 0)
    assert params.limit_offset({"limit": str(params.MAX_LIMIT), "offset": "7"}) == (params.MAX_LIMIT, 7)
    for args, message in (({"limit": "0"}, "limit must be from 1"), ({"limit": "1001"}, "limit must be from 1 to 1000"),
                          ({"limit": "1e3"}, "limit must be a whole number"), ({"offset": "-1"}, "offset must be from 0"),
                          ({"limit": "9" * 30}, "limit must be a whole number")):
        with pytest.raises(ParamError, match=message):
            params.limit_offset(args)


def test_web_params_bucket_count_is_capped():
    start = NOW - dt.timedelta(hours=1)
    assert params.bucket({}, start, NOW) == ("1m", 60)
    assert params.bucket({"bucket": "1h"}, NOW - dt.timedelta(days=300), NOW) == ("1h", 3600)
    with pytest.raises(ParamError, match="bucket must be one of"):
        params.bucket({"bucket": "2m"}, start, NOW)
    with pytest.raises(ParamError, match="more than %d" % params.MAX_BUCKETS):
        params.bucket({"bucket": "1m"}, NOW - dt.timedelta(days=30), NOW)


def test_web_params_unknown_parameter_is_refused():
    params.check_known({"limit": "1"}, ("limit", "offset"))
    with pytest.raises(ParamError, match="unknown parameter 'limt'; this endpoint takes limit, offset"):
        params.check_known({"limt": "1"}, ("limit", "offset"))


@pytest.mark.parametrize("raw", ["0001-01-01T00:00:00Z", "0001-01-01T00:00:00+23:59", "1899-12-31T23:59:59Z",
                                 "9999-12-31T23:59:59-23:59", "9999-12-31T00:00:01Z", "-50000d"])
def test_web_params_times_outside_1900_to_9999_are_refused_by_name(raw):
    # issue 14: year 0001 was an OverflowError (HTTP 500) once a span was taken from it
    with pytest.raises(ParamError, match="to '.*' is out of range: times from 1900-01-01T00:00:00Z to "
                                         "9999-12-31T00:00:00Z are accepted"):
        params.time_range({"to": raw}, NOW)


def test_web_params_times_at_the_bounds_are_accepted():
    assert params.parse_time("to", "1900-01-01T00:00:00Z", NOW) == params.TIME_MIN
    assert params.parse_time("to", "9999-12-31T00:00:00Z", NOW) == params.TIME_MAX
    assert params.parse_time("to", "1763888400123", NOW) == dt.datetime(2025, 11, 23, 9, 0, 0, 123000, dt.timezone.utc)
    start, end = params.time_range({"to": "1900-01-01T01:00:00Z"}, NOW)
    assert start == params.TIME_MIN


def test_web_params_relative_time_with_thousands_of_digits_is_a_param_error():
    # int() of a 5,000-digit string raises ValueError in CPython 3.11 (issue 14: a 500)
    with pytest.raises(ParamError, match="from must be an ISO 8601 time"):
        params.parse_time("from", "-" + "9" * 5000 + "d", NOW)


def test_web_params_text_names_and_codes():
    assert params.reading_name({"name": "temp_c"}) == "temp_c" and params.reading_name({}) is None
    for bad in ("temp\x00c", "", "Temp", "1x", "a" * 33, "\ufffd"):
        with pytest.raises(ParamError, match="name must be a reading name"):
            params.reading_name({"name": bad})
    assert params.error_code({"code": "bad_json"}) == "bad_json"
    for bad in ("bad\x00json", "", "BAD", "a" * 65):
        with pytest.raises(ParamError, match="code must be an error code like bad_json"):
            params.error_code({"code": bad})
    assert params.text({"device": "<script>alert(1)<"}, "device", 200, "as in the topic") == "<script>alert(1)<"
    for bad in ("pump\x00", "", "a" * 201, "\ud800"):
        with pytest.raises(ParamError, match=r"device must be 1..200 characters without NUL \(as in the topic\)"):
            params.text({"device": bad}, "device", 200, "as in the topic")


@pytest.mark.parametrize("raw,message", [
    (b'{"id": "\\ud800"}', "lone surrogate or a NUL at id"),
    (b'{"args": {"\\u0000": 1}}', "lone surrogate or a NUL at args"),
    (b'{"args": {"hz": 1e400}}', "number too large for a double at args.hz"),
    (b'{"args": {"n": 18446744073709551616}}', "integer beyond"),
    (b'{"args": {"a": ' + b"[" * 9 + b"]" * 9 + b"}}", "nests deeper than 8 levels at args.a"),
    (b"[" * 100_000, "the body is not valid JSON"),
    (b'{"cmd": "\xed\xa0\x80"}', "the body is not valid JSON"),
    (b"NaN", "the body is not valid JSON"),
    (b"", "the body is not valid JSON"),
])
def test_web_params_json_body_refuses_what_cannot_be_stored_or_sent(raw, message):
    with pytest.raises(ParamError, match=message):
        params.json_body(raw)


def test_web_params_json_body_accepts_a_command():
    body = b'{"cmd": "set_rate", "args": {"hz": 6.25, "x": [[[[[[1]]]]]]}, "id": "caf\xc3\xa9"}'
    assert params.json_body(body) == {"cmd": "set_rate", "args": {"hz": 6.25, "x": [[[[[[1]]]]]]}, "id": "café"}
