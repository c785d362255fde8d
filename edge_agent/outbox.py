"""The outbox: every record the agent makes waits here, on disk, until the collector confirms it.

The Pi's implementation of the buffer contract (docs/buffer.md: append,
next_to_send, confirm, rewind, the drop-oldest full policy, crashes), which the
ESP32's firmware/ring.py implements too; tests/hil/test_buffer_contract.py runs
the same cases over both.

One SQLite database in the state directory, owned by this module (all SQL lives
here). A record enters with append(), which assigns its key (boot, seq) and
commits it; it leaves only when a delivery confirmation (`ack`) covers its key,
or when the outbox is full and the drop-oldest policy discards it (counted in a
persistent `drops` counter).

Segments. Records are stored as *segments* (edge_agent/segments.py): runs of records
of one kind and one time quality with consecutive keys, each row holding the finished
wire message that carries them, so that one segment is exactly one message: sending it is one
row read, and its confirmation deletes one row. append() stores a call's
records as one segment (split where a message would be too long), or appends
them to the segment this process stored last, if that one continues the run and
has not been handed out yet: an offline agent's one-record-per-pass writes add
up to real messages instead of one message per record. An append rewrites the
row's message, so appends stop at APPEND_MAX_BYTES of records (cheap on an SD
card). A segment is never changed once it has been handed out, so a confirmation
covers whole segments; one that covers part of a segment (or a drop of part of
one) cuts it, which costs a parse and is rare.

Durability. The database runs in WAL mode. A commit with `synchronous=NORMAL`
survives a killed process (the WAL is in the OS page cache) but not a power cut:
WAL frames are only fsynced at checkpoints, so the last transactions can vanish
after the agent told the sampler they were stored. On a Raspberry Pi power cuts
are the common failure, so append() commits with `synchronous=FULL`: the WAL is
fsynced before commit returns, and "append returned" means "on the card". That
costs one fsync per transaction, which is why append() takes many records at a
time (one transaction, one fsync for the lot). Changes that are safe to lose --
confirm(), and splitting a segment longer than the batch asked for -- commit
with NORMAL: losing them after a power cut only means a record is sent again,
and the collector stores every key once. WAL keeps the log append-only and each
transaction atomic, so a lost NORMAL commit can never take an earlier FULL one
with it, nor leave a record half moved.

Sent state. Which segments were published and when is kept in memory only: it
means something only for the current connection of the current process (after a
reconnect or a restart everything unconfirmed is sent again), so writing it to
disk would cost a transaction per message for nothing.

Sending order. Records made since the current connection came up are *live*;
everything older (earlier boots, records made while offline, resends) is
*backlog*. next_to_send() hands out live segments first and backlog behind them,
each as one OutboxBatch: exactly what one wire message carries (record i of a
message has key (boot, seq + i)).
"""

import collections
import json
import logging
import sqlite3
import time

from edge_agent.segments import ENVELOPE_ROOM, SINGLE, OutboxBatch, _parse, _runs
from fieldwatch.wire import codec, topics
from fieldwatch.wire.batch import encode_batch, record_body, record_item

log = logging.getLogger("edge_agent.outbox")

KINDS = codec.RECORD_KINDS
# append() appends to the last segment only while its records stay below this size.
APPEND_MAX_BYTES = 4096
# Backlog segments next_to_send() reads with one query.
READ_AHEAD = 16

_SCHEMA = """
CREATE TABLE IF NOT EXISTS segments (
    boot      INTEGER NOT NULL,
    seq       INTEGER NOT NULL,             -- key of the first record; record i has (boot, seq + i)
    n         INTEGER NOT NULL CHECK (n >= 1),
    kind      TEXT NOT NULL,                -- readings / fix / features / log / result / wave
    tq        TEXT NOT NULL,                -- time quality: gps / ntp / rtc / none
    ts0       INTEGER NOT NULL,             -- time of the first record, ms (the message's t0)
    body      BLOB NOT NULL,                -- the wire message carrying the records (wave: the binary
                                            -- block); result: the result's JSON (encoded when sent)
    queued_at REAL NOT NULL,                -- wall-clock seconds when the first record was enqueued
    dev       TEXT NOT NULL,                -- the device id the message was built for
    PRIMARY KEY (boot, seq)
);
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

_COLS = "boot, seq, n, kind, tq, ts0, body, queued_at, dev"


class OutboxError(Exception):
    """The outbox database cannot be opened or written (disk full, unreadable file)."""


def read_records(path, kind=None):
    """[(boot, seq, kind, ts_ms, body)] of the records in the outbox at path, in key order.

    Read through a connection of its own (the agent may have the outbox open): for
    tests and diagnostics. body is what append() was given: the record's JSON value
    without dt (a list or a dict), or the block's bytes for wave.
    """
    db = sqlite3.connect(path, timeout=10)
    try:
        sql = "SELECT %s FROM segments%s ORDER BY boot, seq" % (_COLS, " WHERE kind = ?" if kind else "")
        segs = db.execute(sql, (kind,) if kind else ()).fetchall()
    finally:
        db.close()
    out = []
    for seg in segs:
        boot, seq, k = seg[0], seg[1], seg[3]
        if k == "wave":
            out.append((boot, seq, k, seg[5], bytes(seg[6])))
        elif k == "result":
            out.append((boot, seq, k, seg[5], json.loads(seg[6])))
        else:
            out.extend((boot, seq + i, k, ts, json.loads(text)) for i, (ts, text) in enumerate(_parse(seg)))
    return out


class Outbox:
    """The durable queue of records; see the module docstring. Use from one thread."""

    def __init__(self, path, keys, dev, max_records=200000, resend_after_s=30.0, clock=time.time):
        """path: the SQLite file; keys: a keys.KeySource; dev: the device id messages are built for;
        max_records: bound before dropping the oldest."""
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        if not topics.valid_device_id(dev):
            raise ValueError("invalid device id %r" % (dev,))
        self.path = path
        self.dev = dev
        self.keys = keys
        self.max_records = max_records
        self.resend_after_s = resend_after_s
        self._clock = clock
        try:
            self._db = sqlite3.connect(path, isolation_level=None, timeout=10)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA journal_size_limit=8388608")  # trim the WAL after a big burst
            self._db.executescript(_SCHEMA)
            self._sync = "FULL"
            row = self._db.execute("PRAGMA journal_mode").fetchone()
            if row[0].lower() != "wal":
                raise OutboxError("%s: cannot use WAL mode (journal_mode=%s)" % (path, row[0]))
            self._depth = self._db.execute("SELECT coalesce(sum(n), 0) FROM segments").fetchone()[0]
            self._drops = self._meta("drops")
        except sqlite3.Error as e:
            raise OutboxError("cannot open the outbox %s: %s" % (path, e)) from None
        self.drops_since_open = 0
        self.resends = 0          # records made ready again (timeout or reconnect) since open
        self.appended = 0         # records committed since open
        self.confirmed = 0        # records deleted by confirmations since open
        self._open = None         # [boot, seq, n, kind, tq, ts0, items text, dev]: the segment append() may append to
        self._sent = {}           # (boot, seq) of a sent segment -> (sent_at, n), in the order sent
        self._from = {}           # lane -> key: every segment of the lane before it is in _sent (or gone)
        self._ahead = collections.deque()  # the backlog's next segments, read ahead (see _first_unsent)
        self.rewind()    # nothing this process sent yet; live starts now
        self.resends = 0

    # ---- helpers -------------------------------------------------------------
    def _meta(self, name):
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else 0

    def _begin(self, durable):
        sync = "FULL" if durable else "NORMAL"
        if sync != self._sync:
            self._db.execute("PRAGMA synchronous=" + sync)
            self._sync = sync
        self._db.execute("BEGIN IMMEDIATE")

    def _write(self, durable, work):
        # Run work(db) in one transaction; roll back and raise OutboxError on failure.
        try:
            self._begin(durable)
            try:
                result = work(self._db)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            self._open = None     # what it holds may not match the row any more
            raise OutboxError("outbox %s: %s" % (self.path, e)) from None
        return result

    def _insert(self, db, boot, seq, n, kind, tq, ts0, body, queued_at, dev=None):
        db.execute("INSERT INTO segments (%s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)" % _COLS,
                   (boot, seq, n, kind, tq, ts0, body, queued_at, dev or self.dev))

    def _store_runs(self, db, boot, records, kind, queued_at, dev=None):
        # Insert [(seq, ts, tq, text)] as segments; returns the last one as an appendable list.
        dev = dev or self.dev
        last = None
        for seq, ts0, tq, items in _runs(records):
            n, items = len(items), ",".join(items)
            self._insert(db, boot, seq, n, kind, tq, ts0, encode_batch(dev, kind, boot, seq, ts0, tq, items),
                         queued_at, dev)
            last = [boot, seq, n, kind, tq, ts0, items, dev]
        return last

    @staticmethod
    def max_boot_in(path):
        """The highest boot with a record in the outbox at path (None if empty or absent)."""
        try:
            db = sqlite3.connect(path, timeout=10)
            try:
                return db.execute("SELECT max(boot) FROM segments").fetchone()[0]
            finally:
                db.close()
        except sqlite3.Error:                  # no segments table yet, or unreadable
            return None

    # ---- records in ------------------------------------------------------------
    def append(self, kind, items):
        """Store records durably; items: [(ts_ms, tq, body)]. Returns the keys [(boot, seq)].

        body: readings [name, value]; log [level, text]; fix / features: the item dict
        without dt; result: {id, cmd, ok, detail?, error?}; wave: a callable
        (boot, seq) -> bytes building the block for its key. Items get consecutive
        keys in the given order. If the outbox is full the oldest records are dropped.
        """
        if kind not in KINDS:
            raise ValueError("unknown record kind %r" % (kind,))
        if not items:
            return []
        n = len(items)
        for ts, tq, body in items:
            if tq not in codec.TIME_QUALITY:
                raise ValueError("tq %r is not one of %s" % (tq, codec.TIME_QUALITY))
            if kind == "wave" and not callable(body):
                raise TypeError("a wave body is built from its key: pass a callable (boot, seq) -> bytes")
        if kind == "wave":
            texts = None
        else:
            texts = [record_body(kind, body) for _, _, body in items]
        boot, first = self.keys.take(n)
        now = self._clock()
        records = [(first + i, int(ts), tq, texts[i] if texts else None) for i, (ts, tq, _) in enumerate(items)]
        if kind == "wave":
            records = [(s, ts, tq, bytes(items[i][2](boot, s))) for i, (s, ts, tq, _) in enumerate(records)]
        opened = self._open

        def work(db):
            self._open = None
            recs = records
            if kind in SINGLE:
                for seq, ts, tq, body in recs:
                    self._insert(db, boot, seq, 1, kind, tq, ts, body if kind == "wave" else body.encode(), now)
            else:
                # Continue the last segment this process stored, if these records continue it.
                o = opened
                if (o is not None and o[0] == boot and o[1] + o[2] == first and o[3] == kind):
                    body, k = o[6], 0
                    while k < len(recs):
                        seq, ts, tq, text = recs[k]
                        item = record_item(ts - o[5], text)
                        if (tq != o[4] or o[2] + k >= codec.MAX_RECORDS or len(body) + len(item) + 1 > APPEND_MAX_BYTES
                                or abs(ts - o[5]) > codec.MAX_DT_MS):
                            break
                        body = body + "," + item
                        k += 1
                    if k:
                        self._ahead.clear()
                        db.execute("UPDATE segments SET n = ?, body = ? WHERE boot = ? AND seq = ?",
                                   (o[2] + k, encode_batch(o[7], kind, boot, o[1], o[5], o[4], body), boot, o[1]))
                        self._open = [boot, o[1], o[2] + k, kind, o[4], o[5], body, o[7]]
                        recs = recs[k:]
                if recs:
                    self._open = self._store_runs(db, boot, recs, kind, now)
            excess = self._depth + n - self.max_records
            return self._drop_oldest(db, excess) if excess > 0 else (0, [])

        dropped, ranges = self._write(True, work)
        self._depth += n - dropped
        self.appended += n
        if dropped:
            self._drops += dropped
            self.drops_since_open += dropped
            shown = ", ".join("%d:%d-%d" % r for r in ranges[:20])
            if len(ranges) > 20:
                shown += " and %d more ranges" % (len(ranges) - 20)
            log.warning("outbox full (%d records): dropped the %d oldest: %s", self.max_records, dropped, shown)
        return [(boot, first + i) for i in range(n)]

    def _drop_oldest(self, db, excess):
        # Delete the `excess` oldest records (cutting the last segment touched);
        # returns (how many, their keys as [(boot, first, last)]).
        dropped, ranges = 0, []
        while dropped < excess:
            seg = db.execute("SELECT %s FROM segments ORDER BY boot, seq LIMIT 1" % _COLS).fetchone()
            if seg is None:
                break
            boot, seq, n = seg[0], seg[1], seg[2]
            take = min(n, excess - dropped)
            dropped += self._cut(db, seg, seq, seq + take - 1)
            if ranges and ranges[-1][0] == boot and ranges[-1][2] + 1 == seq:
                ranges[-1][2] = seq + take - 1
            else:
                ranges.append([boot, seq, seq + take - 1])
        db.execute("INSERT INTO meta (name, value) VALUES ('drops', ?) "
                   "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value", (dropped,))
        return dropped, [tuple(r) for r in ranges]

    def _cut(self, db, seg, lo, hi):
        # Remove the records lo..hi (within the segment) from segment `seg`; returns how many.
        boot, seq, n, kind, tq, ts0, body, queued, dev = seg
        lo, hi = max(lo, seq), min(hi, seq + n - 1)
        if lo > hi:
            return 0
        db.execute("DELETE FROM segments WHERE boot = ? AND seq = ?", (boot, seq))
        self._sent.pop((boot, seq), None)
        self._ahead.clear()
        if self._open is not None and self._open[0] == boot and self._open[1] == seq:
            self._open = None
        if lo > seq or hi < seq + n - 1:        # part of it stays: store what is left as segments
            recs = [(seq + i, ts, tq, text) for i, (ts, text) in enumerate(_parse(seg))]
            for part in (recs[:lo - seq], recs[hi - seq + 1:]):
                if part:
                    self._store_runs(db, boot, part, kind, queued, seg[8])
                    key = (boot, part[0][0])
                    lane = self._lane(key)
                    if self._from.get(lane) is not None and key < self._from[lane]:
                        self._from[lane] = key     # the scan must find what is left
        return hi - lo + 1

    # ---- records out -------------------------------------------------------------
    def _lane(self, key):
        return key >= self._live_from

    def _requeue_stale(self):
        # Sent but unconfirmed for longer than resend_after_s: ready to send again.
        if not self._sent:
            return 0
        cutoff = self._clock() - self.resend_after_s
        if next(iter(self._sent.values()))[0] >= cutoff:   # in the order sent: the first is the oldest
            return 0
        stale = [k for k, (t, _) in self._sent.items() if t < cutoff]
        self._ahead.clear()
        n = 0
        for k in stale:
            n += self._sent.pop(k)[1]
            lane = self._lane(k)
            if self._from.get(lane) is not None and k < self._from[lane]:
                self._from[lane] = k
        self.resends += n
        log.info("%d records unconfirmed for %.0f s: sending again", n, self.resend_after_s)
        return n

    def next_to_send(self, max_records=codec.MAX_RECORDS, live_first=True, backlog_records=None,
                   kinds=None, max_bytes=codec.MAX_PAYLOAD):
        """The next segment to send, or None.

        Candidates are segments not sent on this connection, sent and unconfirmed for
        longer than resend_after_s, or made ready again by rewind(). With
        live_first, live segments (made since the connection came up) come first,
        oldest first, and backlog only when no live one is ready; otherwise strictly
        oldest first. A backlog segment is handed out only if it holds at most
        backlog_records records (0: no backlog now; a pacer passes what its budget
        allows and waits for the budget to grow, so pacing never rewrites a segment).
        kinds restricts the record kinds. A batch holds at most max_records records
        in at most max_bytes: a segment longer than that is split (its head is handed
        out, the rest stays a segment of its own).
        """
        self._requeue_stale()
        if kinds is not None:
            kinds = [k for k in kinds if k in KINDS]
            if not kinds:
                return None
        lanes = [(True, None), (False, backlog_records)] if live_first else [(None, backlog_records)]
        for lane, budget in lanes:
            if budget is not None and budget < 1:
                continue
            seg = self._first_unsent(lane, kinds)
            if seg is None:
                continue
            if seg[3] not in SINGLE and (seg[2] > max_records or len(seg[6]) > max_bytes):
                seg = self._split(seg, max_records, max_bytes)
            if budget is not None and seg[2] > budget and (lane is False or not self._lane((seg[0], seg[1]))):
                continue                           # a backlog segment over the budget: wait
            if self._open is not None and self._open[0] == seg[0] and self._open[1] == seg[1]:
                self._open = None                  # handed out: never appended to again
            key = (seg[0], seg[1])
            return OutboxBatch(seg[3], seg[4], seg[0], seg[1], seg[2], seg[5], seg[6], self._lane(key), seg[8])
        return None

    def _first_unsent(self, lane, kinds):
        # The first segment of the lane (True live, False backlog, None all) not in _sent.
        if lane is False and kinds is None:
            # A backlog drain reads segments a few at a time: one query per message would
            # cost as much as the message. No segment joins the backlog lane (new ones are
            # live); whatever changes or re-orders one empties _ahead (_cut, _split,
            # requeue, rewind, an append), and confirm() takes out what it deletes.
            ahead = self._ahead
            while ahead and (ahead[0][0], ahead[0][1]) in self._sent:
                ahead.popleft()
            if not ahead:
                ahead.extend(self._query(False, None, READ_AHEAD))
                while ahead and (ahead[0][0], ahead[0][1]) in self._sent:
                    ahead.popleft()
            if ahead:
                self._from[False] = (ahead[0][0], ahead[0][1])
                return ahead[0]
            return None
        for seg in self._query(lane, kinds, None):
            if (seg[0], seg[1]) in self._sent:
                continue
            if kinds is None and lane is not None:
                self._from[lane] = (seg[0], seg[1])   # everything before it in the lane is sent
            return seg
        return None

    def _query(self, lane, kinds, limit):
        # Segments of the lane from its scan start, in key order (an iterator; up to limit).
        where, params = [], []
        start = self._from.get(lane) if lane is not None else self._from.get(False)
        if lane is True:
            start = max(start or self._live_from, self._live_from)
            if start >= self.keys.next_key:
                return ()                          # nothing made since
        if start is not None:
            where.append("(boot, seq) >= (?, ?)")
            params.extend(start)
        if lane is False:
            where.append("(boot, seq) < (?, ?)")
            params.extend(self._live_from)
        if kinds is not None:
            where.append("kind IN (%s)" % ",".join("?" * len(kinds)))
            params.extend(kinds)
        sql = "SELECT %s FROM segments%s ORDER BY boot, seq" % (_COLS, " WHERE " + " AND ".join(where) if where else "")
        if limit is not None:
            return self._db.execute(sql + " LIMIT %d" % limit, params).fetchall()
        return self._iterate(self._db.execute(sql, params))

    @staticmethod
    def _iterate(cur):
        try:
            yield from cur
        finally:
            cur.close()

    def _split(self, seg, cap, max_bytes):
        # Cut a segment so its head holds at most cap records within max_bytes; returns the head.
        boot, seq, n, kind, tq, ts0, body, queued, dev = seg
        recs = [(seq + i, ts, tq, text) for i, (ts, text) in enumerate(_parse(seg))]
        head = next(_runs(recs, max_records=cap, max_bytes=max_bytes - ENVELOPE_ROOM))
        k = len(head[3])

        self._ahead.clear()
        if self._open is not None and self._open[0] == boot and self._open[1] == seq:
            self._open = None                      # its row is rewritten: never append to it again

        def work(db):
            db.execute("DELETE FROM segments WHERE boot = ? AND seq = ?", (boot, seq))
            self._store_runs(db, boot, recs[:k], kind, queued, dev)
            self._store_runs(db, boot, recs[k:], kind, queued, dev)
        self._write(False, work)
        return (boot, seq, k, kind, tq, ts0, encode_batch(dev, kind, boot, seq, ts0, tq, ",".join(head[3])), queued, dev)

    def mark_sent(self, batch):
        """Record that this OutboxBatch was just published (kept in memory: see the module docstring)."""
        key = (batch.boot, batch.seq)
        self._sent[key] = (self._clock(), batch.n)
        lane = self._lane(key)
        if self._from.get(lane) == key:
            self._from[lane] = (batch.boot, batch.seq + batch.n)   # the scan starts after it

    def rewind(self):
        """After a (re)connect: every unconfirmed record is to be sent again; live starts now."""
        n = sum(v[1] for v in self._sent.values())
        self._sent = {}
        self._from = {}
        self._ahead.clear()
        self.resends += n
        self._live_from = self.keys.next_key
        return n

    def confirm(self, ranges):
        """Delete the records covered by delivery-confirmation ranges [(boot, first, last)]; returns how many."""
        ranges = [tuple(r) for r in ranges]
        if not ranges:
            return 0

        deleted = set()

        def work(db):
            gone = 0
            for boot, lo, hi in ranges:
                for seq, n in db.execute("DELETE FROM segments WHERE boot = ? AND seq BETWEEN ? AND ? "
                                         "AND seq + n - 1 <= ? RETURNING seq, n", (boot, lo, hi, hi)).fetchall():
                    gone += n
                    self._sent.pop((boot, seq), None)
                    deleted.add((boot, seq))
                    if self._open is not None and self._open[0] == boot and self._open[1] == seq:
                        self._open = None
                # Segments the range covers only in part (rare: see the module docstring).
                for edge in (lo - 1, hi):
                    near = db.execute("SELECT seq, n FROM segments WHERE boot = ? AND seq <= ? ORDER BY seq DESC "
                                      "LIMIT 1", (boot, edge)).fetchone()
                    if near is not None and near[0] + near[1] - 1 >= lo and near[0] <= hi:
                        seg = db.execute("SELECT %s FROM segments WHERE boot = ? AND seq = ?" % _COLS,
                                         (boot, near[0])).fetchone()
                        gone += self._cut(db, seg, lo, hi)
            return gone

        try:
            n = self._write(False, work)
        except OutboxError:
            self._ahead.clear()         # rolled back: scan the backlog afresh
            self._from.pop(False, None)
            raise
        if deleted and self._ahead:
            self._ahead = collections.deque(s for s in self._ahead if (s[0], s[1]) not in deleted)
        self._depth -= n
        self.confirmed += n
        return n

    # ---- figures --------------------------------------------------------------------
    def depth(self):
        """Records waiting for a confirmation."""
        return self._depth

    def oldest_age_s(self):
        """Seconds since the oldest record still in the outbox was enqueued (0 if empty)."""
        row = self._db.execute("SELECT queued_at FROM segments ORDER BY boot, seq LIMIT 1").fetchone()
        if row is None:
            return 0.0
        return max(0.0, self._clock() - row[0])

    @property
    def drops(self):
        """Records discarded unconfirmed because the outbox was full, over the outbox's whole life."""
        return self._drops

    def counts(self):
        """{state: records} for diagnostics: 'sent' (on this connection, unconfirmed) and 'pending'."""
        sent = sum(v[1] for v in self._sent.values())
        out = {"pending": self._depth - sent, "sent": sent}
        return {k: v for k, v in out.items() if v}

    def segments(self):
        """Segments held, as (boot, seq, n, kind); for tests and diagnostics."""
        return [tuple(r) for r in self._db.execute("SELECT boot, seq, n, kind FROM segments ORDER BY boot, seq")]

    def keys_held(self):
        """Every key in the outbox, sorted (for tests and diagnostics)."""
        return [(b, s + i) for b, s, n, _ in self.segments() for i in range(n)]

    def close(self):
        """Checkpoint and close the database."""
        if self._db is not None:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self._db.close()
            self._db = None
