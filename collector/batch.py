"""One flush worth of work: validated messages turned into rows, plus what to quarantine.

Pure logic, no I/O: add() validates a Message against the wire contract and
turns its records into rows of the table its kind is stored in (the row types
and the kind -> table map are collector.schema's); store.write() COPYs those
rows as they are and commits a Batch in one transaction; then the ingest
loop acks the batch's messages and confirms its keys to the devices.
add() never raises: whatever bytes arrive, the message either joins the batch
whole or is quarantined with a code and a reason. halves() and refused() are
how the writer takes apart a batch the database refuses (collector/ingest.py).
"""

import hashlib
import json
import struct

from collector import schema
from collector.schema import CommandResult, FeatureWindow, Fix, LogLine, QuarantineEntry, Reading, WaveformBlock
from fieldwatch.wire import codec, topics


def quarantine_keys(topic_name, payload):
    """Best-effort (device, boot, first_seq, count) of a message that failed validation.

    Quarantined records are confirmed to their device like stored ones, so a
    device does not resend a bad record forever. None when nothing usable parses.
    The keys never pass seq 2^32-1 (a device rejects an ack that does, and with
    it every key the ack covers). Never raises: any input at all gives an answer.
    """
    try:
        return _quarantine_keys(topic_name, payload)
    except Exception:  # RecursionError (deep nesting), MemoryError, anything: no keys, still quarantined
        return None


def _quarantine_keys(topic_name, payload):
    parsed = topics.parse(topic_name)
    if parsed is None or not topics.valid_device_id(parsed[0]):
        return None
    dev, kind = parsed
    if kind in ("status", "cmd", "ack"):
        return None
    if kind == "wave":
        if len(payload) < codec.WAVE_HEADER_SIZE or payload[:2] != codec.WAVE_MAGIC:
            return None
        boot, seq = struct.unpack_from("<II", payload, 4)
        return dev, boot, seq, 1
    msg = json.loads(payload)
    if not isinstance(msg, dict):
        return None
    boot, seq = msg.get("boot"), msg.get("seq")
    ok = lambda x: codec.is_int(x) and 0 <= x <= codec.MAX_U32  # noqa: E731
    if not (ok(boot) and ok(seq)):
        return None
    items = msg.get(codec.LIST_KEY.get(kind, ""))
    n = len(items) if isinstance(items, list) and 0 < len(items) <= codec.MAX_RECORDS else 1
    return dev, boot, seq, min(n, codec.MAX_U32 - seq + 1)


class Batch:
    """Rows for one transaction, and the messages and keys it settles."""

    def __init__(self):
        self.messages = []          # every Message in the batch, in arrival order (acked in this order)
        self.rows = {t: [] for t in schema.RECORD_TABLES}   # RecordTable -> [its Row]
        self.results = []           # CommandResult
        self.status = {}            # dev -> (decoded status, recv_ms); the last one wins
        self.quarantine = {}        # digest -> QuarantineEntry (its first arrival in this batch)
        self.copies = {}            # digest -> [arrivals in this batch, last recv_ms]
        self.seen = {}              # dev -> (last recv_ms, clock skew ms or None)
        self.keys = {}              # dev -> set of (boot, seq) settled by this batch
        self.records = 0
        self.invalid = 0            # messages quarantined
        self.untimed = False        # some record has tq 'none' (time since boot): device_boots needed
        self.first_recv_ms = None
        self.refused_only = False   # a batch of one message the database refused, quarantined (Batch.refused)

    def __len__(self):
        return len(self.messages)

    def add(self, msg):
        """Validate one Message and file its rows; returns the quarantine code or None. Never raises.

        Whatever the message holds, it either joins the batch whole (rows, keys)
        or is quarantined with a code and a reason.
        """
        self.messages.append(msg)
        if self.first_recv_ms is None:
            self.first_recv_ms = msg.recv_ms
        try:
            d = codec.decode(msg.topic, msg.payload, msg.recv_ms)
            if d["kind"] not in ("cmd", "ack"):
                self._file(msg, d)
                return None
            # not ours to receive: a misrouted or forged message
            code, reason = "wrong_direction", "%s messages go to devices, not to the collector" % d["kind"]
        except codec.WireError as e:
            code, reason = e.code, e.detail
        except Exception as e:  # a bug in decoding or filing: this message's failure, not the batch's
            code, reason = "decode_failed", "%s: %s" % (type(e).__name__, str(e)[:300])
        self._quarantine(msg, code, reason)
        return code

    def _file(self, msg, d):
        # The decoded message's rows, built first: the batch changes only once nothing can fail.
        dev, kind, recv_ms, tq = d["dev"], d["kind"], msg.recv_ms, d["tq"]
        skew = recv_ms - d["t0"] if tq != "none" else None
        if kind == "status":
            self.status[dev] = (d, recv_ms)
            self.seen[dev] = (recv_ms, skew)
            self.untimed = self.untimed or tq == "none"
            return
        boot = d["boot"]
        recs = d["records"]
        table = schema.TABLE_OF_KIND[kind]
        if kind == "readings":
            rows = [Reading(dev, boot, r["seq"], r["ts"], recv_ms, tq, r["name"], float(r["value"])) for r in recs]
        elif kind == "fix":
            rows = [Fix(dev, boot, r["seq"], r["ts"], recv_ms, tq, r["mode"], r["lat_e7"] / 1e7, r["lon_e7"] / 1e7,
                        _scaled(r["alt_mm"], 1e3), _scaled(r["speed_mmps"], 1e3), _scaled(r["track_cdeg"], 1e2),
                        _scaled(r["eph_mm"], 1e3), _scaled(r["epv_mm"], 1e3), r["sats"]) for r in recs]
        elif kind == "features":
            rows = []
            for r in recs:
                row = [dev, boot, r["seq"], r["ts"], recv_ms, tq, r["len_ms"], float(r["rate_hz"]), r["n"]]
                for ax in codec.AXES:
                    a = r[ax]
                    row.extend([float(a[k]) for k in codec.FEATURE_KEYS] if a else [None] * 4)
                row.append(_floats(r["band_hz"]))
                for ax in codec.AXES:
                    row.append(_floats(r[ax]["bands"]) if r[ax] else None)
                rows.append(FeatureWindow._make(row))
        elif kind == "wave":
            rows = [WaveformBlock(dev, boot, d["seq"], d["t0"], recv_ms, tq, d["rate_hz"], d["scale_g"], d["range_g"],
                                  d["n"], d["axes"], d["samples"])]
        elif kind == "log":
            rows = [LogLine(dev, boot, r["seq"], r["ts"], recv_ms, tq, r["level"], r["text"]) for r in recs]
        else:   # result
            rows = [CommandResult(d["id"], dev, d["cmd"], d["ok"], d["detail"], d["error"], boot, d["seq"], recv_ms)]
        # From here on nothing can fail.
        (self.results if kind == "result" else self.rows[table]).extend(rows)
        keys = self.keys.setdefault(dev, set())
        for r in recs:
            keys.add((boot, r["seq"]))
        self.records += len(recs)
        self.seen[dev] = (recv_ms, skew)
        self.untimed = self.untimed or tq == "none"

    def _quarantine(self, msg, code, reason):
        self.invalid += 1
        payload = bytes(msg.payload)
        digest = hashlib.sha256(msg.topic.encode("utf-8", "replace") + b"\0" + payload).digest()
        copies = self.copies.get(digest)
        if copies is None:
            parsed = topics.parse(msg.topic)
            dev = parsed[0][:200] if parsed else None
            self.quarantine[digest] = QuarantineEntry(msg.recv_ms, msg.topic, dev, code, reason, payload)
            self.copies[digest] = [1, msg.recv_ms]
        else:       # the same bytes again in this batch: one row, every arrival counted
            copies[0] += 1
            copies[1] = max(copies[1], msg.recv_ms)
        k = quarantine_keys(msg.topic, payload)
        if k:
            kdev, boot, seq, n = k
            keys = self.keys.setdefault(kdev, set())
            for i in range(n):
                keys.add((boot, seq + i))
            self.seen[kdev] = (msg.recv_ms, self.seen.get(kdev, (0, None))[1])

    def halves(self):
        """This batch's messages as two batches (first half, second half), validated again.

        How the writer finds the message(s) the database refuses: a batch it
        refuses is split and each half committed on its own, down to one message.
        """
        mid = len(self.messages) // 2
        out = []
        for part in (self.messages[:mid], self.messages[mid:]):
            b = Batch()
            for msg in part:
                b.add(msg)
            out.append(b)
        return out

    @classmethod
    def refused(cls, msg, reason):
        """A batch holding only msg, quarantined as `store_rejected` with the database's reason."""
        b = cls()
        b.messages.append(msg)
        b.first_recv_ms = msg.recv_ms
        b._quarantine(msg, "store_rejected", reason)
        b.refused_only = True
        return b

    def confirmations(self):
        """[(dev, ranges)] of keys this batch settled, for the delivery confirmations."""
        return [(dev, codec.ranges_of(keys)) for dev, keys in self.keys.items() if keys]


def _scaled(v, div):
    return None if v is None else v / div


def _floats(xs):
    return None if xs is None else [float(x) for x in xs]
