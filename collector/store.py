"""The collector's database writer: one transaction per Batch, deduplicated on the record key.

Rows are COPYed (binary) into per-connection staging tables, then moved with
INSERT ... SELECT ... ON CONFLICT DO NOTHING, so a redelivered or replayed
record is stored once. Times travel as integer ms and become timestamptz in
SQL; records stamped before the device's clock was set (tq = 'none', ms since
boot) are placed using the boot's estimated start in device_boots.

Fast path: when every record of a batch has a wall-clock time, the rows are
COPYed straight into their tables inside a savepoint (times converted here),
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
"""

import datetime as dt
import json
import logging

import psycopg
from psycopg import errors

log = logging.getLogger("collector.store")

_STAGE_HEAD = "device_id text, boot int8, seq int8, ts_ms int8, recv_ms int8, tq text"
_HEAD_TYPES = ["text", "int8", "int8", "int8", "int8", "text"]
_DIRECT_HEAD_TYPES = ["text", "int8", "int8", "timestamptz", "timestamptz", "text"]
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

# table -> (staging columns after the head, their COPY types, target columns after the head)
_TABLES = {
    "readings": ("name text, value float8", ["text", "float8"], "name, value"),
    "fixes": ("mode int2, lat float8, lon float8, alt_m float8, speed_mps float8, track_deg float8, "
              "eph_m float8, epv_m float8, sats int2",
              ["int2"] + ["float8"] * 7 + ["int2"],
              "mode, lat, lon, alt_m, speed_mps, track_deg, eph_m, epv_m, sats"),
    "feature_windows": (
        "len_ms int4, rate_hz float8, n int4, "
        + ", ".join("%s_%s float8" % (a, k) for a in "xyz" for k in ("rms", "peak", "crest", "dom_hz"))
        + ", band_hz float8[], x_bands float8[], y_bands float8[], z_bands float8[]",
        ["int4", "float8", "int4"] + ["float8"] * 12 + ["float8[]"] * 4,
        "len_ms, rate_hz, n, "
        + ", ".join("%s_%s" % (a, k) for a in "xyz" for k in ("rms", "peak", "crest", "dom_hz"))
        + ", band_hz, x_bands, y_bands, z_bands"),
    "waveforms": ("rate_hz float8, scale_g float8, range_g int2, n int4, axes int2, samples bytea",
                  ["float8", "float8", "int2", "int4", "int2", "bytea"],
                  "rate_hz, scale_g, range_g, n, axes, samples"),
    "device_logs": ("level text, text text", ["text", "text"], "level, text"),
}
_BATCH_ATTR = {"readings": "readings", "fixes": "fixes", "feature_windows": "windows",
               "waveforms": "waves", "device_logs": "logs"}

_TS = ("CASE WHEN s.tq = 'none' THEN b.epoch_est ELSE timestamptz 'epoch' END"
       " + s.ts_ms * interval '1 millisecond'")
_RECV = "timestamptz 'epoch' + s.recv_ms * interval '1 millisecond'"


class Store:
    """Owns the ingest connection; write() commits one Batch or raises psycopg.Error."""

    def __init__(self, url):
        self.url = url
        self.conn = None
        self._known = set()     # devices known to have a row in `devices`

    def connect(self):
        """(Re)open the connection and its staging tables."""
        self.close()
        conn = psycopg.connect(self.url, autocommit=False, connect_timeout=5)
        self._known.clear()     # the database may have been replaced meanwhile
        with conn.transaction():
            for table, (cols, _, _) in _TABLES.items():
                conn.execute("CREATE TEMP TABLE IF NOT EXISTS stage_%s (%s, %s) ON COMMIT DELETE ROWS"
                             % (table, _STAGE_HEAD, cols))
        self.conn = conn

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None

    def write(self, batch):
        """Commit a batch; return {table: rows newly inserted} (duplicates are not counted)."""
        if self.conn is None or self.conn.closed:
            self.connect()
        written = {}
        try:
            with self.conn.transaction():
                with self.conn.cursor() as cur:
                    staged = []
                    for table, (_, types, _) in _TABLES.items():
                        rows = getattr(batch, _BATCH_ATTR[table])
                        if rows and not batch.untimed and self._copy_direct(cur, table, types, rows):
                            written[table] = len(rows)
                        elif rows:
                            with cur.copy("COPY stage_%s FROM STDIN (FORMAT BINARY)" % table) as cp:
                                cp.set_types(_HEAD_TYPES + types)
                                for row in rows:
                                    cp.write_row(row)
                            staged.append(table)
                    if staged and batch.untimed:
                        # Fix each boot's estimated start the first time a record without a
                        # wall-clock time is seen, so resends of that record map to the same ts.
                        cur.execute(
                            "INSERT INTO device_boots (device_id, boot, epoch_est) "
                            "SELECT device_id, boot, timestamptz 'epoch' + min(recv_ms - ts_ms) * interval '1 millisecond'"
                            " FROM (%s) u GROUP BY device_id, boot ON CONFLICT DO NOTHING"
                            % " UNION ALL ".join("SELECT device_id, boot, recv_ms, ts_ms FROM stage_%s WHERE tq = 'none'"
                                                 % t for t in staged))
                    for table in staged:
                        target = _TABLES[table][2]
                        cur.execute(
                            "INSERT INTO %s (device_id, boot, seq, ts, recv_ts, tq, %s) "
                            "SELECT s.device_id, s.boot, s.seq, %s, %s, s.tq, %s FROM stage_%s s "
                            "LEFT JOIN device_boots b ON s.tq = 'none' AND b.device_id = s.device_id AND b.boot = s.boot "
                            "ON CONFLICT DO NOTHING"
                            % (table, target, _TS, _RECV, ", ".join("s." + c.strip() for c in target.split(",")), table))
                        written[table] = cur.rowcount
                    self._results(cur, batch.results)
                    registered = self._devices(cur, batch)
                    self._quarantine(cur, batch.quarantine)
        except psycopg.Error:
            self.close()
            raise
        self._known.update(registered)
        self._touch(batch)
        return written

    def _copy_direct(self, cur, table, types, rows):
        """COPY rows with wall-clock times straight into `table` in a savepoint; False if a key is already stored."""
        ms = dt.timedelta(milliseconds=1)
        try:
            with self.conn.transaction():   # a savepoint: a duplicate undoes only this COPY
                with cur.copy("COPY %s (device_id, boot, seq, ts, recv_ts, tq, %s) FROM STDIN (FORMAT BINARY)"
                              % (table, _TABLES[table][2])) as cp:
                    cp.set_types(_DIRECT_HEAD_TYPES + types)
                    for row in rows:
                        cp.write_row(row[:3] + (_EPOCH + row[3] * ms, _EPOCH + row[4] * ms) + row[5:])
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
                self.conn.execute("SELECT 1 FROM devices WHERE device_id = ANY(%s) ORDER BY device_id FOR UPDATE",
                                  (devs,))
                self.conn.execute(
                    "UPDATE devices d SET last_seen = GREATEST(d.last_seen, "
                    "timestamptz 'epoch' + u.ms * interval '1 millisecond'), "
                    "clock_skew_ms = COALESCE(u.skew, d.clock_skew_ms) "
                    "FROM unnest(%s::text[], %s::int8[], %s::int8[]) AS u(dev, ms, skew) WHERE d.device_id = u.dev",
                    (devs, [batch.seen[d][0] for d in devs], [batch.seen[d][1] for d in devs]))
        except psycopg.Error as e:   # the data is committed; a missed last_seen is set again by the next message
            log.warning("last-seen update skipped: %s", str(e).strip().splitlines()[0] if str(e).strip() else e)
            self.close()

    @staticmethod
    def _results(cur, results):
        for r in results:
            cur.execute(
                "INSERT INTO commands (id, device_id, cmd, result_at, ok, detail, error, result_boot, result_seq) "
                "VALUES (%s, %s, %s, timestamptz 'epoch' + %s * interval '1 millisecond', %s, %s, %s, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET result_at = EXCLUDED.result_at, ok = EXCLUDED.ok, "
                "detail = EXCLUDED.detail, error = EXCLUDED.error, result_boot = EXCLUDED.result_boot, "
                "result_seq = EXCLUDED.result_seq "
                "WHERE commands.result_at IS NULL AND commands.device_id = EXCLUDED.device_id",
                (r["id"], r["dev"], r["cmd"], r["recv_ms"], r["ok"],
                 json.dumps(r["detail"]) if r["detail"] is not None else None, r["error"], r["boot"], r["seq"]))

    def _devices(self, cur, batch):
        # Register new devices and apply status messages; returns the devices registered.
        new = sorted(d for d in batch.seen if d not in self._known)
        if new:
            # No lock on rows that exist (DO NOTHING); first_seen is this receipt.
            cur.execute(
                "INSERT INTO devices (device_id, first_seen, last_seen, clock_skew_ms) "
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
                "UPDATE devices SET hw = %s, fw = %s, state = %s, reset_reason = %s, boot = %s, next_seq = %s, "
                "buf_depth = %s, buf_oldest_s = %s, buf_drops = %s, health = %s, "
                "status_at = timestamptz 'epoch' + %s * interval '1 millisecond' "
                "WHERE device_id = %s AND (boot IS NULL OR (boot, next_seq) <= (%s, %s))",
                (s["hw"], s["fw"], s["state"], s["reset"], s["boot"], s["seq"], s["buf"]["depth"],
                 s["buf"]["oldest_s"], s["buf"]["drops"], json.dumps(s["health"]), recv_ms, dev,
                 s["boot"], s["seq"]))
            if cur.rowcount == 0 and s["state"] == "offline":
                cur.execute(
                    "UPDATE devices SET state = 'offline', "
                    "status_at = timestamptz 'epoch' + %s * interval '1 millisecond' "
                    "WHERE device_id = %s AND boot = %s AND next_seq > %s", (recv_ms, dev, s["boot"], s["seq"]))
        return new

    @staticmethod
    def _quarantine(cur, entries):
        if entries:
            cur.executemany(
                "INSERT INTO quarantine (recv_ts, last_recv, topic, device_id, code, reason, payload, digest) "
                "VALUES (timestamptz 'epoch' + %s * interval '1 millisecond', "
                "timestamptz 'epoch' + %s * interval '1 millisecond', %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (digest) DO UPDATE SET times = quarantine.times + 1, "
                "last_recv = GREATEST(quarantine.last_recv, EXCLUDED.last_recv)",
                [(ms, ms, _clean(topic), _clean(dev), code, reason, payload, digest)
                 for digest, (ms, topic, dev, code, reason, payload) in entries.items()])


def _clean(s):
    # PostgreSQL text cannot hold NUL; keep everything else as received.
    return None if s is None else s.replace("\x00", "\\x00")
