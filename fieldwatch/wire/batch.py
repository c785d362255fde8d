# A batched message built from records already encoded, and taken apart again: how the
# Pi's outbox (edge_agent/outbox.py) keeps each stored segment as the finished wire
# message, appends records to it, and cuts it, without re-encoding every record.
#
# A record's *body* is its JSON without dt (e.g. ["temp_c",21.5], {"mode":3,...}); its
# *item* is the entry the message's record list carries, dt first ([0,"temp_c",21.5],
# {"dt":0,"mode":3,...}). encode_batch() gives the same bytes as the kind's encoder in
# device.py for the same records (tests/unit/test_wire_batch.py).
#
# Common subset of CPython and MicroPython (the golden vectors run it on the Unix port);
# not shipped to a board, whose records are encoded one message at a time.

import json

from fieldwatch.wire.contract import LIST_KEY, dumps, head, loads

# CPython refuses NaN and infinities in a body, as the encoders do; MicroPython's json
# has no allow_nan (this module runs there only for the golden vectors).
try:
    json.dumps(0, allow_nan=False)
    _STRICT = {"allow_nan": False}
except TypeError:  # MicroPython
    _STRICT = {}

# What follows the header in a batched message of each kind, up to the first item.
_LIST_OPEN = {}
for _k in LIST_KEY:
    _LIST_OPEN[_k] = (',"%s":[' % LIST_KEY[_k]).encode()
del _k


def encode_batch(dev, kind, boot, seq, t0, tq, items):
    """The message (bytes) of a batched kind carrying `items`: record items' JSON joined by ','.

    Record i of the message gets key (boot, seq + i); items come from record_item().
    """
    h = dumps(head(dev, boot, seq, t0, tq))  # {"v":1,...,"tq":"ntp"}
    return b"".join((h[:-1], _LIST_OPEN[kind], items.encode(), b"]}"))


def record_body(kind, body):
    """A record's body (str): its JSON without dt, checked once on the way in.

    readings and log bodies are [name/level, value/text]; the other kinds' a dict
    without "dt" (dt is put in by record_item() when the message is built).
    TypeError for any other shape, ValueError for NaN or infinity.
    """
    if kind in ("readings", "log"):
        if not isinstance(body, (list, tuple)) or len(body) != 2:
            raise TypeError("a %s body is [name/level, value/text] (its dt is added when sent)" % kind)
        body = list(body)
    elif not isinstance(body, dict) or "dt" in body:
        raise TypeError("a %s body is a dict without 'dt' (dt is added when sent)" % kind)
    return json.dumps(body, separators=(",", ":"), **_STRICT)


def record_item(dt, body):
    """A record's item (str) in a message whose t0 lies dt ms before it: its body with dt put first."""
    if body[0] == "[":          # [name/level, value/text] -> [dt, name/level, value/text]
        return "[%d,%s" % (dt, body[1:])
    if body == "{}":
        return '{"dt":%d}' % dt
    return '{"dt":%d,%s' % (dt, body[1:])  # {...} -> {"dt": dt, ...}


def record_bodies(kind, t0, message):
    """[(ts_ms, body)] of the records in a batched message of `kind`: record_item() undone."""
    out = []
    for it in loads(message)[LIST_KEY[kind]]:
        if isinstance(it, list):
            dt, rest = it[0], it[1:]
        else:
            dt = it.pop("dt")
            rest = it
        out.append((t0 + dt, json.dumps(rest, separators=(",", ":"))))
    return out
