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
    ("999999999999999", "from must be an ISO 8601 time"),
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
