"""Segments: a run of records of one kind with consecutive keys, stored as the finished wire message that carries it.

Pure functions, no I/O: a segment's message is built from record texts, read back
and cut by the wire contract's own functions (fieldwatch/wire/batch.py: nothing here
writes wire bytes); this module cuts a list of records into runs that each fit one
message (the outbox, edge_agent/outbox.py, stores and sends them).
Record i of a segment has the key (boot, seq + i); a record's text is its JSON
without dt, and dt is spliced in when the message is built.
"""

import json

from fieldwatch.wire import codec
from fieldwatch.wire.batch import encode_batch, record_bodies, record_item

# Kinds whose message carries exactly one record.
SINGLE = codec.SINGLE_RECORD_KINDS
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
        items = [record_item(ts - self.ts0, text) for ts, text in record_bodies(self.kind, self.ts0, self.body)]
        return encode_batch(dev, self.kind, self.boot, self.seq, self.ts0, self.tq, ",".join(items))

    def __repr__(self):
        return "<OutboxBatch %s %d:%d+%d%s>" % (self.kind, self.boot, self.seq, self.n, " live" if self.live else "")


def _parse(seg):
    # [(ts, text without dt)] of a segment of a batched kind: cuts and splits.
    return record_bodies(seg[3], seg[5], bytes(seg[6]))


def _runs(records, max_records=codec.MAX_RECORDS, max_bytes=DEFAULT_MAX_BYTES):
    # Split [(seq, ts, tq, text)] (consecutive seqs) into runs that each fit one message:
    # yields (seq, ts0, tq, [item texts]).
    run = None
    for seq, ts, tq, text in records:
        if run is not None:
            item = record_item(ts - run[1], text)
            if (tq != run[2] or len(run[3]) >= max_records or run[4] + len(item) + 1 > max_bytes
                    or abs(ts - run[1]) > codec.MAX_DT_MS):
                yield run[:4]
                run = None
            else:
                run[3].append(item)
                run[4] += len(item) + 1
                continue
        item = record_item(0, text)
        run = [seq, ts, tq, [item], len(item)]
    if run is not None:
        yield run[:4]
