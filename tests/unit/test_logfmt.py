"""The agent's JSON log lines."""

import json
import logging

from edge_agent.logfmt import JsonFormatter


def test_logfmt_json_line_with_exception():
    try:
        raise ValueError("bad \"value\"\nsecond line")
    except ValueError:
        import sys
        exc = sys.exc_info()
    rec = logging.LogRecord("edge_agent.agent", logging.WARNING, __file__, 1, "stored %s %d", ("features", 3), exc)
    rec.created, rec.msecs = 0.0, 0.0
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    out = json.loads(line)
    assert out["ts"] == "1970-01-01T00:00:00.000Z"
    assert (out["level"], out["logger"], out["msg"]) == ("warning", "edge_agent.agent", "stored features 3")
    assert 'ValueError: bad "value"' in out["exc"]
