"""Segments: a run of records of one kind with consecutive keys, stored as the finished wire message that carries it.

Pure functions, no I/O: building a segment's message from record texts, reading
the records back out of it, and cutting a list of records into runs that each
fit one message (the outbox, edge_agent/outbox.py, stores and sends them).
Record i of a segment has the key (boot, seq + i); a record's text is its JSON
without dt, and dt is spliced in when the message is built.
"""

import json

from fieldwatch.wire import codec

# Kinds whose message carries exactly one record.
SINGLE = ("result", "wave")
# Byte budget of one message's records: the contract limit less room for the envelope.
ENVELOPE_ROOM = 2048
DEFAULT_MAX_BYTES = codec.MAX_PAYLOAD - ENVELOPE_ROOM


class OutboxBatch:
    """One segment: a run of records of one kind with consecutive keys, ready to become one message."""

    __slots__ = ("kind", "tq", "boot", "seq", "n", "ts0", "body", "live", "dev")

    def __init__(self, kind, tq, boot, seq, n, ts0, body, live=None, dev=None):
        self.kind = kind
        self.tq = tq
        self.boot = boot
        self.seq = seq            # seq of the first record
        self.n = n
        self.ts0 = ts0            # time of the first record, ms
        self.body = body          # bytes: see the segments table
        self.live = live
        self.dev = dev            # the device id body was built for

    def __len__(self):
        return self.n

    @property
    def keys(self):
        """[(boot, seq)] of the records in this batch."""
        return [(self.boot, self.seq + i) for i in range(self.n)]

    @property
    def ranges(self):
        """The batch's keys as one (boot, first, last) range."""
        return [(self.boot, self.seq, self.seq + self.n - 1)]

    def payload(self, dev):
        """The wire message (bytes) carrying this batch for device `dev`."""
        if self.kind == "wave":
            return bytes(self.body)
        if self.kind == "result":
            r = json.loads(self.body)
            return codec.encode_result(dev, self.boot, self.seq, self.ts0, self.tq, r["id"], r["cmd"], r["ok"],
                                       r.get("detail"), r.get("error"))
        if dev == self.dev:
            return bytes(self.body)
        # Stored under another device id (the device was renamed since): build it anew.
        items = [_item(ts - self.ts0, text) for ts, text in _items(self.kind, self.ts0, self.body)]
        return _message(dev, self.kind, self.boot, self.seq, self.ts0, self.tq, ",".join(items))

    def __repr__(self):
        return "<OutboxBatch %s %d:%d+%d%s>" % (self.kind, self.boot, self.seq, self.n, " live" if self.live else "")


_ENCODERS = {"readings": codec.encode_readings, "fix": codec.encode_fixes,
             "features": codec.encode_features, "log": codec.encode_logs}
_LIST_KEY = {"readings": "r", "fix": "f", "features": "w", "log": "l"}


def _message(dev, kind, boot, seq, ts0, tq, items):
    # The wire message of a batched kind carrying `items` (their JSON, joined by ',').
    envelope = _ENCODERS[kind](dev, boot, seq, ts0, tq, [])
    return b"".join((envelope[:-2], items.encode(), b"]}"))  # the envelope ends in '[]}'


def _body_text(kind, body):
    # A record's JSON without its dt, checked once on the way in.
    if kind in ("readings", "log"):
        if not isinstance(body, (list, tuple)) or len(body) != 2:
            raise TypeError("a %s body is [name/level, value/text] (its dt is added when sent)" % kind)
        body = list(body)
    elif not isinstance(body, dict) or "dt" in body:
        raise TypeError("a %s body is a dict without 'dt' (dt is added when sent)" % kind)
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


def _item(dt, text):
    # The record's item as the message carries it: its JSON with dt spliced in first.
    if text[0] == "[":          # [name/level, value/text] -> [dt, name/level, value/text]
        return "[%d,%s" % (dt, text[1:])
    if text == "{}":
        return '{"dt":%d}' % dt
    return '{"dt":%d,%s' % (dt, text[1:])  # {...} -> {"dt": dt, ...}


def _items(kind, ts0, message):
    # [(ts, text without dt)] of the records in a message of a batched kind (the slow path).
    out = []
    for it in json.loads(message)[_LIST_KEY[kind]]:
        if isinstance(it, list):
            dt, rest = it[0], it[1:]
        else:
            dt = it.pop("dt")
            rest = it
        out.append((ts0 + dt, json.dumps(rest, separators=(",", ":"), allow_nan=False)))
    return out


def _parse(seg):
    # [(ts, text without dt)] of a segment of a batched kind: cuts and splits.
    return _items(seg[3], seg[5], bytes(seg[6]))


def _runs(records, max_records=codec.MAX_RECORDS, max_bytes=DEFAULT_MAX_BYTES):
    # Split [(seq, ts, tq, text)] (consecutive seqs) into runs that each fit one message:
    # yields (seq, ts0, tq, [item texts]).
    run = None
    for seq, ts, tq, text in records:
        if run is not None:
            item = _item(ts - run[1], text)
            if (tq != run[2] or len(run[3]) >= max_records or run[4] + len(item) + 1 > max_bytes
                    or abs(ts - run[1]) > codec.MAX_DT_MS):
                yield run[:4]
                run = None
            else:
                run[3].append(item)
                run[4] += len(item) + 1
                continue
        item = _item(0, text)
        run = [seq, ts, tq, [item], len(item)]
    if run is not None:
        yield run[:4]
