"""One flush worth of work: validated messages turned into rows, plus what to quarantine.

Pure logic, no I/O: add() validates a Message against the wire contract and
turns its records into rows of the table its kind is stored in (the row types
and the kind -> table map are collector.schema's); store.write() COPYs those
rows as they are and commits a Batch in one transaction; then the ingest
loop acks the batch's messages and confirms its keys to the devices.
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
    """
    parsed = topics.parse(topic_name)
    if parsed is None or not topics.valid_device_id(parsed[0]):
        return None
    dev, kind = parsed
    if kind in ("status", "cmd", "ack"):
        return None
    try:
        if kind == "wave":
            if len(payload) < codec.WAVE_HEADER_SIZE or payload[:2] != codec.WAVE_MAGIC:
                return None
            boot, seq = struct.unpack_from("<II", payload, 4)
            return dev, boot, seq, 1
        msg = json.loads(payload)
    except (ValueError, UnicodeError, struct.error):
        return None
    if not isinstance(msg, dict):
        return None
    boot, seq = msg.get("boot"), msg.get("seq")
    ok = lambda x: codec.is_int(x) and 0 <= x <= codec.MAX_U32
    if not (ok(boot) and ok(seq)):
        return None
    items = msg.get(codec.LIST_KEY.get(kind, ""))
    n = len(items) if isinstance(items, list) and 0 < len(items) <= codec.MAX_RECORDS else 1
    return dev, boot, seq, n


class Batch:
    """Rows for one transaction, and the messages and keys it settles."""

    def __init__(self):
        self.messages = []          # every Message in the batch, in arrival order (acked in this order)
        self.rows = {t: [] for t in schema.RECORD_TABLES}   # RecordTable -> [its Row]
        self.results = []           # CommandResult
        self.status = {}            # dev -> (decoded status, recv_ms); the last one wins
        self.quarantine = {}        # digest -> QuarantineEntry
        self.seen = {}              # dev -> (last recv_ms, clock skew ms or None)
        self.keys = {}              # dev -> set of (boot, seq) settled by this batch
        self.records = 0
        self.invalid = 0            # messages quarantined
        self.untimed = False        # some record has tq 'none' (time since boot): device_boots needed
        self.first_recv_ms = None

    def __len__(self):
        return len(self.messages)

    def add(self, msg):
        """Validate one Message and file its rows; returns the WireError code or None."""
        self.messages.append(msg)
        if self.first_recv_ms is None:
            self.first_recv_ms = msg.recv_ms
        try:
            d = codec.decode(msg.topic, msg.payload, msg.recv_ms)
        except codec.WireError as e:
            self._quarantine(msg, e.code, e.detail)
            return e.code
        if d["kind"] in ("cmd", "ack"):  # not ours to receive: a misrouted or forged message
            self._quarantine(msg, "wrong_direction", "%s messages go to devices, not to the collector" % d["kind"])
            return "wrong_direction"
        dev = d["dev"]
        if d["tq"] == "none":
            self.untimed = True
        skew = msg.recv_ms - d["t0"] if d["tq"] != "none" else None
        self.seen[dev] = (msg.recv_ms, skew)
        kind = d["kind"]
        if kind == "status":
            self.status[dev] = (d, msg.recv_ms)
            return None
        boot, recv_ms, tq = d["boot"], msg.recv_ms, d["tq"]
        keys = self.keys.setdefault(dev, set())
        recs = d["records"]
        for r in recs:
            keys.add((boot, r["seq"]))
        self.records += len(recs)
        table = schema.TABLE_OF_KIND[kind]
        if kind == "readings":
            self.rows[table].extend(Reading(dev, boot, r["seq"], r["ts"], recv_ms, tq, r["name"], float(r["value"]))
                                    for r in recs)
        elif kind == "fix":
            self.rows[table].extend(Fix(
                dev, boot, r["seq"], r["ts"], recv_ms, tq, r["mode"], r["lat_e7"] / 1e7, r["lon_e7"] / 1e7,
                _scaled(r["alt_mm"], 1e3), _scaled(r["speed_mmps"], 1e3), _scaled(r["track_cdeg"], 1e2),
                _scaled(r["eph_mm"], 1e3), _scaled(r["epv_mm"], 1e3), r["sats"]) for r in recs)
        elif kind == "features":
            rows = self.rows[table]
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
            self.rows[table].append(WaveformBlock(dev, boot, d["seq"], d["t0"], recv_ms, tq, d["rate_hz"],
                                                  d["scale_g"], d["range_g"], d["n"], d["axes"], d["samples"]))
        elif kind == "log":
            self.rows[table].extend(LogLine(dev, boot, r["seq"], r["ts"], recv_ms, tq, r["level"], r["text"])
                                    for r in recs)
        elif kind == "result":
            self.results.append(CommandResult(d["id"], dev, d["cmd"], d["ok"], d["detail"], d["error"], boot,
                                              d["seq"], recv_ms))
        return None

    def _quarantine(self, msg, code, reason):
        self.invalid += 1
        payload = bytes(msg.payload)
        digest = hashlib.sha256(msg.topic.encode("utf-8", "replace") + b"\0" + payload).digest()
        parsed = topics.parse(msg.topic)
        dev = parsed[0][:200] if parsed else None
        self.quarantine[digest] = QuarantineEntry(msg.recv_ms, msg.topic, dev, code, reason, payload)
        k = quarantine_keys(msg.topic, payload)
        if k:
            kdev, boot, seq, n = k
            keys = self.keys.setdefault(kdev, set())
            for i in range(n):
                keys.add((boot, seq + i))
            self.seen[kdev] = (msg.recv_ms, self.seen.get(kdev, (0, None))[1])

    def confirmations(self):
        """[(dev, ranges)] of keys this batch settled, for the delivery confirmations."""
        return [(dev, codec.ranges_of(keys)) for dev, keys in self.keys.items() if keys]


def _scaled(v, div):
    return None if v is None else v / div


def _floats(xs):
    return None if xs is None else [float(x) for x in xs]
