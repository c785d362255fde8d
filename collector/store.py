"""Every write to the collector's database: one transaction per Batch, deduplicated on the record key.

Also the web side's command log (CommandLog) and partition upkeep
(Store.maintain, via partitions.py); reads are collector.queries', table and
column names collector.schema's. The rows are the schema's row types, built by
batch.py and COPYed here as they are.

Rows are COPYed (binary) into per-connection staging tables, then moved with
INSERT ... SELECT ... ON CONFLICT DO NOTHING, so a redelivered or replayed
record is stored once. Times travel as integer ms and become timestamptz in
SQL (staging route) or in EpochMsDumper (direct route); records stamped
before the device's clock was set (tq = 'none', ms since boot) are placed
using the boot's estimated start in device_boots.

Fast path: when every record of a batch has a wall-clock time, the rows are
COPYed straight into their tables inside a savepoint (ms times written as
timestamptz by EpochMsDumper),
which saves PostgreSQL the staging table and the INSERT ... SELECT (about half
its work per row). If any row's key is already stored (a redelivery, a device
replay, a resend after a crash) the unique index stops the COPY, the savepoint
is rolled back and that table takes the staging route, which drops duplicates
row by row. Either way the batch commits in one transaction.

The device registry is kept out of the data transaction's locks: inside it,
only devices this process has not seen yet are inserted (ON CONFLICT DO
NOTHING takes no lock on an existing row) and status messages applied; the
last_seen/clock-skew update of every device in the batch runs right after
the commit in a short transaction of its own, locking rows in device order
and committed asynchronously (losing the last few of these updates in a crash
is harmless, the next message sets them again). Otherwise two collectors on a
shared subscription, both touching the same device rows, would queue behind
each other's whole data transaction.

write() raises what the database (or the driver) said. refused() tells the
errors that come from the batch's content, which no retry can fix (a value
out of range, a constraint violated): the ingest loop then splits the batch to
find the message(s) and quarantines them; every other error (connection,
deadlock, serialization, a missing table) is retried as it is.
"""

import json
import logging
import struct

import psycopg
from psycopg import errors, postgres, pq
from psycopg.adapt import Dumper
from psycopg.pq import Format
from psycopg.types.json import Jsonb

from collector import partitions
from collector.schema import COMMANDS, DEVICE_BOOTS, DEVICES, HEAD_COLUMNS, HEAD_TYPES, QUARANTINE, RECORD_TABLES

log = logging.getLogger("collector.store")

# COPY types of a row's head on the direct route: its ms times go straight into the timestamptz columns.
_DIRECT_HEAD_TYPES = HEAD_TYPES[:3] + ("timestamptz", "timestamptz") + HEAD_TYPES[5:]

_TS = ("CASE WHEN s.tq = 'none' THEN b.epoch_est ELSE timestamptz 'epoch' END"
       " + s.ts_ms * interval '1 millisecond'")
_RECV = "timestamptz 'epoch' + s.recv_ms * interval '1 millisecond'"
_MS = "timestamptz 'epoch' + %s * interval '1 millisecond'"     # an integer ms parameter as timestamptz

_PG_EPOCH_MS = 946684800000          # 2000-01-01T00:00:00Z, PostgreSQL's epoch, in ms since 1970
_pack_int8 = struct.Struct("!q").pack


# Errors of the data written, not of the database's state: SQLSTATE classes 22 (data exception:
# out of range, invalid text, too long ...), 23 (integrity: a CHECK, NOT NULL or partition
# constraint) and 54 (program limit exceeded: a value too large for an index).
_REFUSED = (errors.DataError, errors.IntegrityError, errors.ProgramLimitExceeded)


def refused(e):
    """True if write() failed because of what the batch holds (a retry cannot help), False if a retry can.

    Errors outside psycopg's (a value the driver cannot dump) count as the
    batch's content too: splitting the batch then finds the message.
    """
    return isinstance(e, _REFUSED) or not isinstance(e, psycopg.Error)


class EpochMsDumper(Dumper):
    """Binary COPY of integer ms since 1970 into a timestamptz column (PostgreSQL: int8 us since 2000).

    Registered on the store's connection for the timestamptz oid, which only
    COPY's set_types() looks dumpers up by, so the rows batch.py built go into
    the tables as they are: no datetime made per row.
    """

    format = Format.BINARY
    oid = postgres.types["timestamptz"].oid

    def dump(self, obj):
        """8 bytes: obj (ms since the epoch) as PostgreSQL's binary timestamptz."""
        return _pack_int8((obj - _PG_EPOCH_MS) * 1000)


class _EpochMs(int):
    """Marker type EpochMsDumper is registered under (never instantiated: COPY picks it by oid)."""


class Store:
    """Owns the ingest connection and every write: write() commits one Batch or raises psycopg.Error."""

    def __init__(self, url):
        self.url = url
        self.conn = None
        self._known = set()     # devices known to have a row in `devices`

    def connect(self):
        """(Re)open the connection and its staging tables."""
        self.close()
        conn = psycopg.connect(self.url, autocommit=False, connect_timeout=5)
        conn.adapters.register_dumper(_EpochMs, EpochMsDumper)
        self._known.clear()     # the database may have been replaced meanwhile
        with conn.transaction():
            for table in RECORD_TABLES:
                conn.execute("CREATE TEMP TABLE IF NOT EXISTS stage_%s (%s) ON COMMIT DELETE ROWS"
                             % (table.name, table.stage_columns()))
        self.conn = conn

    def close(self):
        """Close the connection (reopened by the next write)."""
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None

    def maintain(self):
        """Make the monthly partitions ahead (plain PostgreSQL only); return their names. Raises psycopg.Error."""
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            return partitions.ensure(conn)      # touches only declaratively partitioned tables

    def write(self, batch):
        """Commit a batch; return {table name: rows newly inserted} (duplicates are not counted).

        Raises psycopg.Error (or, for a value the driver cannot send, another
        Exception); nothing of the batch is then stored. See refused().
        """
        if self.conn is None or self.conn.closed:
            self.connect()
        written = {}
        try:
            with self.conn.transaction():
                with self.conn.cursor() as cur:
                    staged = []
                    for table in RECORD_TABLES:
                        rows = batch.rows[table]
                        if rows and not batch.untimed and self._copy_direct(cur, table, rows):
                            written[table.name] = len(rows)
                        elif rows:
                            with cur.copy("COPY stage_%s FROM STDIN (FORMAT BINARY)" % table.name) as cp:
                                cp.set_types(HEAD_TYPES + table.types)
                                for row in rows:
                                    cp.write_row(row)
                            staged.append(table)
                    if staged and batch.untimed:
                        # Fix each boot's estimated start the first time a record without a
                        # wall-clock time is seen, so resends of that record map to the same ts.
                        cur.execute(
                            "INSERT INTO %s (device_id, boot, epoch_est) "
                            "SELECT device_id, boot, timestamptz 'epoch' + min(recv_ms - ts_ms) * interval '1 millisecond'"
                            " FROM (%s) u GROUP BY device_id, boot ON CONFLICT DO NOTHING"
                            % (DEVICE_BOOTS.name, " UNION ALL ".join(
                                "SELECT device_id, boot, recv_ms, ts_ms FROM stage_%s WHERE tq = 'none'" % t.name
                                for t in staged)))
                    for table in staged:
                        cur.execute(
                            "INSERT INTO %s (%s) "
                            "SELECT s.device_id, s.boot, s.seq, %s, %s, s.tq, %s FROM stage_%s s "
                            "LEFT JOIN %s b ON s.tq = 'none' AND b.device_id = s.device_id AND b.boot = s.boot "
                            "ON CONFLICT DO NOTHING"
                            % (table.name, ", ".join(HEAD_COLUMNS + table.columns), _TS, _RECV,
                               ", ".join("s." + c for c in table.columns), table.name, DEVICE_BOOTS.name))
                        written[table.name] = cur.rowcount
                    self._results(cur, batch.results)
                    registered = self._devices(cur, batch)
                    self._quarantine(cur, batch)
        except Exception as e:
            # After a refusal the transaction was rolled back and the connection is fine to reuse.
            if not isinstance(e, _REFUSED) or self.conn.info.transaction_status != pq.TransactionStatus.IDLE:
                self.close()
            raise
        self._known.update(registered)
        self._touch(batch)
        return written

    def _copy_direct(self, cur, table, rows):
        """COPY rows with wall-clock times straight into `table` in a savepoint; False if a key is already stored."""
        try:
            with self.conn.transaction():   # a savepoint: a duplicate undoes only this COPY
                with cur.copy("COPY %s (%s) FROM STDIN (FORMAT BINARY)"
                              % (table.name, ", ".join(HEAD_COLUMNS + table.columns))) as cp:
                    cp.set_types(_DIRECT_HEAD_TYPES + table.types)    # ms times through EpochMsDumper
                    for row in rows:
                        cp.write_row(row)
        except errors.UniqueViolation:
            return False
        return True

    def _touch(self, batch):
        """last_seen and clock skew of the batch's devices, after the data commit (see the module docstring)."""
        if not batch.seen:
            return
        devs = sorted(batch.seen)
        try:
            with self.conn.pipeline(), self.conn.transaction():   # one round trip for the five statements
                self.conn.execute("SET LOCAL synchronous_commit = off")
                self.conn.execute("SELECT 1 FROM %s WHERE device_id = ANY(%%s) ORDER BY device_id FOR UPDATE"
                                  % DEVICES.name, (devs,))
                self.conn.execute(
                    "UPDATE " + DEVICES.name + " d SET last_seen = GREATEST(d.last_seen, "
                    "timestamptz 'epoch' + u.ms * interval '1 millisecond'), "
                    "clock_skew_ms = COALESCE(u.skew, d.clock_skew_ms) "
                    "FROM unnest(%s::text[], %s::int8[], %s::int8[]) AS u(dev, ms, skew) WHERE d.device_id = u.dev",
                    (devs, [batch.seen[d][0] for d in devs], [batch.seen[d][1] for d in devs]))
        except psycopg.Error as e:   # the data is committed; a missed last_seen is set again by the next message
            log.warning("last-seen update skipped: %s", str(e).strip().splitlines()[0] if str(e).strip() else e)
            self.close()

    @staticmethod
    def _results(cur, results):
        # A result fills in its command's row (made when the command was sent, or now if it was not logged).
        for r in results:
            cur.execute(
                "INSERT INTO {t} (id, device_id, cmd, result_at, ok, detail, error, result_boot, result_seq) "
                "VALUES (%s, %s, %s, {ms}, %s, %s, %s, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET result_at = EXCLUDED.result_at, ok = EXCLUDED.ok, "
                "detail = EXCLUDED.detail, error = EXCLUDED.error, result_boot = EXCLUDED.result_boot, "
                "result_seq = EXCLUDED.result_seq "
                "WHERE {t}.result_at IS NULL AND {t}.device_id = EXCLUDED.device_id".format(t=COMMANDS.name, ms=_MS),
                (r.id, r.device_id, r.cmd, r.recv_ms, r.ok,
                 json.dumps(r.detail) if r.detail is not None else None, r.error, r.boot, r.seq))

    def _devices(self, cur, batch):
        # Register new devices and apply status messages; returns the devices registered.
        new = sorted(d for d in batch.seen if d not in self._known)
        if new:
            # No lock on rows that exist (DO NOTHING); first_seen is this receipt.
            cur.execute(
                "INSERT INTO " + DEVICES.name + " (device_id, first_seen, last_seen, clock_skew_ms) "
                "SELECT dev, timestamptz 'epoch' + ms * interval '1 millisecond', "
                "timestamptz 'epoch' + ms * interval '1 millisecond', skew "
                "FROM unnest(%s::text[], %s::int8[], %s::int8[]) AS u(dev, ms, skew) ON CONFLICT (device_id) DO NOTHING",
                (new, [batch.seen[d][0] for d in new], [batch.seen[d][1] for d in new]))
        for dev, (s, recv_ms) in sorted(batch.status.items()):
            # Apply a status only if it is not older than the one stored: (boot, seq) order.
            # Except a last will (offline) of the current boot: it was built at connect time,
            # so its seq is older than any status the device republished since; it still
            # means the device is gone now, so it sets the state (and only the state).
            cur.execute(
                "UPDATE " + DEVICES.name + " SET hw = %s, fw = %s, state = %s, reset_reason = %s, boot = %s, next_seq = %s, "
                "buf_depth = %s, buf_oldest_s = %s, buf_drops = %s, health = %s, "
                "status_at = timestamptz 'epoch' + %s * interval '1 millisecond' "
                "WHERE device_id = %s AND (boot IS NULL OR (boot, next_seq) <= (%s, %s))",
                (s["hw"], s["fw"], s["state"], s["reset"], s["boot"], s["seq"], s["buf"]["depth"],
                 s["buf"]["oldest_s"], s["buf"]["drops"], json.dumps(s["health"]), recv_ms, dev,
                 s["boot"], s["seq"]))
            if cur.rowcount == 0 and s["state"] == "offline":
                cur.execute(
                    "UPDATE " + DEVICES.name + " SET state = 'offline', "
                    "status_at = timestamptz 'epoch' + %s * interval '1 millisecond' "
                    "WHERE device_id = %s AND boot = %s AND next_seq > %s", (recv_ms, dev, s["boot"], s["seq"]))
        return new

    @staticmethod
    def _quarantine(cur, batch):
        # One row per distinct message (topic + bytes); `times` counts every arrival, copies in this batch too.
        if batch.quarantine:
            cur.executemany(
                "INSERT INTO {t} (recv_ts, last_recv, times, topic, device_id, code, reason, payload, digest) "
                "VALUES ({ms}, {ms}, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (digest) DO UPDATE SET times = {t}.times + EXCLUDED.times, "
                "last_recv = GREATEST({t}.last_recv, EXCLUDED.last_recv)".format(t=QUARANTINE.name, ms=_MS),
                [(q.recv_ms, batch.copies[digest][1], batch.copies[digest][0], _clean(q.topic), _clean(q.device_id),
                  q.code, _clean(q.reason), q.payload, digest) for digest, q in batch.quarantine.items()])


class CommandLog:
    """The web side's one write: commands logged before they are published, on the given connection pool."""

    def __init__(self, pool):
        self.pool = pool

    def log(self, cmd_id, device_id, cmd, args):
        """Record a command about to be published; False if the id is already taken."""
        with self.pool.connection() as conn:
            row = conn.execute("INSERT INTO %s (id, device_id, cmd, args, sent_at) VALUES (%%s, %%s, %%s, %%s, now()) "
                               "ON CONFLICT (id) DO NOTHING RETURNING id" % COMMANDS.name,
                               (cmd_id, device_id, cmd, Jsonb(args))).fetchone()
        return row is not None

    def forget(self, cmd_id):
        """Remove a logged command that could not be published (and has no result)."""
        with self.pool.connection() as conn:
            conn.execute("DELETE FROM %s WHERE id = %%s AND result_at IS NULL" % COMMANDS.name, (cmd_id,))


def _clean(s):
    # PostgreSQL text holds neither NUL nor lone surrogates (not UTF-8): both written as escapes, the rest as received.
    if s is None:
        return None
    return s.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
