"""The outbox: every record the agent makes waits here, on disk, until the collector confirms it.

One SQLite database in the state directory, owned by this module (all SQL lives
here). A record enters with enqueue(), which assigns its key (boot, seq) and
commits it; it leaves only when a delivery confirmation (`ack`) covers its key,
or when the outbox is full and the drop-oldest policy discards it (counted in a
persistent `drops` counter). Everything in between is state: `pending` (to be
sent) or `sent` (published at `sent_at`, not yet confirmed).

Durability. The database runs in WAL mode. A commit with `synchronous=NORMAL`
survives a killed process (the WAL is in the OS page cache) but not a power cut:
WAL frames are only fsynced at checkpoints, so the last transactions can vanish
after the agent told the sampler they were stored. On a Raspberry Pi power cuts
are the common failure, so enqueue() commits with `synchronous=FULL`: the WAL is
fsynced before commit returns, and "enqueue returned" means "on the card". That
costs one fsync per transaction, which is why enqueue() takes many records at a
time (one transaction, one fsync for the lot). State changes that are safe to
lose -- mark_sent(), confirm(), resend bookkeeping -- commit with NORMAL: losing
them after a power cut only means a record is sent again, and the collector
stores every key once. WAL keeps the log append-only, so a lost NORMAL commit can
never take an earlier FULL one with it; a later FULL commit makes both durable.

Sending order. Records made since the current connection came up are *live*;
everything older (earlier boots, records made while offline, resends) is
*backlog*. next_batch() hands out live records first and backlog behind them, as
runs of consecutive keys of one kind and one time quality: exactly what one wire
message can carry (record i of a message has key (boot, seq + i)).
"""

import json
import logging
import sqlite3
import time

from wire import codec

log = logging.getLogger("edge_agent.outbox")

KINDS = ("readings", "fix", "features", "log", "result", "wave")
# Kinds whose message carries exactly one record.
SINGLE = ("result", "wave")
# Byte budget of one message: the contract limit less room for the header and rounding.
DEFAULT_MAX_BYTES = codec.MAX_PAYLOAD - 2048

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    boot      INTEGER NOT NULL,
    seq       INTEGER NOT NULL,
    kind      TEXT NOT NULL,                -- readings / fix / features / log / result / wave
    ts_ms     INTEGER NOT NULL,             -- record time, ms (epoch, or since boot when tq = 'none')
    tq        TEXT NOT NULL,                -- time quality: gps / ntp / rtc / none
    body      BLOB NOT NULL,                -- JSON of the item without its dt; wave: the whole binary block
    queued_at REAL NOT NULL,                -- wall-clock seconds when it was enqueued (for oldest_age_s)
    state     TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent')),
    sent_at   REAL,                         -- wall-clock seconds of the last publish; NULL while pending
    PRIMARY KEY (boot, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_pending ON records (boot, seq) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS records_sent ON records (sent_at) WHERE state = 'sent';
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class OutboxError(Exception):
    """The outbox database cannot be opened or written (disk full, unreadable file)."""


class OutboxBatch:
    """A run of records of one kind with consecutive keys, ready to become one message."""

    __slots__ = ("kind", "tq", "boot", "seq", "items", "live", "nbytes")

    def __init__(self, kind, tq, boot, seq, items, live, nbytes):
        self.kind = kind
        self.tq = tq
        self.boot = boot
        self.seq = seq            # seq of the first record
        self.items = items        # [(ts_ms, body)], body: JSON text, or bytes for wave
        self.live = live
        self.nbytes = nbytes      # estimated payload size

    def __len__(self):
        return len(self.items)

    @property
    def keys(self):
        """[(boot, seq)] of the records in this batch."""
        return [(self.boot, self.seq + i) for i in range(len(self.items))]

    @property
    def ranges(self):
        """The batch's keys as one (boot, first, last) range."""
        return [(self.boot, self.seq, self.seq + len(self.items) - 1)]

    def payload(self, dev):
        """The wire message (bytes) carrying this batch for device `dev`."""
        t0 = self.items[0][0]
        if self.kind == "wave":
            return bytes(self.items[0][1])
        if self.kind == "result":
            r = json.loads(self.items[0][1])
            return codec.encode_result(dev, self.boot, self.seq, t0, self.tq, r["id"], r["cmd"], r["ok"],
                                       r.get("detail"), r.get("error"))
        # The bodies are stored as compact JSON checked on the way in (_body_text): splice
        # each one's dt in as text instead of parsing and re-encoding it (the drain's hot
        # path), and put them into the envelope the codec writes for an empty batch.
        items = []
        for ts, body in self.items:
            if isinstance(body, bytes):
                body = body.decode()
            if body[0] == "[":      # [name/level, value/text] -> [dt, name/level, value/text]
                items.append("[%d,%s" % (ts - t0, body[1:]))
            elif body == "{}":
                items.append('{"dt":%d}' % (ts - t0))
            else:                   # {...} -> {"dt": dt, ...}
                items.append('{"dt":%d,%s' % (ts - t0, body[1:]))
        enc = {"readings": codec.encode_readings, "fix": codec.encode_fixes,
               "features": codec.encode_features, "log": codec.encode_logs}[self.kind]
        envelope = enc(dev, self.boot, self.seq, t0, self.tq, [])
        return b"".join((envelope[:-2], ",".join(items).encode(), b"]}"))  # envelope ends in '[]}'

    def __repr__(self):
        return "<OutboxBatch %s %d:%d+%d%s>" % (self.kind, self.boot, self.seq, len(self.items),
                                              " live" if self.live else "")


def _body_text(kind, body):
    # What a record body looks like in the table, checked once on the way in.
    if kind == "wave":
        raise TypeError("a wave body is built from its key: pass a callable (boot, seq) -> bytes")
    if kind in ("readings", "log"):
        if not isinstance(body, (list, tuple)) or len(body) != 2:
            raise TypeError("a %s body is [name/level, value/text] (its dt is added when sent)" % kind)
        body = list(body)
    elif not isinstance(body, dict) or "dt" in body:
        raise TypeError("a %s body is a dict without 'dt' (dt is added when sent)" % kind)
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


class Outbox:
    """The durable queue of records; see the module docstring. Use from one thread."""

    def __init__(self, path, keys, max_records=200000, resend_after_s=30.0, clock=time.time):
        """path: the SQLite file; keys: a keys.KeySource; max_records: bound before dropping the oldest."""
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        self.path = path
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
            self._depth = self._db.execute("SELECT count(*) FROM records").fetchone()[0]
            self._drops = self._meta("drops")
        except sqlite3.Error as e:
            raise OutboxError("cannot open the outbox %s: %s" % (path, e)) from None
        self.drops_since_open = 0
        self.resends = 0          # records made ready again (timeout or reconnect) since open
        self.enqueued = 0         # records committed since open
        self.confirmed = 0        # records deleted by confirmations since open
        # Whatever was 'sent' belongs to an earlier process and its connection: send again.
        self.mark_all_unsent()
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
            raise OutboxError("outbox %s: %s" % (self.path, e)) from None
        return result

    @staticmethod
    def max_boot_in(path):
        """The highest boot with a record in the outbox at path (None if empty or absent)."""
        try:
            db = sqlite3.connect(path, timeout=10)
            try:
                row = db.execute("SELECT max(boot) FROM records").fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            return None
        return row[0] if row else None

    # ---- records in ------------------------------------------------------------
    def enqueue(self, kind, items):
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
        rows = []
        boot, first = self.keys.take(n)
        now = self._clock()
        for i, (ts, tq, body) in enumerate(items):
            if tq not in codec.TIME_QUALITY:
                raise ValueError("tq %r is not one of %s" % (tq, codec.TIME_QUALITY))
            data = bytes(body(boot, first + i)) if kind == "wave" else _body_text(kind, body)
            rows.append((boot, first + i, kind, int(ts), tq, data, now))

        def work(db):
            db.executemany("INSERT INTO records (boot, seq, kind, ts_ms, tq, body, queued_at) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            excess = self._depth + n - self.max_records
            dropped = 0
            if excess > 0:
                cur = db.execute("DELETE FROM records WHERE (boot, seq) IN "
                                 "(SELECT boot, seq FROM records ORDER BY boot, seq LIMIT ?)", (excess,))
                dropped = cur.rowcount
                db.execute("INSERT INTO meta (name, value) VALUES ('drops', ?) "
                           "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value", (dropped,))
            return dropped

        dropped = self._write(True, work)
        self._depth += n - dropped
        self.enqueued += n
        if dropped:
            self._drops += dropped
            self.drops_since_open += dropped
            log.warning("outbox full (%d records): dropped the %d oldest", self.max_records, dropped)
        return [(boot, first + i) for i in range(n)]

    # ---- records out -------------------------------------------------------------
    def _requeue_stale(self):
        # Sent but unconfirmed for longer than resend_after_s: pending again.
        cutoff = self._clock() - self.resend_after_s
        if self._db.execute("SELECT 1 FROM records WHERE state = 'sent' AND sent_at < ? LIMIT 1",
                            (cutoff,)).fetchone() is None:
            return 0
        n = self._write(False, lambda db: db.execute(
            "UPDATE records SET state = 'pending', sent_at = NULL WHERE state = 'sent' AND sent_at < ?",
            (cutoff,)).rowcount)
        self.resends += n
        log.info("%d records unconfirmed for %.0f s: sending again", n, self.resend_after_s)
        return n

    def next_batch(self, max_records=codec.MAX_RECORDS, live_first=True, backlog_records=None,
                   kinds=None, max_bytes=DEFAULT_MAX_BYTES):
        """The next run of records to send, or None.

        Candidates are records never sent, sent and unconfirmed for longer than
        resend_after_s, or made pending again by mark_all_unsent(). With live_first,
        live records (made since the connection came up) come first, oldest first,
        and backlog only when no live record is ready; otherwise strictly oldest
        first. backlog_records caps the size of a backlog batch (0: no backlog now).
        kinds restricts the record kinds. A run holds at most max_records records
        (1 for result and wave) and about max_bytes of payload.
        """
        self._requeue_stale()
        kind_sql, args = "", []
        if kinds is not None:
            kinds = [k for k in kinds if k in KINDS]
            if not kinds:
                return None
            kind_sql = " AND kind IN (%s)" % ",".join("?" * len(kinds))
            args = list(kinds)
        lb, ls = self._live_from
        lanes = []
        if live_first:
            lanes.append((True, "AND (boot, seq) >= (?, ?)", max_records))
            if backlog_records is None or backlog_records > 0:
                cap = max_records if backlog_records is None else min(max_records, backlog_records)
                lanes.append((False, "AND (boot, seq) < (?, ?)", cap))
        else:
            cap = max_records if backlog_records is None else min(max_records, backlog_records)
            lanes.append((None, "", cap))
        for live, where, cap in lanes:
            if cap < 1:
                continue
            sql = ("SELECT boot, seq, kind, ts_ms, tq, body FROM records WHERE state = 'pending' %s%s "
                   "ORDER BY boot, seq" % (where, kind_sql))
            params = ([lb, ls] if where else []) + args
            batch = self._run(self._db.execute(sql, params), cap, max_bytes)
            if batch is not None:
                if live is None:
                    batch.live = (batch.boot, batch.seq) >= (lb, ls)
                else:
                    batch.live = live
                return batch
        return None

    @staticmethod
    def _run(cursor, max_records, max_bytes):
        # Take rows while they continue the run: same boot and kind and tq, next seq, within limits.
        first = None
        items = []
        nbytes = 200
        try:
            for boot, seq, kind, ts, tq, body in cursor:
                size = len(body) + 24 if isinstance(body, bytes) else len(body.encode()) + 24
                if first is None:
                    first = (boot, seq, kind, tq)
                    limit = 1 if kind in SINGLE else max_records
                else:
                    if (boot != first[0] or seq != first[1] + len(items) or kind != first[2] or tq != first[3]
                            or len(items) >= limit or nbytes + size > max_bytes
                            or abs(ts - items[0][0]) > codec.MAX_DT_MS):
                        break
                items.append((ts, body))
                nbytes += size
        finally:
            cursor.close()
        if first is None:
            return None
        return OutboxBatch(first[2], first[3], first[0], first[1], items, None, nbytes)

    def mark_sent(self, keys_or_batch):
        """Record that these keys (or this OutboxBatch) were just published."""
        ranges = keys_or_batch.ranges if isinstance(keys_or_batch, OutboxBatch) else codec.ranges_of(keys_or_batch)
        now = self._clock()
        self._write(False, lambda db: db.executemany(
            "UPDATE records SET state = 'sent', sent_at = ? WHERE boot = ? AND seq BETWEEN ? AND ?",
            [(now, b, lo, hi) for b, lo, hi in ranges]))

    def mark_all_unsent(self):
        """After a (re)connect: every unconfirmed record is to be sent again; live starts now."""
        n = self._write(False, lambda db: db.execute(
            "UPDATE records SET state = 'pending', sent_at = NULL WHERE state = 'sent'").rowcount)
        self.resends += n
        self._live_from = self.keys.next_key
        return n

    def confirm(self, ranges):
        """Delete the records covered by delivery-confirmation ranges [(boot, first, last)]; returns how many."""
        ranges = [tuple(r) for r in ranges]
        if not ranges:
            return 0

        def work(db):
            before = db.total_changes
            db.executemany("DELETE FROM records WHERE boot = ? AND seq BETWEEN ? AND ?", ranges)
            return db.total_changes - before

        n = self._write(False, work)
        self._depth -= n
        self.confirmed += n
        return n

    # ---- figures --------------------------------------------------------------------
    def depth(self):
        """Records waiting for a confirmation."""
        return self._depth

    def oldest_age_s(self):
        """Seconds since the oldest record still in the outbox was enqueued (0 if empty)."""
        row = self._db.execute("SELECT queued_at FROM records ORDER BY boot, seq LIMIT 1").fetchone()
        if row is None:
            return 0.0
        return max(0.0, self._clock() - row[0])

    @property
    def drops(self):
        """Records discarded unconfirmed because the outbox was full, over the outbox's whole life."""
        return self._drops

    def counts(self):
        """{state: records} for diagnostics."""
        return dict(self._db.execute("SELECT state, count(*) FROM records GROUP BY state").fetchall())

    def keys_held(self):
        """Every key in the outbox, sorted (for tests and diagnostics)."""
        return [tuple(r) for r in self._db.execute("SELECT boot, seq FROM records ORDER BY boot, seq")]

    def close(self):
        """Checkpoint and close the database."""
        if self._db is not None:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self._db.close()
            self._db = None
