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
