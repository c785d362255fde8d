# Outbox: a bounded ring of records in append-only segment files (LittleFS on the board).
#
# The ESP32's implementation of the buffer contract (docs/buffer.md: append,
# next_to_send, confirm, rewind, the drop-oldest full policy, crashes), which the
# Pi's edge_agent/outbox.py implements too; tests/hil/test_buffer_contract.py runs
# the same cases over both. A ring "record" is what the contract calls an entry.
#
# A record is one message to publish: its kind (wire topic kind), its key (boot,
# seq) and the number of wire records it carries (n: keys seq .. seq+n-1), and the
# encoded payload. On flash:
#
#   u8 magic 0xA5 | u8 kind index | u16 payload length | u32 boot | u32 seq | u16 n
#   | payload | u32 CRC-32 of everything before it
#
# Each record is written with one write() and flushed: after a reset or power loss
# the last record may be torn; recovery reads each segment up to the first record
# whose length or CRC does not check and ignores the rest (counted in `torn`).
# Every boot starts a new segment, so a torn tail is never appended to.
#
# Delivery: records go out in order from `head` (oldest unconfirmed). A record is
# freed only when a delivery confirmation (ack ranges from the collector) covers all
# its keys; a segment file is deleted when every record in it is freed (that
# deletion is the only persisted "confirmed" state: after a reset the unconfirmed
# part of the oldest segment is sent again, and the receiver drops the duplicates
# by key). Records in flight are resent when the oldest is not confirmed within
# `resend_ms`, and after every reconnect (rewind()). When the ring is full the
# oldest segment is dropped: its records are counted in `drops` and reported in the
# status message.
#
# Age: each segment keeps the ticks_ms of its first and last append (this boot; a
# segment from an earlier boot counts from this boot's start, a lower bound). The age
# of the oldest unconfirmed record (status.buf.oldest_s) is estimated from its place
# between the two: records are appended at a steady pace, and a segment holds a few
# tens of them. No time per record is kept in RAM or on flash.
#
# Memory: per segment a 5-item list; per record in flight an 8-item list (at most
# `window`); payloads are read from flash when sent. Record heads and CRCs go
# through two buffers allocated once, and a record is written as head, payload and
# CRC (three writes, one flush) rather than concatenated first: on a 100 KB heap a
# payload-sized copy is what fails first once the heap is fragmented. A torn record
# is still caught by its length/CRC at recovery.

import os
import struct
import time

from fieldwatch.wire.contract import RECORD_KINDS

try:
    from binascii import crc32
except ImportError:  # pragma: no cover
    from zlib import crc32

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_MAGIC = const(0xA5)
_HEAD = "<BBHIIH"
_HEAD_SIZE = const(14)
KINDS = RECORD_KINDS    # a record's kind is stored as its index in this tuple
_MAX_PAYLOAD = const(16384)
_INLINE = const(512)    # payloads up to this size are read as bytes; bigger ones stay on flash
_CHUNK = const(256)     # bytes per read when checking or streaming a big payload


def _seg_name(d, no):
    return "%s/%08d.seg" % (d, no)


class Stored:
    """A big record payload left in its segment file (a waveform block, a batch of fixes).

    len() is its size; send_to(write) calls write(chunk) for each piece, read through
    the ring's chunk buffer. uplink._Sock streams it into the socket, so sending a 1.6 KB
    waveform block needs no 1.6 KB of contiguous heap. bytes(stored.read()) for tests.
    """

    def __init__(self, path, off, length, chunk):
        self.path = path
        self.off = off
        self.length = length
        self._chunk = chunk

    def __len__(self):
        return self.length

    def send_to(self, write):
        """write(memoryview) each chunk of the payload, in order."""
        buf = self._chunk
        mv = memoryview(buf)
        with open(self.path, "rb") as f:
            f.seek(self.off)
            left = self.length
            while left > 0:
                k = f.readinto(buf) if left >= len(buf) else f.readinto(mv[:left])
                if not k:
                    raise OSError(5)  # EIO: the segment file got shorter
                write(mv[:k])
                left -= k

    def read(self):
        """The whole payload as bytes (allocates it: for tests and tools)."""
        out = bytearray()
        self.send_to(out.extend)
        return bytes(out)


class Ring:
    """Outbox of records on flash: append(), next_to_send(), confirm(), rewind()."""

    def __init__(self, directory, segment_bytes=8192, max_segments=8, window=16, resend_ms=10000):
        self.dir = directory
        self.segment_bytes = segment_bytes
        self.max_segments = max_segments
        self.window = window
        self.resend_ms = resend_ms
        self.drops = 0      # records dropped because the ring was full
        self.torn = 0       # segments whose tail failed the length/CRC check at recovery
        self.appended = 0
        self.confirmed = 0
        self._hbuf = bytearray(_HEAD_SIZE)
        self._cbuf = bytearray(4)
        self._chunk = bytearray(_CHUNK)
        self._head_recs = 0  # confirmed records before _head_off in the oldest segment
        try:
            os.mkdir(directory)
        except OSError:
            pass
        # segments: [number, records, bytes, first append ms, last append ms], oldest first
        self._segs = []
        self._inflight = []  # [seg, offset, boot, seq, n, sent_ms, confirmed, end offset]
        self._recover()
        # head: (segment index 0, offset) of the oldest unconfirmed record;
        # cursor: next record to send. Both start at the oldest record.
        self._head_off = 0
        self._cur_seg = 0
        self._cur_off = 0
        no = self._segs[-1][0] + 1 if self._segs else 1
        self._segs.append([no, 0, 0, 0, 0])
        self._f = open(_seg_name(directory, no), "ab")

    # ---- recovery ------------------------------------------------------------------
    def _recover(self):
        now = time.ticks_ms()   # written before this boot: at least this old
        names = sorted(x for x in os.listdir(self.dir) if x.endswith(".seg"))
        for name in names:
            no = int(name[:-4])
            recs, good, torn = self._scan(_seg_name(self.dir, no))
            if torn:
                self.torn += 1
            if recs == 0:
                os.remove(_seg_name(self.dir, no))
                continue
            self._segs.append([no, recs, good, now, now])

    def _scan(self, path):
        # Count the valid records of a segment file: (records, valid bytes, torn?)
        recs = 0
        off = 0
        with open(path, "rb") as f:
            while True:
                r = self._read_at(f, off, path)
                if r is None:
                    break
                if r is False:
                    return recs, off, True
                recs += 1
                off = r[0]
        return recs, off, False

    def _read_at(self, f, off, path):
        # The record at offset off: (next offset, kind, boot, seq, n, payload);
        # None at a clean end, False when torn or corrupt. A payload over _INLINE
        # bytes is checked in chunks and returned as a Stored (left on flash).
        f.seek(off)
        head = self._hbuf
        got = f.readinto(head)
        if not got:
            return None
        if got < _HEAD_SIZE or head[0] != _MAGIC:
            return False
        magic, kind, length, boot, seq, n = struct.unpack(_HEAD, head)
        if kind >= len(KINDS) or length > _MAX_PAYLOAD:
            return False
        if length <= _INLINE:
            payload = f.read(length)
            if len(payload) < length:
                return False
            crc = crc32(payload, crc32(head))
        else:
            crc = crc32(head)
            buf = self._chunk
            mv = memoryview(buf)
            left = length
            while left > 0:
                k = f.readinto(buf) if left >= _CHUNK else f.readinto(mv[:left])
                if not k:
                    return False
                crc = crc32(mv[:k], crc)
                left -= k
            payload = Stored(path, off + _HEAD_SIZE, length, buf)
        crc &= 0xFFFFFFFF
        if f.readinto(self._cbuf) < 4:
            return False
        if struct.unpack("<I", self._cbuf)[0] != crc:
            return False
        return (off + _HEAD_SIZE + length + 4, KINDS[kind], boot, seq, n, payload)

    # ---- producing -------------------------------------------------------------------
    def append(self, kind, boot, seq, n, payload, tail=None):
        """Store one record durably (written, then flushed); drop the oldest segment when full.

        The payload is `payload` followed by `tail` (a bytes-like, e.g. a memoryview of
        waveform samples), so a big record need not be joined in RAM first.
        """
        length = len(payload) + (len(tail) if tail is not None else 0)
        if length > _MAX_PAYLOAD:
            raise ValueError("record of %d bytes > %d" % (length, _MAX_PAYLOAD))
        head = self._hbuf
        struct.pack_into(_HEAD, head, 0, _MAGIC, KINDS.index(kind), length, boot, seq, n)
        crc = crc32(payload, crc32(head))
        if tail is not None:
            crc = crc32(tail, crc)
        struct.pack_into("<I", self._cbuf, 0, crc & 0xFFFFFFFF)
        size = _HEAD_SIZE + length + 4
        last = self._segs[-1]
        if last[2] and last[2] + size > self.segment_bytes:
            self._new_segment()
            last = self._segs[-1]
        # written and flushed together: a power cut leaves at most this record torn
        f = self._f
        f.write(head)
        f.write(payload)
        if tail is not None:
            f.write(tail)
        f.write(self._cbuf)
        f.flush()
        t = time.ticks_ms()
        if not last[1]:
            last[3] = t
        last[4] = t
        last[1] += 1
        last[2] += size
        self.appended += 1

    def _new_segment(self):
        self._f.close()
        no = self._segs[-1][0] + 1
        self._segs.append([no, 0, 0, 0, 0])
        self._f = open(_seg_name(self.dir, no), "ab")
        while len(self._segs) > self.max_segments:
            self._drop_oldest()

    def _drop_oldest(self):
        no = self._segs[0][0]
        # records of that segment already confirmed are not lost: count the rest
        self.drops += self._segs[0][1] - self._head_recs
        self._inflight = [e for e in self._inflight if e[0] != no]
        self._delete_head_segment()

    def _delete_head_segment(self):
        # the oldest segment goes (fully confirmed, or dropped): the head moves to the next
        self._remove(self._segs.pop(0)[0])
        self._head_off = 0
        self._head_recs = 0
        if self._cur_seg > 0:
            self._cur_seg -= 1
        else:
            self._cur_off = 0

    def _remove(self, no):
        try:
            os.remove(_seg_name(self.dir, no))
        except OSError:
            pass

    # ---- delivering ------------------------------------------------------------------
    def next_to_send(self, now_ms=None):
        """The next record to publish as (kind, boot, seq, n, payload), or None.

        payload is bytes, or a Stored for one over 512 bytes (publish it as it is:
        uplink.Link streams it from flash).

        None when everything is sent or `window` records await confirmation. When the
        oldest record in flight is older than resend_ms, sending restarts from it.
        """
        if now_ms is None:
            now_ms = time.ticks_ms()
        inf = self._inflight
        if inf and not inf[0][6] and time.ticks_diff(now_ms, inf[0][5]) > self.resend_ms:
            self.rewind()
        if len(self._inflight) >= self.window:
            return None
        while self._cur_seg < len(self._segs):
            seg = self._segs[self._cur_seg]
            if self._cur_seg == len(self._segs) - 1:
                self._f.flush()
            path = _seg_name(self.dir, seg[0])
            with open(path, "rb") as f:
                r = self._read_at(f, self._cur_off, path)
            if not r:
                if self._cur_seg == len(self._segs) - 1:
                    return None  # nothing new
                self._cur_seg += 1
                self._cur_off = 0
                continue
            nxt, kind, boot, seq, n, payload = r
            self._inflight.append([seg[0], self._cur_off, boot, seq, n, now_ms, False, nxt])
            self._cur_off = nxt
            return kind, boot, seq, n, payload
        return None

    def rewind(self):
        """Send again everything not yet confirmed (after a reconnect or a timeout)."""
        self._inflight = []
        self._cur_seg = 0
        self._cur_off = self._head_off

    def confirm(self, ranges):
        """Apply a delivery confirmation: ranges of (boot, first, last); frees covered records."""
        hit = 0
        for e in self._inflight:
            if e[6]:
                continue
            boot, first, last = e[2], e[3], e[3] + e[4] - 1
            for b, lo, hi in ranges:
                if b == boot and lo <= first and last <= hi:
                    e[6] = True
                    hit += 1
                    break
        # free the confirmed prefix; delete segments left behind
        inf = self._inflight
        while inf and inf[0][6]:
            e = inf.pop(0)
            self.confirmed += 1
            self._advance_head(e)
        return hit

    def _advance_head(self, e):
        # Records are confirmed in order: segments before the freed record's are fully
        # confirmed (their last record was freed while they were the open segment).
        segs = self._segs
        while len(segs) > 1 and segs[0][0] != e[0]:
            self._delete_head_segment()
        self._head_off = e[7]  # the freed record's end is where the next one starts
        self._head_recs += 1
        if len(segs) > 1 and self._head_off >= segs[0][2]:
            # whole oldest segment confirmed: delete it (persisted progress)
            self._delete_head_segment()

    # ---- reporting ---------------------------------------------------------------------
    def depth(self):
        """Records stored and not yet confirmed."""
        n = 0
        for s in self._segs:
            n += s[1]
        return n - self._head_recs

    def oldest_age_ms(self, now_ms=None):
        """Age in ms of the oldest record stored and not yet confirmed (0 when none); an estimate.

        Its append time is put between its segment's first and last append by its place
        in the segment (see "Age" above); for a segment from an earlier boot, the boot.
        """
        if now_ms is None:
            now_ms = time.ticks_ms()
        k = self._head_recs
        for s in self._segs:
            if k < s[1]:
                t = s[3]
                if s[1] > 1:
                    t = time.ticks_add(t, time.ticks_diff(s[4], s[3]) // (s[1] - 1) * k)
                return max(0, time.ticks_diff(now_ms, t))
            k = 0
        return 0

    def inflight(self):
        """Records sent and awaiting confirmation."""
        return len(self._inflight)

    def close(self):
        """Close the open segment file."""
        self._f.close()
